"""Brand limits (BrandLimit): the writes behind /tasks/limits/. The release
(task_core.publishing) enforces them; a change applies from the next release."""

from __future__ import annotations

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import IntegrityError, transaction

from megahub.errors import Conflict, DomainValidationError
from task_core.models import BrandLimit


class LimitExists(Conflict):
    error_code = "LIMIT_EXISTS"
    default_detail = "The brand already has a limit for this task type."


EDITABLE = ("task_type", "max_running", "rate_per_minute", "weight")


def brand_limit_save(*, limit: BrandLimit, **fields) -> BrandLimit:
    """Create or update a brand limit with the model's rules (bounds, a registered task type or
    "" for the whole brand, a weight only on the brand-wide row, one row per task type)."""
    for name, value in fields.items():
        if name not in EDITABLE:
            raise TypeError(f"{name} is not an editable limit field")
        setattr(limit, name, value)
    try:
        limit.full_clean()
        with transaction.atomic():
            limit.save()
    except ValidationError as exc:
        errors = exc.message_dict
        if set(errors) == {NON_FIELD_ERRORS}:  # only the (brand, task_type) unique constraint
            raise LimitExists() from None
        errors.pop(NON_FIELD_ERRORS, None)
        raise DomainValidationError(field_errors=errors) from None
    except IntegrityError:  # a concurrent create of the same (brand, task_type)
        raise LimitExists() from None
    return limit


def brand_limit_delete(*, limit: BrandLimit) -> None:
    limit.delete()

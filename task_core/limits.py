"""Brand limits (BrandLimit): the writes behind /tasks/limits/. The release
(task_core.publishing) enforces them; a change applies from the next release."""

from __future__ import annotations

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import IntegrityError, transaction

from megahub.errors import Conflict, DomainValidationError
from task_core.models import BrandLimit
from task_core.registry import get_task_type


class LimitExists(Conflict):
    error_code = "LIMIT_EXISTS"
    default_detail = "The brand already has a limit for this task type."


EDITABLE = ("task_type", "max_running", "rate_per_minute", "weight")


def brand_limit_rule_errors(*, task_type: str, weight: int | None) -> dict[str, str]:
    """The rules of a limit beyond its fields' bounds, per field: its task type is registered
    (or "" for the whole brand); a weight other than 1 only on the brand-wide limit (the weight
    is the brand's). The API (brand_limit_save) and the admin's form both apply them."""
    errors = {}
    if task_type and get_task_type(task_type) is None:
        errors["task_type"] = f"Unknown task type {task_type!r}; see /tasks/types/."
    if task_type and weight is not None and weight != 1:
        errors["weight"] = "The weight is the brand's: set it on the brand-wide limit."
    return errors


def brand_limit_save(*, limit: BrandLimit, **fields) -> BrandLimit:
    """Create or update a brand limit: the model's bounds and one row per task type, and the
    rules of brand_limit_rule_errors."""
    for name, value in fields.items():
        if name not in EDITABLE:
            raise TypeError(f"{name} is not an editable limit field")
        setattr(limit, name, value)
    try:
        errors = {}
        try:
            limit.full_clean()
        except ValidationError as exc:
            errors = exc.message_dict
        rules = brand_limit_rule_errors(task_type=limit.task_type, weight=limit.weight)
        for name, message in rules.items():
            errors.setdefault(name, []).append(message)
        if errors:
            raise ValidationError(errors)
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

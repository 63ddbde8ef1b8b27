from django.core.management.base import CommandError

from task_core.models import Brand


def brand_arg(value: str | None) -> Brand | None:
    """A brand given by id or slug (None when not given)."""
    if not value:
        return None
    lookup = {"pk": int(value)} if value.isdigit() else {"slug": value}
    brand = Brand.objects.filter(**lookup).first()
    if brand is None:
        raise CommandError(f"no brand {value!r} (give its id or slug)")
    return brand

"""Helpers shared by the management commands of every app."""

from django.core.management.base import CommandError

from task_core.tenancy import UnknownBrand, brand_get


def brand_arg(value):
    """The brand a command was given by id or slug (None when not given); an unknown brand is
    bad input (``CommandError``, exit status 2 from ``manage.py tasks``)."""
    if value is None or value == "":
        return None
    try:
        return brand_get(value)
    except UnknownBrand as exc:
        raise CommandError(exc.detail, returncode=2)

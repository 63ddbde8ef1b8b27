"""Helpers shared by the management commands of every app."""

import json

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError
from django.utils.dateparse import parse_datetime

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


def add_task_request_arguments(parser) -> None:
    """The arguments of a task request (task_enqueue, tasks submit): as POST /tasks/."""
    parser.add_argument("brand", help="brand id or slug")
    parser.add_argument("task_type")
    parser.add_argument("--context", default="{}", help="context_data as a JSON object")
    parser.add_argument("--priority", default="normal", help="low, normal, high or critical")
    parser.add_argument("--description", default="")
    parser.add_argument("--scheduled-for", help="ISO 8601 datetime with time zone")
    parser.add_argument("--idempotency-key")
    parser.add_argument("--user", help="username recorded as creator")


def task_request(options: dict) -> dict:
    """Keyword arguments for task_core.producer.submit from add_task_request_arguments' options;
    bad input is a CommandError with exit status 2."""
    try:
        context = json.loads(options["context"])
    except json.JSONDecodeError as exc:
        raise CommandError(f"--context is not valid JSON: {exc}", returncode=2)
    scheduled = None
    if options["scheduled_for"]:
        scheduled = parse_datetime(options["scheduled_for"])
        if scheduled is None or scheduled.tzinfo is None:
            raise CommandError(
                "--scheduled-for must be an ISO datetime with a time zone.", returncode=2
            )
    user = None
    if options["user"]:
        user = get_user_model().objects.filter(username=options["user"]).first()
        if user is None:
            raise CommandError(f"No user named {options['user']!r}.", returncode=2)
    return {
        "brand": brand_arg(options["brand"]),
        "task_type": options["task_type"],
        "context": context,
        "priority": options["priority"],
        "description": options["description"],
        "scheduled_for": scheduled,
        "idempotency_key": options["idempotency_key"],
        "user": user,
    }


def domain_error(exc) -> CommandError:
    """A service's refusal (megahub.errors.DomainError) as a command error: bad input (exit
    status 2) for a 4xx validation error, 1 for a conflict (the task's state refused it)."""
    detail = f"{exc.error_code}: {exc.detail}"
    if exc.field_errors:
        detail += f" {json.dumps(exc.field_errors, ensure_ascii=False)}"
    return CommandError(detail, returncode=1 if exc.status_code == 409 else 2)

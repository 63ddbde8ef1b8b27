import json

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_datetime

from megahub.errors import DomainError
from task_core import services
from task_core.models import Brand, Task


class Command(BaseCommand):
    help = "Create a task for a brand, exactly as POST /tasks/ would (published on commit)."

    def add_arguments(self, parser):
        parser.add_argument("brand", help="brand id or slug")
        parser.add_argument("task_type")
        parser.add_argument("--context", default="{}", help="context_data as a JSON object")
        parser.add_argument("--priority", default="normal", choices=Task.Priority.values)
        parser.add_argument("--description", default="")
        parser.add_argument("--scheduled-for", help="ISO 8601 datetime with time zone")
        parser.add_argument("--idempotency-key")
        parser.add_argument("--user", help="username recorded as creator")
        parser.add_argument("--count", type=int, default=1, help="how many identical tasks")

    def handle(self, *args, **o):
        lookup = {"pk": int(o["brand"])} if o["brand"].isdigit() else {"slug": o["brand"]}
        brand = Brand.objects.filter(**lookup).first()
        if brand is None:
            raise CommandError(f"No brand {o['brand']!r}.")
        try:
            context = json.loads(o["context"])
        except json.JSONDecodeError as exc:
            raise CommandError(f"--context is not valid JSON: {exc}")
        scheduled = None
        if o["scheduled_for"]:
            scheduled = parse_datetime(o["scheduled_for"])
            if scheduled is None or scheduled.tzinfo is None:
                raise CommandError("--scheduled-for must be an ISO datetime with a time zone.")
        user = None
        if o["user"]:
            user = get_user_model().objects.filter(username=o["user"]).first()
            if user is None:
                raise CommandError(f"No user named {o['user']!r}.")
        for _ in range(o["count"]):
            try:
                task, created = services.task_create(
                    brand=brand,
                    user=user,
                    task_type=o["task_type"],
                    priority=o["priority"],
                    description=o["description"],
                    context_data=context,
                    scheduled_for=scheduled,
                    idempotency_key=o["idempotency_key"],
                    actor="system:command",
                )
            except DomainError as exc:
                raise CommandError(f"{exc.error_code}: {exc.detail} {exc.field_errors or ''}")
            self.stdout.write(f"{'created' if created else 'existing'} {task.task_id} id={task.pk}")

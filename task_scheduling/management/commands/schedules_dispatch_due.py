"""manage.py schedules_dispatch_due [--now ISO]"""

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_datetime

from task_scheduling import services


class Command(BaseCommand):
    help = (
        "Dispatch due schedules once (what the beat entry megahub.schedules_dispatch_due "
        "does every few seconds) and print the outcome counts."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--now", help="ISO 8601 instant to dispatch as of (default: the clock); with a "
            "time zone, e.g. 2030-01-01T09:00:00+01:00",
        )  # fmt: skip

    def handle(self, *args, now=None, **options):
        instant = None
        if now:
            instant = parse_datetime(now)
            if instant is None or instant.tzinfo is None:
                raise CommandError(f"--now: {now!r} is not an ISO 8601 datetime with a time zone")
        totals = services.schedules_dispatch_due(now=instant)
        summary = ", ".join(f"{k}={v}" for k, v in sorted(totals.items())) or "nothing due"
        self.stdout.write(f"dispatched: {summary}")

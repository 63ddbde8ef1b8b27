"""manage.py validate_cron EXPRESSION [--timezone TZ] [--count N]"""

from django.core.management.base import BaseCommand, CommandError

from megahub.errors import DomainError
from task_scheduling import selectors


class Command(BaseCommand):
    help = (
        "Check a 5-field cron expression and print its description and next runs in the "
        "given time zone and in UTC (DST gaps and overlaps flagged)."
    )

    def add_arguments(self, parser):
        parser.add_argument("expression", help='e.g. "30 9 * * 1-5" (quote it)')
        parser.add_argument("--timezone", default="UTC", help="IANA time zone (default UTC)")
        parser.add_argument("--count", type=int, default=5, help="runs to show (1-100)")
        parser.add_argument(
            "--dst-gap-policy", choices=["shift", "skip"], default="shift",
            help="runs whose local time does not exist: shift (default) or skip",
        )  # fmt: skip

    def handle(self, *args, expression, timezone, count, dst_gap_policy, **options):
        if not 1 <= count <= 100:
            raise CommandError("--count must be between 1 and 100")
        try:
            preview = selectors.cron_preview(
                expression=expression, tz_name=timezone, count=count, gap_policy=dst_gap_policy
            )
        except DomainError as exc:
            raise CommandError(exc.detail)
        self.stdout.write(f"{preview['cron_expression']}  ({preview['timezone']})")
        self.stdout.write(preview["description"])
        for run in preview["next_runs"]:
            flag = f"  [DST {run['dst']}: scheduled {run['scheduled_local']}]" if run["dst"] else ""
            self.stdout.write(f"  {run['local']}   {run['utc']}{flag}")

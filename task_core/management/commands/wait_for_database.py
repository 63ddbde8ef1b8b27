import sys
import time

from django.core.management.base import BaseCommand, CommandError
from django.db import connection


class Command(BaseCommand):
    help = (
        "Wait until the database accepts connections: try every --interval seconds, at most "
        "--retries times, then fail. The image's web role runs it before migrating."
    )

    def add_arguments(self, parser):
        parser.add_argument("--retries", type=int, default=30)
        parser.add_argument("--interval", type=float, default=2.0)

    def handle(self, *args, retries, interval, **options):
        for attempt in range(1, max(retries, 1) + 1):
            try:
                connection.ensure_connection()
                with connection.cursor() as cursor:
                    cursor.execute("SELECT 1")
            except Exception as exc:
                connection.close()
                first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                sys.stderr.write(f"database not ready ({attempt}/{retries}): {first_line}\n")
                if attempt >= retries:
                    raise CommandError(f"database unreachable after {retries} tries")
                time.sleep(interval)
            else:
                self.stdout.write(f"database ready (try {attempt}/{retries})")
                return

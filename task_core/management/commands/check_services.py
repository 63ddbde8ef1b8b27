import sys

from celery import current_app
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

HOW_TO_START = """
Start them with one of:
  docker compose up -d postgres rabbitmq
  pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start   # PostgreSQL
  rabbitmq-server -detached                                                  # RabbitMQ
or point DATABASE_URL / CELERY_BROKER_URL at running servers."""


class Command(BaseCommand):
    help = "Fail fast, with a clear message, when the database or the broker is unreachable."

    def add_arguments(self, parser):
        parser.add_argument("--require-postgres", action="store_true")
        parser.add_argument("--require-rabbitmq", action="store_true")

    def handle(self, *args, require_postgres, require_rabbitmq, **options):
        problems = []
        db = settings.DATABASES["default"]
        if require_postgres and db["ENGINE"] != "django.db.backends.postgresql":
            problems.append(f"DATABASE_URL must point at PostgreSQL (engine is {db['ENGINE']}).")
        else:
            try:
                connection.ensure_connection()
            except Exception as exc:
                if not self._server_reachable_without_database(db, exc):
                    problems.append(f"database unreachable ({db.get('HOST') or db['NAME']}): {exc}")
        broker = settings.CELERY_BROKER_URL
        if require_rabbitmq and not broker.startswith(("amqp://", "pyamqp://")):
            problems.append(f"CELERY_BROKER_URL must point at RabbitMQ (is {broker}).")
        else:
            try:
                with current_app.connection_for_write() as conn:
                    conn.ensure_connection(max_retries=1, timeout=3)
            except Exception as exc:
                problems.append(f"broker unreachable ({broker.split('@')[-1]}): {exc}")
        if problems:
            sys.stderr.write("\n".join(f"  - {p}" for p in problems) + "\n" + HOW_TO_START + "\n")
            raise CommandError("required services are not reachable")
        self.stdout.write("database and broker reachable")

    @staticmethod
    def _server_reachable_without_database(db: dict, exc: Exception) -> bool:
        """The test runner creates its own database: a missing one is not an outage."""
        if "does not exist" not in str(exc) or db["ENGINE"] != "django.db.backends.postgresql":
            return False
        import psycopg

        try:
            psycopg.connect(
                dbname="postgres",
                user=db.get("USER") or None,
                password=db.get("PASSWORD") or None,
                host=db.get("HOST") or None,
                port=db.get("PORT") or None,
                connect_timeout=5,
            ).close()
        except Exception:
            return False
        return True

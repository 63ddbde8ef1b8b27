import logging
import signal
import time

from celery import current_app
from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import DatabaseError, close_old_connections
from kombu import Consumer

from task_core import intake

logger = logging.getLogger("megahub.messaging")


class Command(BaseCommand):
    help = (
        "Consume JSON task requests from the megahub.task_requests queue; create each task "
        "(validated like POST /tasks/) and ack only after it is committed. Invalid requests go "
        "to megahub.task_requests.dead with the reason."
    )

    def add_arguments(self, parser):
        parser.add_argument("--max-messages", type=int, default=0, help="stop after N (0: never)")

    def handle(self, *args, max_messages, **options):
        self.stopping = False
        self.handled = 0
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        queue = intake.requests_queue()
        self.stdout.write(f"consuming {queue.name}")
        self.stdout.flush()
        while not self.stopping:
            try:
                with current_app.connection_for_read() as conn:
                    conn.ensure_connection(max_retries=None, interval_start=1, interval_max=10)
                    channel = conn.channel()
                    consumer = Consumer(
                        channel,
                        queues=[queue],
                        on_message=self._on_message,
                        prefetch_count=settings.TASK_REQUESTS_PREFETCH,
                    )
                    with consumer:
                        self.stdout.write("ready")
                        self.stdout.flush()
                        while not self.stopping:
                            if max_messages and self.handled >= max_messages:
                                return
                            try:
                                conn.drain_events(timeout=1)
                            except TimeoutError:
                                continue
            except conn_errors() as exc:
                if self.stopping:
                    break
                logger.warning("task requests: broker connection lost", extra={"error": repr(exc)})
                time.sleep(1)

    def _stop(self, signum, frame):
        self.stopping = True

    def _on_message(self, message):
        raw = message.body if isinstance(message.body, bytes) else str(message.body).encode()
        while True:
            close_old_connections()
            try:
                task, created = intake.task_request_handle(raw)
            except intake.RequestRejected as rejected:
                intake.dead_letter(raw, rejected, message.headers)
                logger.warning(
                    "task request dead-lettered",
                    extra={"error_code": rejected.error_code, "reason": rejected.reason},
                )
                break
            except DatabaseError as exc:
                # Transient: keep the message (unacked) and try again; it is not redelivered
                # meanwhile, so it does not count against the delivery limit.
                logger.warning("task request: database unavailable", extra={"error": repr(exc)})
                if self.stopping:
                    return  # unacked: the broker gives it to the next consumer
                time.sleep(1)
                continue
            logger.info(
                "task request accepted",
                extra={"task_id": task.task_id, "new": created, "brand_id": task.brand_id},
            )
            break
        message.ack()
        self.handled += 1


def conn_errors():
    return (*current_app.connection_for_read().connection_errors, OSError)

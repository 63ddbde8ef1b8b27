"""The events outbox relay: lifecycle and brand events to RabbitMQ's topic exchange (task
requests from a queue are ``task_core.intake``; brand webhooks, ``task_core.webhooks``).

The task timeline (TaskEvent) is the outbox. Every transition writes its TaskEvent in the same
transaction as the change, and a brand event (POST /events/...) its outbox row of kind
brand_event; the relay publishes unpublished rows in id order (so in order per task) with
publisher confirms and persistent messages, stamps published_at, and sends ``events_relayed``
in the same transaction (brand webhooks fan the events out to their deliveries). If the broker
is down, rows wait and go out on a later run: nothing is lost.
"""

from __future__ import annotations

import logging
import time

from celery import current_app
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from kombu import Exchange

from megahub.backoff import backoff_delay_s
from task_core.models import BRAND_EVENT_PREFIX, BrandEvent, TaskEvent
from task_core.signals import events_relayed

logger = logging.getLogger("megahub.messaging")

EVENT_SCHEMA = "megahub.task_event/1"
BRAND_EVENT_SCHEMA = "megahub.brand_event/1"
# Each publish is tried this many times, waiting backoff_delay_s(n, base, cap) in between;
# after that the rest of the batch waits in the outbox for the next relay run.
PUBLISH_ATTEMPTS = 5
PUBLISH_BACKOFF_BASE_S = 0.2
PUBLISH_BACKOFF_MAX_S = 3.2
RELAY_LOCK_KEY = 7_311_002  # pg advisory lock: one relay publishes at a time (keeps the order)
# Timeline kinds whose public event name differs.
EVENT_NAMES = {TaskEvent.Kind.RETRY_SCHEDULED: "retrying"}


def queue_name(base: str) -> str:
    """A broker name with this deployment's CELERY_QUEUE_PREFIX."""
    return f"{settings.CELERY_QUEUE_PREFIX}{base}"


def events_exchange() -> Exchange:
    return Exchange(queue_name("megahub.events"), type="topic", durable=True)


def eventqueue_name(event: TaskEvent) -> str:
    """The public name: a lifecycle event's ("completed", "retrying"...), or
    "brand_event.<solution>.<model>.<action>" for a brand event."""
    if event.kind == TaskEvent.Kind.BRAND_EVENT:
        return BRAND_EVENT_PREFIX + event.brand_event.event_type
    return EVENT_NAMES.get(event.kind, event.kind)


def event_names() -> list[str]:
    """Lifecycle event names a webhook may subscribe to (brand events:
    task_core.webhooks.BRAND_EVENT_TYPE_RE)."""
    kinds = set(TaskEvent.Kind.values) - {TaskEvent.Kind.BRAND_EVENT}
    return sorted({EVENT_NAMES.get(k, k) for k in kinds})


def event_routing_key(event: TaskEvent) -> str:
    """Lifecycle: ``<brand_id>.<task_type>.<event>`` (first segment numeric). Brand events:
    ``brand_event.<brand_id>.<solution>.<model>.<action>`` (first segment a word): no key of
    one kind can be a key of the other."""
    if event.kind == TaskEvent.Kind.BRAND_EVENT:
        be = event.brand_event
        return f"brand_event.{event.brand_id}.{be.solution}.{be.model}.{be.action}"
    return f"{event.brand_id}.{event.task.task_type}.{eventqueue_name(event)}"


def brand_event_payload(event: BrandEvent, *, outbox_id: int) -> dict:
    return {
        "schema": BRAND_EVENT_SCHEMA,
        "event_id": outbox_id,
        "event_uid": str(event.event_uid),
        "event_timestamp": event.created_at.isoformat().replace("+00:00", "Z"),
        "brand_id": event.brand_id,
        "event_type": event.event_type,
        "solution": event.solution,
        "model": event.model,
        "action": event.action,
        "event_data": event.event_data,
    }


def event_payload(event: TaskEvent) -> dict:
    if event.kind == TaskEvent.Kind.BRAND_EVENT:
        return brand_event_payload(event.brand_event, outbox_id=event.pk)
    task = event.task
    return {
        "schema": EVENT_SCHEMA,
        "event_id": event.pk,
        "event": eventqueue_name(event),
        "occurred_at": event.created_at.isoformat(),
        "brand_id": event.brand_id,
        "task": {
            "id": task.pk,
            "task_id": task.task_id,
            "task_type": task.task_type,
            "priority": task.priority,
        },
        "from_status": event.from_status,
        "to_status": event.to_status,
        "attempt": event.attempt,
        "actor": event.actor,
        "message": event.message,
        "data": event.data,
    }


def _relay_lock() -> bool:
    if connection.vendor != "postgresql":
        return True  # SQLite: one writer at a time anyway
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [RELAY_LOCK_KEY])
        return bool(cursor.fetchone()[0])


def events_relay(*, limit: int | None = None) -> int:
    """Publish the oldest unpublished timeline events; return how many went out."""
    limit = limit or settings.EVENTS_RELAY_BATCH
    with transaction.atomic():
        if not _relay_lock():
            return 0
        batch = list(
            TaskEvent.objects.unscoped()
            .filter(published_at__isnull=True)
            .select_related("task", "brand_event")
            .order_by("id")[:limit]
        )
        if not batch:
            return 0
        sent: list[int] = []
        exchange = events_exchange()
        try:
            with current_app.producer_or_acquire() as producer:
                for event in batch:
                    publish_with_backoff(
                        producer,
                        event_payload(event),
                        exchange=exchange,
                        routing_key=event_routing_key(event),
                        declare=[exchange],
                        serializer="json",
                        delivery_mode=2,  # persistent
                        message_id=_message_id(event),
                    )
                    sent.append(event.pk)
        except Exception as exc:
            logger.warning(
                "event relay: broker unavailable; events wait in the outbox",
                extra={"published": len(sent), "error": repr(exc)},
            )
        if sent:
            TaskEvent.objects.unscoped().filter(pk__in=sent).update(published_at=timezone.now())
            events_relayed.send(sender=TaskEvent, events=batch[: len(sent)])
    return len(sent)


def _message_id(event: TaskEvent) -> str:
    if event.kind == TaskEvent.Kind.BRAND_EVENT:
        return f"brand-event-{event.brand_event.event_uid}"
    return f"task-event-{event.pk}"


def publish_with_backoff(producer, body, **options) -> None:
    """Publish (with the producer's publisher confirms), trying PUBLISH_ATTEMPTS times: after a
    connection or channel error, wait (exponential backoff with jitter), reconnect, retry.
    Raises the last error when every attempt failed."""
    conn = producer.connection
    errors = conn.recoverable_connection_errors + conn.recoverable_channel_errors
    for attempt in range(1, PUBLISH_ATTEMPTS + 1):
        try:
            producer.publish(body, retry=False, **options)
            return
        except errors as exc:
            if attempt == PUBLISH_ATTEMPTS:
                raise
            delay = backoff_delay_s(attempt, base=PUBLISH_BACKOFF_BASE_S, cap=PUBLISH_BACKOFF_MAX_S)
            logger.info(
                "event relay: publish failed; retrying",
                extra={"attempt": attempt, "retry_in_s": round(delay, 3), "error": repr(exc)},
            )
            time.sleep(delay)
            try:  # a fresh connection and channel for the next attempt
                conn.collect()
                conn.ensure_connection(max_retries=1)
                producer.revive(conn.default_channel)
            except Exception as reconnect_error:  # the next attempt fails fast and waits again
                logger.info("event relay: reconnect failed", extra={"error": repr(reconnect_error)})

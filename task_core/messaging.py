"""RabbitMQ beyond Celery: task requests from a queue, lifecycle events to a topic exchange.

Events: the task timeline (TaskEvent) is the outbox. Every transition writes its TaskEvent in
the same transaction as the change; the relay publishes unpublished rows in id order (so in
order per task) with publisher confirms and persistent messages, then stamps published_at. If
the broker is down, rows wait and go out on a later run: nothing is lost.

Requests: JSON messages on the durable queue megahub.task_requests are validated exactly like
POST /tasks/ (same serializer, same service) and acknowledged only after the task row is
committed. Invalid ones go to megahub.task_requests.dead with the reason.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from celery import current_app
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone
from kombu import Exchange, Queue

from megahub.errors import DomainError
from megahub.tenancy import ROLE_RANK
from task_core import services
from task_core.models import Brand, BrandMembership, Task, TaskEvent

logger = logging.getLogger("megahub.messaging")

EVENT_SCHEMA = "megahub.task_event/1"
RELAY_LOCK_KEY = 7_311_002  # pg advisory lock: one relay publishes at a time (keeps the order)
# Timeline kinds whose public event name differs.
EVENT_NAMES = {TaskEvent.Kind.RETRY_SCHEDULED: "retrying"}


def _name(base: str) -> str:
    return f"{settings.CELERY_QUEUE_PREFIX}{base}"


def events_exchange() -> Exchange:
    return Exchange(_name("megahub.events"), type="topic", durable=True)


def requests_dead_queue() -> Queue:
    return Queue(_name("megahub.task_requests.dead"), durable=True)


def requests_queue() -> Queue:
    """Quorum queue: RabbitMQ dead-letters a message redelivered more than the limit (a
    message that keeps crashing consumers) into the dead queue."""
    return Queue(
        _name("megahub.task_requests"),
        durable=True,
        queue_arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": settings.TASK_REQUESTS_DELIVERY_LIMIT,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": _name("megahub.task_requests.dead"),
        },
    )


# --- lifecycle events ---------------------------------------------------------------------
def event_name(event: TaskEvent) -> str:
    return EVENT_NAMES.get(event.kind, event.kind)


def event_routing_key(event: TaskEvent) -> str:
    return f"{event.brand_id}.{event.task.task_type}.{event_name(event)}"


def event_payload(event: TaskEvent) -> dict:
    task = event.task
    return {
        "schema": EVENT_SCHEMA,
        "event_id": event.pk,
        "event": event_name(event),
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
            .select_related("task")
            .order_by("id")[:limit]
        )
        if not batch:
            return 0
        sent: list[int] = []
        exchange = events_exchange()
        try:
            with current_app.producer_or_acquire() as producer:
                for event in batch:
                    producer.publish(
                        event_payload(event),
                        exchange=exchange,
                        routing_key=event_routing_key(event),
                        declare=[exchange],
                        serializer="json",
                        delivery_mode=2,  # persistent
                        message_id=f"task-event-{event.pk}",
                        retry=True,
                        retry_policy={  # 5 attempts, exponential backoff, then wait in the DB
                            "max_retries": 4,
                            "interval_start": 0.2,
                            "interval_step": 0.4,
                            "interval_max": 1.6,
                        },
                    )
                    sent.append(event.pk)
        except Exception as exc:
            logger.warning(
                "event relay: broker unavailable; events wait in the outbox",
                extra={"published": len(sent), "error": repr(exc)},
            )
        if sent:
            TaskEvent.objects.unscoped().filter(pk__in=sent).update(published_at=timezone.now())
    return len(sent)


def events_backlog() -> dict:
    pending = TaskEvent.objects.unscoped().filter(published_at__isnull=True)
    oldest = pending.order_by("id").values_list("created_at", flat=True).first()
    return {
        "unpublished": pending.count(),
        "oldest_age_s": round((timezone.now() - oldest).total_seconds(), 1) if oldest else None,
    }


# --- task requests -------------------------------------------------------------------------
@dataclass
class RequestRejected(Exception):
    reason: str
    error_code: str
    field_errors: dict = field(default_factory=dict)


def task_request_handle(raw: bytes) -> tuple[Task, bool]:
    """Validate one request message and create its task. Raises RequestRejected (dead-letter
    it) or a database error (transient: retry the same message later)."""
    from task_core.api.serializers import TaskRequestSerializer

    if len(raw) > settings.TASK_REQUEST_MAX_BYTES:
        raise RequestRejected(
            f"message is {len(raw)} bytes; the limit is {settings.TASK_REQUEST_MAX_BYTES}",
            "REQUEST_TOO_LARGE",
        )
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestRejected(f"not JSON: {exc}", "MALFORMED_REQUEST")
    if not isinstance(body, dict):
        raise RequestRejected("the message must be a JSON object", "MALFORMED_REQUEST")
    serializer = TaskRequestSerializer(data=body)
    if not serializer.is_valid():
        errors = {k: [str(e) for e in v] for k, v in serializer.errors.items()}
        raise RequestRejected("invalid request", "VALIDATION_ERROR", errors)
    data = dict(serializer.validated_data)
    brand_id, username = data.pop("brand_id"), data.pop("requested_by")
    idempotency_key = data.pop("idempotency_key", None)
    brand = Brand.objects.filter(pk=brand_id, is_active=True).first()
    user = get_user_model().objects.filter(username=username, is_active=True).first()
    membership = (
        BrandMembership.objects.filter(user=user, brand=brand).first() if brand and user else None
    )
    if membership is None or ROLE_RANK[membership.role] < ROLE_RANK["operator"]:
        raise RequestRejected(
            f"{username!r} may not create tasks in brand {brand_id}", "BRAND_FORBIDDEN"
        )
    try:
        return services.task_create(
            brand=brand,
            user=user,
            idempotency_key=idempotency_key,
            actor=f"queue:{username}",
            **data,
        )
    except DomainError as exc:
        raise RequestRejected(exc.detail, exc.error_code, exc.field_errors or {})


def dead_letter(raw: bytes, rejected: RequestRejected, headers: dict | None) -> None:
    """Publish a rejected request to the dead queue with why (confirmed before the ack).

    Uses a pooled connection, not the consumer's: waiting for a publisher confirm on the
    connection whose callback is running would deadlock."""
    queue = requests_dead_queue()
    with current_app.producer_or_acquire() as producer:
        _publish_dead(producer, queue, raw, rejected, headers)


def _publish_dead(producer, queue, raw, rejected, headers) -> None:
    producer.publish(
        {
            "reason": rejected.reason,
            "error_code": rejected.error_code,
            "field_errors": rejected.field_errors,
            "original": raw[:65536].decode("utf-8", errors="replace"),
            "original_headers": {k: str(v) for k, v in (headers or {}).items()},
            "dead_lettered_at": timezone.now().isoformat(),
        },
        exchange="",
        routing_key=queue.name,
        declare=[queue],
        serializer="json",
        delivery_mode=2,
        headers={"x-megahub-reason": rejected.error_code},
    )

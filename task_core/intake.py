"""Task requests through RabbitMQ: JSON messages on the durable queue megahub.task_requests
are validated exactly like POST /tasks/ (the same serializer, role check and create service)
and acknowledged only after the task row is committed. Invalid ones go to
megahub.task_requests.dead with the reason (consume_task_requests runs the consumer)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from celery import current_app
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone
from kombu import Queue

from megahub.errors import DomainError
from task_core import services
from task_core.api.serializers import TaskRequestSerializer
from task_core.events import queue_name
from task_core.models import Task
from task_core.tenancy import Role, member_with_role


def requests_dead_queue() -> Queue:
    return Queue(queue_name("megahub.task_requests.dead"), durable=True)


def requests_queue() -> Queue:
    """Quorum queue: RabbitMQ dead-letters a message redelivered more than the limit (a
    message that keeps crashing consumers) into the dead queue."""
    return Queue(
        queue_name("megahub.task_requests"),
        durable=True,
        queue_arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": settings.TASK_REQUESTS_DELIVERY_LIMIT,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": queue_name("megahub.task_requests.dead"),
        },
    )


@dataclass
class RequestRejected(Exception):
    reason: str
    error_code: str
    field_errors: dict = field(default_factory=dict)


def task_request_handle(raw: bytes) -> tuple[Task, bool]:
    """Validate one request message and create its task. Raises RequestRejected (dead-letter
    it) or a database error (transient: retry the same message later)."""
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
    user = get_user_model().objects.filter(username=username, is_active=True).first()
    membership = user and member_with_role(user=user, brand_id=brand_id, required=Role.OPERATOR)
    if not membership:
        raise RequestRejected(
            f"{username!r} may not create tasks in brand {brand_id}", "BRAND_FORBIDDEN"
        )
    try:
        return services.task_create(
            brand=membership.brand,
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

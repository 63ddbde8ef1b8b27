"""RabbitMQ beyond Celery: lifecycle and brand events to a topic exchange, and brand webhooks
(task requests from a queue are ``task_core.intake``).

Events: the task timeline (TaskEvent) is the outbox. Every transition writes its TaskEvent in
the same transaction as the change, and a brand event (POST /events/...) its outbox row of kind
brand_event; the relay publishes unpublished rows in id order (so in order per task) with
publisher confirms and persistent messages, then stamps published_at. If the broker is down,
rows wait and go out on a later run: nothing is lost.

Webhooks: relayed events are fanned out to the brand's webhooks as deliveries, POSTed signed
(megahub.webhooks) by a delivery loop that retries with backoff and disables a webhook after
too many consecutive failures.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone
from kombu import Exchange

from megahub.backoff import backoff_delay_s
from megahub.errors import DomainValidationError
from megahub.webhooks import WebhookRefused, webhook_post, webhook_url_problem
from task_core.models import (
    BRAND_EVENT_PREFIX,
    BRAND_EVENT_SEGMENT,
    BrandEvent,
    TaskEvent,
    Webhook,
    WebhookDelivery,
)
from task_core.signals import webhook_disabled

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


# --- lifecycle and brand events -----------------------------------------------------------
def eventqueue_name(event: TaskEvent) -> str:
    """The public name: a lifecycle event's ("completed", "retrying"...), or
    "brand_event.<solution>.<model>.<action>" for a brand event."""
    if event.kind == TaskEvent.Kind.BRAND_EVENT:
        return BRAND_EVENT_PREFIX + event.brand_event.event_type
    return EVENT_NAMES.get(event.kind, event.kind)


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
            _fan_out(batch[: len(sent)])
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


# --- brand webhooks ------------------------------------------------------------------------
def event_names() -> list[str]:
    """Lifecycle event names a webhook may subscribe to (brand events: BRAND_EVENT_TYPE_RE)."""
    kinds = set(TaskEvent.Kind.values) - {TaskEvent.Kind.BRAND_EVENT}
    return sorted({EVENT_NAMES.get(k, k) for k in kinds})


# "brand_event.*", or "brand_event.<solution>.<model>.<action>" with "*" for any segment.
_ANY_SEGMENT = rf"(\*|{BRAND_EVENT_SEGMENT})"
BRAND_EVENT_TYPE_RE = re.compile(rf"brand_event\.(\*|{_ANY_SEGMENT}(\.{_ANY_SEGMENT}){{2}})")


def event_type_pattern() -> str:
    """The regular expression of a name webhook_save accepts in event_types (the schema's)."""
    names = "|".join(re.escape(name) for name in ["*", *event_names()])
    return f"^(?:{names}|{BRAND_EVENT_TYPE_RE.pattern})$"


def webhook_save(*, webhook: Webhook, **fields) -> Webhook:
    """Create or update a brand webhook (URL policy enforced); re-enabling resets its failures."""
    if "url" in fields and (problem := webhook_url_problem(fields["url"])):
        raise DomainValidationError(field_errors={"url": [problem]})
    if "event_types" in fields:
        unknown = sorted(
            name
            for name in set(fields["event_types"]) - {"*", *event_names()}
            if not BRAND_EVENT_TYPE_RE.fullmatch(name)
        )
        if unknown or not fields["event_types"]:
            raise DomainValidationError(
                field_errors={
                    "event_types": [
                        f"Unknown event types {unknown}; use {event_names()}, '*' (every "
                        "lifecycle event), 'brand_event.*' or "
                        "'brand_event.<solution>.<model>.<action>' ('*' per segment)."
                        if unknown
                        else "Subscribe to at least one event type."
                    ]
                }
            )
    if fields.get("is_active") and not webhook.is_active:
        webhook.consecutive_failures, webhook.disabled_reason = 0, ""
    for name, value in fields.items():
        setattr(webhook, name, value)
    webhook.save()
    return webhook


def _fan_out(events: list[TaskEvent]) -> None:
    """Create the webhook deliveries of relayed events (same transaction as the relay)."""
    brands = {e.brand_id for e in events}
    hooks = list(Webhook.objects.unscoped().filter(brand_id__in=brands, is_active=True))
    if not hooks:
        return
    now = timezone.now()
    WebhookDelivery.objects.bulk_create(
        [
            WebhookDelivery(
                webhook=hook,
                brand_id=event.brand_id,
                event=event,
                event_name=eventqueue_name(event),
                payload=event_payload(event),
                next_attempt_at=now,
            )
            for event in events
            for hook in hooks
            if hook.brand_id == event.brand_id and hook.wants(eventqueue_name(event))
        ],
        ignore_conflicts=True,
    )


def webhook_retry_delay_s(attempt: int) -> float:
    return min(
        settings.WEBHOOK_BACKOFF_MAX_SECONDS, settings.WEBHOOK_BACKOFF_SECONDS * 2 ** (attempt - 1)
    )


def webhooks_deliver_due(*, limit: int = 50) -> int:
    """Attempt the due deliveries; safe to run from several processes (rows are leased)."""
    now = timezone.now()
    with transaction.atomic():
        due = list(
            WebhookDelivery.objects.unscoped()
            .select_for_update(skip_locked=True)
            .filter(status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now)
            .order_by("next_attempt_at")[:limit]
        )
        lease = now + timedelta(seconds=settings.WEBHOOK_TIMEOUT_SECONDS * 2 + 30)
        WebhookDelivery.objects.unscoped().filter(pk__in=[d.pk for d in due]).update(
            next_attempt_at=lease
        )
    for delivery in due:
        webhook_delivery_attempt(delivery=delivery)
    return len(due)


def webhook_delivery_attempt(*, delivery: WebhookDelivery) -> bool:
    """One signed POST of one delivery, recorded; schedules a retry or gives up."""
    hook = Webhook.objects.unscoped().get(pk=delivery.webhook_id)
    started = time.monotonic()
    status_code, error, response, final = None, "", "", False
    if not hook.is_active:
        error, final = f"webhook disabled: {hook.disabled_reason}", True
    else:
        try:
            answer = webhook_post(
                hook.url,
                secret=hook.secret,
                payload=delivery.payload,
                headers={
                    "X-Megahub-Event": delivery.event_name,
                    "X-Megahub-Delivery": str(delivery.pk),
                },
                timeout=settings.WEBHOOK_TIMEOUT_SECONDS,
            )
            status_code, response = answer.status, answer.body
        except WebhookRefused as exc:
            error, final = str(exc), True
        except Exception as exc:  # timeouts, refused connections, DNS
            error = f"{type(exc).__name__}: {exc}"
    ok = status_code is not None and 200 <= status_code < 300
    delivery.attempts += 1
    delivery.last_status_code, delivery.last_error = status_code, error[:2000]
    delivery.last_response = response[:2000]
    delivery.last_duration_ms = int((time.monotonic() - started) * 1000)
    delivery.history = [
        *delivery.history,
        {
            "attempt": delivery.attempts,
            "at": timezone.now().isoformat(),
            "status_code": status_code,
            "error": error[:500],
            "duration_ms": delivery.last_duration_ms,
        },
    ][-20:]
    if ok:
        delivery.status, delivery.delivered_at, delivery.next_attempt_at = (
            "delivered",
            timezone.now(),
            None,
        )
    elif final or delivery.attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
        delivery.status, delivery.next_attempt_at = "failed", None
    else:
        delay = webhook_retry_delay_s(delivery.attempts)
        delivery.next_attempt_at = timezone.now() + timedelta(seconds=delay)
    with transaction.atomic():
        delivery.save()
        if ok:
            Webhook.objects.unscoped().filter(pk=hook.pk).update(consecutive_failures=0)
        elif hook.is_active:
            _webhook_failed(hook)
    return ok


def _webhook_failed(hook: Webhook) -> None:
    Webhook.objects.unscoped().filter(pk=hook.pk).update(
        consecutive_failures=F("consecutive_failures") + 1
    )
    hook.refresh_from_db(fields=["consecutive_failures"])
    if hook.consecutive_failures < settings.WEBHOOK_DISABLE_AFTER_FAILURES:
        return
    reason = f"{hook.consecutive_failures} consecutive failed attempts"
    Webhook.objects.unscoped().filter(pk=hook.pk).update(is_active=False, disabled_reason=reason)
    WebhookDelivery.objects.unscoped().filter(webhook=hook, status="pending").update(
        status="failed", last_error=f"webhook disabled: {reason}", next_attempt_at=None
    )
    logger.error(
        "webhook disabled",
        extra={"webhook_id": hook.pk, "brand_id": hook.brand_id, "url": hook.url, "reason": reason},
    )
    webhook_disabled.send(sender=Webhook, webhook=hook, reason=reason)

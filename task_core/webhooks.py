"""Brand webhooks: subscriptions, the fan-out of relayed events into deliveries, and their
delivery channel (task_core.delivery: a Standard Webhooks signed POST through
megahub.webhooks, retried with backoff; a webhook is disabled after too many consecutive
failures)."""

from __future__ import annotations

import logging
import re

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from megahub.errors import DomainValidationError
from megahub.webhooks import webhook_url_problem
from task_core import delivery
from task_core.events import event_names, event_payload, eventqueue_name
from task_core.models import BRAND_EVENT_SEGMENT, TaskEvent, Webhook, WebhookDelivery
from task_core.signals import webhook_disabled

logger = logging.getLogger("megahub.messaging")

HISTORY_ENTRIES = 20  # attempts kept in a delivery's history (the latest)
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


def webhooks_fan_out(*, events: list[TaskEvent], **kwargs) -> None:
    """Create the webhook deliveries of relayed events (the events_relayed receiver: in the
    relay's transaction)."""
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


class WebhookChannel(delivery.Channel):
    """WebhookDelivery rows: the event's payload POSTed to the brand's webhook."""

    model = WebhookDelivery
    setting_names = ("WEBHOOK_TIMEOUT_SECONDS", "WEBHOOK_MAX_ATTEMPTS",
                     "WEBHOOK_BACKOFF_SECONDS", "WEBHOOK_BACKOFF_MAX_SECONDS")  # fmt: skip

    def message(self, row: WebhookDelivery) -> delivery.Message:
        return delivery.Message(
            id=f"delivery-{row.pk}",
            payload=row.payload,
            headers={"X-Megahub-Event": row.event_name, "X-Megahub-Delivery": str(row.pk)},
        )

    def transport(self, row: WebhookDelivery) -> delivery.Transport:
        # read now: an earlier delivery of the same batch may have disabled the webhook
        row.webhook = hook = Webhook.objects.unscoped().get(pk=row.webhook_id)
        if not hook.is_active:
            raise delivery.TransportError(f"webhook disabled: {hook.disabled_reason}",
                                          permanent=True)  # fmt: skip
        return delivery.WebhookTransport(hook.url, secret=hook.secret, timeout_s=self.timeout_s)

    def fields(self, row: WebhookDelivery, attempt: delivery.Attempt) -> dict:
        entry = {
            "attempt": attempt.number,
            "at": attempt.at.isoformat(),
            "status_code": attempt.status_code,
            "error": attempt.error[:500],
            "duration_ms": attempt.duration_ms,
        }
        return {
            "last_status_code": attempt.status_code,
            "last_response": attempt.response,
            "last_duration_ms": attempt.duration_ms,
            "history": [*row.history, entry][-HISTORY_ENTRIES:],
        }

    def recorded(self, row: WebhookDelivery, attempt: delivery.Attempt) -> None:
        hook = row.webhook
        if attempt.ok:
            Webhook.objects.unscoped().filter(pk=hook.pk).update(consecutive_failures=0)
        elif hook.is_active:
            _webhook_failed(hook)


def webhooks_deliver_due(*, limit: int = 50) -> int:
    """Attempt the due deliveries; safe to run from several processes (rows are leased)."""
    return delivery.deliver_due(WebhookChannel(), limit=limit)


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

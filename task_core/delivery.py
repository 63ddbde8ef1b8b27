"""Outbound deliveries: the one pipeline of every message megahub sends out with retries
(brand webhooks here in task_core, alert notifications in task_monitoring).

lease -> send -> record -> retry with backoff, or give up:

- a ``Channel`` (one per kind of delivery row) says which rows it keeps, how one row becomes a
  ``Message`` and which ``Transport`` sends it, how long a send may take, how often and how
  soon it is retried, and what else an attempt writes (history, an attempt row, counters);
- ``deliver_due`` leases due rows in one short transaction (``SELECT ... FOR UPDATE SKIP
  LOCKED``, their next attempt pushed past the time the batch may take), so several processes
  share the work and none sends a row twice, then sends each with no transaction open;
- a ``Transport`` sends one message: ``WebhookTransport`` (a Standard Webhooks signed POST
  through ``megahub.webhooks``, its URL policy checked again), ``EmailTransport`` (Django's mail
  backend). It raises ``TransportError`` (``permanent`` when retrying cannot help);
- ``deliver`` records the attempt (the row's status, attempts, next attempt, last error, plus
  the channel's own writes) in one transaction and schedules the next attempt with
  ``megahub.backoff.backoff_delay_s``, or gives up after the channel's maximum.

A delivery row has ``status`` (pending, delivered, failed), ``attempts``, ``next_attempt_at``,
``last_error`` and ``delivered_at``, and an unscoped manager (``objects.unscoped()``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.db import models, transaction
from django.utils import timezone

from megahub.backoff import backoff_delay_s
from megahub.webhooks import WebhookRefused, webhook_post

logger = logging.getLogger("megahub.delivery")
ERROR_CHARS = 2000  # an attempt's error and response excerpt are kept up to this length
LEASE_MARGIN_S = 30


class TransportError(Exception):
    """A send that failed; ``permanent`` when another attempt cannot succeed."""

    def __init__(self, message: str, *, permanent: bool = False, status_code: int | None = None,
                 response: str = ""):  # fmt: skip
        super().__init__(message)
        self.message, self.permanent = message, permanent
        self.status_code, self.response = status_code, response


@dataclass(frozen=True)
class Message:
    id: str  # stable across retries (the webhook-id a receiver deduplicates on)
    payload: dict
    headers: dict = field(default_factory=dict)  # webhooks: extra request headers
    subject: str = ""  # e-mail
    text: str = ""  # e-mail


@dataclass(frozen=True)
class Sent:
    status_code: int | None = None
    response: str = ""


class Transport:
    def send(self, message: Message) -> Sent:
        """Send one message; raise TransportError (or any error: a retryable failure)."""
        raise NotImplementedError


class WebhookTransport(Transport):
    """A signed POST of the message's payload to a URL that passes the URL policy; any answer
    but a 2xx is a failure."""

    def __init__(self, url: str, *, secret: str, timeout_s: float):
        self.url, self.secret, self.timeout_s = url, secret, timeout_s

    def send(self, message: Message) -> Sent:
        try:
            answer = webhook_post(
                self.url,
                secret=self.secret,
                message_id=message.id,
                payload=message.payload,
                headers=message.headers,
                timeout=self.timeout_s,
            )
        except WebhookRefused as exc:
            raise TransportError(str(exc), permanent=True) from exc
        if not 200 <= answer.status < 300:
            raise TransportError(
                f"HTTP {answer.status}", status_code=answer.status, response=answer.body
            )
        return Sent(answer.status, answer.body)


class EmailTransport(Transport):
    """The message's subject and text to a list of addresses, through Django's mail backend."""

    def __init__(self, recipients: list[str]):
        self.recipients = recipients

    def send(self, message: Message) -> Sent:
        send_mail(message.subject, message.text, settings.DEFAULT_FROM_EMAIL, self.recipients,
                  fail_silently=False)  # fmt: skip
        return Sent()


@dataclass(frozen=True)
class Attempt:
    """The outcome of one attempt, as recorded."""

    number: int
    at: datetime
    duration_ms: int
    status_code: int | None
    response: str
    error: str  # empty when delivered
    next_attempt_at: datetime | None  # None: delivered, or given up

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def status(self) -> str:
        if self.ok:
            return "delivered"
        return "pending" if self.next_attempt_at else "failed"


class Channel:
    """One kind of delivery row. Subclasses set ``model`` and ``setting_names``, and implement
    ``message`` and ``transport``; ``fields`` and ``recorded`` add their own writes to an
    attempt's."""

    model: type[models.Model]
    related: tuple[str, ...] = ()  # select_related of the lease query
    # The names of the settings of: one send's timeout (the lease covers the batch), attempts
    # before giving up, the backoff's first delay and its cap (seconds). Read when made.
    setting_names: tuple[str, str, str, str]

    def __init__(self):
        self.timeout_s, self.max_attempts, self.backoff_base_s, self.backoff_max_s = (
            getattr(settings, name) for name in self.setting_names
        )

    def message(self, row) -> Message:
        raise NotImplementedError

    def transport(self, row) -> Transport:
        """The transport of one row; raise TransportError when the row cannot be sent."""
        raise NotImplementedError

    def fields(self, row, attempt: Attempt) -> dict:
        """The row's own columns an attempt updates, beside the common ones."""
        return {}

    def recorded(self, row, attempt: Attempt) -> None:
        """Other writes of an attempt, once the row is updated (same transaction)."""


def deliver_due(channel: Channel, *, limit: int = 50) -> int:
    """Attempt the channel's due rows; safe from several processes. Returns how many were
    attempted."""
    due = lease_due(channel, limit=limit)
    for row in due:
        deliver(channel, row)
    return len(due)


def lease_due(channel: Channel, *, limit: int) -> list:
    """Lock up to ``limit`` due rows (skipping rows another process holds) and push their next
    attempt past the time this batch may take, so that no one else sends them meanwhile."""
    rows = channel.model.objects.unscoped()
    now = timezone.now()
    with transaction.atomic():
        due = list(
            rows.select_for_update(skip_locked=True, of=("self",))
            .select_related(*channel.related)
            .filter(status="pending", next_attempt_at__lte=now)
            .order_by("next_attempt_at")[:limit]
        )
        if due:
            lease = timedelta(seconds=channel.timeout_s * len(due) + LEASE_MARGIN_S)
            rows.filter(pk__in=[row.pk for row in due]).update(next_attempt_at=now + lease)
    return due


def deliver(channel: Channel, row) -> bool:
    """One attempt of one row, recorded; schedules the next one or gives up. True if
    delivered."""
    number = row.attempts + 1
    started = time.monotonic()
    sent, error, permanent = Sent(), "", False
    try:
        sent = channel.transport(row).send(channel.message(row))
    except TransportError as exc:
        sent, error, permanent = Sent(exc.status_code, exc.response), exc.message, exc.permanent
    except Exception as exc:  # timeouts, refused connections, DNS, SMTP
        error = f"{type(exc).__name__}: {exc}"
    now = timezone.now()
    retry = bool(error) and not permanent and number < channel.max_attempts
    delay = backoff_delay_s(number, base=channel.backoff_base_s, cap=channel.backoff_max_s)
    attempt = Attempt(
        number=number,
        at=now,
        duration_ms=int((time.monotonic() - started) * 1000),
        status_code=sent.status_code,
        response=sent.response[:ERROR_CHARS],
        error=error[:ERROR_CHARS],
        next_attempt_at=now + timedelta(seconds=delay) if retry else None,
    )
    fields = {"status": attempt.status, "attempts": number, "last_error": attempt.error,
              "next_attempt_at": attempt.next_attempt_at}  # fmt: skip
    if attempt.ok:
        fields["delivered_at"] = now
    fields.update(channel.fields(row, attempt))
    with transaction.atomic():
        channel.model.objects.unscoped().filter(pk=row.pk).update(**fields)
        channel.recorded(row, attempt)
    if not attempt.ok:
        logger.warning(
            "delivery attempt failed",
            extra={"model": channel.model._meta.label, "row_id": row.pk, "attempt": number,
                   "status": attempt.status, "error": attempt.error},
        )  # fmt: skip
    return attempt.ok

"""Every write of task_monitoring: metrics rows, worker heartbeats, alert rules, alerts and
their notifications."""

from __future__ import annotations

import json
import logging
import os
import weakref
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from megahub.errors import Conflict, DomainValidationError
from megahub.webhooks import webhook_url_problem
from task_core import delivery
from task_core.models import Task
from task_monitoring import memory, selectors
from task_monitoring.models import (
    Alert,
    AlertEvaluation,
    AlertNotification,
    AlertRule,
    NotificationAttempt,
    PlatformLoop,
    TaskMetric,
    Worker,
)

logger = logging.getLogger("megahub.monitoring")
DELIVER_TASK_NAME = "megahub.alert_notifications_deliver"
SIX_PLACES = Decimal("0.000001")


class AlertNotAcknowledgeable(Conflict):
    error_code = "ALERT_NOT_ACKNOWLEDGEABLE"
    default_detail = "Only a firing alert can be acknowledged."


class AlertNotResolvable(Conflict):
    error_code = "ALERT_NOT_RESOLVABLE"
    default_detail = "The alert is already resolved."


# --- metrics rows ---------------------------------------------------------------------------
# Memory baseline of each running attempt, keyed by its TaskContext (dies with the attempt).
_baselines: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def metric_attempt_started(*, ctx) -> None:
    """Reset the process's peak-memory mark before an attempt runs (see memory.py)."""
    _baselines[ctx] = memory.attempt_baseline()


_ZERO_USD = Decimal(0).quantize(SIX_PLACES)


def _usd(value) -> Decimal:
    if not value:  # most attempts: no rate, nothing reported
        return _ZERO_USD
    return Decimal(str(value)).quantize(SIX_PLACES, rounding=ROUND_HALF_UP)


def _queue_wait_ms(task: Task) -> int | None:
    if task.started_at is None:
        return None
    # queued_at is stamped by each publish (first one, release after a backoff); a task claimed
    # before its "queued" mark was committed waited since its creation.
    since = task.queued_at if task.queued_at and task.queued_at <= task.started_at else None
    if since is None and task.attempts <= 1:
        since = task.created_at
    if since is None:
        return None
    return max(0, int((task.started_at - since).total_seconds() * 1000))


def metric_build(
    *, task: Task, ctx, outcome: str, cpu_time_s: float, wall_time_s: float
) -> TaskMetric:
    """The metrics row of one finished attempt, unsaved: the worker inserts it in the statement
    that records the outcome (task_core.signals.OutcomeRow, registered in apps.py)."""
    peak_mb, growth_mb, method = memory.attempt_peak(_baselines.pop(ctx, None))
    rate = getattr(ctx.spec, "cost_per_cpu_second_usd", 0.0) or 0.0
    cpu_cost = _usd(cpu_time_s * rate)
    reported = _usd(ctx.reported_cost_usd)
    now = timezone.now()
    return TaskMetric(
        task_id=task.pk,
        attempt=ctx.attempt,
        brand_id=task.brand_id,
        task_type=task.task_type,
        queue=task.queue,
        status=outcome,
        worker_hostname=(ctx.worker or "")[:255],
        worker_pid=os.getpid(),
        started_at=task.started_at,
        finished_at=now,
        execution_time_ms=max(0, round(wall_time_s * 1000)),
        cpu_time_ms=max(0, round(cpu_time_s * 1000)),
        memory_usage_mb=peak_mb,
        memory_growth_mb=growth_mb,
        memory_method=method,
        queue_wait_ms=_queue_wait_ms(task),
        cpu_cost_usd=cpu_cost,
        reported_cost_usd=reported,
        cost_usd=cpu_cost + reported,
        costs=ctx.costs[:100],
    )


def metric_record(
    *, task: Task, ctx, outcome: str, cpu_time_s: float, wall_time_s: float
) -> TaskMetric:
    """Write the metrics row of one finished attempt on its own (idempotent per task and
    attempt: one INSERT ... ON CONFLICT DO NOTHING)."""
    metric = metric_build(
        task=task, ctx=ctx, outcome=outcome, cpu_time_s=cpu_time_s, wall_time_s=wall_time_s
    )
    TaskMetric.objects.bulk_create([metric], ignore_conflicts=True)
    return metric


# --- workers ----------------------------------------------------------------------------------
def platform_loop_record(
    *, task_name: str, ok: bool, duration_ms: int | None = None, error: str = ""
) -> None:
    """Record one tick of a platform loop (one upsert): a success moves ``last_run_at``, a
    failure ``last_failed_at`` and ``last_error``."""
    now = timezone.now()
    row = PlatformLoop(task_name=task_name[:200], first_run_at=now)
    if ok:
        row.last_run_at, row.last_duration_ms = now, duration_ms
        fields = ["last_run_at", "last_duration_ms"]
    else:
        row.last_failed_at, row.last_error = now, error[:2000]
        fields = ["last_failed_at", "last_error"]
    PlatformLoop.objects.bulk_create(
        [row], update_conflicts=True, unique_fields=["task_name"], update_fields=fields
    )


def worker_heartbeat_record(
    *,
    hostname: str,
    pid: int,
    queues: list[str],
    concurrency: int,
    pool_pids: list[int],
    active_tasks: int,
    processed: int,
    rss_mb: float | None,
    loadavg: list[float],
    software: str = "",
    started_at: datetime | None = None,
) -> Worker:
    """Upsert what a worker reports about itself; its heartbeat is now."""
    worker, _ = Worker.objects.update_or_create(
        hostname=hostname[:255],
        defaults={
            "pid": pid,
            "queues": queues,
            "concurrency": concurrency,
            "pool_pids": pool_pids,
            "active_tasks": active_tasks,
            "processed": processed,
            "rss_mb": rss_mb,
            "loadavg": loadavg,
            "software": software[:100],
            "heartbeat_interval_s": settings.WORKER_HEARTBEAT_SECONDS,
            "started_at": started_at,
            "last_heartbeat_at": timezone.now(),
            "stopped_at": None,
        },
    )
    return worker


def worker_stopped(*, hostname: str) -> None:
    """A worker reported its warm shutdown: offline now, not after the allowance."""
    Worker.objects.filter(hostname=hostname).update(stopped_at=timezone.now(), active_tasks=0)


# --- alert rules ------------------------------------------------------------------------------
def alert_rule_save(*, rule: AlertRule, user=None, **fields) -> AlertRule:
    """Create (rule without pk) or update an alert rule."""
    problem = webhook_url_problem(fields["webhook_url"]) if fields.get("webhook_url") else None
    if problem:
        raise DomainValidationError(field_errors={"webhook_url": [problem]})
    for name, value in fields.items():
        setattr(rule, name, value)
    if rule.pk is None:
        rule.created_by = user
    rule.save()
    return rule


# --- evaluation -------------------------------------------------------------------------------
_COMPARE = {
    "gt": lambda v, t: v > t,
    "gte": lambda v, t: v >= t,
    "lt": lambda v, t: v < t,
    "lte": lambda v, t: v <= t,
}


def alert_rules_evaluate(*, now: datetime | None = None) -> dict[str, int]:
    """Evaluate every enabled rule once (the beat entry). One rule's error never stops the
    others; it is recorded as an ``error`` evaluation."""
    outcomes: dict[str, int] = {}
    for rule in AlertRule.objects.unscoped().filter(enabled=True, brand__is_active=True):
        try:
            outcome = alert_rule_evaluate(rule=rule, now=now)
        except Exception as exc:
            logger.exception("alert rule evaluation failed", extra={"rule_id": rule.pk})
            AlertEvaluation.objects.create(
                brand_id=rule.brand_id,
                rule=rule,
                outcome=AlertEvaluation.Outcome.ERROR,
                detail=f"{type(exc).__name__}: {exc}"[:2000],
            )
            outcome = str(AlertEvaluation.Outcome.ERROR)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


def alert_rule_evaluate(*, rule: AlertRule, now: datetime | None = None) -> str:
    """Evaluate one rule: fire a new episode, keep, or resolve the open one. Returns the
    evaluation outcome."""
    now = now or timezone.now()
    value = selectors.rule_value(rule, now=now)
    breached = value is not None and _COMPARE[rule.comparison](value, rule.threshold)
    Out = AlertEvaluation.Outcome
    with transaction.atomic():
        # Lock the rule: two evaluators (two beats, a manual run) serialise here.
        rule = AlertRule.objects.unscoped().select_for_update().get(pk=rule.pk)
        open_alert = rule.alerts.filter(status__in=Alert.OPEN).first()
        alert = open_alert
        if breached and open_alert is not None:
            outcome = Out.BREACHED
            Alert.objects.unscoped().filter(pk=open_alert.pk).update(last_value=value)
        elif breached:
            cooldown_from = now - timedelta(minutes=rule.cooldown_minutes)
            recent = rule.alerts.filter(resolved_at__gte=cooldown_from).exists()
            if recent:
                outcome = Out.COOLDOWN
            else:
                alert = Alert.objects.create(
                    brand_id=rule.brand_id,
                    rule=rule,
                    severity=rule.severity,
                    value=value,
                    last_value=value,
                    threshold=rule.threshold,
                    message=_describe(rule, value),
                )
                _notify(alert, AlertNotification.Event.FIRED)
                outcome = Out.FIRED
        elif open_alert is not None:
            _resolve(open_alert, user=None, resolution="cleared", value=value)
            outcome = Out.RESOLVED
        else:
            outcome = Out.NO_DATA if value is None else Out.OK
        AlertEvaluation.objects.create(
            brand_id=rule.brand_id,
            rule=rule,
            alert=alert,
            value=value,
            outcome=outcome,
            detail=_describe(rule, value),
        )
        AlertRule.objects.unscoped().filter(pk=rule.pk).update(
            last_evaluated_at=now, last_value=value
        )
    return str(outcome)


def _describe(rule: AlertRule, value: float | None) -> str:
    scope = f" ({rule.task_type})" if rule.task_type else ""
    shown = "no data" if value is None else f"{value:g}"
    op = AlertRule.Comparison(rule.comparison).label
    return (
        f"{rule.metric}{scope} over {rule.window_minutes} min = {shown} "
        f"(fires when {op} {rule.threshold:g})"
    )


def _resolve(alert: Alert, *, user, resolution: str, value: float | None = None) -> bool:
    fields = {
        "status": Alert.Status.RESOLVED,
        "resolved_at": timezone.now(),
        "resolved_by": user,
        "resolution": resolution,
    }
    if value is not None:
        fields["last_value"] = value
    moved = Alert.objects.unscoped().filter(pk=alert.pk, status__in=Alert.OPEN).update(**fields)
    if moved:
        alert.refresh_from_db()
        _notify(alert, AlertNotification.Event.RESOLVED)
    return bool(moved)


def alert_acknowledge(*, alert: Alert, user) -> Alert:
    """firing -> acknowledged (the episode stays open; no new notification)."""
    moved = (
        Alert.objects.unscoped()
        .filter(pk=alert.pk, status=Alert.Status.FIRING)
        .update(
            status=Alert.Status.ACKNOWLEDGED, acknowledged_at=timezone.now(), acknowledged_by=user
        )
    )
    alert.refresh_from_db()
    if not moved:
        raise AlertNotAcknowledgeable(f"The alert is {alert.status}; only firing alerts can be "
                                      "acknowledged.")  # fmt: skip
    return alert


def alert_resolve(*, alert: Alert, user) -> Alert:
    """Close an open episode by hand (notifies "resolved"); the rule's cooldown then applies."""
    with transaction.atomic():
        if not _resolve(alert, user=user, resolution="manual"):
            raise AlertNotResolvable()
    alert.refresh_from_db()
    return alert


# --- notifications ----------------------------------------------------------------------------
def _notify(alert: Alert, event: str) -> None:
    """Queue one notification per channel of the rule; delivered after commit, with retries."""
    rule = alert.rule
    payload = alert_payload(alert, event)
    rows = []
    if rule.webhook_url:
        rows.append(("webhook", rule.webhook_url))
    if rule.email_to:
        rows.append(("email", ",".join(rule.email_to)))
    if not rows:
        return
    AlertNotification.objects.bulk_create(
        AlertNotification(
            brand_id=alert.brand_id,
            alert=alert,
            channel=channel,
            event=event,
            target=target[:500],
            payload=payload,
            next_attempt_at=timezone.now(),
        )
        for channel, target in rows
    )
    transaction.on_commit(_kick_delivery)


def _kick_delivery() -> None:
    try:
        current_app.send_task(DELIVER_TASK_NAME, retry=False)
    except Exception as exc:  # the beat entry delivers them anyway
        logger.warning("could not enqueue notification delivery", extra={"error": repr(exc)})


def alert_payload(alert: Alert, event: str) -> dict:
    rule = alert.rule
    return {
        "event": f"alert.{event}",
        "alert": {
            "id": alert.pk,
            "status": alert.status,
            "severity": alert.severity,
            "value": alert.value,
            "last_value": alert.last_value,
            "threshold": alert.threshold,
            "message": alert.message,
            "fired_at": alert.fired_at.isoformat() if alert.fired_at else None,
            "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
            "resolution": alert.resolution,
        },
        "rule": {
            "id": rule.pk,
            "name": rule.name,
            "metric": rule.metric,
            "comparison": rule.comparison,
            "threshold": rule.threshold,
            "window_minutes": rule.window_minutes,
            "task_type": rule.task_type,
        },
        "brand": {"id": alert.brand_id},
    }


class AlertNotificationChannel(delivery.Channel):
    """AlertNotification rows: a signed webhook POST or an e-mail (task_core.delivery), every
    attempt kept as a NotificationAttempt."""

    model = AlertNotification
    related = ("alert__rule",)
    setting_names = (
        "ALERT_WEBHOOK_TIMEOUT_SECONDS",
        "ALERT_NOTIFICATION_MAX_ATTEMPTS",
        "ALERT_NOTIFICATION_BACKOFF_SECONDS",
        "ALERT_NOTIFICATION_BACKOFF_MAX_SECONDS",
    )

    def message(self, row: AlertNotification) -> delivery.Message:
        payload = row.payload
        alert, rule = payload["alert"], payload["rule"]
        return delivery.Message(
            id=f"alert-notification-{row.pk}",
            payload=payload,
            headers={
                "User-Agent": "megahub-alerts/1",
                "X-Megahub-Event": payload.get("event", ""),
                "X-Megahub-Delivery": str(row.pk),
            },
            subject=f"[megahub {alert['severity']}] {rule['name']} {row.event}",
            text=f"{alert['message']}\n\n{json.dumps(payload, indent=2)}",
        )

    def transport(self, row: AlertNotification) -> delivery.Transport:
        if row.channel == AlertNotification.Channel.WEBHOOK:
            secret = row.alert.rule.webhook_secret
            return delivery.WebhookTransport(row.target, secret=secret, timeout_s=self.timeout_s)
        return delivery.EmailTransport(row.target.split(","))

    def recorded(self, row: AlertNotification, attempt: delivery.Attempt) -> None:
        NotificationAttempt.objects.create(
            notification=row,
            number=attempt.number,
            ok=attempt.ok,
            status_code=attempt.status_code,
            error=attempt.error,
            duration_ms=attempt.duration_ms,
        )


def alert_notifications_deliver(*, limit: int = 50) -> int:
    """Deliver due notifications (leased, so safe from several processes); returns how many
    were attempted."""
    return delivery.deliver_due(AlertNotificationChannel(), limit=limit)


def monitoring_prune(*, now: datetime | None = None) -> dict[str, int]:
    """Drop evaluations older than ALERT_EVALUATION_RETENTION_DAYS and workers silent for
    WORKER_FORGET_AFTER_DAYS (the hourly beat entry)."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.ALERT_EVALUATION_RETENTION_DAYS)
    evaluations, _ = AlertEvaluation.objects.unscoped().filter(evaluated_at__lt=cutoff).delete()
    forget = now - timedelta(days=settings.WORKER_FORGET_AFTER_DAYS)
    workers, _ = Worker.objects.filter(last_heartbeat_at__lt=forget).delete()
    return {"evaluations": evaluations, "workers": workers}

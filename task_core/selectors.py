"""Non-trivial reads of the task hub."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.db.models import Count, Min, Q
from django.utils import timezone

from task_core.models import Brand, BrandLimit, Task, TaskEvent

logger = logging.getLogger("megahub.tasks")
ACTIVE = [s for s in Task.Status.values if s not in Task.TERMINAL]


# The columns of a /tasks/ list row (TaskListSerializer's fields, the creator's name joined).
TASK_LIST_COLUMNS = (
    "id", "task_id", "task_type", "status", "priority", "progress_percentage", "description",
    "brand_id", "created_by_id", "created_by__username", "created_at", "started_at",
    "completed_at", "attempts", "max_retries", "error_message", "queue", "scheduled_for",
    "cancel_requested", "waiting_reason",
)  # fmt: skip


def task_list_rows(queryset):
    """A page of the task list as plain rows: no model instances, only the listed columns."""
    return queryset.values(*TASK_LIST_COLUMNS)


def task_events(*, task: Task):
    return TaskEvent.objects.unscoped().filter(task=task).order_by("id")


def broker_queue_stats(queue_names: list[str]) -> dict:
    """Live depth and consumer count per queue, straight from the broker (RabbitMQ)."""
    if not settings.CELERY_BROKER_URL.startswith(("amqp", "pyamqp")):
        return {"available": False, "reason": "live depth needs RabbitMQ", "queues": {}}
    queues = {}
    try:
        with current_app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            channel = conn.default_channel
            for name in queue_names:
                full = f"{settings.CELERY_QUEUE_PREFIX}{name}"
                try:
                    _, depth, consumers = channel.queue_declare(queue=full, passive=True)
                except Exception:  # not declared yet: no worker ever consumed it
                    channel = conn.channel()
                    depth, consumers = 0, 0
                queues[name] = {"depth": depth, "consumers": consumers}
    except Exception as exc:
        logger.warning("broker stats unavailable", extra={"error": repr(exc)})
        return {"available": False, "reason": "broker unreachable", "queues": {}}
    return {"available": True, "queues": queues}


def queue_stats(*, brand: Brand, fleet: bool = False) -> dict:
    """Per queue and priority: active counts by status, oldest queued age, recent throughput
    and the brand's unpublished lifecycle events: index-backed, brand-scoped aggregates.

    ``fleet`` (staff only) adds the platform-wide figures no brand may see: the broker's live
    depth and consumers, and the whole events outbox."""
    now = timezone.now()
    tasks = Task.objects.for_brand(brand)
    queues: dict[str, dict] = {
        name: {"by_status": {}, "by_priority": {}, "oldest_queued_age_s": None}
        for name in settings.MEGAHUB_QUEUES
    }
    rows = (
        tasks.filter(status__in=ACTIVE)
        .values("queue", "priority", "status", "waiting_reason")
        .annotate(n=Count("id"))
        .order_by()
    )
    limits = list(BrandLimit.objects.for_brand(brand))
    weight = next((lim.weight for lim in limits if not lim.task_type), 1)
    share = {
        "window": settings.TASK_BRAND_WINDOW * weight,
        "waiting": 0,
        "waiting_by_reason": {},
        "released": 0,
        "running": 0,
        "limits": limits,
    }
    for row in rows:
        if row["waiting_reason"] and row["status"] in (Task.Status.PENDING, Task.Status.RETRYING):
            share["waiting"] += row["n"]
            by_reason = share["waiting_by_reason"]
            by_reason[row["waiting_reason"]] = by_reason.get(row["waiting_reason"], 0) + row["n"]
        elif row["status"] in (Task.Status.QUEUED, Task.Status.RUNNING):
            key = "released" if row["status"] == Task.Status.QUEUED else "running"
            share[key] += row["n"]
        q = queues.setdefault(row["queue"], {"by_status": {}, "by_priority": {}})
        q["by_status"][row["status"]] = q["by_status"].get(row["status"], 0) + row["n"]
        per_priority = q["by_priority"].setdefault(row["priority"], {})
        per_priority[row["status"]] = per_priority.get(row["status"], 0) + row["n"]
    oldest = (
        tasks.filter(status=Task.Status.QUEUED)
        .values("queue")
        .annotate(oldest=Min("queued_at"))
        .order_by()
    )
    for row in oldest:
        if row["oldest"]:
            queues.setdefault(row["queue"], {})["oldest_queued_age_s"] = round(
                (now - row["oldest"]).total_seconds(), 1
            )
    finished = tasks.filter(completed_at__gte=now - timedelta(hours=1)).aggregate(
        completed_5m=Count(
            "id", filter=Q(status="completed", completed_at__gte=now - timedelta(minutes=5))
        ),
        failed_5m=Count(
            "id", filter=Q(status="failed", completed_at__gte=now - timedelta(minutes=5))
        ),
        completed_1h=Count("id", filter=Q(status="completed")),
        failed_1h=Count("id", filter=Q(status="failed")),
    )
    stats = {
        "generated_at": now,
        "queues": queues,
        "throughput": finished,
        "brand_share": share,
        "events_outbox": events_backlog(brand=brand),  # the brand's events not yet published
    }
    if fleet:
        stats["fleet"] = {
            "broker": broker_queue_stats(list(queues)),
            "events_outbox": events_backlog(),
        }
    return stats


def events_backlog(*, brand=None) -> dict:
    """Lifecycle events not yet published: the whole outbox, or one brand's share of it."""
    pending = TaskEvent.objects.unscoped().filter(published_at__isnull=True)
    if brand is not None:
        pending = pending.filter(brand=brand)
    oldest = pending.order_by("id").values_list("created_at", flat=True).first()
    return {
        "unpublished": pending.count(),
        "oldest_age_s": round((timezone.now() - oldest).total_seconds(), 1) if oldest else None,
    }

"""Non-trivial reads of the task hub."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.db.models import (
    AutoField,
    BooleanField,
    CharField,
    Count,
    DateTimeField,
    Expression,
    F,
    IntegerField,
    JSONField,
    Min,
    Q,
    TextField,
)
from django.utils import timezone

from task_core.models import Brand, BrandLimit, Task, TaskEvent

logger = logging.getLogger("megahub.tasks")
ACTIVE = [s for s in Task.Status.values if s not in Task.TERMINAL]


# The fields of a /tasks/ list row, in the API's order: TaskListSerializer's fields and the row
# PostgreSQL builds (task_list_rows) both come from here.
TASK_LIST_FIELDS = (
    "id", "task_id", "task_type", "status", "priority", "progress_percentage", "description",
    "brand", "created_by", "created_at", "started_at", "completed_at", "attempts",
    "max_retries", "error_message", "queue", "scheduled_for", "cancel_requested", "waiting_reason",
)  # fmt: skip


# How PostgreSQL (and SQLite, for the SQLite test run) writes a list value as DRF does: a
# datetime is ``datetime.isoformat()`` in UTC with ``Z`` (no fraction when the microseconds are
# 0, else 6 digits), a boolean is true/false; strings, integers and null are JSON as they are.
_ISO_PG = (
    "to_char({c} AT TIME ZONE 'UTC', CASE WHEN mod(date_part('microseconds', {c})::bigint, "
    '1000000) = 0 THEN \'YYYY-MM-DD"T"HH24:MI:SS"Z"\' ELSE \'YYYY-MM-DD"T"HH24:MI:SS.US"Z"\' END)'
)
_ISO_SQLITE = "replace({c}, ' ', 'T') || 'Z'"  # Django stores "YYYY-MM-DD HH:MM:SS[.ffffff]"
_BOOL_SQLITE = "CASE WHEN {c} THEN json('true') ELSE json('false') END"


class _TaskListRow(Expression):
    """A task list row as JSON text, keys in TASK_LIST_FIELDS' order (``json_build_object``:
    ``json``, not ``jsonb``, which would sort them). Written as one SQL template over the task
    table: only the brand's name and the creator's username are resolved by the ORM (their
    joins), so a page costs one small expression, not one per field. Read as text, so a
    DISTINCT that a filter adds still applies (PostgreSQL has no equality for ``json``)."""

    output_field = JSONField()

    def __init__(self):
        super().__init__()
        self.joined = [F("brand__name"), F("created_by__username")]

    def get_source_expressions(self):
        return self.joined

    def set_source_expressions(self, exprs):
        self.joined = exprs

    def as_sql(self, compiler, connection):
        sqlite = connection.vendor == "sqlite"
        table = compiler.quote_name_unless_alias(compiler.query.get_initial_alias())
        (brand_name, p1), (username, p2) = (compiler.compile(e) for e in self.joined)

        def column(name: str) -> str:
            return f"{table}.{connection.ops.quote_name(Task._meta.get_field(name).column)}"

        build = "json_object" if sqlite else "json_build_object"
        pairs = []
        for name in TASK_LIST_FIELDS:
            if name == "brand":
                value = f"{build}('id', {column('brand')}, 'name', {brand_name})"
            elif name == "created_by":
                creator = column("created_by")
                value = (
                    f"CASE WHEN {creator} IS NULL THEN NULL "
                    f"ELSE {build}('id', {creator}, 'username', {username}) END"
                )
            else:
                field = Task._meta.get_field(name)
                if isinstance(field, DateTimeField):
                    value = (_ISO_SQLITE if sqlite else _ISO_PG).format(c=column(name))
                elif isinstance(field, BooleanField):
                    value = _BOOL_SQLITE.format(c=column(name)) if sqlite else column(name)
                elif isinstance(field, CharField | TextField | IntegerField | AutoField):
                    value = column(name)
                else:
                    raise TypeError(f"task list field {name!r}: no JSON form for {field}")
            pairs.append(f"'{name}', {value}")
        sql = f"{build}({', '.join(pairs)})"
        return (sql if sqlite else f"({sql})::text"), [*p1, *p2]


def task_list_rows(queryset):
    """The task list's rows as PostgreSQL builds them: one JSON object per task, with the
    API's keys, order and formats (TaskListSerializer's output; a test holds them equal), plus
    the columns the keyset paginator orders by. No model instances, no per-field Python."""
    return queryset.values("id", "created_at", row=_TaskListRow())


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

"""Non-trivial reads of the task hub."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.db.models import (
    AutoField,
    BooleanField,
    Case,
    CharField,
    Count,
    DateTimeField,
    F,
    Func,
    IntegerField,
    JSONField,
    Min,
    Q,
    TextField,
    Value,
    When,
)
from django.utils import timezone

from task_core.models import Brand, Task, TaskEvent

logger = logging.getLogger("megahub.tasks")
ACTIVE = [s for s in Task.Status.values if s not in Task.TERMINAL]


# The fields of a /tasks/ list row, in the API's order: TaskListSerializer's fields and the row
# PostgreSQL builds (task_list_rows) both come from here.
TASK_LIST_FIELDS = (
    "id", "task_id", "task_type", "status", "priority", "progress_percentage", "description",
    "brand", "created_by", "created_at", "started_at", "completed_at", "attempts",
    "max_retries", "error_message", "queue", "scheduled_for", "cancel_requested",
)  # fmt: skip


class _JSONObject(Func):
    """``json_build_object(key, value, ...)``: keys in the order given (``json``, not ``jsonb``,
    which would sort them)."""

    function = "json_build_object"
    output_field = JSONField()

    def __init__(self, **pairs):
        args = []
        for key, value in pairs.items():
            args += [Value(key), value]
        super().__init__(*args)

    def as_sqlite(self, compiler, connection, **extra_context):  # make test-fast
        return super().as_sql(compiler, connection, function="json_object", **extra_context)


class _ISODateTime(Func):
    """A timestamp as DRF's DateTimeField writes it (``datetime.isoformat()`` in UTC with ``Z``:
    no fraction when the microseconds are 0, else 6 digits); NULL stays NULL."""

    template = (
        "to_char(%(expressions)s AT TIME ZONE 'UTC', CASE WHEN mod(date_part('microseconds', "
        '%(expressions)s)::bigint, 1000000) = 0 THEN \'YYYY-MM-DD"T"HH24:MI:SS"Z"\' '
        'ELSE \'YYYY-MM-DD"T"HH24:MI:SS.US"Z"\' END)'
    )
    output_field = CharField()

    def as_sqlite(self, compiler, connection, **extra_context):
        # Django stores an aware datetime as UTC text, "YYYY-MM-DD HH:MM:SS[.ffffff]".
        template = "replace(%(expressions)s, ' ', 'T') || 'Z'"
        return super().as_sql(compiler, connection, template=template, **extra_context)


class _JSONBoolean(Func):
    """A boolean column as JSON true/false (SQLite stores 0/1; PostgreSQL needs nothing)."""

    output_field = BooleanField()

    def as_postgresql(self, compiler, connection, **extra_context):
        return compiler.compile(self.source_expressions[0])

    def as_sqlite(self, compiler, connection, **extra_context):
        template = "CASE WHEN %(expressions)s THEN json('true') ELSE json('false') END"
        return super().as_sql(compiler, connection, template=template, **extra_context)


def _list_value(name: str):
    """The SQL expression of one list field, valued as the API writes it."""
    if name == "brand":
        return _JSONObject(id=F("brand_id"), name=F("brand__name"))
    if name == "created_by":
        return Case(
            When(created_by_id__isnull=True, then=None),
            default=_JSONObject(id=F("created_by_id"), username=F("created_by__username")),
        )
    field = Task._meta.get_field(name)
    if isinstance(field, DateTimeField):
        return _ISODateTime(F(name))
    if isinstance(field, BooleanField):
        return _JSONBoolean(F(name))
    if isinstance(field, CharField | TextField | IntegerField | AutoField):
        return F(name)  # JSON has the same value (strings, integers, null)
    raise TypeError(f"task list field {name!r}: no JSON form for {type(field).__name__}")


class _JSONText(Func):
    """A built JSON value read as its text (what a JSONField column returns), so a DISTINCT that
    a filter adds still applies: PostgreSQL has no equality for ``json``."""

    template = "(%(expressions)s)::text"
    output_field = JSONField()

    def as_sqlite(self, compiler, connection, **extra_context):
        return compiler.compile(self.source_expressions[0])


_TASK_LIST_ROW = _JSONText(_JSONObject(**{name: _list_value(name) for name in TASK_LIST_FIELDS}))


def task_list_rows(queryset):
    """The task list's rows as PostgreSQL builds them: one JSON object per task, with the
    API's keys, order and formats (TaskListSerializer's output; a test holds them equal), plus
    the columns the keyset paginator orders by. No model instances, no per-field Python."""
    return queryset.values("id", "created_at", row=_TASK_LIST_ROW)


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
        .values("queue", "priority", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    for row in rows:
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

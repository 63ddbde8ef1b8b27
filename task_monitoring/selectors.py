"""Reads of task_monitoring: dashboards, percentiles, rule values, the worker fleet.

Aggregates run in the database. Percentiles use PostgreSQL's ``percentile_cont``; on other
databases (SQLite in ``make test-fast``) they fall back to fetching the two rows around the
percentile's rank with ``ORDER BY ... LIMIT 2 OFFSET k`` and interpolating, which gives the
same answer without loading the window into Python.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connection
from django.db.models import Aggregate, Avg, Count, FloatField, Max, Min, Q, QuerySet, Sum
from django.utils import timezone

from task_core.models import Brand, Task
from task_monitoring.models import Alert, AlertRule, PlatformLoop, TaskMetric, Worker

WINDOWS: dict[str, tuple[timedelta, timedelta]] = {
    # window -> (length, bucket of the throughput series)
    "1h": (timedelta(hours=1), timedelta(minutes=5)),
    "24h": (timedelta(hours=24), timedelta(hours=1)),
    "7d": (timedelta(days=7), timedelta(hours=6)),
    "30d": (timedelta(days=30), timedelta(days=1)),
}


class PercentileCont(Aggregate):
    """PostgreSQL ``percentile_cont(f) WITHIN GROUP (ORDER BY expr)`` (continuous percentile)."""

    function = "PERCENTILE_CONT"
    name = "percentile_cont"
    output_field = FloatField()
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"

    def __init__(self, expression, fraction: float, **extra):
        if not 0 <= float(fraction) <= 1:
            raise ValueError("fraction must be within [0, 1]")
        super().__init__(expression, fraction=repr(float(fraction)), **extra)


def db_has_percentiles() -> bool:
    return connection.vendor == "postgresql"


def percentiles(qs: QuerySet, field: str, fractions: dict[str, float]) -> dict[str, float | None]:
    """{name: value} of the given percentiles of ``field`` over ``qs`` (NULLs ignored)."""
    qs = qs.filter(**{f"{field}__isnull": False})
    if db_has_percentiles():
        row = qs.aggregate(**{name: PercentileCont(field, f) for name, f in fractions.items()})
        return {name: _round(value) for name, value in row.items()}
    n = qs.count()
    out: dict[str, float | None] = {}
    ordered = qs.order_by(field).values_list(field, flat=True)
    for name, fraction in fractions.items():
        if n == 0:
            out[name] = None
            continue
        rank = fraction * (n - 1)
        low = math.floor(rank)
        values = [float(v) for v in ordered[low : low + 2]]
        high = values[1] if len(values) > 1 else values[0]
        out[name] = _round(values[0] + (high - values[0]) * (rank - low))
    return out


def _p95_by_group() -> dict:
    # Per-group percentiles need percentile_cont; elsewhere the column is left out (null).
    return {"p95_ms": PercentileCont("execution_time_ms", 0.95)} if db_has_percentiles() else {}


def _round(value, digits=2):
    if value is None:
        return None
    return round(float(value), digits)


def _money(value) -> float:
    return float(round(Decimal(value or 0), 6))


def latest_metric(*, task: Task) -> TaskMetric | None:
    return TaskMetric.objects.unscoped().filter(task=task).order_by("-attempt").first()


def metric_detail_section(task: Task) -> dict | None:
    """The ``metrics`` block of the task detail: the latest attempt's measurements, or None."""
    metric = latest_metric(task=task)
    if metric is None:
        return None
    return {
        "execution_time_ms": metric.execution_time_ms,
        "cpu_time_ms": metric.cpu_time_ms,
        "memory_usage_mb": metric.memory_usage_mb,
        "memory_growth_mb": metric.memory_growth_mb,
        "cost_usd": _money(metric.cost_usd),
        "queue_wait_ms": metric.queue_wait_ms,
        "worker": metric.worker_hostname,
        "attempt": metric.attempt,
        "status": metric.status,
        "recorded_at": metric.created_at.isoformat().replace("+00:00", "Z"),
    }


# --- dashboard ------------------------------------------------------------------------------
def dashboard(*, brand: Brand, window: str, now: datetime | None = None) -> dict:
    """Everything metrics/dashboard/ shows for one brand and window."""
    now = now or timezone.now()
    length, bucket = WINDOWS[window]
    since = now - length
    tasks = Task.objects.for_brand(brand)
    metrics = TaskMetric.objects.for_brand(brand).filter(created_at__gte=since)

    totals = dict(
        tasks.filter(created_at__gte=since)
        .values_list("status")
        .annotate(n=Count("id"))
        .order_by()
        .values_list("status", "n")
    )
    finished = tasks.filter(completed_at__gte=since)
    counts = finished.aggregate(
        completed=Count("id", filter=Q(status=Task.Status.COMPLETED)),
        failed=Count("id", filter=Q(status=Task.Status.FAILED)),
        cancelled=Count("id", filter=Q(status=Task.Status.CANCELLED)),
    )
    done = counts["completed"] + counts["failed"]
    success_rate = round(100 * counts["completed"] / done, 2) if done else None

    starts = []
    start = since
    while start < now:
        starts.append(start)
        start += bucket
    series_row = finished.aggregate(
        **{
            f"c{i}": Count("id", filter=Q(status="completed", completed_at__gte=s,
                                          completed_at__lt=s + bucket))
            for i, s in enumerate(starts)
        },
        **{
            f"f{i}": Count("id", filter=Q(status="failed", completed_at__gte=s,
                                          completed_at__lt=s + bucket))
            for i, s in enumerate(starts)
        },
    )  # fmt: skip
    throughput = [
        {"start": s, "completed": series_row[f"c{i}"], "failed": series_row[f"f{i}"]}
        for i, s in enumerate(starts)
    ]

    stats = metrics.aggregate(
        attempts=Count("id"),
        avg_ms=Avg("execution_time_ms"),
        max_ms=Max("execution_time_ms"),
        peak_memory_mb=Max("memory_usage_mb"),
        avg_memory_mb=Avg("memory_usage_mb"),
        cost=Sum("cost_usd"),
        cpu_ms=Sum("cpu_time_ms"),
        wait_avg=Avg("queue_wait_ms"),
        wait_max=Max("queue_wait_ms"),
    )
    exec_pct = percentiles(metrics, "execution_time_ms", {"p50": 0.5, "p95": 0.95, "p99": 0.99})
    wait_pct = percentiles(metrics, "queue_wait_ms", {"p50": 0.5, "p95": 0.95})

    by_type = list(
        metrics.values("task_type")
        .annotate(
            attempts=Count("id"),
            avg_ms=Avg("execution_time_ms"),
            max_ms=Max("execution_time_ms"),
            cost=Sum("cost_usd"),
            peak_memory_mb=Max("memory_usage_mb"),
            **_p95_by_group(),
        )
        .order_by("task_type")
    )  # fmt: skip
    types = [
        {
            "task_type": row["task_type"],
            "attempts": row["attempts"],
            "avg_execution_time_ms": _round(row["avg_ms"]),
            "p95_execution_time_ms": _round(row.get("p95_ms")),
            "max_execution_time_ms": row["max_ms"],
            "peak_memory_mb": _round(row["peak_memory_mb"]),
            "cost_usd": _money(row["cost"]),
        }
        for row in by_type
    ]
    return {
        "window": window,
        "since": since,
        "until": now,
        "bucket_seconds": int(bucket.total_seconds()),
        "totals_by_status": totals,
        "finished": counts,
        "success_rate": success_rate,
        "throughput": throughput,
        "attempts": stats["attempts"],
        "execution_time_ms": {
            **exec_pct,
            "avg": _round(stats["avg_ms"]),
            "max": stats["max_ms"],
        },
        "memory_mb": {
            "peak": _round(stats["peak_memory_mb"]),
            "avg": _round(stats["avg_memory_mb"]),
        },
        "cpu_time_ms": stats["cpu_ms"] or 0,
        "cost_usd": {
            "total": _money(stats["cost"]),
            "by_task_type": {t["task_type"]: t["cost_usd"] for t in types},
        },
        "queue_wait_ms": {**wait_pct, "avg": _round(stats["wait_avg"]), "max": stats["wait_max"]},
        "by_task_type": types,
        "slowest_task_types": sorted(
            types, key=lambda t: t["avg_execution_time_ms"] or 0, reverse=True
        )[:5],
        "costliest_task_types": sorted(types, key=lambda t: t["cost_usd"], reverse=True)[:5],
    }


# --- workers ----------------------------------------------------------------------------------
def worker_offline_cutoff(now: datetime | None = None) -> datetime:
    return (now or timezone.now()) - timedelta(seconds=settings.WORKER_OFFLINE_AFTER_SECONDS)


def workers_online(now: datetime | None = None) -> QuerySet:
    return Worker.objects.filter(
        stopped_at__isnull=True, last_heartbeat_at__gte=worker_offline_cutoff(now)
    )


def worker_is_online(worker: Worker, now: datetime | None = None) -> bool:
    return worker.stopped_at is None and worker.last_heartbeat_at >= worker_offline_cutoff(now)


def workers_overview(*, now: datetime | None = None) -> dict:
    now = now or timezone.now()
    cutoff = worker_offline_cutoff(now)
    online = Q(stopped_at__isnull=True, last_heartbeat_at__gte=cutoff)
    counts = Worker.objects.aggregate(
        total=Count("id"),
        online=Count("id", filter=online),
        concurrency=Sum("concurrency", filter=online),
        active_tasks=Sum("active_tasks", filter=online),
        processed=Sum("processed"),
        rss_mb=Sum("rss_mb", filter=online),
    )
    per_queue: dict[str, dict] = {}
    for w in workers_online(now).only("hostname", "queues", "concurrency"):
        for queue in w.queues:
            entry = per_queue.setdefault(queue, {"workers": 0, "concurrency": 0, "hostnames": []})
            entry["workers"] += 1
            entry["concurrency"] += w.concurrency
            entry["hostnames"].append(w.hostname)
    return {
        "generated_at": now,
        "offline_after_seconds": settings.WORKER_OFFLINE_AFTER_SECONDS,
        "workers": {
            "total": counts["total"],
            "online": counts["online"],
            "offline": counts["total"] - counts["online"],
        },
        "concurrency": counts["concurrency"] or 0,
        "active_tasks": counts["active_tasks"] or 0,
        "processed": counts["processed"] or 0,
        "rss_mb": _round(counts["rss_mb"]) or 0.0,
        "queues": per_queue,
    }


# --- alert rule values ----------------------------------------------------------------------
def rule_value(rule: AlertRule, *, now: datetime | None = None) -> float | None:
    """The current value of a rule's metric over its window (None: no data)."""
    now = now or timezone.now()
    since = now - timedelta(minutes=rule.window_minutes)
    tasks = Task.objects.for_brand(rule.brand_id)
    metrics = TaskMetric.objects.for_brand(rule.brand_id).filter(created_at__gte=since)
    if rule.task_type:
        tasks = tasks.filter(task_type=rule.task_type)
        metrics = metrics.filter(task_type=rule.task_type)
    M = AlertRule.Metric
    if rule.metric == M.FAILURE_RATE:
        row = tasks.filter(completed_at__gte=since).aggregate(
            done=Count("id", filter=Q(status__in=["completed", "failed"])),
            failed=Count("id", filter=Q(status="failed")),
        )
        return round(100 * row["failed"] / row["done"], 2) if row["done"] else None
    if rule.metric == M.EXECUTION_TIME_P95:
        return percentiles(metrics, "execution_time_ms", {"p95": 0.95})["p95"]
    if rule.metric == M.MEMORY_PEAK_MB:
        return _round(metrics.aggregate(v=Max("memory_usage_mb"))["v"])
    if rule.metric == M.COST_USD_SUM:
        return _money(metrics.aggregate(v=Sum("cost_usd"))["v"])
    if rule.metric == M.QUEUE_DEPTH:
        return float(tasks.filter(status__in=[Task.Status.PENDING, Task.Status.QUEUED]).count())
    if rule.metric == M.OLDEST_QUEUED_AGE_S:
        oldest = tasks.filter(status=Task.Status.QUEUED).aggregate(v=Min("queued_at"))["v"]
        return round((now - oldest).total_seconds(), 1) if oldest else 0.0
    if rule.metric == M.WORKERS_ONLINE:
        return float(workers_online(now).count())
    raise ValueError(f"unknown metric {rule.metric!r}")


def firing_alerts(*, brands) -> QuerySet:
    return (
        Alert.objects.unscoped()
        .filter(brand__in=brands, status__in=Alert.OPEN)
        .select_related("rule", "brand")
        .order_by("-fired_at")
    )


# A loop is late when its last successful tick is older than this many intervals.
LOOP_STALE_AFTER_INTERVALS = 3


def platform_loops(*, now: datetime | None = None) -> list[dict]:
    """Every platform loop of the beat schedule with its interval, last successful tick and
    status: ``ok``; ``late`` (no successful tick within 3 intervals, or none since the
    platform's first tick that long ago); ``pending`` (not run yet, recently started)."""
    from megahub.logging import is_platform_tick

    now = now or timezone.now()
    rows = {row.task_name: row for row in PlatformLoop.objects.all()}
    started = min((row.first_run_at for row in rows.values()), default=None)
    loops = []
    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        name, interval = entry["task"], float(entry["schedule"])
        if not is_platform_tick(name):
            continue
        row = rows.get(name)
        last = row.last_run_at if row else None
        allowance = timedelta(seconds=LOOP_STALE_AFTER_INTERVALS * interval)
        since = last or started
        if since is None or (last is None and now - since <= allowance):
            status = "pending"
        else:
            status = "ok" if now - since <= allowance else "late"
        loops.append(
            {
                "task": name,
                "interval_s": interval,
                "status": status,
                "last_run_at": last.isoformat() if last else None,
                "age_s": round((now - last).total_seconds(), 1) if last else None,
                "last_duration_ms": row.last_duration_ms if row else None,
                "last_failed_at": row.last_failed_at.isoformat()
                if row and row.last_failed_at
                else None,
            }
        )
    return loops


def task_attempt_metrics(*, task: Task) -> tuple[list[TaskMetric], dict]:
    """A task's metrics, one row per attempt, and their cost totals (USD; None when no attempt
    was measured): the admin task page."""
    rows = list(task.metrics.order_by("attempt", "id"))
    totals = task.metrics.aggregate(
        cpu=Sum("cpu_cost_usd"), reported=Sum("reported_cost_usd"), total=Sum("cost_usd")
    )
    return rows, totals


# --- The operations page (/dashboard/) ------------------------------------------------------

DASHBOARD_QUEUE_STATUSES = ("pending", "queued", "running", "retrying")


def due_queue_depths(*, tasks: QuerySet[Task], now: datetime) -> dict[str, dict[str, int]]:
    """Work waiting or running per queue and status, counting only what is due: a pending or
    retrying task whose ``available_at``/``scheduled_for`` is still ahead is not queue depth."""
    not_yet = Q(status__in=["pending", "retrying"]) & (
        Q(available_at__gt=now) | Q(scheduled_for__gt=now)
    )
    depths: dict[str, dict[str, int]] = {}
    for row in (
        tasks.filter(status__in=DASHBOARD_QUEUE_STATUSES)
        .exclude(not_yet)
        .values("queue", "status")
        .annotate(n=Count("id"))
        .order_by()
    ):
        depths.setdefault(row["queue"], {})[row["status"]] = row["n"]
    return depths


def recent_failures(
    *, tasks: QuerySet[Task], now: datetime, hours: int = 24, per_type: int = 3, limit: int = 20
) -> list[dict]:
    """Failed tasks of the last ``hours`` grouped by task type, most failures first: count,
    latest failure time and error message, and the latest ``per_type`` failing tasks."""
    failed = tasks.filter(status="failed", completed_at__gte=now - timedelta(hours=hours))
    groups = []
    for row in (
        failed.values("task_type")
        .annotate(n=Count("id"), latest_at=Max("completed_at"))
        .order_by("-n", "task_type")[:limit]
    ):
        latest = list(
            failed.filter(task_type=row["task_type"])
            .select_related("brand")
            .only("task_id", "task_type", "error_message", "completed_at", "brand__name")
            .order_by("-completed_at", "-pk")[:per_type]
        )
        groups.append(
            {
                "task_type": row["task_type"],
                "count": row["n"],
                "latest_at": row["latest_at"],
                "latest_error": (latest[0].error_message or "") if latest else "",
                "tasks": latest,
            }
        )
    return groups

"""GET /metrics: Prometheus text exposition, computed at scrape time from PostgreSQL and the
broker, so every web process answers the same numbers whatever the number of web and worker
processes (nothing is counted in process memory).

Protection: ``Authorization: Bearer <METRICS_TOKEN>``. With no token configured the endpoint
answers 403 unless ``METRICS_ALLOW_ANONYMOUS=1`` (a scrape network you trust).
"""

from __future__ import annotations

import hmac
import time

from django.conf import settings
from django.db.models import Count, Min, Q, Sum
from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_GET

from megahub.errors import error_body
from task_core.models import Task
from task_core.selectors import broker_queue_stats
from task_monitoring import selectors
from task_monitoring.models import Alert, TaskMetric, Worker

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


def _escape(value) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _number(value) -> str:
    if value is None:
        return "NaN"
    return repr(float(value)) if isinstance(value, float) else str(value)


class _Exposition:
    def __init__(self):
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value, **labels) -> None:
        self.lines.append(f"{name}{_labels(**labels)} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _authorised(request) -> tuple[bool, int, str]:
    token = settings.METRICS_TOKEN
    if not token:
        if settings.METRICS_ALLOW_ANONYMOUS:
            return True, 200, ""
        return False, 403, "METRICS_DISABLED"
    header = request.headers.get("Authorization", "")
    given = header[7:].strip() if header.lower().startswith("bearer ") else ""
    if given and hmac.compare_digest(given.encode(), token.encode()):
        return True, 200, ""
    return False, 401, "METRICS_TOKEN_INVALID"


def render() -> str:
    started = time.monotonic()
    now = timezone.now()
    out = _Exposition()

    out.family("megahub_tasks", "gauge", "Tasks by brand, task type and status.")
    rows = (
        Task.objects.unscoped()
        .values("brand__slug", "task_type", "status")
        .annotate(n=Count("id"))
        .order_by("brand__slug", "task_type", "status")
    )
    for row in rows:
        out.sample("megahub_tasks", row["n"], brand=row["brand__slug"],
                   task_type=row["task_type"], status=row["status"])  # fmt: skip

    name = "megahub_task_execution_seconds"
    out.family(name, "histogram", "Execution time of attempts (wall clock), by task type.")
    buckets = {
        f"b{i}": Count("id", filter=Q(execution_time_ms__lte=round(b * 1000)))
        for i, b in enumerate(BUCKETS_S)
    }
    hist = (
        TaskMetric.objects.unscoped()
        .values("task_type")
        .annotate(n=Count("id"), total_ms=Sum("execution_time_ms"), **buckets)
        .order_by("task_type")
    )
    for row in hist:
        for i, bound in enumerate(BUCKETS_S):
            out.sample(f"{name}_bucket", row[f"b{i}"], task_type=row["task_type"], le=f"{bound:g}")
        out.sample(f"{name}_bucket", row["n"], task_type=row["task_type"], le="+Inf")
        out.sample(f"{name}_sum", (row["total_ms"] or 0) / 1000, task_type=row["task_type"])
        out.sample(f"{name}_count", row["n"], task_type=row["task_type"])

    queued = {
        row["queue"]: row
        for row in Task.objects.unscoped()
        .filter(status=Task.Status.QUEUED)
        .values("queue")
        .annotate(n=Count("id"), oldest=Min("queued_at"))
        .order_by()
    }
    queues = sorted(set(settings.MEGAHUB_QUEUES) | set(queued))
    out.family("megahub_tasks_queued", "gauge", "Tasks in status queued, by queue (database).")
    for queue in queues:
        out.sample("megahub_tasks_queued", queued.get(queue, {}).get("n", 0), queue=queue)
    out.family("megahub_oldest_queued_age_seconds", "gauge", "Age of the oldest queued task.")
    for queue in queues:
        oldest = queued.get(queue, {}).get("oldest")
        age = round((now - oldest).total_seconds(), 3) if oldest else 0
        out.sample("megahub_oldest_queued_age_seconds", age, queue=queue)

    broker = broker_queue_stats([*settings.MEGAHUB_QUEUES, settings.MEGAHUB_SYSTEM_QUEUE])
    out.family("megahub_broker_up", "gauge", "1 if the broker answered the depth query.")
    out.sample("megahub_broker_up", 1 if broker["available"] else 0)
    out.family("megahub_queue_depth", "gauge", "Messages ready in the broker queue.")
    for queue, stats in sorted(broker["queues"].items()):
        out.sample("megahub_queue_depth", stats["depth"], queue=queue)
    out.family("megahub_queue_consumers", "gauge", "Consumers of the broker queue.")
    for queue, stats in sorted(broker["queues"].items()):
        out.sample("megahub_queue_consumers", stats["consumers"], queue=queue)

    out.family("megahub_workers_online", "gauge", "Workers whose heartbeat is recent.")
    out.sample("megahub_workers_online", selectors.workers_online(now).count())
    out.family("megahub_workers_seen", "gauge", "Workers ever seen (online or not).")
    out.sample("megahub_workers_seen", Worker.objects.count())

    out.family("megahub_alerts_firing", "gauge", "Open alerts (firing or acknowledged).")
    alerts = (
        Alert.objects.unscoped()
        .filter(status__in=Alert.OPEN)
        .values("brand__slug", "severity", "status")
        .annotate(n=Count("id"))
        .order_by("brand__slug", "severity", "status")
    )
    for row in alerts:
        out.sample("megahub_alerts_firing", row["n"], brand=row["brand__slug"],
                   severity=row["severity"], status=row["status"])  # fmt: skip

    out.family("megahub_scrape_duration_seconds", "gauge", "Time spent computing this answer.")
    out.sample("megahub_scrape_duration_seconds", round(time.monotonic() - started, 4))
    return out.text()


@require_GET
def metrics_view(request):
    ok, code, error_code = _authorised(request)
    if not ok:
        detail = (
            "Metrics are disabled: set METRICS_TOKEN (or METRICS_ALLOW_ANONYMOUS=1)."
            if code == 403
            else "Send Authorization: Bearer <METRICS_TOKEN>."
        )
        response = JsonResponse(error_body(detail, error_code), status=code)
        if code == 401:
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(render(), content_type=CONTENT_TYPE)

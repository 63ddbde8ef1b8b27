"""The operations page (/dashboard/): staff only, server-rendered, one brand or all the user's."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.db.models import Count, Q
from django.shortcuts import render
from django.utils import timezone

from task_core.models import Brand, BrandLimit, Task
from task_monitoring import charts, health, selectors
from task_monitoring.models import Worker

REFRESH_SECONDS = 15  # the page fetches its panels again this often (no full reload)
QUEUE_COLORS = {"pending": "#a5b4fc", "queued": "#6366f1", "running": "#0ea5e9",
                "retrying": "#f59e0b"}  # fmt: skip


def visible_brands(user):
    brands = Brand.objects.filter(is_active=True)
    return brands if user.is_superuser else brands.filter(memberships__user=user).distinct()


def dashboard_context(*, user, brand_param: str | None) -> dict:
    now = timezone.now()
    brands = list(visible_brands(user).order_by("name"))
    selected = None
    if brand_param and brand_param.isdigit():
        selected = next((b for b in brands if b.pk == int(brand_param)), None)
    scope = [selected] if selected else brands
    tasks = Task.objects.unscoped().filter(brand__in=scope)

    # Queue depths (database view of the selected brands): only work that is due.
    depth_rows: dict[str, dict[str, int]] = {q: {} for q in settings.MEGAHUB_QUEUES}
    depth_rows.update(selectors.due_queue_depths(tasks=tasks, now=now))

    # Last 24 h, hourly: completed and failed.
    start = (now - timedelta(hours=23)).replace(minute=0, second=0, microsecond=0)
    hours = [start + timedelta(hours=i) for i in range(24)]
    agg = tasks.filter(completed_at__gte=start).aggregate(
        **{f"c{i}": Count("id", filter=Q(status="completed", completed_at__gte=h,
                                         completed_at__lt=h + timedelta(hours=1)))
           for i, h in enumerate(hours)},
        **{f"f{i}": Count("id", filter=Q(status="failed", completed_at__gte=h,
                                         completed_at__lt=h + timedelta(hours=1)))
           for i, h in enumerate(hours)},
    )  # fmt: skip
    completed = [(h.strftime("%H:00"), agg[f"c{i}"]) for i, h in enumerate(hours)]
    failed = [(h.strftime("%H:00"), agg[f"f{i}"]) for i, h in enumerate(hours)]

    workers = list(Worker.objects.order_by("hostname")[:100])
    for w in workers:
        w.is_online = selectors.worker_is_online(w, now)
        w.state = "stopped" if w.stopped_at else ("online" if w.is_online else "offline")
    running = list(
        tasks.filter(status=Task.Status.RUNNING)
        .select_related("brand")
        .only("task_id", "task_type", "progress_percentage", "worker", "started_at", "brand__name")
        .order_by("started_at")[:50]
    )
    return {
        "fair_share": fair_share_rows(tasks=tasks, brands=scope),
        "brands": brands,
        "selected": selected,
        "generated_at": now,
        "queue_chart": charts.stacked_bars(
            sorted(depth_rows.items()),
            colors=QUEUE_COLORS,
            title="Queue depths",
            chart_id="chart-queues",
        ),
        "throughput_chart": charts.bar_chart(
            completed,
            title="Completed per hour (24 h)",
            color="#16a34a",
            chart_id="chart-throughput",
        ),
        "failure_chart": charts.bar_chart(
            failed, title="Failed per hour (24 h)", color="#dc2626", chart_id="chart-failures"
        ),
        "completed_24h": sum(v for _, v in completed),
        "failed_24h": sum(v for _, v in failed),
        "workers": workers,
        "workers_online": sum(1 for w in workers if w.is_online),
        "alerts": list(selectors.firing_alerts(brands=scope)[:50]),
        "running": running,
        "recent_failures": selectors.recent_failures(tasks=tasks, now=now),
        "health": health.platform_health(),
        "refresh_s": REFRESH_SECONDS,
    }


def fair_share_rows(*, tasks, brands) -> list[dict]:
    """Per brand, side by side: work waiting in the database (fair share or a limit), released
    to the broker (queued) and running, with the brand's limits. Brands with none omitted."""
    S = Task.Status
    counts = {
        row["brand_id"]: row
        for row in tasks.filter(status__in=[S.PENDING, S.RETRYING, S.QUEUED, S.RUNNING])
        .values("brand_id")
        .annotate(
            waiting=Count(
                "id", filter=Q(waiting_reason__isnull=False, status__in=[S.PENDING, S.RETRYING])
            ),
            released=Count("id", filter=Q(status=S.QUEUED)),
            running=Count("id", filter=Q(status=S.RUNNING)),
        )
        .order_by()
    }
    limits: dict[int, list[BrandLimit]] = {}
    for limit in BrandLimit.objects.unscoped().filter(brand__in=brands):
        limits.setdefault(limit.brand_id, []).append(limit)
    rows = []
    for brand in brands:
        row = counts.get(brand.pk, {"waiting": 0, "released": 0, "running": 0})
        if any(row[k] for k in ("waiting", "released", "running")) or brand.pk in limits:
            rows.append({"brand": brand, **row, "limits": limits.get(brand.pk, [])})
    return rows


@staff_member_required
def dashboard_view(request):
    context = dashboard_context(user=request.user, brand_param=request.GET.get("brand"))
    # ?fragment=1: the panels only, swapped in by the page's own script every REFRESH_SECONDS.
    template = "dashboard/_panels.html" if request.GET.get("fragment") else "dashboard/index.html"
    return render(request, template, context)

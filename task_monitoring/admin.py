"""Admin for metrics, workers, alert rules, alerts and notifications. Staff see only their
brands' rows (workers are the shared fleet); acknowledge/resolve call the same services as the
API."""

from django.contrib import admin
from django.utils.html import format_html, format_html_join

from task_core.admin import TASK_PAGE_PANELS, BrandScopedAdmin, BrandScopedInline, to_the_second
from task_monitoring import selectors, services
from task_monitoring.models import (
    Alert,
    AlertEvaluation,
    AlertNotification,
    AlertRule,
    NotificationAttempt,
    TaskMetric,
    Worker,
)


class ReadOnlyAdmin(BrandScopedAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


def _number(value, digits=0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


@admin.display(description="cost (USD)")
def task_cost(task):
    """The task page's cost: every attempt's cost, split into CPU time and reported costs."""
    _rows, totals = selectors.task_attempt_metrics(task=task)
    if totals["total"] is None:
        return "- (no attempt measured yet)"
    return f"{totals['total']:.6f} (CPU {totals['cpu']:.6f} + reported {totals['reported']:.6f})"


@admin.display(description="metrics (per attempt)")
def task_metrics(task):
    """The task page's metrics: one line per measured attempt."""
    rows, _totals = selectors.task_attempt_metrics(task=task)
    if not rows:
        return "- (no attempt measured yet)"
    head = (
        "attempt", "status", "started", "finished", "wall ms", "CPU ms", "queue wait ms",
        "memory MB", "cost USD", "worker",
    )  # fmt: skip
    body = format_html_join(
        "",
        "<tr>" + "<td>{}</td>" * len(head) + "</tr>",
        (
            (
                m.attempt,
                m.status,
                to_the_second(m.started_at),
                to_the_second(m.finished_at),
                _number(m.execution_time_ms),
                _number(m.cpu_time_ms),
                _number(m.queue_wait_ms),
                _number(m.memory_usage_mb, 1),
                f"{m.cost_usd:.6f}",
                m.worker_hostname,
            )
            for m in rows
        ),
    )
    header = format_html_join("", "<th>{}</th>", ((h,) for h in head))
    return format_html('<table class="task-metrics"><tr>{}</tr>{}</table>', header, body)


# The task page (task_core's admin) shows them next to the task's own fields.
TASK_PAGE_PANELS.extend([task_metrics, task_cost])


@admin.register(TaskMetric)
class TaskMetricAdmin(ReadOnlyAdmin):
    list_display = [
        "task", "attempt", "brand", "task_type", "status", "execution_time_ms", "cpu_time_ms",
        "memory_usage_mb", "queue_wait_ms", "cost_usd", "worker_hostname", "created_at",
    ]  # fmt: skip
    list_filter = ["status", "task_type", "brand"]
    search_fields = ["task__task_id", "task_type", "worker_hostname"]
    date_hierarchy = "created_at"
    list_select_related = ["task", "brand"]
    show_full_result_count = False


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    list_display = [
        "hostname", "state", "pid", "concurrency", "active_tasks", "processed", "rss_mb",
        "last_heartbeat_at",
    ]  # fmt: skip
    search_fields = ["hostname"]
    readonly_fields = [f.name for f in Worker._meta.fields]

    @admin.display(description="state")
    def state(self, worker):
        if worker.stopped_at:
            return "stopped"
        return "online" if selectors.worker_is_online(worker) else "offline"

    def has_add_permission(self, request):
        return False


@admin.register(AlertRule)
class AlertRuleAdmin(BrandScopedAdmin):
    list_display = [
        "name", "brand", "metric", "comparison", "threshold", "window_minutes", "severity",
        "enabled", "last_value", "last_evaluated_at",
    ]  # fmt: skip
    list_filter = ["metric", "severity", "enabled", "brand"]
    search_fields = ["name", "task_type"]
    readonly_fields = ["created_by", "created_at", "updated_at", "last_evaluated_at", "last_value"]


class NotificationInline(BrandScopedInline):
    model = AlertNotification
    extra = 0
    can_delete = False
    fields = ["channel", "event", "target", "status", "attempts", "last_error", "delivered_at"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    service_arg = "alert"
    list_display = ["id", "rule", "brand", "status", "severity", "value", "fired_at", "resolved_at"]
    list_filter = ["status", "severity", "brand"]
    search_fields = ["rule__name", "message"]
    date_hierarchy = "fired_at"
    list_select_related = ["rule", "brand"]
    inlines = [NotificationInline]
    actions = ["acknowledge_alerts", "resolve_alerts"]

    def has_change_permission(self, request, obj=None):
        return obj is None and super(ReadOnlyAdmin, self).has_change_permission(request, obj)

    @admin.action(description="Acknowledge selected firing alerts")
    def acknowledge_alerts(self, request, queryset):
        self.apply_service(request, queryset, services.alert_acknowledge, "Acknowledged")

    @admin.action(description="Resolve selected open alerts")
    def resolve_alerts(self, request, queryset):
        self.apply_service(request, queryset, services.alert_resolve, "Resolved")


class AttemptInline(BrandScopedInline):
    model = NotificationAttempt
    extra = 0
    can_delete = False
    fields = ["number", "ok", "status_code", "error", "duration_ms", "attempted_at"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(AlertNotification)
class AlertNotificationAdmin(ReadOnlyAdmin):
    list_display = ["id", "alert", "brand", "channel", "event", "status", "attempts", "created_at"]
    list_filter = ["status", "channel", "event"]
    search_fields = ["target"]
    inlines = [AttemptInline]


@admin.register(AlertEvaluation)
class AlertEvaluationAdmin(ReadOnlyAdmin):
    list_display = ["id", "rule", "brand", "outcome", "value", "evaluated_at"]
    list_filter = ["outcome"]
    date_hierarchy = "evaluated_at"
    list_select_related = ["rule", "brand"]
    show_full_result_count = False

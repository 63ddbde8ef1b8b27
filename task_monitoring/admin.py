"""Admin for metrics, workers, alert rules, alerts and notifications. Staff see only their
brands' rows (workers are the shared fleet); acknowledge/resolve call the same services as the
API."""

from django.contrib import admin

from task_core.admin import BrandScopedAdmin, BrandScopedInline
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

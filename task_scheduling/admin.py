"""Admin for schedules (next runs, ledger, pause/resume/run-now), calendars and one-off jobs.
Writes go through the same services as the API."""

from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.utils import timezone
from django.utils.html import format_html_join

from megahub.errors import DomainError
from task_core.admin import BrandScopedAdmin, BrandScopedInline
from task_scheduling import cron, services
from task_scheduling.models import (
    BlackoutWindow,
    Calendar,
    OneOffJob,
    PeriodicSchedule,
    ScheduleRun,
)

LEDGER_INLINE_DAYS = 7


class ScheduleForm(forms.ModelForm):
    class Meta:
        model = PeriodicSchedule
        fields = [
            "brand", "name", "description", "task_type", "context_data", "priority",
            "cron_expression", "timezone", "enabled", "calendar", "overlap_policy",
            "catchup_policy", "catchup_window_s", "dst_gap_policy", "start_at", "end_at",
        ]  # fmt: skip

    def clean(self):
        data = super().clean()
        brand = data.get("brand") or getattr(self.instance, "brand", None)
        if brand is None:
            return data
        editable = {k: v for k, v in data.items() if k in services.SCHEDULE_FIELDS}
        try:
            cleaned = services.schedule_clean(brand=brand, data=editable)
        except DomainError as exc:
            for field, errors in (exc.field_errors or {"__all__": [exc.detail]}).items():
                self.add_error(field if field in self.fields else None, errors)
            return data
        data.update(cleaned)
        return data


class ScheduleRunInline(BrandScopedInline):
    model = ScheduleRun
    extra = 0
    can_delete = False
    fields = ["fire_time", "outcome", "dst", "task", "detail", "created_at"]
    readonly_fields = fields
    ordering = ["-fire_time"]
    verbose_name_plural = f"run ledger (last {LEDGER_INLINE_DAYS} days)"

    def get_queryset(self, request):
        since = timezone.now() - timedelta(days=LEDGER_INLINE_DAYS)
        return super().get_queryset(request).filter(fire_time__gte=since).select_related("task")

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(PeriodicSchedule)
class PeriodicScheduleAdmin(BrandScopedAdmin):
    service_arg = "schedule"
    form = ScheduleForm
    list_display = [
        "name", "brand", "task_type", "cron_expression", "timezone", "enabled", "next_run_at",
        "last_run_at", "overlap_policy", "catchup_policy",
    ]  # fmt: skip
    list_filter = ["enabled", "overlap_policy", "catchup_policy", "timezone", "brand"]
    search_fields = ["name", "task_type", "cron_expression"]
    list_select_related = ["brand"]
    readonly_fields = [
        "next_runs", "next_run_at", "last_run_at", "last_task", "created_by", "created_at",
        "updated_at",
    ]  # fmt: skip
    autocomplete_fields = ["calendar"]
    inlines = [ScheduleRunInline]
    actions = ["pause_schedules", "resume_schedules", "run_schedules_now"]

    @admin.display(description="next runs (schedule's time zone)")
    def next_runs(self, schedule):
        if not schedule.pk or not schedule.enabled or schedule.next_run_at is None:
            return "-"
        try:
            tz = cron.timezone_get(schedule.timezone)
            fires = cron.fires_between(
                schedule.cron_expression,
                schedule.timezone,
                schedule.next_run_at,
                schedule.end_at or schedule.next_run_at + timedelta(days=3650),
                limit=5,
                gap_policy=schedule.dst_gap_policy,
            )
        except DomainError as exc:  # a stored row that cannot fire
            return exc.detail
        return format_html_join(
            "",
            "<div>{} {}</div>",
            ((f.at.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z"), f.dst or "") for f in fires),
        )

    def save_model(self, request, obj, form, change):
        fields = {k: form.cleaned_data[k] for k in services.SCHEDULE_FIELDS if k in form.fields}
        if change:
            saved = services.schedule_update(schedule=obj, user=request.user, **fields)
        else:
            brand = form.cleaned_data["brand"]
            saved = services.schedule_create(brand=brand, user=request.user, **fields)
        obj.pk, obj.next_run_at = saved.pk, saved.next_run_at

    @admin.action(description="Pause selected schedules")
    def pause_schedules(self, request, queryset):
        self.apply_service(request, queryset, services.schedule_pause, "Paused")

    @admin.action(description="Resume selected schedules")
    def resume_schedules(self, request, queryset):
        self.apply_service(request, queryset, services.schedule_resume, "Resumed")

    @admin.action(description="Run selected schedules now")
    def run_schedules_now(self, request, queryset):
        self.apply_service(request, queryset, services.schedule_run_now, "Ran")


@admin.register(ScheduleRun)
class ScheduleRunAdmin(BrandScopedAdmin):
    list_display = ["fire_time", "schedule", "brand", "outcome", "dst", "task", "created_at"]
    list_filter = ["outcome", "dst", "brand"]
    search_fields = ["schedule__name", "task__task_id"]
    date_hierarchy = "fire_time"
    list_select_related = ["schedule", "brand", "task"]
    show_full_result_count = False
    readonly_fields = [f.name for f in ScheduleRun._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class BlackoutWindowInline(BrandScopedInline):
    model = BlackoutWindow
    extra = 1
    fields = ["starts_at", "ends_at", "reason"]


@admin.register(Calendar)
class CalendarAdmin(BrandScopedAdmin):
    list_display = ["name", "brand", "created_at"]
    list_filter = ["brand"]
    search_fields = ["name"]
    inlines = [BlackoutWindowInline]


@admin.register(OneOffJob)
class OneOffJobAdmin(BrandScopedAdmin):
    list_display = ["id", "name", "brand", "task_type", "run_at", "status", "task"]
    list_filter = ["status", "brand"]
    search_fields = ["name", "task_type"]
    list_select_related = ["brand", "task"]
    readonly_fields = [f.name for f in OneOffJob._meta.fields]
    actions = ["cancel_jobs"]

    def has_add_permission(self, request):
        return False  # created through the API (the task is created with it)

    @admin.action(description="Cancel selected jobs")
    def cancel_jobs(self, request, queryset):
        cancelled = 0
        for job in queryset:
            try:
                services.cron_job_cancel(job=job, user=request.user)
                cancelled += 1
            except DomainError as exc:
                self.message_user(request, f"{job}: {exc.detail}", messages.WARNING)
        self.message_user(request, f"Cancelled {cancelled} job(s).", messages.SUCCESS)

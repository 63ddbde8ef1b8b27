"""Admin for persistent jobs and checkpoints: progress, checkpoint timeline, resume/pause."""

from django.contrib import admin
from django.utils.html import format_html

from task_core.admin import BrandScopedAdmin, BrandScopedInline
from task_persistence import services
from task_persistence.models import Checkpoint, PersistentJob


class CheckpointInline(BrandScopedInline):
    model = Checkpoint
    extra = 0
    can_delete = False
    fields = ["sequence", "items_processed", "size_bytes", "attempt", "created_at", "state"]
    readonly_fields = fields
    ordering = ["-sequence"]

    def has_add_permission(self, request, obj=None):
        return False


class JobTaskTypeFilter(admin.SimpleListFilter):
    """The task types of the jobs this admin user may see (not every brand's types)."""

    title = "task type"
    parameter_name = "task_type"

    def lookups(self, request, model_admin):
        jobs = model_admin.get_queryset(request)
        types = jobs.order_by("task__task_type").values_list("task__task_type", flat=True)
        return [(name, name) for name in types.distinct()]

    def queryset(self, request, queryset):
        return queryset.filter(task__task_type=self.value()) if self.value() else queryset


@admin.register(PersistentJob)
class PersistentJobAdmin(BrandScopedAdmin):
    service_arg = "job"
    list_display = [
        "id", "task", "brand", "task_type", "status", "progress_bar", "processed",
        "resume_count", "auto_resume_count", "last_checkpoint",
    ]  # fmt: skip
    list_filter = ["task__status", JobTaskTypeFilter, "brand"]
    search_fields = ["task__task_id", "task__task_type", "task__description"]
    date_hierarchy = "created_at"
    list_select_related = ["task", "brand"]
    show_full_result_count = False
    inlines = [CheckpointInline]
    actions = ["resume_jobs", "pause_jobs", "cancel_jobs"]
    readonly_fields = [
        "brand", "task", "total_items", "processed", "checkpoint_every_items",
        "checkpoint_every_seconds", "auto_resume_max", "auto_resume_count", "resume_count",
        "last_checkpoint", "initial_state", "pause_requested",
        "handback_requested", "created_at", "updated_at",
    ]  # fmt: skip

    def get_queryset(self, request):
        return super().get_queryset(request).with_position()

    def has_add_permission(self, request):
        return False  # jobs are created with their task (API, commands)

    @admin.display(description="processed / total", ordering="processed_items")
    def processed(self, job):
        return f"{job.processed_items} / {job.total_items if job.total_items is not None else '?'}"

    @admin.display(description="last checkpoint", ordering="last_checkpoint_at")
    def last_checkpoint(self, job):
        if not job.last_sequence:
            return "-"
        return f"#{job.last_sequence} at {job.last_checkpoint_at:%Y-%m-%d %H:%M:%S}"

    @admin.display(description="task type", ordering="task__task_type")
    def task_type(self, job):
        return job.task.task_type

    @admin.display(description="status", ordering="task__status")
    def status(self, job):
        return job.task.status

    @admin.display(description="progress")
    def progress_bar(self, job):
        percent = job.progress_percentage
        return format_html(
            '<progress value="{}" max="100" title="{}%"></progress> {}%', percent, percent, percent
        )

    @admin.action(description="Resume selected jobs from their last checkpoint")
    def resume_jobs(self, request, queryset):
        self.apply_service(request, queryset, services.job_resume, "Resumed")

    @admin.action(description="Pause selected jobs at their next checkpoint")
    def pause_jobs(self, request, queryset):
        self.apply_service(request, queryset, services.job_pause, "Pause requested for")

    @admin.action(description="Cancel selected jobs")
    def cancel_jobs(self, request, queryset):
        self.apply_service(request, queryset, services.job_cancel, "Cancelled")


@admin.register(Checkpoint)
class CheckpointAdmin(BrandScopedAdmin):
    list_display = ["id", "job", "brand", "sequence", "items_processed", "size_bytes", "created_at"]
    list_filter = ["brand"]
    search_fields = ["job__task__task_id"]
    list_select_related = ["job", "brand"]
    show_full_result_count = False
    readonly_fields = [
        "job", "brand", "sequence", "items_processed", "state", "size_bytes", "attempt",
        "created_at",
    ]  # fmt: skip

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

"""Admin for brands, memberships and tasks. Staff see only their brands; superusers see all."""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import get_fields_from_path
from django.utils import timezone
from django.utils.html import format_html

from megahub.errors import DomainError
from megahub.webhooks import RESPONSE_EXCERPT_BYTES
from task_core import (
    admin_accounts,  # noqa: F401  (users, groups, tokens: superusers only)
    limits,
    services,
)
from task_core.models import (
    Brand,
    BrandEvent,
    BrandLimit,
    BrandMembership,
    Task,
    TaskEvent,
    Webhook,
    WebhookDelivery,
)


class MemberBrandListFilter(admin.RelatedFieldListFilter):
    """The sidebar's brand filter: a staff user is offered only the brands they belong to."""

    def field_choices(self, field, request, model_admin):
        if request.user.is_superuser:
            return super().field_choices(field, request, model_admin)
        ordering = self.field_admin_ordering(field, request, model_admin)
        return field.get_choices(
            include_blank=False,
            ordering=ordering,
            limit_choices_to={"memberships__user": request.user},
        )


class BrandScopedAdmin(admin.ModelAdmin):
    """Limits staff users to the brands they are members of: rows, brand filters, and the
    choices of every brand (or brand-owned) foreign key in forms."""

    service_arg = "task"  # keyword under which apply_service passes each object

    def get_list_filter(self, request):
        return [
            (entry, MemberBrandListFilter) if _is_brand_path(self.model, entry) else entry
            for entry in super().get_list_filter(request)
        ]

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if field is not None:
            field.queryset = admin_scope(field.queryset, request.user)
        return field

    def apply_service(self, request, queryset, service, verb: str) -> None:
        """An admin action: call ``service(<service_arg>=obj, user=...)`` for each selected row
        and report what was done and what the service refused (and why)."""
        done, refused = 0, []
        for obj in queryset:
            try:
                service(**{self.service_arg: obj}, user=request.user)
                done += 1
            except DomainError as exc:
                refused.append(f"{obj}: {exc.detail}")
        plural = self.model._meta.verbose_name_plural
        if done:
            self.message_user(request, f"{verb} {done} {plural}.", messages.SUCCESS)
        if refused:
            self.message_user(request, "Refused: " + "; ".join(refused[:20]), messages.WARNING)

    def get_queryset(self, request):
        return admin_scope(super().get_queryset(request), request.user)


def _is_brand_path(model, entry) -> bool:
    if not isinstance(entry, str):
        return False
    return get_fields_from_path(model, entry)[-1].related_model is Brand


def admin_scope(queryset, user):
    """The admin's one scoping point: superusers read every brand, staff the brands they are
    members of (and the rows of those brands)."""
    if hasattr(queryset, "unscoped"):
        queryset = queryset.unscoped()  # scoped right below, unless the user is a superuser
    return queryset if user.is_superuser else member_brand_queryset(queryset, user)


def member_brand_queryset(queryset, user):
    """Brands the user is a member of, or rows belonging to them (other models: unchanged)."""
    model = queryset.model
    if model is Brand:
        return queryset.filter(memberships__user=user)
    if any(f.name == "brand" and f.related_model is Brand for f in model._meta.get_fields()):
        return queryset.filter(brand__memberships__user=user)
    return queryset


class BrandScopedInline(admin.TabularInline):
    """Rows of the object on the page, which its admin read through its scoped queryset."""

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        return qs.unscoped() if hasattr(qs, "unscoped") else qs


class MembershipInline(BrandScopedInline):
    model = BrandMembership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Brand)
class BrandAdmin(BrandScopedAdmin):
    list_display = ["id", "name", "slug", "is_active", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]


@admin.register(BrandMembership)
class BrandMembershipAdmin(BrandScopedAdmin):
    list_display = ["user", "brand", "role", "created_at"]
    list_filter = ["role", "brand"]
    search_fields = ["user__username", "brand__name"]
    autocomplete_fields = ["user", "brand"]


def to_the_second(value) -> str:
    """A timestamp as the admin shows it on timelines: local time, to the second."""
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _seconds_field(name: str, label: str):
    @admin.display(description=label)
    def show(obj):
        return to_the_second(getattr(obj, name))

    show.__name__ = f"{name}_to_the_second"
    return show


# Read-only panels other apps add to the task page (task_monitoring: metrics and cost):
# callables taking the task, as ModelAdmin.readonly_fields accepts them.
TASK_PAGE_PANELS: list = []


class TaskEventInline(BrandScopedInline):
    model = TaskEvent
    extra = 0
    can_delete = False
    fields = ["time", "kind", "from_status", "to_status", "attempt", "actor", "message"]
    readonly_fields = fields
    ordering = ["id"]
    verbose_name_plural = "timeline"

    @admin.display(description="time")
    def time(self, event):
        return to_the_second(event.created_at)

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Task)
class TaskAdmin(BrandScopedAdmin):
    list_display = [
        "task_id", "brand", "task_type", "status", "priority", "progress_bar", "attempts",
        "created_at", "completed_at",
    ]  # fmt: skip
    list_filter = ["status", "priority", "task_type", "queue", "brand"]
    search_fields = ["task_id", "task_type", "description"]
    date_hierarchy = "created_at"
    list_select_related = ["brand"]
    show_full_result_count = False  # no COUNT(*) over millions of rows
    inlines = [TaskEventInline]
    actions = ["retry_tasks", "cancel_tasks"]
    readonly_fields = [
        "task_id", "brand", "created_by", "task_type", "queue", "status", "priority",
        "description", "context_data", "result_data", "error_message", "progress_percentage",
        "attempts", "max_retries", "idempotency_key", "scheduled_for", "available_at",
        "cancel_requested", "waiting_reason", "worker",
        *(_seconds_field(name, label) for name, label in [
            ("created_at", "created at"), ("updated_at", "updated at"), ("queued_at", "queued at"),
            ("started_at", "started at"), ("completed_at", "completed at"),
            ("heartbeat_at", "heartbeat at"),
        ]),
    ]  # fmt: skip

    def get_readonly_fields(self, request, obj=None):
        return [*super().get_readonly_fields(request, obj), *TASK_PAGE_PANELS]

    def has_add_permission(self, request):
        return False  # tasks are created through the API, commands or schedules

    @admin.display(description="progress")
    def progress_bar(self, task):
        return format_html(
            '<progress value="{}" max="100" title="{}%"></progress>',
            task.progress_percentage,
            task.progress_percentage,
        )

    @admin.action(description="Retry selected failed/cancelled tasks")
    def retry_tasks(self, request, queryset):
        self.apply_service(request, queryset, services.task_retry, "Retried")

    @admin.action(description="Cancel selected tasks")
    def cancel_tasks(self, request, queryset):
        self.apply_service(request, queryset, services.task_cancel, "Cancelled")


@admin.register(TaskEvent)
class TaskEventAdmin(BrandScopedAdmin):
    """The timeline, which is also the outbox of lifecycle events (see `published_at`)."""

    list_display = ["id", "task", "brand", "kind", "to_status", "attempt", "actor", "created_at",
                    "published_at"]  # fmt: skip
    list_filter = ["kind", ("published_at", admin.EmptyFieldListFilter), "brand"]
    search_fields = ["task__task_id", "actor", "message"]
    list_select_related = ["task", "brand"]
    show_full_result_count = False
    readonly_fields = [f.name for f in TaskEvent._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(BrandEvent)
class BrandEventAdmin(BrandScopedAdmin):
    """A brand's business events (POST /events/...), read-only; the outbox row says whether it
    was relayed."""

    list_display = ["id", "brand", "solution", "model", "action", "event_uid", "created_at"]
    list_filter = ["solution", "brand"]
    search_fields = ["=event_uid", "solution", "model", "action"]
    list_select_related = ["brand"]
    show_full_result_count = False
    readonly_fields = [f.name for f in BrandEvent._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class WebhookDeliveryInline(BrandScopedInline):
    model = WebhookDelivery
    extra = 0
    can_delete = False
    fields = ["created_at", "event_name", "status", "attempts", "last_status_code", "last_error",
              "next_attempt_at", "delivered_at"]  # fmt: skip
    readonly_fields = fields
    ordering = ["-id"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Webhook)
class WebhookAdmin(BrandScopedAdmin):
    list_display = ["id", "brand", "url", "is_active", "consecutive_failures", "disabled_reason",
                    "created_at"]  # fmt: skip
    list_filter = ["is_active", "brand"]
    search_fields = ["url", "description"]
    readonly_fields = ["secret", "consecutive_failures", "disabled_reason", "created_at",
                       "updated_at"]  # fmt: skip
    inlines = [WebhookDeliveryInline]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(BrandScopedAdmin):
    list_display = ["id", "webhook", "event_name", "status", "attempts", "last_status_code",
                    "created_at", "delivered_at"]  # fmt: skip
    list_filter = ["status", "event_name", "brand"]
    list_select_related = ["webhook"]
    show_full_result_count = False
    exclude = ["last_response"]  # shown capped, like the API (rows older than the cap)
    readonly_fields = [
        *(f.name for f in WebhookDelivery._meta.fields if f.name != "last_response"),
        "last_response_excerpt",
    ]

    @admin.display(description="last response (excerpt)")
    def last_response_excerpt(self, delivery):
        return delivery.last_response[:RESPONSE_EXCERPT_BYTES]

    def has_add_permission(self, request):
        return False


class BrandLimitForm(forms.ModelForm):
    """The model's validators hold the bounds; the limits service, the other rules."""

    class Meta:
        model = BrandLimit
        fields = ["brand", "task_type", "max_running", "rate_per_minute", "weight"]

    def clean(self):
        data = super().clean()
        rules = limits.brand_limit_rule_errors(
            task_type=data.get("task_type") or "", weight=data.get("weight")
        )
        for name, message in rules.items():
            self.add_error(name, message)
        return data


@admin.register(BrandLimit)
class BrandLimitAdmin(BrandScopedAdmin):
    """Fair share and per-brand limits (BrandLimitForm)."""

    form = BrandLimitForm

    list_display = ["brand", "task_type_or_all", "max_running", "rate_per_minute", "weight",
                    "updated_at"]  # fmt: skip
    list_filter = ["brand"]
    search_fields = ["task_type", "brand__name"]
    fields = ["brand", "task_type", "max_running", "rate_per_minute", "weight"]

    @admin.display(description="task type", ordering="task_type")
    def task_type_or_all(self, limit):
        return limit.task_type or "(all types)"

"""Tenancy (Brand, BrandMembership), the task hub (Task, TaskEvent) and brand events."""

import secrets
import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from megahub.webhooks import new_signing_secret

# Brand and BrandMembership are defined with the rest of tenancy and belong to this app.
from task_core.tenancy import Brand, BrandMembership, BrandScopedManager  # noqa: F401


def new_task_id() -> str:
    return f"task_{secrets.token_hex(6)}"


class Task(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"  # committed, not yet confirmed on the broker
        QUEUED = "queued", "Queued"  # published to the broker
        RUNNING = "running", "Running"
        RETRYING = "retrying", "Retrying"  # waiting for its next attempt (backoff)
        PAUSED = "paused", "Paused"
        INTERRUPTED = "interrupted", "Interrupted"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    TERMINAL = (Status.COMPLETED, Status.FAILED, Status.CANCELLED)

    class WaitingReason(models.TextChoices):
        """Why a due pending/retrying task is held in the database instead of the broker."""

        BRAND_WINDOW = "brand_window", "The brand's window of broker messages is full"
        BRAND_CONCURRENCY = "brand_concurrency", "The brand's max_running is reached"
        BRAND_RATE = "brand_rate", "The brand's rate_per_minute is used up"
        TYPE_CONCURRENCY = "type_concurrency", "The brand's max_running for this type is reached"
        TYPE_RATE = "type_rate", "The brand's rate_per_minute for this type is used up"

    class Priority(models.TextChoices):
        LOW = "low", "Low"
        NORMAL = "normal", "Normal"
        HIGH = "high", "High"
        CRITICAL = "critical", "Critical"

    # RabbitMQ message priority (queues declare x-max-priority=10; higher runs first).
    BROKER_PRIORITY = {"low": 1, "normal": 4, "high": 7, "critical": 9}

    task_id = models.CharField(max_length=32, unique=True, default=new_task_id, editable=False)
    # No index of its own: every index below that starts with brand serves its lookups (a
    # second one would only cost the worker's two writes per task an index entry each).
    brand = models.ForeignKey(Brand, on_delete=models.PROTECT, related_name="tasks", db_index=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    task_type = models.CharField(max_length=100)
    queue = models.CharField(max_length=64, default="default")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    priority = models.CharField(max_length=10, choices=Priority.choices, default=Priority.NORMAL)
    description = models.TextField(blank=True, default="")
    context_data = models.JSONField(default=dict, blank=True)
    result_data = models.JSONField(null=True, blank=True)
    error_message = models.TextField(null=True, blank=True)  # noqa: DJ001 - the contract says null
    progress_percentage = models.PositiveSmallIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0)
    max_retries = models.PositiveIntegerField(default=0)
    # NULL, not "", so the partial unique constraint ignores tasks without a key.
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    scheduled_for = models.DateTimeField(null=True, blank=True)
    # When the release loop should (re)publish a pending/retrying task: the scheduled time, the
    # end of a retry backoff, or the end of the grace period of an on-commit publish.
    available_at = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    # Set while fair share or a BrandLimit holds the due task back; cleared when published.
    waiting_reason = models.CharField(  # noqa: DJ001 - null: not waiting
        max_length=32, choices=WaitingReason.choices, null=True, blank=True
    )
    worker = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["brand", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="task_unique_brand_idempotency_key",
            ),
            models.CheckConstraint(
                condition=Q(progress_percentage__lte=100), name="task_progress_lte_100"
            ),
        ]
        indexes = [
            # GET /tasks/ keyset pages: WHERE brand_id = ? ORDER BY id DESC
            models.Index(fields=["brand", "-id"], name="task_brand_id_idx"),
            # GET /tasks/?status=... keyset pages, and queue-stats counts by status
            models.Index(fields=["brand", "status", "-id"], name="task_brand_status_id_idx"),
            # queue-stats throughput: WHERE brand_id = ? AND completed_at >= now - 1h
            models.Index(fields=["brand", "completed_at"], name="task_brand_completed_idx"),
            # release loop: WHERE status IN (pending, retrying) AND available_at <= now
            models.Index(
                fields=["available_at"],
                condition=Q(status__in=["pending", "retrying"]),
                name="task_release_due_idx",
            ),
            # fair release: WHERE brand_id = ? AND priority = ? AND status IN (pending,
            # retrying) AND available_at <= now ORDER BY available_at (and the brands that have
            # such work, by a skip scan over brand_id)
            models.Index(
                fields=["brand", "priority", "available_at"],
                condition=Q(status__in=["pending", "retrying"]),
                name="task_brand_release_idx",
            ),
            # sweeper: WHERE status = running AND heartbeat_at < now - timeout
            models.Index(
                fields=["heartbeat_at"], condition=Q(status="running"), name="task_running_hb_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.task_id} ({self.task_type}, {self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL


class BrandLimit(models.Model):
    """A brand's limits at release (brand-wide, or for one task type when task_type is set):
    at most ``max_running`` of its tasks queued or running at once, at most ``rate_per_minute``
    published in any 60 s, and its ``weight`` in the fair share (brand-wide row only). Work
    over a limit waits in the database with a waiting_reason; it is never refused."""

    MAX_RUNNING_MAX = 10_000
    RATE_PER_MINUTE_MAX = 1_000_000
    WEIGHT_MAX = 100

    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="limits")
    task_type = models.CharField(max_length=100, blank=True, default="")  # "": every type
    max_running = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(MAX_RUNNING_MAX)]
    )
    rate_per_minute = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(RATE_PER_MINUTE_MAX)],
    )
    weight = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(WEIGHT_MAX)]
    )
    # Publishes of the last minute per epoch second ({"1767000000": 3, ...}): the sliding
    # window of rate_per_minute, written by the release under the brand's lock.
    recent_publishes = models.JSONField(default=dict, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["brand_id", "task_type"]
        constraints = [
            models.UniqueConstraint(fields=["brand", "task_type"], name="brandlimit_unique_type"),
            models.CheckConstraint(
                condition=Q(max_running__isnull=True) | Q(max_running__gte=1),
                name="brandlimit_max_running_gte_1",
            ),
            models.CheckConstraint(
                condition=Q(rate_per_minute__isnull=True) | Q(rate_per_minute__gte=1),
                name="brandlimit_rate_gte_1",
            ),
            models.CheckConstraint(condition=Q(weight__gte=1), name="brandlimit_weight_gte_1"),
        ]

    def __str__(self) -> str:
        return f"{self.brand_id}: {self.task_type or '*'}"


class TaskEvent(models.Model):
    """One entry of a task's timeline, written in the same transaction as the change it tells.

    The table is also the outbox of megahub.events: a brand event (BrandEvent) writes one row
    of kind ``brand_event`` without a task, so both kinds are relayed in one id order."""

    class Kind(models.TextChoices):
        CREATED = "created", "Created"
        QUEUED = "queued", "Queued"
        PUBLISH_FAILED = "publish_failed", "Publish failed"
        STARTED = "started", "Started"
        PROGRESS = "progress", "Progress milestone"
        RETRY_SCHEDULED = "retry_scheduled", "Retry scheduled"
        RETRY_REQUESTED = "retry_requested", "Retry requested"
        CANCEL_REQUESTED = "cancel_requested", "Cancellation requested"
        WORKER_LOST = "worker_lost", "Worker lost"
        TIMED_OUT = "timed_out", "Timed out"
        RESUMED = "resumed", "Resumed"
        PAUSED = "paused", "Paused"
        INTERRUPTED = "interrupted", "Interrupted"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"
        BRAND_EVENT = "brand_event", "Brand event"  # the outbox row of a BrandEvent (no task)

    # Null only for brand events (kind brand_event). Indexed by taskevent_task_id_idx
    # (task, id), which serves every lookup by task (no index of its own).
    task = models.ForeignKey(
        Task,
        on_delete=models.CASCADE,
        related_name="events",
        null=True,
        blank=True,
        db_index=False,
    )
    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=32, choices=Kind.choices)
    from_status = models.CharField(max_length=16, blank=True, default="")
    to_status = models.CharField(max_length=16, blank=True, default="")
    attempt = models.PositiveIntegerField(default=0)
    actor = models.CharField(max_length=255, blank=True, default="")
    message = models.TextField(blank=True, default="")
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # The timeline is also the outbox of lifecycle events: the relay publishes rows in id order
    # to the megahub.events exchange and stamps them here.
    published_at = models.DateTimeField(null=True, blank=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["id"]
        indexes = [
            # GET /tasks/{id}/events/: WHERE task_id = ? ORDER BY id
            models.Index(fields=["task", "id"], name="taskevent_task_id_idx"),
            # event relay: WHERE published_at IS NULL ORDER BY id
            models.Index(
                fields=["id"],
                condition=Q(published_at__isnull=True),
                name="taskevent_unpublished_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.task_id or 'brand'}: {self.kind}"


class BrandEvent(models.Model):
    """A brand's business event (POST /events/<solution>/<model>/<action>/).

    Its outbox row is a TaskEvent of kind ``brand_event`` written in the same transaction, so
    it is relayed to megahub.events in order with the lifecycle events."""

    event_uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="+")
    outbox = models.OneToOneField(TaskEvent, on_delete=models.CASCADE, related_name="brand_event")
    solution = models.CharField(max_length=64)
    model = models.CharField(max_length=64)
    action = models.CharField(max_length=64)
    event_data = models.JSONField(default=dict)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)  # the event_timestamp

    objects = BrandScopedManager()

    class Meta:
        ordering = ["-id"]
        indexes = [
            # GET /events/: WHERE brand_id = ? [AND ...] ORDER BY id DESC
            models.Index(fields=["brand", "id"], name="brandevent_brand_id_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.brand_id}: {self.event_type}"

    @property
    def event_type(self) -> str:
        return f"{self.solution}.{self.model}.{self.action}"


BRAND_EVENT_PREFIX = "brand_event."
# A brand event's solution, model and action (path segments and routing-key words: no dots).
BRAND_EVENT_SEGMENT = r"[a-z0-9_-]{1,64}"


def new_webhook_secret() -> str:
    return new_signing_secret()  # "whsec_" + base64, the Standard Webhooks format


class Webhook(models.Model):
    """A brand's subscription: lifecycle events of the listed kinds are POSTed, signed, to url."""

    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=500)
    # Lifecycle event names or "*" (every lifecycle event); brand events: "brand_event.*" or
    # "brand_event.<solution>.<model>.<action>" with "*" allowed per segment.
    event_types = models.JSONField(default=list)
    description = models.CharField(max_length=200, blank=True, default="")
    secret = models.CharField(max_length=100, default=new_webhook_secret)
    is_active = models.BooleanField(default=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    disabled_reason = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.brand}: {self.url}"

    def wants(self, event_name: str) -> bool:
        """Lifecycle events: listed by name, or "*". Brand events ("brand_event.s.m.a"): by a
        "brand_event.*" entry or a "brand_event.<s>.<m>.<a>" pattern ("*" per segment)."""
        if not event_name.startswith(BRAND_EVENT_PREFIX):
            return "*" in self.event_types or event_name in self.event_types
        segments = event_name.split(".")
        for wanted in self.event_types:
            if wanted == BRAND_EVENT_PREFIX + "*":
                return True
            parts = wanted.split(".")
            if (
                len(parts) == len(segments)
                and parts[0] == segments[0]
                and all(p in ("*", s) for p, s in zip(parts[1:], segments[1:], strict=True))
            ):
                return True
        return False


class WebhookDelivery(models.Model):
    """One event to one webhook, with every attempt's outcome."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"  # waiting for its (next) attempt
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"  # attempts exhausted, or the webhook was disabled

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="+")
    event = models.ForeignKey(TaskEvent, on_delete=models.CASCADE, related_name="+")
    event_name = models.CharField(max_length=255)  # brand events: brand_event.<s>.<m>.<a>
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    last_response = models.TextField(blank=True, default="")
    last_duration_ms = models.PositiveIntegerField(null=True, blank=True)
    history = models.JSONField(default=list)  # one entry per attempt
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    objects = BrandScopedManager()

    class Meta:
        verbose_name_plural = "webhook deliveries"
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["webhook", "event"], name="delivery_unique_event")
        ]
        indexes = [
            # delivery loop: WHERE status = pending AND next_attempt_at <= now
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status="pending"),
                name="delivery_due_idx",
            ),
            # GET /tasks/webhooks/{id}/deliveries/: WHERE webhook_id = ? ORDER BY id DESC
            models.Index(fields=["webhook", "-id"], name="delivery_webhook_id_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event_name} -> {self.webhook_id} ({self.status})"

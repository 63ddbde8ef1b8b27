"""Brand schedules (cron in their own time zone), their run ledger, calendars of blackout
windows, and one-off scheduled jobs."""

from django.conf import settings
from django.db import models
from django.db.models import Q

from task_core.models import Brand, Task
from task_core.tenancy import BrandScopedManager


class Calendar(models.Model):
    """A brand's blackout windows (holidays, maintenance): attached schedules do not fire
    inside them."""

    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["brand", "name"], name="calendar_unique_brand_name")
        ]

    def __str__(self) -> str:
        return self.name


class BlackoutWindow(models.Model):
    calendar = models.ForeignKey(Calendar, on_delete=models.CASCADE, related_name="windows")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    reason = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        ordering = ["starts_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(ends_at__gt=models.F("starts_at")), name="blackout_ends_after_start"
            )
        ]
        indexes = [
            # dispatcher / upcoming view: WHERE calendar_id IN (...) AND ends_at > ?
            models.Index(fields=["calendar", "ends_at"], name="blackout_calendar_end_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.calendar}: {self.starts_at:%Y-%m-%d %H:%M} - {self.ends_at:%Y-%m-%d %H:%M}"

    def covers(self, instant) -> bool:
        return self.starts_at <= instant < self.ends_at


class PeriodicSchedule(models.Model):
    class Overlap(models.TextChoices):
        SKIP = "skip", "Skip while the previous run is active"
        ALLOW = "allow", "Allow concurrent runs"
        QUEUE_ONE = "queue_one", "Queue at most one run behind the active one"

    class CatchUp(models.TextChoices):
        SKIP = "skip", "Skip missed runs"
        RUN_ONCE = "run_once", "Run once for all missed runs"
        RUN_ALL = "run_all", "Run every missed run within the catch-up window"

    class DstGap(models.TextChoices):
        SHIFT = "shift", "Run at the first valid instant after the skipped time"
        SKIP = "skip", "Skip runs whose local time does not exist"

    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    task_type = models.CharField(max_length=100)
    context_data = models.JSONField(default=dict, blank=True)
    priority = models.CharField(
        max_length=10, choices=Task.Priority.choices, default=Task.Priority.NORMAL
    )
    cron_expression = models.CharField(max_length=200)
    timezone = models.CharField(max_length=64, default="UTC")
    enabled = models.BooleanField(default=True)  # False = paused
    calendar = models.ForeignKey(
        Calendar, null=True, blank=True, on_delete=models.SET_NULL, related_name="schedules"
    )
    overlap_policy = models.CharField(max_length=16, choices=Overlap.choices, default=Overlap.SKIP)
    catchup_policy = models.CharField(
        max_length=16, choices=CatchUp.choices, default=CatchUp.RUN_ONCE
    )
    catchup_window_s = models.PositiveIntegerField(default=3600)
    dst_gap_policy = models.CharField(max_length=8, choices=DstGap.choices, default=DstGap.SHIFT)
    start_at = models.DateTimeField(null=True, blank=True)
    end_at = models.DateTimeField(null=True, blank=True)
    # Server-owned: the next fire time the dispatcher waits for (NULL: paused or finished).
    next_run_at = models.DateTimeField(null=True, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_task = models.ForeignKey(
        Task, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["brand", "name"], name="schedule_unique_brand_name"),
            models.CheckConstraint(
                condition=Q(end_at__isnull=True)
                | Q(start_at__isnull=True)
                | Q(end_at__gt=models.F("start_at")),
                name="schedule_end_after_start",
            ),
        ]
        indexes = [
            # dispatcher: WHERE enabled AND next_run_at <= now ORDER BY next_run_at
            models.Index(
                fields=["next_run_at"], condition=Q(enabled=True), name="schedule_due_idx"
            ),
            # GET periodic-tasks/ keyset pages: WHERE brand_id = ? ORDER BY id DESC
            models.Index(fields=["brand", "-id"], name="schedule_brand_id_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.cron_expression} {self.timezone})"

    @property
    def status(self) -> str:
        return "active" if self.enabled else "paused"


class ScheduleRun(models.Model):
    """The run ledger: one row per expected fire time of a schedule (and per run-now).

    UniqueConstraint(schedule, fire_time) is what makes a fire time produce at most one task,
    whatever the number of dispatchers, restarts or clock skew.
    """

    class Outcome(models.TextChoices):
        FIRED = "fired", "Fired"
        CAUGHT_UP = "caught_up", "Caught up after downtime"
        MISSED = "missed", "Missed (downtime)"
        SKIPPED_OVERLAP = "skipped_overlap", "Skipped: previous run still active"
        SKIPPED_BLACKOUT = "skipped_blackout", "Skipped: calendar blackout"
        MANUAL = "manual", "Run now"
        FAILED = "failed", "Not run: the task request is no longer valid"

    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="+")
    schedule = models.ForeignKey(PeriodicSchedule, on_delete=models.CASCADE, related_name="runs")
    fire_time = models.DateTimeField()
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    # The link from a task to the schedule that created it lives here, not in task_core.
    task = models.ForeignKey(
        Task, null=True, blank=True, on_delete=models.SET_NULL, related_name="schedule_runs"
    )
    dst = models.CharField(max_length=8, blank=True, default="")  # "", "gap", "overlap"
    detail = models.CharField(max_length=300, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["-fire_time"]
        constraints = [
            models.UniqueConstraint(
                fields=["schedule", "fire_time"], name="schedulerun_unique_schedule_fire"
            )
        ]
        # GET periodic-tasks/{id}/runs/ (WHERE schedule_id = ? ORDER BY fire_time DESC) uses
        # the unique constraint's index; is_periodic's EXISTS uses the task FK's index.

    def __str__(self) -> str:
        return f"{self.schedule_id} @ {self.fire_time:%Y-%m-%d %H:%M:%S}: {self.outcome}"


class OneOffJob(models.Model):
    """A task type to run once at a given instant (``cron-jobs/``). The task is created at
    once with ``scheduled_for`` and released by the same release loop as every delayed task."""

    class Status(models.TextChoices):
        SCHEDULED = "scheduled", "Scheduled"
        CANCELLED = "cancelled", "Cancelled"

    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=200, blank=True, default="")
    task_type = models.CharField(max_length=100)
    context_data = models.JSONField(default=dict, blank=True)
    priority = models.CharField(
        max_length=10, choices=Task.Priority.choices, default=Task.Priority.NORMAL
    )
    run_at = models.DateTimeField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SCHEDULED)
    task = models.OneToOneField(
        Task, null=True, blank=True, on_delete=models.SET_NULL, related_name="one_off_job"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["-id"]
        indexes = [
            # GET cron-jobs/ keyset pages: WHERE brand_id = ? ORDER BY id DESC
            models.Index(fields=["brand", "-id"], name="oneoffjob_brand_id_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.name or self.task_type} at {self.run_at:%Y-%m-%d %H:%M}"

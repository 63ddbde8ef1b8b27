"""Per-attempt metrics, the worker fleet, alert rules, alerts and their notifications."""

from django.conf import settings
from django.db import models
from django.db.models import Q

from megahub.webhooks import new_signing_secret, validate_signing_secret
from task_core.models import Brand, Task
from task_core.tenancy import BrandScopedManager


class TaskMetric(models.Model):
    """One row per execution attempt, written by the worker after the attempt (see services)."""

    # No index of their own: metric_brand_id_idx (brand, -id) and metric_unique_task_attempt
    # (task, attempt) serve every lookup by brand or task; the worker inserts a row per task.
    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="+", db_index=False)
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="metrics", db_index=False)
    attempt = models.PositiveIntegerField()
    task_type = models.CharField(max_length=100)
    queue = models.CharField(max_length=64, default="default")
    # The attempt's outcome: completed, failed, cancelled, retrying, lost.
    status = models.CharField(max_length=16)
    worker_hostname = models.CharField(max_length=255, blank=True, default="")
    worker_pid = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField()
    execution_time_ms = models.PositiveIntegerField()
    cpu_time_ms = models.PositiveIntegerField()
    # Peak resident memory of the pool process during this attempt (VmHWM after a reset), and
    # how much of it the attempt added over the process's resident size at its start.
    memory_usage_mb = models.FloatField(null=True, blank=True)
    memory_growth_mb = models.FloatField(null=True, blank=True)
    memory_method = models.CharField(max_length=16, blank=True, default="")
    queue_wait_ms = models.PositiveIntegerField(null=True, blank=True)
    cpu_cost_usd = models.DecimalField(max_digits=14, decimal_places=6, default=0)
    reported_cost_usd = models.DecimalField(max_digits=14, decimal_places=6, default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6, default=0)
    costs = models.JSONField(default=list, blank=True)  # what the handler reported, itemised
    created_at = models.DateTimeField(auto_now_add=True)

    objects = BrandScopedManager()

    # What the worker's outcome statement fills from the task row it moves (task_core.sql_parts
    # row_sources: not sent as parameters): the same values metric_build sets, and for the times
    # the statement's own (None), the instant the outcome was written.
    OUTCOME_ROW_FROM_TASK = {
        "task_id": "id",
        "brand_id": "brand_id",
        "attempt": "attempts",
        "task_type": "task_type",
        "queue": "queue",
        "started_at": "started_at",
        "finished_at": None,
        "created_at": None,
    }

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["task", "attempt"], name="metric_unique_task_attempt")
        ]
        indexes = [
            # GET /tasks/monitoring/metrics/ keyset pages: WHERE brand_id = ? ORDER BY id DESC
            models.Index(fields=["brand", "-id"], name="metric_brand_id_idx"),
            # dashboard and alert windows: WHERE brand_id = ? AND created_at >= ?
            models.Index(fields=["brand", "created_at"], name="metric_brand_created_idx"),
            # per-type windows (alert rules with a task_type, dashboard by type)
            models.Index(
                fields=["brand", "task_type", "created_at"], name="metric_brand_type_created_idx"
            ),
            # Prometheus histogram: GROUP BY task_type over the whole table
            models.Index(fields=["task_type"], name="metric_task_type_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.task_id}#{self.attempt} {self.execution_time_ms}ms"


class Worker(models.Model):
    """A Celery worker as last reported by its own heartbeat (see task_monitoring.workers)."""

    hostname = models.CharField(max_length=255, unique=True)
    pid = models.PositiveIntegerField(null=True, blank=True)
    queues = models.JSONField(default=list, blank=True)
    concurrency = models.PositiveIntegerField(default=0)
    pool_pids = models.JSONField(default=list, blank=True)
    active_tasks = models.PositiveIntegerField(default=0)
    processed = models.PositiveBigIntegerField(default=0)
    rss_mb = models.FloatField(null=True, blank=True)
    loadavg = models.JSONField(default=list, blank=True)
    software = models.CharField(max_length=100, blank=True, default="")
    heartbeat_interval_s = models.PositiveIntegerField(default=10)
    started_at = models.DateTimeField(null=True, blank=True)
    last_heartbeat_at = models.DateTimeField()
    stopped_at = models.DateTimeField(null=True, blank=True)  # warm shutdown reported

    class Meta:
        ordering = ["hostname"]
        indexes = [
            # workers online: WHERE last_heartbeat_at >= now - allowance
            models.Index(fields=["last_heartbeat_at"], name="worker_heartbeat_idx"),
        ]

    def __str__(self) -> str:
        return self.hostname


class PlatformLoop(models.Model):
    """One of the platform's periodic loops (a beat entry run on the ``system`` queue) as its
    last tick left it: written by the worker after each tick (task_monitoring.loops), read by
    /health/ready/ to report a loop that has stopped running."""

    task_name = models.CharField(max_length=200, unique=True)
    first_run_at = models.DateTimeField()  # the first tick recorded (success or failure)
    last_run_at = models.DateTimeField(null=True, blank=True)  # the last successful tick
    last_duration_ms = models.PositiveIntegerField(null=True, blank=True)
    last_failed_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["task_name"]

    def __str__(self) -> str:
        return self.task_name


def new_webhook_secret() -> str:
    return new_signing_secret()  # "whsec_" + base64, the Standard Webhooks format


class AlertRule(models.Model):
    class Metric(models.TextChoices):
        FAILURE_RATE = "failure_rate", "Failure rate (%)"
        EXECUTION_TIME_P95 = "execution_time_p95", "Execution time p95 (ms)"
        MEMORY_PEAK_MB = "memory_peak_mb", "Peak memory (MB)"
        COST_USD_SUM = "cost_usd_sum", "Cost sum (USD)"
        QUEUE_DEPTH = "queue_depth", "Queue depth (tasks)"
        OLDEST_QUEUED_AGE_S = "oldest_queued_age_s", "Oldest queued age (s)"
        WORKERS_ONLINE = "workers_online", "Workers online"

    class Comparison(models.TextChoices):
        GT = "gt", ">"
        GTE = "gte", ">="
        LT = "lt", "<"
        LTE = "lte", "<="

    class Severity(models.TextChoices):
        INFO = "info", "Info"
        WARNING = "warning", "Warning"
        CRITICAL = "critical", "Critical"

    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="alert_rules")
    name = models.CharField(max_length=200)
    metric = models.CharField(max_length=32, choices=Metric.choices)
    comparison = models.CharField(max_length=4, choices=Comparison.choices, default="gt")
    threshold = models.FloatField()
    window_minutes = models.PositiveIntegerField(default=15)
    task_type = models.CharField(max_length=100, blank=True, default="")
    severity = models.CharField(max_length=10, choices=Severity.choices, default="warning")
    cooldown_minutes = models.PositiveIntegerField(default=30)
    webhook_url = models.URLField(max_length=500, blank=True, default="")
    webhook_secret = models.CharField(
        max_length=200, default=new_webhook_secret, validators=[validate_signing_secret]
    )
    email_to = models.JSONField(default=list, blank=True)
    enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_evaluated_at = models.DateTimeField(null=True, blank=True)
    last_value = models.FloatField(null=True, blank=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(condition=Q(window_minutes__gte=1), name="rule_window_gte_1")
        ]
        indexes = [
            # the evaluation loop: WHERE enabled ORDER BY id
            models.Index(fields=["enabled", "id"], name="rule_enabled_idx"),
        ]

    def __str__(self) -> str:
        return self.name


class Alert(models.Model):
    """One episode of a rule's condition: firing (maybe acknowledged) until resolved."""

    class Status(models.TextChoices):
        FIRING = "firing", "Firing"
        ACKNOWLEDGED = "acknowledged", "Acknowledged"
        RESOLVED = "resolved", "Resolved"

    OPEN = (Status.FIRING, Status.ACKNOWLEDGED)

    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="+")
    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="alerts")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.FIRING)
    severity = models.CharField(max_length=10, choices=AlertRule.Severity.choices)
    value = models.FloatField(null=True, blank=True)  # the value that fired it
    last_value = models.FloatField(null=True, blank=True)  # the latest evaluated value
    threshold = models.FloatField()
    message = models.TextField(blank=True, default="")
    fired_at = models.DateTimeField(auto_now_add=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolution = models.CharField(max_length=16, blank=True, default="")  # "cleared" | "manual"

    objects = BrandScopedManager()

    class Meta:
        ordering = ["-id"]
        constraints = [
            # one open episode per rule: the evaluation cannot fire twice for one condition
            models.UniqueConstraint(
                fields=["rule"],
                condition=Q(status__in=["firing", "acknowledged"]),
                name="alert_one_open_per_rule",
            )
        ]
        indexes = [
            # GET alerts/?status=firing and the dashboard's firing list
            models.Index(fields=["brand", "status", "-id"], name="alert_brand_status_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.rule} ({self.status})"


class AlertEvaluation(models.Model):
    """Every evaluation of every rule, so an operator can see why a rule did or did not fire."""

    class Outcome(models.TextChoices):
        OK = "ok", "Condition clear"
        BREACHED = "breached", "Condition met, alert already open"
        FIRED = "fired", "Alert fired"
        RESOLVED = "resolved", "Alert resolved"
        COOLDOWN = "cooldown", "Condition met, in cooldown"
        NO_DATA = "no_data", "No data in the window"
        ERROR = "error", "Evaluation error"

    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="+")
    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="evaluations")
    alert = models.ForeignKey(Alert, null=True, blank=True, on_delete=models.SET_NULL)
    value = models.FloatField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    detail = models.TextField(blank=True, default="")
    evaluated_at = models.DateTimeField(auto_now_add=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["-id"]
        indexes = [
            # alert-rules/{id}/evaluations/: WHERE rule_id = ? ORDER BY id DESC
            models.Index(fields=["rule", "-id"], name="evaluation_rule_idx"),
            # pruning: WHERE evaluated_at < cutoff
            models.Index(fields=["evaluated_at"], name="evaluation_at_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.rule_id}: {self.outcome} at {self.evaluated_at:%Y-%m-%d %H:%M:%S}"


class AlertNotification(models.Model):
    """One message about one alert transition to one channel, delivered with retries."""

    class Channel(models.TextChoices):
        WEBHOOK = "webhook", "Webhook"
        EMAIL = "email", "Email"

    class Event(models.TextChoices):
        FIRED = "fired", "Fired"
        RESOLVED = "resolved", "Resolved"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed (gave up)"

    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="+")
    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="notifications")
    channel = models.CharField(max_length=10, choices=Channel.choices)
    event = models.CharField(max_length=10, choices=Event.choices)
    target = models.CharField(max_length=500)
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["-id"]
        indexes = [
            # the delivery loop: WHERE status = pending AND next_attempt_at <= now
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status="pending"),
                name="notification_due_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.channel} {self.event} of alert {self.alert_id} ({self.status})"


class NotificationAttempt(models.Model):
    """One delivery attempt of a notification (HTTP status or error, duration)."""

    notification = models.ForeignKey(
        AlertNotification, on_delete=models.CASCADE, related_name="attempt_log"
    )
    number = models.PositiveIntegerField()
    ok = models.BooleanField(default=False)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    duration_ms = models.PositiveIntegerField(default=0)
    attempted_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.notification_id}: {'ok' if self.ok else 'failed'}"

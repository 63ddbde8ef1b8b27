"""Shapes of the /tasks/monitoring/ API."""

from urllib.parse import urlsplit

from rest_framework import serializers

from megahub.serializers import StrictInputSerializer
from megahub.webhooks import validate_signing_secret, webhook_url_problem
from task_core.registry import get_task_type
from task_monitoring import selectors
from task_monitoring.models import (
    Alert,
    AlertEvaluation,
    AlertNotification,
    AlertRule,
    NotificationAttempt,
    TaskMetric,
    Worker,
)


class MetricSerializer(serializers.ModelSerializer):
    task_id = serializers.CharField(source="task.task_id", read_only=True)
    task = serializers.IntegerField(source="task.pk", read_only=True)
    cost_usd = serializers.FloatField()
    cpu_cost_usd = serializers.FloatField()
    reported_cost_usd = serializers.FloatField()

    class Meta:
        model = TaskMetric
        fields = [
            "id", "task", "task_id", "attempt", "task_type", "queue", "status",
            "worker_hostname", "worker_pid", "started_at", "finished_at", "execution_time_ms",
            "cpu_time_ms", "memory_usage_mb", "memory_growth_mb", "memory_method",
            "queue_wait_ms", "cost_usd", "cpu_cost_usd", "reported_cost_usd", "costs",
            "created_at",
        ]  # fmt: skip
        read_only_fields = fields


class DashboardSerializer(serializers.Serializer):
    window = serializers.CharField()
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    bucket_seconds = serializers.IntegerField()
    totals_by_status = serializers.DictField(child=serializers.IntegerField())
    finished = serializers.DictField(child=serializers.IntegerField())
    success_rate = serializers.FloatField(allow_null=True)
    throughput = serializers.ListField(child=serializers.DictField())
    attempts = serializers.IntegerField()
    execution_time_ms = serializers.DictField()
    memory_mb = serializers.DictField()
    cpu_time_ms = serializers.IntegerField()
    cost_usd = serializers.DictField()
    queue_wait_ms = serializers.DictField()
    by_task_type = serializers.ListField(child=serializers.DictField())
    slowest_task_types = serializers.ListField(child=serializers.DictField())
    costliest_task_types = serializers.ListField(child=serializers.DictField())


class DashboardQuerySerializer(StrictInputSerializer):
    window = serializers.ChoiceField(choices=list(selectors.WINDOWS), default="24h")


class WorkerSerializer(serializers.ModelSerializer):
    online = serializers.SerializerMethodField()
    status = serializers.SerializerMethodField()

    class Meta:
        model = Worker
        fields = [
            "id", "hostname", "status", "online", "pid", "queues", "concurrency", "pool_pids",
            "active_tasks", "processed", "rss_mb", "loadavg", "software",
            "heartbeat_interval_s", "started_at", "last_heartbeat_at", "stopped_at",
        ]  # fmt: skip
        read_only_fields = fields

    def get_online(self, worker) -> bool:
        return selectors.worker_is_online(worker)

    def get_status(self, worker) -> str:
        if worker.stopped_at is not None:
            return "stopped"
        return "online" if selectors.worker_is_online(worker) else "offline"


class WorkersOverviewSerializer(serializers.Serializer):
    generated_at = serializers.DateTimeField()
    offline_after_seconds = serializers.IntegerField()
    workers = serializers.DictField(child=serializers.IntegerField())
    concurrency = serializers.IntegerField()
    active_tasks = serializers.IntegerField()
    processed = serializers.IntegerField()
    rss_mb = serializers.FloatField()
    queues = serializers.DictField()


class AlertRuleSerializer(serializers.ModelSerializer):
    """Output of a rule, for its brand's admins (the webhook secret included)."""

    # A string, not a URI: empty when the rule notifies no webhook.
    webhook_url = serializers.CharField(read_only=True)

    class Meta:
        model = AlertRule
        fields = [
            "id", "name", "metric", "comparison", "threshold", "window_minutes", "task_type",
            "severity", "cooldown_minutes", "webhook_url", "webhook_secret", "email_to",
            "enabled", "created_at", "updated_at", "last_evaluated_at", "last_value",
        ]  # fmt: skip
        read_only_fields = fields


class StrictFloatField(serializers.FloatField):
    """A JSON number (not a numeric string, not a boolean)."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class AlertRuleInputSerializer(StrictInputSerializer):
    name = serializers.CharField(max_length=200)
    metric = serializers.ChoiceField(choices=AlertRule.Metric.choices)
    comparison = serializers.ChoiceField(choices=AlertRule.Comparison.choices, default="gt")
    threshold = StrictFloatField()
    window_minutes = StrictIntegerField(min_value=1, max_value=60 * 24 * 30, default=15)
    task_type = serializers.CharField(max_length=100, allow_blank=True, default="")
    severity = serializers.ChoiceField(choices=AlertRule.Severity.choices, default="warning")
    cooldown_minutes = StrictIntegerField(min_value=0, max_value=60 * 24 * 7, default=30)
    webhook_url = serializers.URLField(max_length=500, allow_blank=True, default="")
    webhook_secret = serializers.CharField(
        max_length=200,
        required=False,
        validators=[validate_signing_secret],
        help_text="whsec_ + base64 of 16 to 128 bytes (Standard Webhooks)",
    )
    email_to = serializers.ListField(
        child=serializers.EmailField(), max_length=20, allow_empty=True, default=list
    )
    enabled = serializers.BooleanField(default=True)

    def validate_task_type(self, value):
        if value and get_task_type(value) is None:
            raise serializers.ValidationError(f"Unknown task type {value!r}; see /tasks/types/.")
        return value

    def validate_webhook_url(self, value):
        problem = webhook_url_problem(value) if value else None
        if problem:
            raise serializers.ValidationError(problem)
        return value


class AlertRuleRefSerializer(serializers.ModelSerializer):
    class Meta:
        model = AlertRule
        fields = ["id", "name", "metric", "comparison", "threshold", "window_minutes", "task_type"]
        read_only_fields = fields


class AlertSerializer(serializers.ModelSerializer):
    rule = AlertRuleRefSerializer(read_only=True)
    acknowledged_by = serializers.CharField(
        source="acknowledged_by.username", default=None, allow_null=True
    )
    resolved_by = serializers.CharField(
        source="resolved_by.username", default=None, allow_null=True
    )

    class Meta:
        model = Alert
        fields = [
            "id", "rule", "status", "severity", "value", "last_value", "threshold", "message",
            "fired_at", "acknowledged_at", "acknowledged_by", "resolved_at", "resolved_by",
            "resolution",
        ]  # fmt: skip
        read_only_fields = fields


class AlertEvaluationSerializer(serializers.ModelSerializer):
    class Meta:
        model = AlertEvaluation
        fields = ["id", "rule", "alert", "value", "outcome", "detail", "evaluated_at"]
        read_only_fields = fields


class NotificationAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = NotificationAttempt
        fields = ["number", "ok", "status_code", "error", "duration_ms", "attempted_at"]
        read_only_fields = fields


HIDDEN = "[hidden]"


def _target_parts(target: str) -> list[str]:
    """The target and the pieces of it an error message may quote (host, each address)."""
    parts = [target, *(item.strip() for item in target.split(","))]
    if "://" in target:
        split = urlsplit(target)
        parts += [split.netloc, split.hostname or ""]
    return sorted({p for p in parts if p}, key=len, reverse=True)


def _redact(text: str, parts: list[str]) -> str:
    for part in parts:
        text = text.replace(part, HIDDEN)
    return text


class AlertNotificationSerializer(serializers.ModelSerializer):
    """A notification and its attempts. Its target (webhook URL, e-mail addresses) is shown
    only to the brand's admins, like the rule's: ``context["show_target"]`` says so, and for
    everyone else it is null and quoted nowhere (errors are redacted)."""

    attempt_log = NotificationAttemptSerializer(many=True, read_only=True)
    target = serializers.CharField(read_only=True, allow_null=True)

    class Meta:
        model = AlertNotification
        fields = [
            "id", "alert", "channel", "event", "target", "status", "attempts",
            "next_attempt_at", "last_error", "created_at", "delivered_at", "attempt_log",
        ]  # fmt: skip
        read_only_fields = fields

    def to_representation(self, instance):
        data = super().to_representation(instance)
        if self.context.get("show_target"):
            return data
        parts = _target_parts(instance.target)
        data["target"] = None
        data["last_error"] = _redact(data["last_error"], parts)
        for attempt in data["attempt_log"]:
            attempt["error"] = _redact(attempt["error"], parts)
        return data


class TaskMetricsSectionSerializer(serializers.Serializer):
    """The ``metrics`` block of a task detail: the latest attempt's measurements (the seed's
    execution_time_ms, memory_usage_mb, cost_usd, and more)."""

    execution_time_ms = serializers.IntegerField(min_value=0, help_text="Wall time of the attempt.")
    cpu_time_ms = serializers.IntegerField(min_value=0)
    memory_usage_mb = serializers.FloatField(
        allow_null=True, help_text="The attempt's own peak memory (docs/monitoring.md)."
    )
    memory_growth_mb = serializers.FloatField(allow_null=True)
    cost_usd = serializers.FloatField(min_value=0)
    queue_wait_ms = serializers.IntegerField(min_value=0, allow_null=True)
    worker = serializers.CharField(help_text="Hostname of the worker that ran the attempt.")
    attempt = serializers.IntegerField(min_value=1)
    status = serializers.CharField(help_text="The attempt's outcome.")
    recorded_at = serializers.DateTimeField()

    class Meta:
        ref_name = "TaskMetrics"

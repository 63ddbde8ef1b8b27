"""Shapes of the /tasks/ API. Input and output serializers are separate: nothing a client sends
can reach a server-owned field."""

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.utils.serializer_helpers import ReturnDict

from megahub.serializers import StrictInputSerializer
from megahub.webhooks import RESPONSE_EXCERPT_BYTES
from task_core.api import schema  # noqa: F401  (DetailSectionField's schema extension)
from task_core.models import BrandEvent, BrandLimit, Task, TaskEvent, Webhook, WebhookDelivery
from task_core.selectors import TASK_LIST_FIELDS
from task_core.webhooks import event_type_pattern


@dataclass(frozen=True)
class DetailSection:
    """An extra block of the task detail that another app provides (e.g. "metrics" from
    task_monitoring): ``provider(task)`` returns JSON-able data or None, and ``serializer``
    (a Serializer class) declares its shape in the schema."""

    name: str
    provider: Callable[[Task], Any]
    serializer: type[serializers.Serializer] | None = None


detail_sections: dict[str, DetailSection] = {}


def register_detail_section(
    name: str,
    provider: Callable[[Task], Any],
    *,
    serializer: type[serializers.Serializer] | None = None,
) -> None:
    detail_sections[name] = DetailSection(name, provider, serializer)


class DetailSectionField(serializers.Field):
    """One registered section of the task detail (read-only, null when it does not apply).
    Its schema is the section's serializer (task_core/api/schema.py)."""

    def __init__(self, section: DetailSection, **kwargs):
        self.section = section
        super().__init__(source="*", read_only=True, allow_null=True, **kwargs)

    def to_representation(self, task):
        # A task created by this request has not run: it has no metrics yet (saves a query).
        if self.section.name == "metrics" and self.context.get("never_run"):
            return None
        return self.section.provider(task)


@extend_schema_field({"type": "object", "additionalProperties": {}})
class JSONObjectField(serializers.JSONField):
    """A JSON object (not an array, a scalar or null), and declared so in the schema."""

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            raise serializers.ValidationError("Must be a JSON object.")
        return value


class BrandRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()


class UserRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()


class TaskTypeField(serializers.CharField):
    """The name of a task type this server serves (GET /tasks/types/), a resumable one with
    ``resumable=True``. The services refuse any other (UNKNOWN_TASK_TYPE, TASK_TYPE_NOT_RESUMABLE);
    the schema lists them as an enum, built with the schema itself, after every app has
    registered its types (task_core/api/schema.py)."""

    def __init__(self, *, resumable: bool = False, **kwargs):
        self.resumable = resumable
        kwargs.setdefault("max_length", 100)
        super().__init__(**kwargs)


class TaskCreateSerializer(StrictInputSerializer):
    task_type = TaskTypeField()
    priority = serializers.ChoiceField(choices=Task.Priority.choices, default=Task.Priority.NORMAL)
    description = serializers.CharField(max_length=5000, allow_blank=True, default="")
    context_data = JSONObjectField(default=dict)
    scheduled_for = serializers.DateTimeField(required=False, allow_null=True)


class TaskRequestSerializer(TaskCreateSerializer):
    """A task request received through RabbitMQ: POST /tasks/ fields plus who and for whom."""

    brand_id = serializers.IntegerField(min_value=1)
    requested_by = serializers.CharField(max_length=150)
    idempotency_key = serializers.CharField(max_length=255, required=False, allow_null=True)


class TaskListSerializer(serializers.ModelSerializer):
    brand = BrandRefSerializer(read_only=True)
    created_by = UserRefSerializer(read_only=True, allow_null=True)

    class Meta:
        model = Task
        fields = list(TASK_LIST_FIELDS)  # the list's rows are built in SQL from the same names
        read_only_fields = fields
        extra_kwargs = {
            "waiting_reason": {
                "help_text": "Why a due task waits in the database (its brand's window or "
                "limits); null when it does not."
            }
        }


class TaskDetailSerializer(TaskListSerializer):
    """The task detail; the blocks other apps register (``metrics``, ``persistent_job``) are
    added as fields, each declared in the schema by its own serializer."""

    class Meta(TaskListSerializer.Meta):
        fields = [
            *TaskListSerializer.Meta.fields,
            "context_data", "result_data", "worker", "queued_at", "heartbeat_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = fields

    def get_fields(self):
        fields = super().get_fields()
        for name, section in detail_sections.items():
            fields[name] = DetailSectionField(section)
        return fields


_detail = threading.local()
_create_input = threading.local()


def task_create_input(data) -> dict:
    """``TaskCreateSerializer(data=data)``'s validated data (its ValidationError otherwise),
    from a serializer whose fields are built once per thread: building them was most of the
    cost of validating a create."""
    serializer = getattr(_create_input, "serializer", None)
    if serializer is None:
        serializer = _create_input.serializer = TaskCreateSerializer()
        serializer.fields  # noqa: B018 - built now, once
    serializer.initial_data = data
    try:
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data
    finally:
        for state in ("initial_data", "_validated_data", "_errors"):
            serializer.__dict__.pop(state, None)


def task_detail_data(task: Task, *, never_run: bool = False) -> ReturnDict:
    """``TaskDetailSerializer(task, context={"never_run": never_run}).data``, from a serializer
    whose fields are built once per thread (and again when the registered sections change):
    building a ModelSerializer's fields is most of its cost for one object."""
    sections = tuple(detail_sections.values())
    cached = getattr(_detail, "cached", None)
    if cached is None or cached[0] != sections:
        serializer = TaskDetailSerializer()
        serializer.fields  # noqa: B018 - built now, once
        cached = _detail.cached = (sections, serializer)
    serializer, context = cached[1], {"never_run": never_run}
    serializer._context = context
    try:
        data = serializer.to_representation(task)
    finally:
        serializer._context = {}
    # The response's serializer, as .data gives it (the browsable API's form reads it); its
    # fields are built only if something asks for them.
    return ReturnDict(data, serializer=TaskDetailSerializer(task, context=context))


class TaskEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = TaskEvent
        fields = [
            "id",
            "kind",
            "from_status",
            "to_status",
            "attempt",
            "actor",
            "message",
            "data",
            "created_at",
        ]
        read_only_fields = fields


class TaskTypeSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField()
    queue = serializers.CharField()
    soft_time_limit_s = serializers.IntegerField()
    time_limit_s = serializers.IntegerField()
    retry_policy = serializers.DictField()
    resumable = serializers.BooleanField()
    context_schema = serializers.JSONField(allow_null=True)
    cost_per_cpu_second_usd = serializers.FloatField()


class FleetStatsSerializer(serializers.Serializer):
    broker = serializers.DictField(help_text="RabbitMQ's live depth and consumers per queue.")
    events_outbox = serializers.DictField(help_text="Every brand's unpublished events.")


class BrandLimitSerializer(StrictInputSerializer, serializers.ModelSerializer):
    """A brand limit: brand-wide (task_type "") or for one task type. Bounds are checked here
    and again by the service (task_core.limits)."""

    task_type = TaskTypeField(
        allow_blank=True,
        default="",
        help_text='A registered task type, or "" (default) for all the brand\'s work.',
    )

    class Meta:
        model = BrandLimit
        fields = ["id", "task_type", "max_running", "rate_per_minute", "weight", "created_at",
                  "updated_at"]  # fmt: skip
        read_only_fields = ["id", "created_at", "updated_at"]
        extra_kwargs = {
            "max_running": {
                "min_value": 1,
                "max_value": BrandLimit.MAX_RUNNING_MAX,
                "allow_null": True,
                "help_text": "At most this many queued or running at once (null: no limit).",
            },
            "rate_per_minute": {
                "min_value": 1,
                "max_value": BrandLimit.RATE_PER_MINUTE_MAX,
                "allow_null": True,
                "help_text": "At most this many published in any 60 s (null: no limit).",
            },
            "weight": {
                "min_value": 1,
                "max_value": BrandLimit.WEIGHT_MAX,
                "help_text": "The brand's share in the fair release (brand-wide limit only).",
            },
        }
        validators = []  # one row per (brand, task_type): checked by the service


class BrandShareSerializer(serializers.Serializer):
    window = serializers.IntegerField(help_text="Broker messages the brand may hold per level.")
    waiting = serializers.IntegerField(help_text="Due tasks held in the database.")
    waiting_by_reason = serializers.DictField(child=serializers.IntegerField())
    released = serializers.IntegerField(help_text="Queued: published, not yet running.")
    running = serializers.IntegerField()
    limits = BrandLimitSerializer(many=True)


class QueueStatsSerializer(serializers.Serializer):
    generated_at = serializers.DateTimeField()
    queues = serializers.DictField()
    throughput = serializers.DictField()
    brand_share = BrandShareSerializer(
        help_text="The brand's fair share: waiting, released and running work, and its limits."
    )
    events_outbox = serializers.DictField(help_text="The brand's unpublished lifecycle events.")
    fleet = FleetStatsSerializer(
        required=False, help_text="Platform-wide figures: present for staff users only."
    )


@extend_schema_field({"type": "string", "pattern": event_type_pattern()})
class EventTypeField(serializers.CharField):
    """A name a webhook subscribes to (task_core.messaging.webhook_save checks it)."""


class WebhookSerializer(StrictInputSerializer, serializers.ModelSerializer):
    """Read and write shape of a brand webhook; the secret is shown only when created."""

    event_types = serializers.ListField(
        child=EventTypeField(max_length=100),
        allow_empty=False,
        required=False,
        help_text='Event names, or ["*"].',
    )

    class Meta:
        model = Webhook
        fields = [
            "id", "url", "event_types", "description", "is_active", "consecutive_failures",
            "disabled_reason", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = ["id", "consecutive_failures", "disabled_reason", "created_at",
                            "updated_at"]  # fmt: skip
        extra_kwargs = {"url": {"validators": []}}  # the URL policy lives in the service

    def validate_event_types(self, value):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise serializers.ValidationError('A list of event names, or ["*"].')
        return value


class WebhookCreatedSerializer(WebhookSerializer):
    class Meta(WebhookSerializer.Meta):
        fields = [*WebhookSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class WebhookDeliverySerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookDelivery
        fields = ["id", "event_name", "event", "status", "attempts", "next_attempt_at",
                  "last_status_code", "last_error", "last_response", "last_duration_ms",
                  "history", "payload", "created_at", "delivered_at"]  # fmt: skip
        read_only_fields = fields
        extra_kwargs = {
            "last_response": {
                "help_text": f"The first {RESPONSE_EXCERPT_BYTES} bytes of the last answer's body."
            }
        }

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["last_response"] = data["last_response"][:RESPONSE_EXCERPT_BYTES]  # older rows
        return data


class BrandEventCreatedSerializer(serializers.ModelSerializer):
    """The answer to POST /events/<solution>/<model>/<action>/ (the events seed's shape)."""

    event_timestamp = serializers.DateTimeField(source="created_at")
    event_data = serializers.DictField(child=serializers.JSONField())

    class Meta:
        model = BrandEvent
        fields = ["event_uid", "event_timestamp", "event_data"]
        read_only_fields = fields


class BrandEventSerializer(BrandEventCreatedSerializer):
    event_type = serializers.CharField(help_text="<solution>.<model>.<action>")
    created_by = UserRefSerializer(allow_null=True)
    published_at = serializers.DateTimeField(
        source="outbox.published_at",
        allow_null=True,
        help_text="When the relay published it to megahub.events (null: waiting in the outbox).",
    )

    class Meta(BrandEventCreatedSerializer.Meta):
        fields = ["id", "event_uid", "event_timestamp", "event_type", "solution", "model",
                  "action", "event_data", "created_by", "published_at"]  # fmt: skip
        read_only_fields = fields

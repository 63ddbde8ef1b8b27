"""Shapes of the /tasks/persistent-jobs/ API (separate input and output serializers)."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from megahub.serializers import StrictInputSerializer
from task_core.api.serializers import JSONObjectField, TaskTypeField
from task_core.models import Task
from task_persistence import selectors
from task_persistence.models import Checkpoint, PersistentJob


class JobCreateSerializer(StrictInputSerializer):
    task_type = TaskTypeField(resumable=True)
    priority = serializers.ChoiceField(choices=Task.Priority.choices, default=Task.Priority.NORMAL)
    description = serializers.CharField(max_length=5000, allow_blank=True, default="")
    context_data = JSONObjectField(default=dict)
    checkpoint_every_items = serializers.IntegerField(
        min_value=1, max_value=1_000_000, required=False
    )
    checkpoint_every_seconds = serializers.FloatField(
        min_value=0.1, max_value=86_400, required=False
    )
    auto_resume_max = serializers.IntegerField(min_value=0, max_value=100, required=False)
    state = JSONObjectField(
        default=dict, help_text="Initial handler state (JSON object) before any checkpoint."
    )


class JobListSerializer(serializers.ModelSerializer):
    task_id = serializers.CharField(source="task.task_id", read_only=True)
    task = serializers.IntegerField(source="task.pk", read_only=True)
    task_type = serializers.CharField(source="task.task_type", read_only=True)
    status = serializers.ChoiceField(
        source="task.status", choices=Task.Status.choices, read_only=True
    )
    priority = serializers.CharField(source="task.priority", read_only=True)
    description = serializers.CharField(source="task.description", read_only=True)
    attempts = serializers.IntegerField(source="task.attempts", read_only=True)
    progress_percentage = serializers.IntegerField(read_only=True)
    # The job's position: its last checkpoint (annotated by with_position()).
    processed_items = serializers.IntegerField(read_only=True)
    last_sequence = serializers.IntegerField(read_only=True)
    last_checkpoint_at = serializers.DateTimeField(read_only=True, allow_null=True)

    class Meta:
        model = PersistentJob
        fields = [
            "id", "task", "task_id", "task_type", "status", "priority", "description",
            "total_items", "processed_items", "progress_percentage", "checkpoint_every_items",
            "checkpoint_every_seconds", "resume_count", "auto_resume_count", "auto_resume_max",
            "attempts", "last_sequence", "last_checkpoint_at", "pause_requested", "created_at",
            "updated_at",
        ]  # fmt: skip
        read_only_fields = fields


class JobDetailSerializer(JobListSerializer):
    state = serializers.SerializerMethodField()
    error_message = serializers.CharField(
        source="task.error_message", read_only=True, allow_null=True
    )
    context_data = serializers.JSONField(source="task.context_data", read_only=True)

    class Meta(JobListSerializer.Meta):
        fields = [*JobListSerializer.Meta.fields, "state", "error_message", "context_data"]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_state(self, job):
        """The handler state of the last checkpoint (or the initial state)."""
        last = selectors.job_last_checkpoint(job=job)
        return last.state if last else job.initial_state


class CheckpointSerializer(serializers.ModelSerializer):
    class Meta:
        model = Checkpoint
        fields = [
            "id", "job", "sequence", "items_processed", "state", "size_bytes", "attempt",
            "created_at",
        ]  # fmt: skip
        read_only_fields = fields


class JobSectionSerializer(serializers.Serializer):
    """The ``persistent_job`` block of a task detail (null for a task of a non-resumable type,
    or before its job exists)."""

    id = serializers.IntegerField(help_text="The job's id under /tasks/persistent-jobs/.")
    total_items = serializers.IntegerField(allow_null=True)
    processed_items = serializers.IntegerField()
    resume_count = serializers.IntegerField()
    last_sequence = serializers.IntegerField()
    last_checkpoint_at = serializers.DateTimeField(allow_null=True)

    class Meta:
        ref_name = "PersistentJobSection"

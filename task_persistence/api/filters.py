"""Filters of the /tasks/persistent-jobs/ lists."""

import django_filters
from rest_framework.exceptions import ValidationError

from megahub.filters import StrictFilterSet
from task_core.models import Task
from task_persistence.models import Checkpoint, PersistentJob


class JobFilterSet(StrictFilterSet):
    status = django_filters.CharFilter(
        method="filter_status", help_text="A task status, or several separated by commas."
    )
    task_type = django_filters.CharFilter(field_name="task__task_type")

    class Meta:
        model = PersistentJob
        fields = ["status", "task_type"]

    def filter_status(self, queryset, name, value):
        wanted = [v.strip() for v in value.split(",") if v.strip()]
        unknown = [v for v in wanted if v not in Task.Status.values]
        if unknown:
            raise ValidationError({"status": [f'"{unknown[0]}" is not a valid status.']})
        return queryset.filter(task__status__in=wanted) if wanted else queryset


class CheckpointFilterSet(StrictFilterSet):
    # A job of another brand simply matches nothing: the list is already brand-scoped.
    job = django_filters.NumberFilter(field_name="job_id", help_text="A job id: its timeline.")

    class Meta:
        model = Checkpoint
        fields = ["job"]

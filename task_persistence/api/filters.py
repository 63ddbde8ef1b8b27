"""Filters of the /tasks/persistent-jobs/ lists."""

import django_filters

from megahub.filters import StrictFilterSet
from task_core.api.filters import status_list_filter
from task_persistence.models import Checkpoint, PersistentJob


class JobFilterSet(StrictFilterSet):
    status = status_list_filter(
        method="filter_status", help_text="A task status, or several separated by commas."
    )
    task_type = django_filters.CharFilter(field_name="task__task_type")

    class Meta:
        model = PersistentJob
        fields = ["status", "task_type"]

    def filter_status(self, queryset, name, value):
        return queryset.filter(task__status__in=value)


class CheckpointFilterSet(StrictFilterSet):
    # A job of another brand simply matches nothing: the list is already brand-scoped.
    job = django_filters.NumberFilter(field_name="job_id", help_text="A job id: its timeline.")

    class Meta:
        model = Checkpoint
        fields = ["job"]

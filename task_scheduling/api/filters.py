"""Filters of the /tasks/scheduled/ lists."""

import django_filters
from rest_framework.exceptions import ValidationError

from megahub.filters import StrictFilterSet
from task_scheduling.models import OneOffJob, PeriodicSchedule, ScheduleRun


class ScheduleFilterSet(StrictFilterSet):
    status = django_filters.ChoiceFilter(
        choices=[("active", "active"), ("paused", "paused")],
        method="filter_status",
        help_text="`active` (enabled) or `paused`.",
    )
    task_type = django_filters.CharFilter()
    calendar = django_filters.NumberFilter(field_name="calendar_id")

    class Meta:
        model = PeriodicSchedule
        fields = ["status", "task_type", "calendar"]

    def filter_status(self, queryset, name, value):
        if value not in ("active", "paused"):
            raise ValidationError({"status": [f'"{value}" is not one of active, paused.']})
        return queryset.filter(enabled=value == "active")


class ScheduleRunFilterSet(StrictFilterSet):
    outcome = django_filters.MultipleChoiceFilter(choices=ScheduleRun.Outcome.choices)
    fire_time_after = django_filters.IsoDateTimeFilter(field_name="fire_time", lookup_expr="gte")
    fire_time_before = django_filters.IsoDateTimeFilter(field_name="fire_time", lookup_expr="lt")

    class Meta:
        model = ScheduleRun
        fields = ["outcome", "fire_time_after", "fire_time_before"]


class CronJobFilterSet(StrictFilterSet):
    status = django_filters.ChoiceFilter(choices=OneOffJob.Status.choices)
    task_type = django_filters.CharFilter()

    class Meta:
        model = OneOffJob
        fields = ["status", "task_type"]

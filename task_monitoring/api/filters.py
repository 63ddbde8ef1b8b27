"""Filters of the monitoring lists, and the cross-app filters task_monitoring adds to /tasks/."""

import django_filters
from django.db.models import Exists, OuterRef

from megahub.filters import StrictBooleanFilter, StrictFilterSet
from task_core.api.filters import task_type_filter
from task_core.models import Task
from task_monitoring.models import Alert, AlertRule, TaskMetric

# A metrics row's status: the attempt's outcome, a task status or "lost" (docs/monitoring.md).
ATTEMPT_OUTCOMES = [*Task.Status.values, "lost"]


def _latest_attempt_metrics():
    # The latest attempt's row: the one whose attempt number is the task's attempt count.
    return TaskMetric.objects.filter(task=OuterRef("pk"), attempt=OuterRef("attempts"))


BOOLEAN_CHOICES = [("true", "true"), ("false", "false"), ("1", "1"), ("0", "0")]


def _has_metrics(queryset, name, value):
    exists = Exists(TaskMetric.objects.filter(task=OuterRef("pk")))
    return queryset.filter(exists if value in ("true", "1") else ~exists)


def _execution_time(lookup):
    def apply(queryset, name, value):
        return queryset.filter(
            Exists(_latest_attempt_metrics().filter(**{f"execution_time_ms__{lookup}": value}))
        )

    return apply


def task_filters() -> dict[str, django_filters.Filter]:
    """Filters registered on GET /tasks/ (see TaskMonitoringConfig.ready)."""
    return {
        "has_metrics": django_filters.ChoiceFilter(
            choices=BOOLEAN_CHOICES,
            method=_has_metrics,
            help_text="Tasks with (or without) at least one metrics row.",
        ),
        "execution_time__gte": django_filters.NumberFilter(
            field_name="metrics__execution_time_ms",  # its range (the method ignores it)
            method=_execution_time("gte"),
            min_value=0,
            help_text="Latest attempt's execution time >= this many ms.",
        ),
        "execution_time__lte": django_filters.NumberFilter(
            field_name="metrics__execution_time_ms",  # its range (the method ignores it)
            method=_execution_time("lte"),
            min_value=0,
            help_text="Latest attempt's execution time <= this many ms.",
        ),
    }


class MetricFilterSet(StrictFilterSet):
    task_type = task_type_filter()
    status = django_filters.ChoiceFilter(choices=[(o, o) for o in ATTEMPT_OUTCOMES])
    worker = django_filters.CharFilter(field_name="worker_hostname")
    task = django_filters.NumberFilter(field_name="task_id")
    created_after = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")
    execution_time__gte = django_filters.NumberFilter(
        field_name="execution_time_ms", lookup_expr="gte", min_value=0
    )
    execution_time__lte = django_filters.NumberFilter(
        field_name="execution_time_ms", lookup_expr="lte", min_value=0
    )
    memory_usage__gte = django_filters.NumberFilter(
        field_name="memory_usage_mb", lookup_expr="gte", min_value=0
    )
    cost_usd__gte = django_filters.NumberFilter(field_name="cost_usd", lookup_expr="gte")
    queue_wait__gte = django_filters.NumberFilter(
        field_name="queue_wait_ms", lookup_expr="gte", min_value=0
    )

    class Meta:
        model = TaskMetric
        fields = []


class AlertFilterSet(StrictFilterSet):
    status = django_filters.MultipleChoiceFilter(
        choices=Alert.Status.choices,
        help_text="Repeatable. Without it the list shows the active (firing) alerts only.",
    )
    severity = django_filters.MultipleChoiceFilter(choices=AlertRule.Severity.choices)
    rule = django_filters.NumberFilter(field_name="rule_id")

    class Meta:
        model = Alert
        fields = []


class AlertRuleFilterSet(StrictFilterSet):
    metric = django_filters.ChoiceFilter(choices=AlertRule.Metric.choices)
    enabled = StrictBooleanFilter()
    task_type = django_filters.CharFilter()

    class Meta:
        model = AlertRule
        fields = []

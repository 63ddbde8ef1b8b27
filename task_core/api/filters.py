"""Filters of GET /tasks/, with a registry other apps fill for their cross-app filters
(``has_metrics``, ``execution_time__gte``, ``is_resumable``, ``is_periodic``...)."""

import django_filters
from rest_framework.exceptions import ValidationError

from megahub.filters import StrictFilterSet
from task_core.models import Task

ACTIVE_STATUSES = [s for s in Task.Status.values if s not in Task.TERMINAL]

_extra_filters: dict[str, django_filters.Filter] = {}
_filterset_cache: dict[str, type] = {}


def register_task_filter(name: str, task_filter: django_filters.Filter) -> None:
    """Add a filter to GET /tasks/ (call from your AppConfig.ready())."""
    _extra_filters[name] = task_filter
    _filterset_cache.clear()


class BaseTaskFilterSet(StrictFilterSet):
    status = django_filters.CharFilter(
        method="filter_status",
        help_text="A status, several separated by commas, or `active` (every non-terminal status).",
    )
    priority = django_filters.MultipleChoiceFilter(choices=Task.Priority.choices)
    task_type = django_filters.CharFilter()
    created_after = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Task
        fields = ["status", "priority", "task_type", "created_after", "created_before"]

    def filter_status(self, queryset, name, value):
        wanted: set[str] = set()
        for item in (v.strip() for v in value.split(",") if v.strip()):
            if item == "active":
                wanted.update(ACTIVE_STATUSES)
            elif item in Task.Status.values:
                wanted.add(item)
            else:
                raise ValidationError({"status": [f'"{item}" is not a valid status.']})
        return queryset.filter(status__in=sorted(wanted)) if wanted else queryset


def task_filterset() -> type[StrictFilterSet]:
    if "cls" not in _filterset_cache:
        _filterset_cache["cls"] = type("TaskFilterSet", (BaseTaskFilterSet,), dict(_extra_filters))
    return _filterset_cache["cls"]

"""Filters of GET /tasks/, with a registry other apps fill for their cross-app filters
(``has_metrics``, ``execution_time__gte``, ``is_resumable``, ``is_periodic``...)."""

import django_filters
from drf_spectacular.drainage import set_override

from megahub.filters import ChoiceListFilter, StrictFilterSet
from task_core.api.serializers import TaskTypeField
from task_core.models import Task
from task_core.registry import all_task_types

ACTIVE_STATUSES = [s for s in Task.Status.values if s not in Task.TERMINAL]

_extra_filters: dict[str, django_filters.Filter] = {}
_filterset_cache: dict[str, type] = {}


def register_task_filter(name: str, task_filter: django_filters.Filter) -> None:
    """Add a filter to GET /tasks/ (call from your AppConfig.ready())."""
    _extra_filters[name] = task_filter
    _filterset_cache.clear()


def task_type_choices() -> list[tuple[str, str]]:
    return [(spec.name, spec.name) for spec in all_task_types()]


def task_type_filter(**kwargs) -> django_filters.ChoiceFilter:
    """``?task_type=`` naming a task type this server serves (an enum in the schema, as
    TaskTypeField); any other name is a 400."""
    task_filter = django_filters.ChoiceFilter(choices=task_type_choices, **kwargs)
    set_override(task_filter, "field", TaskTypeField)
    return task_filter


def status_list_filter(*, active: bool = False, **kwargs) -> ChoiceListFilter:
    """``?status=``: a task status or several separated by commas (``active``: every
    non-terminal status, when ``active=True``)."""
    choices = [*Task.Status.values, *(["active"] if active else [])]
    return ChoiceListFilter(choices=choices, **kwargs)


class BaseTaskFilterSet(StrictFilterSet):
    status = status_list_filter(
        active=True,
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
        for item in value:
            wanted.update(ACTIVE_STATUSES if item == "active" else [item])
        return queryset.filter(status__in=sorted(wanted)) if wanted else queryset


def task_filterset() -> type[StrictFilterSet]:
    if "cls" not in _filterset_cache:
        _filterset_cache["cls"] = type("TaskFilterSet", (BaseTaskFilterSet,), dict(_extra_filters))
    return _filterset_cache["cls"]

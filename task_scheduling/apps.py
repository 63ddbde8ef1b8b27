from django.apps import AppConfig


def filter_is_periodic(queryset, name, value):
    """GET /tasks/?is_periodic=true|false: tasks created by a schedule (the ledger links them)."""
    from django.db.models import Exists, OuterRef

    from task_scheduling.models import ScheduleRun

    created_by_schedule = Exists(ScheduleRun.objects.filter(task=OuterRef("pk")))
    return queryset.filter(created_by_schedule if value else ~created_by_schedule)


class TaskSchedulingConfig(AppConfig):
    name = "task_scheduling"
    verbose_name = "Scheduling"

    def ready(self):
        from megahub.filters import StrictBooleanFilter
        from task_core.api.filters import register_task_filter

        register_task_filter(
            "is_periodic",
            StrictBooleanFilter(
                method=filter_is_periodic,
                help_text="true: tasks created by a periodic schedule; false: the others.",
            ),
        )

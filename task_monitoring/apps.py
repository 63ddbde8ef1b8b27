from django.apps import AppConfig


def _metric_build(**kwargs):
    from task_monitoring import services

    return services.metric_build(**kwargs)


def _metric_baseline(ctx):
    from task_monitoring import services

    services.metric_attempt_started(ctx=ctx)


class TaskMonitoringConfig(AppConfig):
    name = "task_monitoring"
    verbose_name = "Monitoring"

    def ready(self):
        from task_core.api.filters import register_task_filter
        from task_core.api.serializers import register_detail_section
        from task_core.signals import OutcomeRow, register_outcome_row
        from task_monitoring import loops, selectors, task_types, workers  # noqa: F401
        from task_monitoring.api.filters import task_filters
        from task_monitoring.api.serializers import TaskMetricsSectionSerializer

        # The metrics row of every attempt, written in the statement that records its outcome.
        register_outcome_row("metrics", OutcomeRow(build=_metric_build, start=_metric_baseline))
        register_detail_section(
            "metrics", selectors.metric_detail_section, serializer=TaskMetricsSectionSerializer
        )
        for name, task_filter in task_filters().items():
            register_task_filter(name, task_filter)

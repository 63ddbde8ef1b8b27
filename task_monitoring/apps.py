import logging

from django.apps import AppConfig

logger = logging.getLogger("megahub.monitoring")


def _on_attempt_started(sender, task, ctx, **kwargs):
    from task_monitoring import services

    services.metric_attempt_started(ctx=ctx)


def _on_attempt_recorded(sender, task, ctx, outcome, cpu_time_s, wall_time_s, **kwargs):
    """The metrics row goes into the transaction that records the outcome (no commit of its
    own), in a savepoint: a metrics write must never fail the task it measures."""
    from django.db import transaction

    from task_monitoring import services

    try:
        with transaction.atomic():
            services.metric_record(
                task=task, ctx=ctx, outcome=outcome, cpu_time_s=cpu_time_s, wall_time_s=wall_time_s
            )
    except Exception:
        logger.warning("metrics row not written", extra={"task_pk": task.pk}, exc_info=True)


def _on_attempt_finished(sender, task, ctx, outcome, cpu_time_s, wall_time_s, **kwargs):
    """Attempts whose outcome was not recorded (lost their task, or crashed) get their row
    here, after the fact."""
    from task_monitoring import services

    if kwargs.get("recorded"):
        return
    try:
        services.metric_record(
            task=task, ctx=ctx, outcome=outcome, cpu_time_s=cpu_time_s, wall_time_s=wall_time_s
        )
    except Exception:  # a metrics write must never fail the task it measures
        logger.warning("metrics row not written", extra={"task_pk": task.pk}, exc_info=True)


class TaskMonitoringConfig(AppConfig):
    name = "task_monitoring"
    verbose_name = "Monitoring"

    def ready(self):
        from task_core.api.filters import register_task_filter
        from task_core.api.serializers import register_detail_section
        from task_core.signals import attempt_finished, attempt_recorded, attempt_started
        from task_monitoring import loops, selectors, task_types, workers  # noqa: F401
        from task_monitoring.api.filters import task_filters
        from task_monitoring.api.serializers import TaskMetricsSectionSerializer

        attempt_started.connect(_on_attempt_started, dispatch_uid="monitoring.attempt_started")
        attempt_recorded.connect(_on_attempt_recorded, dispatch_uid="monitoring.attempt_recorded")
        attempt_finished.connect(_on_attempt_finished, dispatch_uid="monitoring.attempt_finished")
        register_detail_section(
            "metrics", selectors.metric_detail_section, serializer=TaskMetricsSectionSerializer
        )
        for name, task_filter in task_filters().items():
            register_task_filter(name, task_filter)

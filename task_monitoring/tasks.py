"""Celery entry points of task_monitoring (routed to the system queue by CELERY_TASK_ROUTES)."""

from celery import shared_task

from task_monitoring import services


@shared_task(name="megahub.alert_rules_evaluate", ignore_result=True)
def alert_rules_evaluate() -> dict:
    return services.alert_rules_evaluate()


@shared_task(name=services.DELIVER_TASK_NAME, ignore_result=True)
def alert_notifications_deliver() -> int:
    return services.alert_notifications_deliver()


@shared_task(name="megahub.monitoring_prune", ignore_result=True)
def monitoring_prune() -> dict:
    return services.monitoring_prune()

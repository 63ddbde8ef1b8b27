"""Celery entry points of task_persistence: call a service, nothing else."""

from celery import shared_task

from task_persistence import services


# Routed to the system queue by CELERY_TASK_ROUTES (settings.py).
@shared_task(name="megahub.checkpoints_prune", ignore_result=True)
def checkpoints_prune() -> int:
    return services.checkpoints_prune()

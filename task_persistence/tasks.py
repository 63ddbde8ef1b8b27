"""Celery entry points of task_persistence: call a service, nothing else."""

from celery import shared_task

from task_persistence import services


# "megahub.tasks_*" routes it to the system queue (CELERY_TASK_ROUTES).
@shared_task(name="megahub.tasks_prune_checkpoints", ignore_result=True)
def tasks_prune_checkpoints() -> int:
    return services.checkpoints_prune()

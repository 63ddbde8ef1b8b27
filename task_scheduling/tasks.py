"""Celery entry points of task_scheduling: call a service, nothing else."""

from celery import shared_task

from task_scheduling import services


@shared_task(name="megahub.tasks_dispatch_schedules", ignore_result=True)
def tasks_dispatch_schedules() -> dict:
    """Fire due schedules (beat triggers it every SCHEDULE_DISPATCH_INTERVAL_SECONDS)."""
    return dict(services.schedule_dispatch_due())

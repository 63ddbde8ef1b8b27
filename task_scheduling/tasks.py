"""Celery entry points of task_scheduling: call a service, nothing else."""

from celery import shared_task

from task_scheduling import services


@shared_task(name="megahub.schedules_dispatch_due", ignore_result=True)
def schedules_dispatch_due() -> dict:
    """Fire due schedules (beat triggers it every SCHEDULE_DISPATCH_INTERVAL_SECONDS)."""
    return dict(services.schedules_dispatch_due())

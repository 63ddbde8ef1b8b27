"""Celery entry points: receive ids, call a service, nothing else."""

from celery import shared_task

from task_core import messaging, services


# acks_late=False: acknowledged when a pool process accepts it, just before the claim; a task
# may run longer than RabbitMQ's consumer_timeout. The sweeper rescues a claimed task whose
# worker dies; the requeue of lost messages covers a death between acceptance and claim.
@shared_task(name=services.EXECUTE_TASK_NAME, bind=True, acks_late=False, ignore_result=True)
def task_execute(self, task_pk: int) -> str:
    return services.task_execute(task_pk=task_pk, worker=self.request.hostname or "unknown")


@shared_task(name="megahub.tasks_release_due", ignore_result=True)
def tasks_release_due() -> int:
    return services.tasks_release_due()


@shared_task(name="megahub.tasks_sweep", ignore_result=True)
def tasks_sweep() -> int:
    return services.tasks_sweep()


@shared_task(name="megahub.tasks_relay_events", ignore_result=True)
def tasks_relay_events() -> int:
    return messaging.events_relay()


@shared_task(name="megahub.tasks_deliver_webhooks", ignore_result=True)
def tasks_deliver_webhooks() -> int:
    return messaging.webhooks_deliver_due()

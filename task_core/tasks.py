"""Celery entry points: receive ids, call a service, nothing else."""

from celery import shared_task
from celery.exceptions import Retry

from task_core import broker, events, execution, publishing, webhooks
from task_core.models import Task


class TaskFailed(Exception):
    """Reported to Celery for a megahub failure that raised no exception of its own (a type no
    longer registered, a stored context its type refuses)."""


# acks_late=False: acknowledged when a pool process accepts it, just before the claim; a task
# may run longer than RabbitMQ's consumer_timeout. The sweeper rescues a claimed task whose
# worker dies; the requeue of lost messages covers a death between acceptance and claim.
# Celery sees each type under its own (shadow) name; once megahub has recorded the outcome, a
# failure is raised to Celery (FAILURE: task_failure, task-failed) and a scheduled retry is a
# celery Retry (task-retried) that publishes nothing: the message is already acknowledged, and
# the release loop publishes the next attempt from the database when its backoff is over.
@shared_task(name=broker.EXECUTE_TASK_NAME, bind=True, acks_late=False, ignore_result=True)
def task_execute(self, task_pk: int) -> str:
    attempt = execution.task_execute_attempt(
        task_pk=task_pk, worker=self.request.hostname or "unknown"
    )
    if attempt.outcome == Task.Status.FAILED:
        raise attempt.error or TaskFailed(attempt.task.error_message if attempt.task else "")
    if attempt.outcome == Task.Status.RETRYING:
        raise Retry(attempt.task.error_message, exc=attempt.error, when=attempt.retry_at)
    return attempt.outcome


@shared_task(name="megahub.tasks_release_due", ignore_result=True)
def tasks_release_due() -> int:
    return publishing.tasks_release_due()


@shared_task(name="megahub.tasks_sweep", ignore_result=True)
def tasks_sweep() -> int:
    return execution.tasks_sweep()


@shared_task(name="megahub.events_relay", ignore_result=True)
def events_relay() -> int:
    return events.events_relay()


@shared_task(name="megahub.webhooks_deliver_due", ignore_result=True)
def webhooks_deliver_due() -> int:
    return webhooks.webhooks_deliver_due()

"""Putting tasks on the broker: the execution message (built once), publish on commit, batch
publish with one confirm round trip, the release loop for due tasks and the republishing of lost
messages. A publish that fails leaves the task pending; the release loop publishes it later."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from task_core import state_machine as sm
from task_core.models import Task, TaskEvent
from task_core.registry import TaskType, get_task_type

logger = logging.getLogger("megahub.tasks")
S = Task.Status
K = TaskEvent.Kind
EXECUTE_TASK_NAME = "megahub.task_execute"


def tasks_publish_many(*, task_pks: list[int], actor: str = "system:publisher") -> int:
    """Publish committed pending tasks (in chunks); what the broker refuses is left to the
    release loop, exactly as for task_publish."""
    published_count = 0
    for start in range(0, len(task_pks), settings.TASK_RELEASE_BATCH):
        chunk = task_pks[start : start + settings.TASK_RELEASE_BATCH]
        with transaction.atomic():
            tasks = list(
                Task.objects.unscoped()
                .select_for_update(skip_locked=True)
                .filter(pk__in=chunk, status=S.PENDING)
                .order_by("pk")
            )
            published = tasks[: _send_many(tasks)]
            published_count += sm.transition_many(
                published,
                to=S.QUEUED,
                kind=K.QUEUED,
                actor=actor,
                fields={"queued_at": timezone.now(), "available_at": None},
            )
        if len(published) < len(tasks):
            break
    return published_count


def celery_task_name(task_type: str) -> str:
    """The name a task type's executions carry in Celery's events, logs and monitors (Flower,
    ``celery events``): every brand task runs the one entry point EXECUTE_TASK_NAME, published
    with this name as Celery's ``shadow`` name."""
    return f"megahub.{task_type}"


def _message_options(task: Task, spec: TaskType | None) -> dict:
    """Execution message options: queue, priority, the type's time limits, and what monitors
    show (the type's Celery name, brand and task id in the headers and the args repr)."""
    return {
        "args": [task.pk],
        "shadow": celery_task_name(task.task_type),
        "argsrepr": f"(task_id={task.task_id}, brand={task.brand_id}, type={task.task_type})",
        "headers": {
            "megahub_task_id": str(task.task_id),
            "megahub_brand_id": task.brand_id,
            "megahub_task_type": task.task_type,
        },
        "queue": f"{settings.CELERY_QUEUE_PREFIX}{task.queue}",
        "routing_key": task.queue,
        "priority": Task.BROKER_PRIORITY.get(task.priority, 4),
        "soft_time_limit": spec.soft_time_limit_s if spec else None,
        "time_limit": spec.time_limit_s if spec else None,
    }


def _send(task: Task) -> None:
    """Publish the execution message (priority, queue and time limits from the task type)."""
    current_app.send_task(
        EXECUTE_TASK_NAME,
        **_message_options(task, get_task_type(task.task_type)),
        retry=True,
        retry_policy={
            "max_retries": settings.TASK_PUBLISH_RETRIES,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
    )


def _send_many(tasks: list[Task]) -> int:
    """Publish execution messages for ``tasks`` in order; returns how many leading ones the
    broker confirmed. On RabbitMQ they share one confirm-mode channel and the confirms are
    awaited once at the end (one round trip per batch, not per message)."""
    if len(tasks) < 2 or not settings.CELERY_BROKER_URL.startswith(("amqp", "pyamqp")):
        for sent, task in enumerate(tasks):
            try:
                _send(task)
            except Exception as exc:
                logger.warning("publish failed", extra={"error": repr(exc)})
                return sent
        return len(tasks)
    app = current_app
    resolved: dict[int, bool] = {}  # delivery tag -> confirmed (True) or refused (False)

    def on_confirm(confirmed: bool):
        def record(delivery_tag, multiple=False):
            for tag in range(1, delivery_tag + 1) if multiple else (delivery_tag,):
                resolved.setdefault(tag, confirmed)

        return record

    # With task_send_sent_event each execution message is followed by its task-sent event on
    # the same channel: message n has delivery tag (n - 1) * per_task + 1, and counts as
    # confirmed once its event is too.
    per_task = 2 if app.conf.task_send_sent_event else 1
    sent = 0
    try:
        # Our own connection without per-message confirms; the channel is put in confirm
        # mode here and the broker's acknowledgements are collected after the last publish.
        with app.connection_for_write(transport_options={"confirm_publish": False}) as conn:
            conn.ensure_connection(max_retries=settings.TASK_PUBLISH_RETRIES)
            channel = conn.default_channel
            channel.events["basic_ack"].add(on_confirm(True))
            channel.events["basic_nack"].add(on_confirm(False))
            channel.confirm_select()
            producer = app.amqp.Producer(conn)
            for task in tasks:
                app.send_task(
                    EXECUTE_TASK_NAME,
                    **_message_options(task, get_task_type(task.task_type)),
                    producer=producer,
                )
                sent += 1
            deadline = time.monotonic() + 30
            while len(resolved) < sent * per_task and time.monotonic() < deadline:
                conn.drain_events(timeout=5)
    except Exception as exc:
        logger.warning("batch publish interrupted", extra={"error": repr(exc), "sent": sent})
    confirmed = 0
    while resolved.get(confirmed + 1):
        confirmed += 1
    return min(sent, confirmed // per_task)


def task_publish(*, task: Task, actor: str = "system:publisher") -> bool:
    """Publish a committed task and record it as queued; on failure leave it to the release loop."""
    try:
        _send(task)
    except Exception as exc:
        logger.warning(
            "publish failed; the release loop will retry",
            extra={"task_id": task.task_id, "brand_id": task.brand_id, "error": repr(exc)},
        )
        try:
            sm.record_event(task, kind=K.PUBLISH_FAILED, actor=actor, message=repr(exc))
        except Exception:
            logger.warning("could not record publish failure", exc_info=True)
        return False
    outermost = not transaction.get_connection().in_atomic_block
    with transaction.atomic():
        if outermost:  # never relax a caller's transaction
            _commit_without_waiting_for_disk()
        sm.transition(
            task,
            to=S.QUEUED,
            kind=K.QUEUED,
            actor=actor,
            frm=[S.PENDING],
            fields={"queued_at": timezone.now(), "available_at": None},
        )
    return True


def _commit_without_waiting_for_disk() -> None:
    """The current transaction commits without waiting for its WAL flush (PostgreSQL).

    Only for writes whose loss in a database crash is harmless. The "queued" mark after a
    confirmed publish is one: lost, the task is still pending with a past available_at, so the
    release loop publishes it again and the claim ignores the duplicate message; and any later
    durable commit (the claim's) flushes it anyway. It saves a disk flush in the request path.
    It applies to the whole transaction: call it only in a transaction of such writes.
    """
    connection = transaction.get_connection()
    if connection.vendor == "postgresql" and connection.in_atomic_block:
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit = off")


def tasks_release_due(*, limit: int | None = None) -> int:
    """Publish every pending/retrying task whose time has come (scheduled, backoff over, or an
    on-commit publish that never confirmed). Safe to run from several processes at once."""
    limit = limit or settings.TASK_RELEASE_BATCH
    now = timezone.now()
    released = 0
    with transaction.atomic():
        due = list(
            Task.objects.unscoped()
            .select_for_update(skip_locked=True)
            .filter(status__in=[S.PENDING, S.RETRYING], available_at__lte=now)
            .order_by("available_at")[:limit]
        )
        published: list[Task] = []
        for task in due:
            try:
                _send(task)
            except Exception as exc:
                logger.warning("release: broker unavailable", extra={"error": repr(exc)})
                break
            published.append(task)
        released = sm.transition_many(
            published,
            to=S.QUEUED,
            kind=K.QUEUED,
            actor="system:release",
            fields={"queued_at": now, "available_at": None},
        )
        unpublished = [t.pk for t in due[len(published) :]]
        if unpublished:
            Task.objects.unscoped().filter(pk__in=unpublished).update(
                available_at=now + timedelta(seconds=settings.TASK_PUBLISH_GRACE_SECONDS)
            )
    return released


def tasks_requeue_lost(*, limit: int = 500) -> int:
    """Republish queued tasks whose message is gone (queue purged, message lost by the broker):
    still unclaimed long after being queued while their broker queue is empty. A duplicate
    message is harmless, the claim ignores it."""
    from task_core.selectors import broker_queue_stats

    cutoff = timezone.now() - timedelta(seconds=settings.TASK_QUEUED_LOST_SECONDS)
    candidates = Task.objects.unscoped().filter(status=S.QUEUED, queued_at__lt=cutoff)
    queues = set(candidates.values_list("queue", flat=True).distinct()[:50])
    if not queues:
        return 0
    broker = broker_queue_stats(sorted(queues))
    empty = [name for name, q in broker["queues"].items() if q["depth"] == 0]
    requeued = 0
    for task in candidates.filter(queue__in=empty).order_by("queued_at")[:limit]:
        try:
            _send(task)
        except Exception:
            break
        Task.objects.unscoped().filter(pk=task.pk, status=S.QUEUED).update(queued_at=timezone.now())
        sm.record_event(
            task, kind=K.QUEUED, actor="system:sweeper", message="republished: message lost"
        )
        requeued += 1
    return requeued

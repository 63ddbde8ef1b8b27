"""Putting tasks on the broker: publish on commit, batch publish, the release loop for due
tasks and the republishing of lost messages. A publish that fails leaves the task pending; the
release loop publishes it later. With fair share (task_core/fairshare.py) work beyond a brand's
window or limits waits in the database and is released fairly."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from task_core import broker, fairshare
from task_core import state_machine as sm
from task_core.models import Task, TaskEvent

logger = logging.getLogger("megahub.tasks")
S = Task.Status
K = TaskEvent.Kind


def tasks_publish_many(*, task_pks: list[int], actor: str = "system:publisher") -> int:
    """Publish committed pending tasks (in chunks); what the broker refuses is left to the
    release loop, exactly as for task_publish. With fair share, each brand's tasks beyond its
    window (or all of a brand with limits) wait in the database and are released later."""
    published_count = 0
    limited: set[int] = set()
    gated: list[Task] = []
    for start in range(0, len(task_pks), settings.TASK_RELEASE_BATCH):
        chunk = task_pks[start : start + settings.TASK_RELEASE_BATCH]
        with transaction.atomic():
            tasks = list(
                Task.objects.unscoped()
                .select_for_update(skip_locked=True)
                .filter(pk__in=chunk, status=S.PENDING)
                .order_by("pk")
            )
            if settings.TASK_FAIR_SHARE:
                tasks, waiting, chunk_limited = fairshare.admit_now(tasks)
                fairshare.hold(waiting, due=True)
                limited |= chunk_limited
                gated += [t for t in waiting if t.brand_id in chunk_limited]
            published = tasks[: broker.send_many(tasks)]
            published_count += sm.transition_many(
                published,
                to=S.QUEUED,
                kind=K.QUEUED,
                actor=actor,
                fields=broker.released(timezone.now()),
            )
        if len(published) < len(tasks):
            break
    if limited:
        published_count += fairshare.release(sorted(limited), actor=actor, wait=True, gated=gated)
    return published_count


def task_publish(*, task: Task, actor: str = "system:publisher") -> bool:
    """Publish a committed task and record it as queued; on failure leave it to the release loop.
    With fair share, a task over its brand's window, or of a brand with limits, is released
    through the brand's queue in the database instead (it may wait there)."""
    if settings.TASK_FAIR_SHARE:
        admitted, waiting, limited = fairshare.admit_now([task])
        if not admitted:
            fairshare.hold(waiting, due=True)
            if limited:
                fairshare.release(sorted(limited), actor=actor, wait=True, gated=list(waiting))
            task.refresh_from_db(fields=["status", "waiting_reason", "available_at", "queued_at"])
            return task.status == S.QUEUED
    try:
        broker.send(task)
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
            fields=broker.released(timezone.now()),
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
    """Publish every pending/retrying task whose time has come (scheduled, backoff over, an
    on-commit publish that never confirmed, work waiting for its brand's window or limits).
    Safe to run from several processes at once."""
    limit = limit or settings.TASK_RELEASE_BATCH
    if settings.TASK_FAIR_SHARE:
        return fairshare.release(
            fairshare.brands_with_due_work(), actor="system:release", wait=False, limit=limit
        )
    now = timezone.now()
    with transaction.atomic():
        due = list(
            Task.objects.unscoped()
            .select_for_update(skip_locked=True)
            .filter(status__in=[S.PENDING, S.RETRYING], available_at__lte=now)
            .order_by("available_at")[:limit]
        )
        return broker.publish_planned(due, actor="system:release", now=now)


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
    depths = broker_queue_stats(sorted(queues))["queues"]
    empty = [name for name, q in depths.items() if q["depth"] == 0]
    requeued = 0
    for task in candidates.filter(queue__in=empty).order_by("queued_at")[:limit]:
        try:
            broker.send(task)
        except Exception:
            break
        Task.objects.unscoped().filter(pk=task.pk, status=S.QUEUED).update(queued_at=timezone.now())
        sm.record_event(
            task, kind=K.QUEUED, actor="system:sweeper", message="republished: message lost"
        )
        requeued += 1
    return requeued

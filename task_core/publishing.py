"""Putting tasks on the broker: the create path (queued in its own transaction, sent after
commit without waiting for the broker's confirm), publish on commit, batch publish, the release
loop for due tasks and the republishing of lost messages. A publish that fails leaves (or puts
back) the task pending; the release loop publishes it later. With fair share
(task_core/fairshare.py) work beyond a brand's window or limits waits in the database and is
released fairly."""

from __future__ import annotations

import logging
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
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
            _wait_for_release(waiting, limited, actor=actor)
            task.refresh_from_db(fields=["status", "waiting_reason", "available_at", "queued_at"])
            return task.status == S.QUEUED
    try:
        broker.send(task)
    except Exception as exc:
        _publish_failed(task, exc, actor=actor)
        return False
    outermost = not transaction.get_connection().in_atomic_block
    with transaction.atomic():
        if outermost:  # never relax a caller's transaction
            _commit_without_waiting_for_disk()
        _QUEUE.run(task, actor=actor, values=broker.released(timezone.now()))
    return True


# pending -> queued with its event: one prepared statement (a create, a publish on commit).
_QUEUE = sm.Statement(to=S.QUEUED, kind=K.QUEUED, frm=[S.PENDING], columns=broker.RELEASED_FIELDS)


def task_admit_created(task: Task, *, actor: str = "system:publisher") -> bool:
    """In the transaction that inserted ``task`` (pending, due now, its ``created`` event
    written): if it may go to the broker now, record it ``queued`` in that same transaction (one
    statement with its event) and return True; the caller calls task_send_queued once
    committed. Otherwise (fair share: over its brand's window, or a brand with limits) it stays
    pending, due now with its waiting reason, for the release, which for a brand with limits
    runs once the transaction has committed."""
    if settings.TASK_FAIR_SHARE:
        admitted, waiting, limited = fairshare.admit_now([task])
        if not admitted:
            _wait_for_release(waiting, limited, actor=actor, release_on_commit=True)
            return False
    return _QUEUE.run(task, actor=actor, values=broker.released(timezone.now())) is not None


def task_insert_due(task: Task, *, actor: str, data: dict | None = None) -> bool:
    """PostgreSQL: insert ``task`` (new, due now) with its ``created`` event and, when fair
    share admits it, already ``queued`` with its ``queued`` event: the brand's fair-share read,
    then one prepared statement (outside a transaction, it is its own: one durable commit and
    no BEGIN/COMMIT round trips). Returns True when it was recorded queued (the caller calls
    task_send_queued once committed). Otherwise it is pending, due now with its waiting reason
    (as task_admit_created leaves it), and a brand with limits is released once committed.
    The same rows as task.save() + its event + task_admit_created, in one round trip."""
    now = timezone.now()
    reason, limited = fairshare.admit_one(task) if settings.TASK_FAIR_SHARE else (None, False)
    queued = reason is None
    task.created_at = task.updated_at = now
    if queued:
        task.status, task.queued_at, task.available_at = S.QUEUED, now, None
        task.waiting_reason = None
    else:  # as fairshare.hold(due=True) leaves it
        task.waiting_reason, task.available_at = reason, min(task.available_at or now, now)
    connection = transaction.get_connection()
    params = {
        f"t_{f.column}": f.get_db_prep_save(getattr(task, f.attname), connection)
        for f in _INSERT_TASK_FIELDS
    }
    events = [("c", K.CREATED, S.PENDING, actor, data)]
    if queued:
        events.append(("q", K.QUEUED, S.QUEUED, "system:publisher", None))
    for prefix, kind, to, who, extra in events:
        event = TaskEvent(
            kind=kind, from_status=S.PENDING, to_status=to, actor=who[:255], data=extra or {}
        )
        event.created_at = now
        for f in _EVENT_FIELDS:
            if f.attname not in sm.FROM_TASK_ROW:
                params[f"{prefix}_{f.column}"] = f.get_db_prep_save(
                    getattr(event, f.attname), connection
                )
    with transaction.mark_for_rollback_on_error(), sm.cursor() as cur:
        cur.execute(_insert_due_text(queued, connection), params)
        task.pk, stored = cur.fetchone()
    # As PostgreSQL stored it (jsonb orders keys its own way), as a read of the task shows it.
    task.context_data = _CONTEXT_DATA.from_db_value(stored, None, connection)
    task._state.adding, task._state.db = False, connection.alias
    sm.log_transition(task, kind=K.CREATED, actor=actor)
    if queued:
        sm.log_transition(task, kind=K.QUEUED, actor="system:publisher")
    elif limited:
        transaction.on_commit(
            partial(
                fairshare.release,
                [task.brand_id],
                actor="system:publisher",
                wait=True,
                gated=[task],
            )
        )
    return queued


_CONTEXT_DATA = Task._meta.get_field("context_data")
_INSERT_TASK_FIELDS = [f for f in Task._meta.concrete_fields if not f.primary_key]
_EVENT_FIELDS = [f for f in TaskEvent._meta.concrete_fields if not f.primary_key]
_insert_due_texts: dict[bool, str] = {}


def _insert_due_text(queued: bool, connection) -> str:
    """INSERT task RETURNING its id, brand and attempts, and the INSERT of its events (created,
    then queued when ``queued``: UNION ALL keeps their ids in that order) fed by it."""
    text = _insert_due_texts.get(queued)
    if text is None:
        table, events = Task._meta.db_table, TaskEvent._meta.db_table
        columns = ", ".join(f'"{f.column}"' for f in _INSERT_TASK_FIELDS)
        values = ", ".join(f"%(t_{f.column})s" for f in _INSERT_TASK_FIELDS)
        returning = ", ".join(
            f'"{c}"' for c in dict.fromkeys(["id", *sm.FROM_TASK_ROW.values(), "context_data"])
        )
        event_columns = ", ".join(f'"{f.column}"' for f in _EVENT_FIELDS)

        def select(prefix: str) -> str:
            values = [
                f't."{sm.FROM_TASK_ROW[f.attname]}"'
                if f.attname in sm.FROM_TASK_ROW
                else f"%({prefix}_{f.column})s::{f.cast_db_type(connection)}"  # typed: UNION
                for f in _EVENT_FIELDS
            ]
            return f"SELECT {', '.join(values)} FROM t"  # noqa: S608 - the models' columns

        selects = " UNION ALL ".join(select(p) for p in ("c", "q")[: 2 if queued else 1])
        # Identifiers from the models' metadata, values as parameters: nothing from outside.
        text = _insert_due_texts[queued] = (
            f'WITH t AS (INSERT INTO "{table}" ({columns}) VALUES ({values}) '  # noqa: S608
            f'RETURNING {returning}), e AS (INSERT INTO "{events}" ({event_columns}) {selects}) '
            'SELECT "id", "context_data" FROM t'
        )
    return text


def task_send_queued(*, task: Task, actor: str = "system:publisher") -> bool:
    """After the commit of task_admit_created: send the message without waiting for the
    broker's confirm (a message the broker accepted and then lost is republished by the
    sweeper, tasks_requeue_lost). If the send raises, the task goes back to ``pending``, due
    at once, with a ``publish_failed`` event: the release loop publishes it."""
    try:
        broker.send(task, confirm=False)
    except Exception as exc:
        _publish_failed(task, exc, actor=actor, handed_back=True)
        return False
    return True


def _wait_for_release(
    waiting: dict, limited: set[int], *, actor: str, release_on_commit: bool = False
) -> None:
    """Tasks fair share did not admit: due now with their reason; a brand with limits goes
    through the locked release at once (or once the caller's transaction has committed)."""
    fairshare.hold(waiting, due=True)
    if limited:
        release = partial(
            fairshare.release, sorted(limited), actor=actor, wait=True, gated=list(waiting)
        )
        if release_on_commit:
            transaction.on_commit(release)
        else:
            release()


def _publish_failed(task: Task, exc: Exception, *, actor: str, handed_back: bool = False) -> None:
    """Record a failed publish; ``handed_back``: the task was recorded as queued, it goes back
    to pending (due now) so the release loop publishes it."""
    logger.warning(
        "publish failed; the release loop will retry",
        extra={"task_id": task.task_id, "brand_id": task.brand_id, "error": repr(exc)},
    )
    try:
        if handed_back:
            sm.transition(
                task,
                to=S.PENDING,
                kind=K.PUBLISH_FAILED,
                actor=actor,
                frm=[S.QUEUED],
                message=repr(exc),
                fields={"available_at": timezone.now(), "queued_at": None},
            )
        else:
            sm.record_event(task, kind=K.PUBLISH_FAILED, actor=actor, message=repr(exc))
    except Exception:
        # Not recorded: a pending task is published by the release loop once its grace period
        # is over, a queued one by the sweeper (tasks_requeue_lost).
        logger.warning("could not record publish failure", exc_info=True)


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
    """Republish queued tasks whose message is gone (queue purged, message lost by the broker
    after it took it, or never sent: a create's process died between its commit and its send):
    still unclaimed TASK_QUEUED_LOST_SECONDS after being queued, and their broker queue is
    either empty or already past them (_overtaken), which also holds under a queue that never
    empties. A duplicate message is harmless, the claim ignores it."""
    from task_core.selectors import broker_queue_stats

    cutoff = timezone.now() - timedelta(seconds=settings.TASK_QUEUED_LOST_SECONDS)
    candidates = Task.objects.unscoped().filter(status=S.QUEUED, queued_at__lt=cutoff)
    queues = set(candidates.values_list("queue", flat=True).distinct()[:50])
    if not queues:
        return 0
    depths = broker_queue_stats(sorted(queues))["queues"]
    empty = [name for name, q in depths.items() if q["depth"] == 0]
    lost = candidates.filter(queue__in=queues).filter(Q(queue__in=empty) | _overtaken())
    requeued = 0
    for task in lost.order_by("queued_at")[:limit]:
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


def _overtaken() -> Q:
    """A queued task whose queue has moved past it: a task of the same queue with the same or
    a lower priority, queued more than TASK_PUBLISH_GRACE_SECONDS after it, is running now.
    RabbitMQ delivers a queue's messages in publish order within a priority, the highest
    priority first, so this task's message should have been delivered before that one; the
    grace covers a create's send coming a little after its "queued" commit. (A message still
    in a busy worker's prefetch buffer looks lost too: the duplicate is ignored by the claim.)
    Only running tasks are looked at (task_running_hb_idx), which is enough while the queue
    has a backlog: then its consumers are always busy with its latest deliveries."""
    grace = timedelta(seconds=settings.TASK_PUBLISH_GRACE_SECONDS)
    rank = Task.BROKER_PRIORITY
    overtaken = Q(pk__in=[])
    for priority, level in rank.items():
        later_running = Task.objects.unscoped().filter(
            status=S.RUNNING,
            queue=OuterRef("queue"),
            priority__in=[p for p, lv in rank.items() if lv <= level],
            queued_at__gt=OuterRef("queued_at") + grace,
        )
        overtaken |= Q(priority=priority) & Exists(later_running)
    return overtaken

"""The one task state machine: the table of legal transitions and the only code that applies it.

A transition is one conditional ``UPDATE ... WHERE status IN (<legal sources>)`` plus its
timeline event, in one transaction: two processes racing for the same change cannot both win.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from task_core.models import Task, TaskEvent

logger = logging.getLogger("megahub.tasks")
S = Task.Status

# source -> legal targets
TRANSITIONS: dict[str, frozenset[str]] = {
    # pending -> running: a worker may claim before the publish confirmation is recorded.
    S.PENDING: frozenset({S.QUEUED, S.RUNNING, S.CANCELLED}),
    S.QUEUED: frozenset({S.RUNNING, S.CANCELLED}),
    S.RUNNING: frozenset(
        {S.COMPLETED, S.FAILED, S.RETRYING, S.CANCELLED, S.PENDING, S.PAUSED, S.INTERRUPTED}
    ),
    # retrying -> running: a claim may race the release loop's commit of "queued".
    S.RETRYING: frozenset({S.QUEUED, S.RUNNING, S.CANCELLED}),
    S.PAUSED: frozenset({S.PENDING, S.CANCELLED}),
    S.INTERRUPTED: frozenset({S.PENDING, S.CANCELLED}),
    S.FAILED: frozenset({S.PENDING}),  # manual retry
    S.CANCELLED: frozenset({S.PENDING}),  # manual retry
    S.COMPLETED: frozenset(),
}


def sources_for(target: str) -> frozenset[str]:
    return frozenset(src for src, targets in TRANSITIONS.items() if target in targets)


class IllegalTransition(Exception):
    pass


def _allowed(to: str, frm: Iterable[str] | None) -> list[str]:
    allowed = sources_for(to)
    if frm is not None:
        frm = set(frm)
        illegal = frm - allowed
        if illegal:
            raise IllegalTransition(f"{sorted(illegal)} -> {to} is not a legal transition")
        allowed = frozenset(frm)
    if not allowed:
        raise IllegalTransition(f"nothing may move to {to}")
    return sorted(allowed)


def transition(
    task: Task | int,
    *,
    to: str,
    kind: str,
    actor: str,
    frm: Iterable[str] | None = None,
    fields: dict | None = None,
    where: Q | None = None,
    message: str = "",
    data: dict | None = None,
) -> Task | None:
    """Move one task to ``to`` if its current status allows it; return the task, else None.

    ``fields`` are written in the same UPDATE (F() expressions allowed); ``where`` (a Q) adds
    conditions (e.g. the attempt number a worker owns). Given a pk, the row is re-read after a
    successful update; given an instance, the instance is refreshed from the database.
    """
    allowed = _allowed(to, frm)
    now = timezone.now()
    pk = task.pk if isinstance(task, Task) else task
    with transaction.atomic():
        updated = (
            Task.objects.unscoped()
            .filter(where or Q(), pk=pk, status__in=allowed)
            .update(status=to, updated_at=now, **(fields or {}))
        )
        if not updated:
            return None
        row = Task.objects.unscoped().get(pk=pk)
        TaskEvent.objects.create(
            task_id=pk,
            brand_id=row.brand_id,
            kind=kind,
            from_status=task.status if isinstance(task, Task) else "",
            to_status=to,
            attempt=row.attempts,
            actor=actor,
            message=message[:2000],
            data=data or {},
        )
    log_transition(row, kind=kind, actor=actor, message=message)
    if isinstance(task, Task):
        task.__dict__.update(
            {f.attname: getattr(row, f.attname) for f in Task._meta.concrete_fields}
        )
        return task
    return row


def transition_many(
    tasks: list[Task], *, to: str, kind: str, actor: str, fields: dict | None = None
) -> int:
    """Move tasks the caller holds locked (SELECT ... FOR UPDATE) to ``to`` in one UPDATE."""
    if not tasks:
        return 0
    allowed = _allowed(to, None)
    movable = [t for t in tasks if t.status in allowed]
    now = timezone.now()
    with transaction.atomic():
        updated = (
            Task.objects.unscoped()
            .filter(pk__in=[t.pk for t in movable], status__in=allowed)
            .update(status=to, updated_at=now, **(fields or {}))
        )
        TaskEvent.objects.bulk_create(
            TaskEvent(
                task_id=t.pk,
                brand_id=t.brand_id,
                kind=kind,
                from_status=t.status,
                to_status=to,
                attempt=t.attempts,
                actor=actor,
            )
            for t in movable
        )
    for t in movable:
        t.status = to
        log_transition(t, kind=kind, actor=actor)
    return updated


def record_event(task: Task, *, kind: str, actor: str, message: str = "", data=None) -> None:
    """A timeline entry that is not a status change (progress milestone, publish failure...)."""
    TaskEvent.objects.create(
        task_id=task.pk,
        brand_id=task.brand_id,
        kind=kind,
        from_status=task.status,
        to_status=task.status,
        attempt=task.attempts,
        actor=actor,
        message=message[:2000],
        data=data or {},
    )


def log_transition(task: Task, *, kind: str, actor: str, message: str = "") -> None:
    logger.info(
        "task %s",
        kind,
        extra={
            "task_id": task.task_id,
            "task_pk": task.pk,
            "brand_id": task.brand_id,
            "task_type": task.task_type,
            "status": task.status,
            "attempt": task.attempts,
            "actor": actor,
            **({"detail": message[:500]} if message else {}),
        },
    )

"""The one task state machine: the table of legal transitions and the only code that applies it.

A transition is one conditional ``UPDATE ... WHERE status IN (<legal sources>)`` plus its
timeline event, in one transaction: two processes racing for the same change cannot both win.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.db import connections, transaction
from django.db.models import Q, sql
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
    conditions (e.g. the attempt number a worker owns). Given a pk, the updated row is returned
    as a new instance; given an instance, it is updated in place from the updated row.
    """
    allowed = _allowed(to, frm)
    pk = task.pk if isinstance(task, Task) else task
    queryset = Task.objects.unscoped().filter(where or Q(), pk=pk, status__in=allowed)
    event = TaskEvent(
        kind=kind,
        from_status=task.status if isinstance(task, Task) else "",
        to_status=to,
        actor=actor,
        message=message[:2000],
        data=data or {},
    )
    values = {"status": to, "updated_at": timezone.now(), **(fields or {})}
    if connections[queryset.db].vendor == "postgresql":
        # One statement is its own transaction: no BEGIN round trip outside an atomic block.
        with transaction.mark_for_rollback_on_error(queryset.db):
            row = _update_returning_with_event(queryset, values, event)
    else:
        with transaction.atomic():
            row = _update_then_insert_event(queryset, pk, values, event)
    if row is None:
        return None
    log_transition(row, kind=kind, actor=actor, message=message)
    if isinstance(task, Task):
        task.__dict__.update(
            {f.attname: getattr(row, f.attname) for f in Task._meta.concrete_fields}
        )
        return task
    return row


# The event columns the database fills from the updated task row rather than from the event.
_FROM_TASK_ROW = {"task_id": "id", "brand_id": "brand_id", "attempt": "attempts"}


def _update_returning_with_event(queryset, values: dict, event: TaskEvent) -> Task | None:
    """One statement: the conditional UPDATE ... RETURNING the new row, and the timeline INSERT
    fed by it (no row updated, no event), so a transition is one round trip plus its COMMIT.

    Django's update() returns no rows, so the UPDATE is compiled by the ORM (F() expressions and
    Q conditions as usual) and wrapped in a data-modifying CTE.
    """
    connection = connections[queryset.db]
    query = queryset.query.chain(sql.UpdateQuery)
    query.add_update_values(values)
    query.clear_select_clause()
    update_sql, update_params = query.get_compiler(queryset.db).as_sql()
    task_fields = Task._meta.concrete_fields
    qn = connection.ops.quote_name
    returning = ", ".join(f"{qn(Task._meta.db_table)}.{qn(f.column)}" for f in task_fields)
    event_columns, event_values, event_params = [], [], []
    for f in TaskEvent._meta.concrete_fields:
        if f.primary_key:
            continue
        event_columns.append(qn(f.column))
        if f.attname in _FROM_TASK_ROW:
            event_values.append(f"t.{qn(_FROM_TASK_ROW[f.attname])}")
        else:
            event_values.append("%s")
            event_params.append(f.get_db_prep_save(f.pre_save(event, add=True), connection))
    template = (
        "WITH t AS ({} RETURNING {}), e AS (INSERT INTO {} ({}) SELECT {} FROM t) SELECT {} FROM t"
    )
    statement = template.format(
        update_sql,
        returning,
        qn(TaskEvent._meta.db_table),
        ", ".join(event_columns),
        ", ".join(event_values),
        ", ".join(f"t.{qn(f.column)}" for f in task_fields),
    )
    with connection.cursor() as cursor:
        cursor.execute(statement, (*update_params, *event_params))
        found = cursor.fetchone()
    if found is None:
        return None
    # Same value conversions (JSON, time zones...) as a SELECT through the ORM.
    compiler = Task.objects.unscoped().none().query.get_compiler(queryset.db)
    columns = [f.get_col(Task._meta.db_table) for f in task_fields]
    (converted,) = compiler.apply_converters([list(found)], compiler.get_converters(columns))
    return Task.from_db(queryset.db, [f.attname for f in task_fields], converted)


def _update_then_insert_event(queryset, pk: int, values: dict, event: TaskEvent) -> Task | None:
    """The same transition for databases without data-modifying CTEs (SQLite, test-fast)."""
    if not queryset.update(**values):
        return None
    row = Task.objects.unscoped().get(pk=pk)
    event.task_id, event.brand_id, event.attempt = row.pk, row.brand_id, row.attempts
    event.save(force_insert=True)
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

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
from task_core.sql_parts import _null, _row_insert, _row_params, cursor, db_prep, row_sources

logger = logging.getLogger("megahub.tasks")
S = Task.Status

# source -> legal targets
TRANSITIONS: dict[str, frozenset[str]] = {
    # pending -> running: a worker may claim before the publish confirmation is recorded.
    S.PENDING: frozenset({S.QUEUED, S.RUNNING, S.CANCELLED}),
    # queued -> pending: a create records "queued" before it publishes; a publish that fails
    # hands the task back to the release loop (publishing.task_send_queued).
    S.QUEUED: frozenset({S.RUNNING, S.CANCELLED, S.PENDING}),
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
    The ORM path, for the rare transitions; the worker's own run through Statement (below).
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
    return _moved(task, row, kind=kind, actor=actor, message=message)


def _moved(task: Task | int, row: Task | None, *, kind: str, actor: str, message: str):
    if row is None:
        return None
    log_transition(row, kind=kind, actor=actor, message=message)
    if isinstance(task, Task):
        task.__dict__.update({name: getattr(row, name) for name in _ATTNAMES})
        return task
    return row


_TASK_FIELDS = Task._meta.concrete_fields
_ATTNAMES = [f.attname for f in _TASK_FIELDS]
_TASK_COLUMNS = TASK_COLUMNS = ", ".join(f'"{f.column}"' for f in _TASK_FIELDS)
# The event columns the database fills from the updated task row rather than from the event.
FROM_TASK_ROW = {"task_id": "id", "brand_id": "brand_id", "attempt": "attempts"}


def _event_insert(placeholder) -> str:
    """``INSERT INTO <events> (...) SELECT ... FROM t``: task, brand and attempt from the updated
    row ``t``, every other column from ``placeholder(field)``."""
    columns, values = [], []
    for f in TaskEvent._meta.concrete_fields:
        if not f.primary_key:
            columns.append(f'"{f.column}"')
            source = FROM_TASK_ROW.get(f.attname)
            values.append(f't."{source}"' if source else placeholder(f))
    table = TaskEvent._meta.db_table
    # Identifiers from the models' metadata, values as parameters: nothing from outside.
    return f'INSERT INTO "{table}" ({", ".join(columns)}) SELECT {", ".join(values)} FROM t'  # noqa: S608


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
    update_sql, params = query.get_compiler(queryset.db).as_sql()
    params = list(params)

    def placeholder(f):
        params.append(f.get_db_prep_save(f.pre_save(event, add=True), connection))
        return "%s"

    statement = (
        f"WITH t AS ({update_sql} RETURNING {_TASK_COLUMNS}), "  # noqa: S608
        f"e AS ({_event_insert(placeholder)}) SELECT {_TASK_COLUMNS} FROM t"
    )
    with connection.cursor() as cur:
        cur.execute(statement, params)
        found = cur.fetchone()
    return None if found is None else task_from_row(found, queryset.db)


def _update_then_insert_event(queryset, pk: int, values: dict, event: TaskEvent) -> Task | None:
    """The same transition for databases without data-modifying CTEs (SQLite, test-fast)."""
    if not queryset.update(**values):
        return None
    row = Task.objects.unscoped().get(pk=pk)
    event.task_id, event.brand_id, event.attempt = row.pk, row.brand_id, row.attempts
    event.save(force_insert=True)
    return row


def task_from_row(row, using: str) -> Task:
    """A Task from a row of every concrete column (_TASK_COLUMNS), with the same value
    conversions (JSON, time zones...) as a SELECT through the ORM."""
    return Task.from_db(using, _ATTNAMES, _converted(row, using))


def _converted(row, using: str) -> list:
    """The values of a row of _TASK_COLUMNS as the ORM's SELECT would give them."""
    converters = _converters.get(using)
    if converters is None:
        compiler = Task.objects.unscoped().none().query.get_compiler(using)
        columns = [f.get_col(Task._meta.db_table) for f in _TASK_FIELDS]
        converters = _converters[using] = list(compiler.get_converters(columns).items())
    row, connection = list(row), connections[using]
    for pos, (convs, expression) in converters:
        for converter in convs:
            row[pos] = converter(row[pos], expression, connection)
    return row


_converters: dict[str, list] = {}


# --- the worker's transitions, written once as SQL -----------------------------------------------
# They run on sql_parts.cursor, which the rest of the project also reaches as state_machine.cursor.


def _literal(value: str) -> str:
    if not value.replace("_", "").isalnum():  # statuses and event kinds: identifiers only
        raise ValueError(f"not a status or event kind: {value!r}")
    return f"'{value}'"


# The event columns a Statement fills from its parameters (the task's from the row).
_EVENT_PARAMS = {
    "from_status": "%(from_status)s",
    "actor": "%(actor)s",
    "message": "%(message)s",
    "data": "%(data)s",
    "created_at": "%(now)s",
}
_EVENT_DATA = TaskEvent._meta.get_field("data")


class Statement:
    """A transition written once as one SQL statement and run with the same text every time,
    so that PostgreSQL prepares it (``cursor`` above): the conditional UPDATE (its legal sources
    from TRANSITIONS, as for ``transition``) RETURNING the new row, the timeline event, and the
    rows other apps record with it (``run(rows=...)``: model instances, inserted only when the
    task moved, ``ON CONFLICT DO NOTHING``). One round trip, and one commit in autocommit.

    ``columns``: the task columns the transition writes, each from the parameter of its name or
    from the SQL expression given (``{"attempts": "attempts + 1"}``). ``notify``: a SELECT over
    ``t`` (the moved row) run with it on PostgreSQL for its side effect, e.g. a ``pg_notify``
    (its one column named ``_n``); SQLite has no notifications and skips it. ``where``: a further
    condition in SQL with named parameters (``%(name)s``), given to ``run``. On a database
    without data-modifying CTEs (SQLite) the same UPDATE ... RETURNING and INSERTs run one after
    the other in a transaction.
    """

    def __init__(
        self,
        *,
        to: str,
        kind: str,
        frm: Iterable[str] | None = None,
        columns: dict[str, str | None] | Iterable[str] = (),
        where: str = "",
        notify: str = "",
    ):
        self.to, self.kind = to, kind
        self.notify = notify
        sources = ", ".join(_literal(s) for s in _allowed(to, frm))
        columns = columns if isinstance(columns, dict) else dict.fromkeys(columns)
        if unknown := set(columns) - {f.column for f in _TASK_FIELDS}:
            raise ValueError(f"not task columns: {sorted(unknown)}")
        sets = [f'"status" = {_literal(to)}', '"updated_at" = %(now)s']
        sets += [f'"{column}" = {expr or f"%({column})s"}' for column, expr in columns.items()]
        where = f'"id" = %(pk)s AND "status" IN ({sources})' + (f" AND ({where})" if where else "")
        table = Task._meta.db_table
        self.update = f'UPDATE "{table}" SET {", ".join(sets)} WHERE {where}'  # noqa: S608
        fixed = {"kind": _literal(kind), "to_status": _literal(to)}
        self.event = _event_insert(
            lambda f: fixed.get(f.attname) or _EVENT_PARAMS.get(f.attname) or _null(f)
        )
        self._texts: dict[tuple, str] = {}

    def text(self, models: tuple = ()) -> str:
        """The PostgreSQL statement with one row of each of ``models`` (built once per tuple)."""
        text = self._texts.get(models)
        if text is None:
            parts = [f"t AS ({self.update} RETURNING {_TASK_COLUMNS})", f"e AS ({self.event})"]
            parts += [f"r{i} AS ({_row_insert(m, i)})" for i, m in enumerate(models)]
            select = f"SELECT {_TASK_COLUMNS} FROM t"  # noqa: S608 - the model's columns
            if self.notify:  # materialized and joined: it runs once, after the UPDATE
                parts.append(f"n AS MATERIALIZED ({self.notify})")
                select += " LEFT JOIN n ON true"
            text = f"WITH {', '.join(parts)} {select}"
            self._texts[models] = text
        return text

    def run(
        self,
        task: Task | int,
        *,
        actor: str,
        values: dict | None = None,
        message: str = "",
        data: dict | None = None,
        rows: list | tuple = (),
        using: str = "default",
    ) -> Task | None:
        """Apply the transition to one task; the task (updated in place when given an instance)
        or None when its current row does not allow it. ``values``: the parameters of the
        columns and of ``where``."""
        connection = connections[using]
        params = {
            "pk": task.pk if isinstance(task, Task) else task,
            "now": timezone.now(),
            "from_status": task.status if isinstance(task, Task) else "",
            "actor": actor[:255],
            "message": message[:2000],
            "data": _EVENT_DATA.get_db_prep_save(data or {}, connection),
        }
        for name, value in (values or {}).items():
            field = _TASK_BY_COLUMN.get(name)
            params[name] = db_prep(field, connection)(value) if field else value
        for i, row in enumerate(rows):
            params.update(_row_params(row, i, connection))
        if connection.vendor == "postgresql":
            with transaction.mark_for_rollback_on_error(using), cursor(using) as cur:
                cur.execute(self.text(tuple(type(row) for row in rows)), params)
                found = cur.fetchone()
        else:
            found = self._run_in_steps(params, [type(row) for row in rows], using)
        if found is not None and isinstance(task, Task):
            # The caller's instance takes the new row's values (as _moved does), without a
            # second Task built from the row first: the outcome of every attempt comes here.
            task.__dict__.update(zip(_ATTNAMES, _converted(found, using), strict=True))
            log_transition(task, kind=self.kind, actor=actor, message=message)
            return task
        row = None if found is None else task_from_row(found, using)
        return _moved(task, row, kind=self.kind, actor=actor, message=message)

    def _run_in_steps(self, params: dict, models: list, using: str):
        with transaction.atomic(using), connections[using].cursor() as cur:
            cur.execute(f"{self.update} RETURNING {_TASK_COLUMNS}", params)
            found = cur.fetchone()
            if found is not None:
                moved = dict(zip(_ATTNAMES, found, strict=True))
                used = {
                    *FROM_TASK_ROW.values(),
                    *(c for m in models for c in row_sources(m).values()),
                }
                params.update({f"t_{c}": moved[c] for c in used if c})
                t = ", ".join(f'%(t_{c})s AS "{c}"' for c in used if c)
                for insert in [self.event, *(_row_insert(m, i) for i, m in enumerate(models))]:
                    cur.execute(f"WITH t AS (SELECT {t}) {insert}", params)
        return found


_TASK_BY_COLUMN = {f.column: f for f in _TASK_FIELDS}


def transition_many(
    tasks: list[Task], *, to: str, kind: str, actor: str, fields: dict | None = None
) -> int:
    """Move tasks the caller holds locked (SELECT ... FOR UPDATE) to ``to``, each with its
    timeline event (in the tasks' order); returns how many moved. On PostgreSQL one prepared
    statement (the UPDATE and the events' INSERT, _ManyStatement), else an UPDATE and a bulk
    INSERT in a transaction. ``fields``: plain values written to every moved task."""
    if not tasks:
        return 0
    allowed = _allowed(to, None)
    movable = [t for t in tasks if t.status in allowed]
    if not movable:
        return 0
    fields = fields or {}
    now = timezone.now()
    connection = connections["default"]
    plain = not any(hasattr(v, "resolve_expression") for v in fields.values())
    if connection.vendor == "postgresql" and plain:
        moved = _ManyStatement.get(to, kind, allowed, tuple(fields)).run(
            movable, actor=actor, values=fields, now=now
        )
        movable = [t for t in movable if t.pk in moved]
        updated = len(moved)
    else:
        with transaction.atomic():
            updated = (
                Task.objects.unscoped()
                .filter(pk__in=[t.pk for t in movable], status__in=allowed)
                .update(status=to, updated_at=now, **fields)
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


class _ManyStatement:
    """transition_many on PostgreSQL as one statement with the same text every time (prepared
    per connection, ``cursor``): the tasks' ids and current statuses as arrays, the conditional
    UPDATE of those still in a legal source status RETURNING them, and their events inserted in
    the order given (from_status as each task had it); one round trip, no savepoint."""

    _made: dict[tuple, _ManyStatement] = {}

    @classmethod
    def get(cls, to: str, kind: str, allowed: list[str], names: tuple[str, ...]):
        key = (to, kind, tuple(allowed), names)
        made = cls._made.get(key)
        if made is None:
            made = cls._made[key] = cls(to, kind, allowed, names)
        return made

    def __init__(self, to: str, kind: str, allowed: list[str], names: tuple[str, ...]):
        self.fields = [Task._meta.get_field(name) for name in names]
        sets = [f'"status" = {_literal(to)}', '"updated_at" = %(now)s']
        sets += [f'"{f.column}" = %(f_{f.column})s' for f in self.fields]
        sources = ", ".join(_literal(s) for s in allowed)
        table = Task._meta.db_table
        fixed = {
            "kind": _literal(kind),
            "to_status": _literal(to),
            "from_status": 't."from_status"',
            "actor": "%(actor)s",
            "message": "''",
            "data": "'{}'::jsonb",
            "created_at": "%(now)s",
        }
        insert = _event_insert(lambda f: fixed.get(f.attname) or _null(f))
        self.text = (
            "WITH m AS (SELECT * FROM unnest(%(ids)s::bigint[], %(froms)s::text[]) "  # noqa: S608
            'WITH ORDINALITY AS m("id", "from_status", "ord")), '
            f't AS (UPDATE "{table}" AS k SET {", ".join(sets)} FROM m '
            f'WHERE k."id" = m."id" AND k."status" IN ({sources}) '
            'RETURNING k."id", k."brand_id", k."attempts", m."from_status", m."ord"), '
            f'e AS ({insert} ORDER BY t."ord") SELECT "id" FROM t'
        )

    def run(self, tasks: list[Task], *, actor: str, values: dict, now) -> set[int]:
        connection = connections["default"]
        params = {
            "ids": [t.pk for t in tasks],
            "froms": [str(t.status) for t in tasks],
            "now": now,
            "actor": actor[:255],
        }
        for f in self.fields:
            params[f"f_{f.column}"] = f.get_db_prep_save(values[f.name], connection)
        with transaction.mark_for_rollback_on_error(), cursor() as cur:
            cur.execute(self.text, params)
            return {row[0] for row in cur.fetchall()}


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


# A task's routine life (queued, started, completed) is logged at DEBUG: at INFO the worker logs
# no more per task than Celery's own "received" and "succeeded" lines (which carry the task id,
# brand and type); every other transition (failed, retrying, cancelled...) stays at INFO.
_ROUTINE = frozenset({TaskEvent.Kind.QUEUED, TaskEvent.Kind.STARTED, TaskEvent.Kind.COMPLETED})


def log_transition(task: Task, *, kind: str, actor: str, message: str = "") -> None:
    level = logging.DEBUG if kind in _ROUTINE else logging.INFO
    if not logger.isEnabledFor(level):
        return
    logger.log(
        level,
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

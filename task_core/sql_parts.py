"""The pieces the state machine's SQL statements are built from (task_core/state_machine.py):
the connection's kept server-binding cursor, the statements' parameters (db_prep), and the
INSERT of the rows other apps record with an outcome (task_core.signals.OutcomeRow)."""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.db import InterfaceError, OperationalError, connections, models
from django.db.models import Field

from task_core.models import Task

logger = logging.getLogger("megahub.tasks")


def cursor(using: str = "default"):
    """A cursor on Django's connection that binds parameters on the server (psycopg 3), so that
    a statement run with the same text often is prepared once per connection (DATABASES
    OPTIONS ``prepare_threshold``, settings.py; Django's own cursors bind on the client and are
    never prepared). It shares the connection's transaction and execute wrappers.

    One psycopg cursor is kept per connection and handed out again (its ``close`` only drops
    its results): building a cursor and its adapters for each of a task's statements cost more
    than the statement's own client work."""
    connection = connections[using]
    if connection.vendor != "postgresql" or connection.queries_logged:
        # Queries logged (DEBUG, CaptureQueriesContext): Django's cursor, which logs the
        # statement with its parameters; the same text, unprepared.
        return connection.cursor()
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    connection.validate_thread_sharing()
    pg = connection.connection
    kept = getattr(connection, "_megahub_kept_cursor", None)
    if kept is None or kept.connection is not pg:
        kept = connection._megahub_kept_cursor = _kept_cursor_class()(pg)
    elif kept.in_use:  # a statement run while another's cursor is open: a cursor of its own
        import psycopg

        return connection.make_cursor(psycopg.Cursor(pg))
    kept.in_use = True
    return connection.make_cursor(kept)


def first_statement(run, using: str = "default"):
    """``run()`` as the kept connection's first statement, in place of the health check's
    ``SELECT 1`` round trip: if that connection turns out dead (a restarted database, a killed
    backend), it is closed and ``run()`` tried once more on a new one. Outside a transaction
    only, and only for a statement that is safe to try again after a connection error."""
    connection = connections[using]
    retry = connection.connection is not None and not connection.in_atomic_block
    connection.health_check_done = True
    try:
        return run()
    except (OperationalError, InterfaceError):
        if not retry:
            raise
        logger.info("database connection unusable; reconnecting", exc_info=True)
        connection.close()
        return run()


_KeptCursor = None


def _kept_cursor_class():
    global _KeptCursor
    if _KeptCursor is None:
        import psycopg

        class KeptCursor(psycopg.Cursor):
            """A server-binding cursor that outlives ``with``: closing drops its results only
            (the next execute starts afresh), so the connection's one cursor serves again."""

            in_use = False

            def close(self) -> None:
                self._reset()
                self.in_use = False

        _KeptCursor = KeptCursor
    return _KeptCursor


def _null(field) -> str:
    if not field.null:
        raise ValueError(f"Statement has no value for {field.model.__name__}.{field.name}")
    return "NULL"


def _row_fields(model) -> list:
    return [f for f in model._meta.concrete_fields if not f.primary_key]


def row_sources(model) -> dict[str, str | None]:
    """attname -> the column of the moved task row ``t`` the database fills it from, or None
    for the statement's time (``%(now)s``), as ``model.OUTCOME_ROW_FROM_TASK`` declares: those
    values are not sent as parameters."""
    return getattr(model, "OUTCOME_ROW_FROM_TASK", {})


def _row_insert(model, i: int) -> str:
    """The INSERT of one row of ``model`` from parameters ``r<i>_<column>`` (and from ``t``,
    row_sources), only when the task row ``t`` moved; a second row for the same key is a
    no-op (WHERE true: SQLite's syntax)."""
    fields, sources = _row_fields(model), row_sources(model)
    task_columns = {f.column for f in Task._meta.concrete_fields}
    if unknown := {c for c in sources.values() if c is not None} - task_columns:
        raise ValueError(f"{model.__name__}.OUTCOME_ROW_FROM_TASK: not task columns {unknown}")

    def value(f) -> str:
        if f.attname not in sources:
            return f"%(r{i}_{f.column})s"
        return "%(now)s" if sources[f.attname] is None else f't."{sources[f.attname]}"'

    columns = ", ".join(f'"{f.column}"' for f in fields)
    values = ", ".join(value(f) for f in fields)
    table = model._meta.db_table
    return (
        f'INSERT INTO "{table}" ({columns}) SELECT {values} FROM t '  # noqa: S608
        "WHERE true ON CONFLICT DO NOTHING"
    )


def _row_params(row, i: int, connection) -> dict:
    return {
        name: prep(pre_save(row, True) if pre_save else getattr(row, attname))
        for name, attname, pre_save, prep in _row_plan(type(row), i, connection)
    }


# (model, i, alias) -> (parameter name, attname, pre_save or None, value -> database value) of
# its inserted fields: a field that keeps Field's own pre_save (the attribute as is) is read
# directly.
_row_plans: dict[tuple, list[tuple]] = {}


def _row_plan(model, i: int, connection) -> list[tuple]:
    key = (model, i, connection.alias)
    plan = _row_plans.get(key)
    if plan is None:
        plan = _row_plans[key] = [
            (
                f"r{i}_{f.column}",
                f.attname,
                f.pre_save if type(f).pre_save is not Field.pre_save else None,
                db_prep(f, connection),
            )
            for f in _row_fields(model)
            if f.attname not in row_sources(model)
        ]
    return plan


_PLAIN = {
    models.CharField: str,
    models.TextField: str,
    models.FloatField: float,
    models.DecimalField: Decimal,
    models.DateTimeField: datetime,
    **dict.fromkeys(
        (
            models.SmallIntegerField,
            models.IntegerField,
            models.BigIntegerField,
            models.PositiveSmallIntegerField,
            models.PositiveIntegerField,
            models.PositiveBigIntegerField,
        ),
        int,
    ),
}
_PLAIN_KEYS = (models.AutoField, models.BigAutoField)
_preps: dict[tuple, object] = {}


def db_prep(field, connection):
    """``field.get_db_prep_save(value, connection)`` as a function of the value, for the
    parameters of every attempt's statements (the metrics row alone has twenty): on PostgreSQL
    the generic chain (to_python, get_prep_value, the backend's adapt_*; ~3 µs a field) is
    skipped for the values whose result it leaves unchanged - None, a str for a text column, an
    int for an integer one (wrapped in the psycopg type Django uses: Int4...), a float, a finite
    Decimal, an aware datetime (naive: USE_TZ=False) - for Django's own field classes only (a
    subclass may convert). Every other value, field or database takes the field's method."""
    key = (field, connection.alias)
    prep = _preps.get(key)
    if prep is None:
        prep = _preps[key] = _db_prep(field, connection)
    return prep


def _db_prep(field, connection):
    def generic(value):
        return field.get_db_prep_save(value, connection)

    if isinstance(field, models.ForeignKey):  # the key as is (AutoFieldMixin: no Int8 wrapper)
        plain_key = type(field) is models.ForeignKey and type(field.target_field) in _PLAIN_KEYS
        kind = int if plain_key else None
    else:
        kind = _PLAIN.get(type(field))
    if connection.vendor != "postgresql" or kind is None:
        return generic
    if kind is int and not isinstance(field, models.ForeignKey):
        wrap = getattr(connection.ops, "integerfield_type_map", {}).get(field.get_internal_type())
        if wrap is None:
            return generic
        return lambda value: (
            wrap(value) if type(value) is int else None if value is None else generic(value)
        )
    if kind is Decimal:
        return lambda value: (
            value
            if value is None or (type(value) is Decimal and value.is_finite())
            else generic(value)
        )
    if kind is datetime:
        return lambda value: (
            value
            if value is None
            or (type(value) is datetime and (value.tzinfo is not None or not settings.USE_TZ))
            else generic(value)
        )
    return lambda value: value if value is None or type(value) is kind else generic(value)

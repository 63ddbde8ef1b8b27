"""Non-trivial reads of the task hub."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.core.exceptions import EmptyResultSet
from django.db import connections
from django.db.models import (
    AutoField,
    BooleanField,
    CharField,
    Count,
    DateTimeField,
    Expression,
    F,
    IntegerField,
    Min,
    Q,
    TextField,
)
from django.db.models.query import ValuesIterable
from django.utils import timezone

from task_core import state_machine
from task_core.models import Brand, BrandLimit, Task, TaskEvent

logger = logging.getLogger("megahub.tasks")
ACTIVE = [s for s in Task.Status.values if s not in Task.TERMINAL]


# The fields of a /tasks/ list row, in the API's order: TaskListSerializer's fields and the row
# PostgreSQL builds (task_list_rows) both come from here.
TASK_LIST_FIELDS = (
    "id", "task_id", "task_type", "status", "priority", "progress_percentage", "description",
    "brand", "created_by", "created_at", "started_at", "completed_at", "attempts",
    "max_retries", "error_message", "queue", "scheduled_for", "cancel_requested", "waiting_reason",
)  # fmt: skip


# How PostgreSQL (and SQLite, for the SQLite test run) writes a list value as DRF does: a
# datetime is ``datetime.isoformat()`` in UTC with ``Z`` (no fraction when the microseconds are
# 0, else 6 digits), a boolean is true/false; strings, integers and null are JSON as they are.
# PostgreSQL writes the datetime as a JSON string: in to_char's format, \" is a literal quote.
# The fraction is always written, then a zero one dropped: a quarter cheaper than choosing the
# format per row (CASE on the microseconds), 4 datetimes x 51 rows a page.
_ISO_PG = (
    """replace(to_char({c} AT TIME ZONE 'UTC', '\\"YYYY-MM-DD"T"HH24:MI:SS.US"Z\\"'), """
    """'.000000Z"', 'Z"')"""
)
_ISO_SQLITE = "replace({c}, ' ', 'T') || 'Z'"  # Django stores "YYYY-MM-DD HH:MM:SS[.ffffff]"
_BOOL_SQLITE = "CASE WHEN {c} THEN json('true') ELSE json('false') END"


def _pg_row_sql(connection, task: str, brand_name: str, username: str) -> str:
    """A task list row as compact JSON text, written by PostgreSQL exactly as DRF's
    JSONRenderer writes TaskListSerializer's data (``separators=(",", ":")``, keys in
    TASK_LIST_FIELDS' order, strings escaped by ``to_json`` as ``json.dumps`` escapes them with
    ``ensure_ascii=False``): the text goes into the response as it is (megahub.renderers).
    Concatenated rather than ``json_build_object``, which writes ``"key" : value`` and costs
    several times more per row."""

    def column(name: str) -> str:
        return f"{task}.{connection.ops.quote_name(Task._meta.get_field(name).column)}"

    def text(sql: str) -> str:
        return f"to_json({sql})::text"

    parts = []
    for i, name in enumerate(TASK_LIST_FIELDS):
        key = ("{" if i == 0 else ",") + f'"{name}":'
        if name == "brand":
            value = (
                f"""'{{"id":' || {column("brand")} || ',"name":' || {text(brand_name)} || '}}'"""
            )
        elif name == "created_by":
            creator = column("created_by")
            value = (
                f"""CASE WHEN {creator} IS NULL THEN 'null' ELSE '{{"id":' || {creator} """
                f"""|| ',"username":' || {text(username)} || '}}' END"""
            )
        else:
            field = Task._meta.get_field(name)
            if isinstance(field, DateTimeField):
                value = _ISO_PG.format(c=column(name))
            elif isinstance(field, BooleanField):
                value = f"CASE WHEN {column(name)} THEN 'true' ELSE 'false' END"
            elif isinstance(field, CharField | TextField):
                value = text(column(name))
            elif isinstance(field, IntegerField | AutoField):
                value = f"{column(name)}::text"
            else:
                raise TypeError(f"task list field {name!r}: no JSON form for {field}")
            if field.null:
                value = f"coalesce({value}, 'null')"
        parts.append(f"'{key}' || {value}")
    return "(" + " || ".join(parts) + " || '}')"


class _TaskListRow(Expression):
    """A task list row as JSON text, keys in TASK_LIST_FIELDS' order: compact JSON built by
    concatenation on PostgreSQL (``_pg_row_sql``), ``json_object`` on SQLite. Written as one
    SQL template over the task table: only the brand's name and the creator's username are
    resolved by the ORM (their joins), so a page costs one small expression, not one per
    field. Read as text: no decoding on the way through."""

    output_field = TextField()

    def __init__(self):
        super().__init__()
        self.joined = [F("brand__name"), F("created_by__username")]

    def get_source_expressions(self):
        return self.joined

    def set_source_expressions(self, exprs):
        self.joined = exprs

    def as_sql(self, compiler, connection):
        table = compiler.quote_name_unless_alias(compiler.query.get_initial_alias())
        (brand_name, p1), (username, p2) = (compiler.compile(e) for e in self.joined)
        if connection.vendor != "sqlite":
            return _pg_row_sql(connection, table, brand_name, username), [*p1, *p2]

        def column(name: str) -> str:
            return f"{table}.{connection.ops.quote_name(Task._meta.get_field(name).column)}"

        pairs = []
        for name in TASK_LIST_FIELDS:
            if name == "brand":
                value = f"json_object('id', {column('brand')}, 'name', {brand_name})"
            elif name == "created_by":
                creator = column("created_by")
                value = (
                    f"CASE WHEN {creator} IS NULL THEN NULL "
                    f"ELSE json_object('id', {creator}, 'username', {username}) END"
                )
            else:
                field = Task._meta.get_field(name)
                if isinstance(field, DateTimeField):
                    value = _ISO_SQLITE.format(c=column(name))
                elif isinstance(field, BooleanField):
                    value = _BOOL_SQLITE.format(c=column(name))
                elif isinstance(field, CharField | TextField | IntegerField | AutoField):
                    value = column(name)
                else:
                    raise TypeError(f"task list field {name!r}: no JSON form for {field}")
            pairs.append(f"'{name}', {value}")
        return f"json_object({', '.join(pairs)})", [*p1, *p2]


class _TaskListPage(ValuesIterable):
    """Evaluates a page of the task list (the keyset paginator's filtered, ordered and sliced
    ``values("id"[, "created_at"])``) as a deferred join: the page's ids first, from an index
    alone (for the plain list ``task_brand_id_idx``, brand_id, id DESC), then the rows of those
    ids by primary key with their JSON. In one statement the planner may instead walk the
    primary key back from a deep page's cursor and filter on the brand, reading ~(brands) rows
    per row kept. Yields ``{"id"[, "created_at"], "row"}`` in the page's order."""

    def __iter__(self):
        page = self.queryset
        connection = connections[page.db]
        order = _outer_order(page.query.order_by)
        if connection.vendor != "postgresql" or order is None:
            # SQLite (the test run) or an ordering this does not know: the same join by the ORM.
            yield from (
                Task.objects.unscoped()  # the ids come from the brand-scoped page below
                .filter(pk__in=page.values("pk"))
                .order_by(*page.query.order_by)
                .values("id", "created_at", row=_TaskListRow())
            )
            return
        try:
            inner, params = page.query.get_compiler(page.db).as_sql()
        except EmptyResultSet:  # a filter that matches nothing (``pk__in=[]``)
            return
        fields = page._fields  # "id", and "created_at" when the page is ordered by it
        columns = ", ".join(f't."{name}"' for name in fields)
        # Server-side binding: the statement's text is the same for every brand and cursor, so
        # it is prepared once per connection (parse and plan skipped; DB_PREPARE_THRESHOLD).
        with state_machine.cursor(page.db) as cursor:
            sql = _page_sql(connection, columns, inner, order)
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        for *values, row in rows:
            yield {**dict(zip(fields, values, strict=True)), "row": row}


def _outer_order(order_by) -> str | None:
    """The page's ORDER BY over the task's columns (``t``), or None when a term is not a
    plain ``[-]id`` / ``[-]created_at``."""
    terms = []
    for term in order_by:
        if not isinstance(term, str):
            return None
        name = term.lstrip("-")
        name = "id" if name == "pk" else name
        if name not in ("id", "created_at"):
            return None
        terms.append(f't."{name}" {"DESC" if term.startswith("-") else "ASC"}')
    return ", ".join(terms) or None


_PAGE_SQL: dict[str, tuple[str, str]] = {}


def _page_sql(connection, columns: str, inner: str, order: str) -> str:
    """The deferred join's statement around the page's own SQL (``inner``, from the ORM, joined
    in as it is: no formatting applied to it)."""
    if connection.alias not in _PAGE_SQL:
        qn = connection.ops.quote_name
        user = Task._meta.get_field("created_by").related_model
        brand_id = qn(Task._meta.get_field("brand").column)
        creator_id = qn(Task._meta.get_field("created_by").column)
        row = _pg_row_sql(connection, "t", 'b."name"', 'u."username"')
        # Our tables and columns only; the page's SQL and parameters come from the ORM.
        _PAGE_SQL[connection.alias] = (
            f", {row} FROM (",
            ") k "
            f'JOIN {qn(Task._meta.db_table)} t ON t."id" = k."id" '
            f'JOIN {qn(Brand._meta.db_table)} b ON b."id" = t.{brand_id} '
            f'LEFT JOIN {qn(user._meta.db_table)} u ON u."id" = t.{creator_id} '
            "ORDER BY ",
        )
    head, join = _PAGE_SQL[connection.alias]
    return "".join(("SELECT ", columns, head, inner, join, order))


def task_list_rows(queryset):
    """The task list's rows as the database builds them: one JSON text per task, with the
    API's keys, order and formats (TaskListSerializer's output as DRF renders it; tests hold
    the bytes equal), beside the columns the keyset paginator orders by. No model instances,
    no per-field Python, no decoding. Evaluated as a deferred join (``_TaskListPage``) whose
    first half reads only the id and the ordering's columns (``queryset``'s ordering, which
    the paginator applies again): for ``-id`` an index-only scan of the brand's index."""
    ordering = {term.lstrip("-") for term in queryset.query.order_by if isinstance(term, str)}
    page = queryset.values("id", *sorted(ordering & {"created_at"}))
    page._iterable_class = _TaskListPage
    return page


# Query parameters that leave GET /tasks/ the plain page (the brand's tasks by id, unfiltered):
# the paginator's own, the brand's, and an ordering by id.
_PLAIN_PARAMS = frozenset({"cursor", "page_size", "brand", "ordering"})


def task_list_is_plain(query_params, connection_alias: str = "default") -> bool:
    """True when a GET /tasks/ request lists the brand's tasks by id with no filter, search or
    other ordering (each parameter once, none holding NUL): ``TaskListStatement`` serves it.
    Anything else goes through the filter backends and the ORM (``task_list_rows``)."""
    if connections[connection_alias].vendor != "postgresql":
        return False
    for name, values in query_params.lists():
        if name not in _PLAIN_PARAMS or len(values) != 1 or "\x00" in values[0]:
            return False
    return query_params.get("ordering", "-id") in ("id", "-id")


class TaskListStatement:
    """The plain task list page (``task_list_is_plain``) as the keyset paginator evaluates it,
    without an ORM query built, filtered, cloned and compiled per request: the same deferred
    join as ``_TaskListPage`` (the brand's ids from ``task_brand_id_idx`` alone, then their rows
    as JSON), from a statement text kept per connection and shape and bound to the brand, the
    cursor's id and the page size's rows. It answers what ``KeysetPagination`` asks of a
    queryset: ``order_by("-id" | "id")``, ``filter(id__lt= | id__gt=)``, a slice, iteration."""

    model = Task

    def __init__(self, brand_id: int, using: str = "default"):
        self.brand_id, self.db = brand_id, using
        self._desc, self._op, self._position, self._slice = True, None, None, None

    def _clone(self, **changes) -> TaskListStatement:
        clone = object.__new__(TaskListStatement)
        clone.__dict__.update(self.__dict__, **changes)
        return clone

    def order_by(self, *fields) -> TaskListStatement:
        if fields not in (("-id",), ("id",), ("-pk",), ("pk",)):
            raise ValueError(f"TaskListStatement orders by id only, not {fields}")
        return self._clone(_desc=fields[0].startswith("-"))

    def filter(self, **kwargs) -> TaskListStatement:
        ((lookup, value),) = kwargs.items()
        if lookup not in ("id__lt", "id__gt", "pk__lt", "pk__gt"):
            raise ValueError(f"TaskListStatement filters on the id only, not {lookup}")
        return self._clone(_op="<" if lookup.endswith("lt") else ">", _position=int(value))

    def __getitem__(self, item) -> list[dict]:
        if not isinstance(item, slice) or item.step is not None or item.stop is None:
            raise TypeError("TaskListStatement takes a slice [start:stop] only")
        return list(self._clone(_slice=(item.start or 0, item.stop)))

    def __iter__(self):
        start, stop = self._slice or (0, None)
        if stop is None:
            raise TypeError("TaskListStatement evaluates a page: slice it first")
        connection = connections[self.db]
        shape = (connection.alias, self._desc, self._op, int(stop) - int(start), int(start))
        sql = _PLAIN_SQL.get(shape)
        if sql is None:
            sql = _plain_page_sql(connection, *shape[1:])
            if not shape[-1]:  # kept: ids are unique, so the cursors this server writes
                _PLAIN_SQL[shape] = sql  # have no offset (one in a forged cursor: not kept)
        params = [self.brand_id] if self._op is None else [self.brand_id, self._position]
        with state_machine.cursor(self.db) as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        for pk, row in rows:
            yield {"id": pk, "row": row}


_PLAIN_SQL: dict[tuple, str] = {}


def _plain_page_sql(connection, desc: bool, op: str | None, limit: int, offset: int) -> str:
    """The plain page's statement: the brand's ids by id from a keyset position (``op`` "<" or
    ">", bound), deferred-joined to their rows as ``_TaskListPage`` does."""
    qn = connection.ops.quote_name
    direction = "DESC" if desc else "ASC"
    brand_id = qn(Task._meta.get_field("brand").column)
    keyset = "" if op is None else f' AND "id" {op} %s'
    window = f" LIMIT {limit}" + (f" OFFSET {offset}" if offset else "")
    # Our table and columns, a fixed operator and integers: the values are bound.
    inner = (
        f'SELECT "id" FROM {qn(Task._meta.db_table)} '  # noqa: S608
        f'WHERE {brand_id} = %s{keyset} ORDER BY "id" {direction}{window}'
    )
    return _page_sql(connection, 't."id"', inner, f't."id" {direction}')


def task_events(*, task: Task):
    return TaskEvent.objects.unscoped().filter(task=task).order_by("id")


def broker_queue_stats(queue_names: list[str]) -> dict:
    """Live depth and consumer count per queue, straight from the broker (RabbitMQ)."""
    if not settings.CELERY_BROKER_URL.startswith(("amqp", "pyamqp")):
        return {"available": False, "reason": "live depth needs RabbitMQ", "queues": {}}
    queues = {}
    try:
        with current_app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            channel = conn.default_channel
            for name in queue_names:
                full = f"{settings.CELERY_QUEUE_PREFIX}{name}"
                try:
                    _, depth, consumers = channel.queue_declare(queue=full, passive=True)
                except Exception:  # not declared yet: no worker ever consumed it
                    channel = conn.channel()
                    depth, consumers = 0, 0
                queues[name] = {"depth": depth, "consumers": consumers}
    except Exception as exc:
        logger.warning("broker stats unavailable", extra={"error": repr(exc)})
        return {"available": False, "reason": "broker unreachable", "queues": {}}
    return {"available": True, "queues": queues}


def queue_stats(*, brand: Brand, fleet: bool = False) -> dict:
    """Per queue and priority: active counts by status, oldest queued age, recent throughput
    and the brand's unpublished lifecycle events: index-backed, brand-scoped aggregates.

    ``fleet`` (staff only) adds the platform-wide figures no brand may see: the broker's live
    depth and consumers, and the whole events outbox."""
    now = timezone.now()
    tasks = Task.objects.for_brand(brand)
    queues: dict[str, dict] = {
        name: {"by_status": {}, "by_priority": {}, "oldest_queued_age_s": None}
        for name in settings.MEGAHUB_QUEUES
    }
    rows = (
        tasks.filter(status__in=ACTIVE)
        .values("queue", "priority", "status", "waiting_reason")
        .annotate(n=Count("id"))
        .order_by()
    )
    limits = list(BrandLimit.objects.for_brand(brand))
    weight = next((lim.weight for lim in limits if not lim.task_type), 1)
    share = {
        "window": settings.TASK_BRAND_WINDOW * weight,
        "waiting": 0,
        "waiting_by_reason": {},
        "released": 0,
        "running": 0,
        "limits": limits,
    }
    for row in rows:
        if row["waiting_reason"] and row["status"] in (Task.Status.PENDING, Task.Status.RETRYING):
            share["waiting"] += row["n"]
            by_reason = share["waiting_by_reason"]
            by_reason[row["waiting_reason"]] = by_reason.get(row["waiting_reason"], 0) + row["n"]
        elif row["status"] in (Task.Status.QUEUED, Task.Status.RUNNING):
            key = "released" if row["status"] == Task.Status.QUEUED else "running"
            share[key] += row["n"]
        q = queues.setdefault(row["queue"], {"by_status": {}, "by_priority": {}})
        q["by_status"][row["status"]] = q["by_status"].get(row["status"], 0) + row["n"]
        per_priority = q["by_priority"].setdefault(row["priority"], {})
        per_priority[row["status"]] = per_priority.get(row["status"], 0) + row["n"]
    oldest = (
        tasks.filter(status=Task.Status.QUEUED)
        .values("queue")
        .annotate(oldest=Min("queued_at"))
        .order_by()
    )
    for row in oldest:
        if row["oldest"]:
            queues.setdefault(row["queue"], {})["oldest_queued_age_s"] = round(
                (now - row["oldest"]).total_seconds(), 1
            )
    finished = tasks.filter(completed_at__gte=now - timedelta(hours=1)).aggregate(
        completed_5m=Count(
            "id", filter=Q(status="completed", completed_at__gte=now - timedelta(minutes=5))
        ),
        failed_5m=Count(
            "id", filter=Q(status="failed", completed_at__gte=now - timedelta(minutes=5))
        ),
        completed_1h=Count("id", filter=Q(status="completed")),
        failed_1h=Count("id", filter=Q(status="failed")),
    )
    stats = {
        "generated_at": now,
        "queues": queues,
        "throughput": finished,
        "brand_share": share,
        "events_outbox": events_backlog(brand=brand),  # the brand's events not yet published
    }
    if fleet:
        stats["fleet"] = {
            "broker": broker_queue_stats(list(queues)),
            "events_outbox": events_backlog(),
        }
    return stats


def events_backlog(*, brand=None) -> dict:
    """Lifecycle events not yet published: the whole outbox, or one brand's share of it."""
    pending = TaskEvent.objects.unscoped().filter(published_at__isnull=True)
    if brand is not None:
        pending = pending.filter(brand=brand)
    oldest = pending.order_by("id").values_list("created_at", flat=True).first()
    return {
        "unpublished": pending.count(),
        "oldest_age_s": round((timezone.now() - oldest).total_seconds(), 1) if oldest else None,
    }

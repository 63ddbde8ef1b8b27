"""Fair share between brands: the broker holds at most a window of each brand's tasks (per
priority level and above); the rest waits in PostgreSQL, pending with a ``waiting_reason``, and
is released round-robin across brands as the brand's tasks finish (``refill``, run by the
releaser: task_core/releaser.py) or by the release loop, within the brand's limits (BrandLimit:
max_running, rate_per_minute, weight)."""

from __future__ import annotations

import logging
from collections import defaultdict, deque
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Value
from django.db.models.functions import Least
from django.utils import timezone

from task_core import sql_parts
from task_core import state_machine as sm
from task_core.broker import publish_planned
from task_core.models import BrandLimit, Task

logger = logging.getLogger("megahub.tasks")
S = Task.Status
W = Task.WaitingReason
PRIORITY_ORDER = ("critical", "high", "normal", "low")  # highest first
# pg_advisory_xact_lock(LOCK_NAMESPACE, brand_id): one releaser of a brand's work at a time.
LOCK_NAMESPACE = 0x6D68


@dataclass
class _Limit:
    """A BrandLimit while a release is planned: its use now, consumed as tasks are admitted."""

    row: BrandLimit
    active: int  # queued + running in its scope
    used: int  # publishes in the last 60 s

    def applies(self, task: Task) -> bool:
        return not self.row.task_type or self.row.task_type == task.task_type

    def blocks(self) -> str | None:
        typed = bool(self.row.task_type)
        if self.row.max_running is not None and self.active >= self.row.max_running:
            return W.TYPE_CONCURRENCY if typed else W.BRAND_CONCURRENCY
        if self.row.rate_per_minute is not None and self.used >= self.row.rate_per_minute:
            return W.TYPE_RATE if typed else W.BRAND_RATE
        return None


@dataclass
class BrandGate:
    """What a brand may still put on the broker now: its window per priority level and above
    (queued counts), and its limits."""

    brand_id: int
    window: int
    queued: dict[str, int] = field(default_factory=dict)  # priority -> queued now
    limits: list[_Limit] = field(default_factory=list)
    weight: int = 1

    def check(self, task: Task) -> str | None:
        """None if ``task`` may be published now, else the reason it waits."""
        for limit in self.limits:
            reason = limit.applies(task) and limit.blocks()
            if reason:
                return reason
        level = PRIORITY_ORDER.index(task.priority)
        if sum(self.queued.get(p, 0) for p in PRIORITY_ORDER[: level + 1]) >= self.window:
            return W.BRAND_WINDOW
        return None

    def admit(self, task: Task) -> str | None:
        """check(), and count the task as published if it may be."""
        reason = self.check(task)
        if reason is None:
            self.queued[task.priority] = self.queued.get(task.priority, 0) + 1
            for limit in self.limits:
                if limit.applies(task):
                    limit.active += 1
                    limit.used += 1
        return reason

    def saturated_types(self) -> list[str]:
        """Task types none of whose tasks can be admitted now (skipped when picking work)."""
        return [lim.row.task_type for lim in self.limits if lim.row.task_type and lim.blocks()]


def release_order(tasks: list[Task], weights: dict[int, int] | None = None) -> list[Task]:
    """The order in which waiting work is offered: priority level by level (highest first); in
    a level, weighted round robin across brands (a brand of weight w gives w tasks per round),
    each brand's tasks in the order given, the brand whose head task waited longest first."""
    weights = weights or {}
    ordered: list[Task] = []
    for level in PRIORITY_ORDER:
        per_brand: dict[int, deque[Task]] = defaultdict(deque)
        for task in tasks:
            if task.priority == level:
                per_brand[task.brand_id].append(task)
        turns = sorted(per_brand, key=lambda b: (_waited_since(per_brand[b][0]), b))
        while turns:
            for brand_id in list(turns):
                queue = per_brand[brand_id]
                for _ in range(max(1, weights.get(brand_id, 1))):
                    if queue:
                        ordered.append(queue.popleft())
                if not queue:
                    turns.remove(brand_id)
    return ordered


def _waited_since(task: Task) -> float:
    return task.available_at.timestamp() if task.available_at else 0.0


def _gates(brand_ids, *, now) -> dict[int, BrandGate]:
    """The gates of these brands: their limits, queued counts per priority and, for brands with
    limits, their queued + running counts (bounded by windows and the fleet: cheap). One
    statement (counts, and which brands have limits); the limit rows are read only for the
    brands that have some."""
    counts, limited = _counts_and_limited(brand_ids)
    rows: dict[int, list[BrandLimit]] = defaultdict(list)
    if limited:
        for row in BrandLimit.objects.unscoped().filter(brand_id__in=limited):
            rows[row.brand_id].append(row)
    gates = {}
    for brand_id in brand_ids:
        brand_rows = rows.get(brand_id, [])
        weight = next((r.weight for r in brand_rows if not r.task_type), 1)
        gates[brand_id] = BrandGate(
            brand_id,
            window=settings.TASK_BRAND_WINDOW * weight,
            weight=weight,
            limits=[_Limit(r, active=0, used=_used_last_minute(r, now)) for r in brand_rows],
        )
    for brand_id, task_type, priority, status, n in counts:
        gate = gates[brand_id]
        if status == S.QUEUED:
            gate.queued[priority] = gate.queued.get(priority, 0) + n
        for limit in gate.limits:
            if not limit.row.task_type or limit.row.task_type == task_type:
                limit.active += n
    return gates


_GATES_SQL = (
    "SELECT brand_id, task_type, priority, status, COUNT(*) FROM task_core_task "
    "WHERE brand_id = ANY(%(brands)s::bigint[]) AND status IN ('queued', 'running') "
    "GROUP BY brand_id, task_type, priority, status "
    "UNION ALL SELECT DISTINCT brand_id, NULL, NULL, NULL, 0 FROM task_core_brandlimit "
    "WHERE brand_id = ANY(%(brands)s::bigint[])"
)


def _counts_and_limited(brand_ids) -> tuple[list[tuple], set[int]]:
    """(brand, type, priority, status, count) of the brands' queued and running tasks, and the
    brands with limits (rows whose status is NULL), in one prepared statement on PostgreSQL."""
    if connection.vendor != "postgresql":
        counts = [
            (c["brand_id"], c["task_type"], c["priority"], c["status"], c["n"])
            for c in Task.objects.unscoped()
            .filter(brand_id__in=brand_ids, status__in=[S.QUEUED, S.RUNNING])
            .values("brand_id", "task_type", "priority", "status")
            .annotate(n=Count("id"))
            .order_by()
        ]
        limited = set(
            BrandLimit.objects.unscoped()
            .filter(brand_id__in=brand_ids)
            .values_list("brand_id", flat=True)
        )
        return counts, limited
    with sm.cursor() as cursor:
        cursor.execute(_GATES_SQL, {"brands": list(brand_ids)})
        rows = cursor.fetchall()
    return [r for r in rows if r[3] is not None], {r[0] for r in rows if r[3] is None}


def _used_last_minute(row: BrandLimit, now) -> int:
    # Bucket k holds the publishes of second [k, k+1): counting k >= now - 60 (61 buckets)
    # errs on the safe side: no 60 s window ever holds more than rate_per_minute publishes.
    since = int(now.timestamp()) - 60
    return sum(n for second, n in row.recent_publishes.items() if int(second) >= since)


def _record_publishes(gates: dict[int, BrandGate], published: list[Task], now) -> None:
    """Add the publishes to the rate windows of the limits they count against."""
    second = int(now.timestamp())
    for task in published:
        for limit in gates[task.brand_id].limits:
            if limit.row.rate_per_minute is not None and limit.applies(task):
                buckets = limit.row.recent_publishes
                buckets[str(second)] = buckets.get(str(second), 0) + 1
    for gate in gates.values():
        for limit in gate.limits:
            row = limit.row
            if row.rate_per_minute is not None and str(second) in row.recent_publishes:
                row.recent_publishes = {
                    k: n for k, n in row.recent_publishes.items() if int(k) >= second - 60
                }
                BrandLimit.objects.unscoped().filter(pk=row.pk).update(
                    recent_publishes=row.recent_publishes
                )


def admit_now(tasks: list[Task]) -> tuple[list[Task], dict[Task, str], set[int]]:
    """The publish-on-commit decision, without locks: tasks of brands without limits that fit
    in their window (release order), the others with the reason they wait, and the brands
    with limits (whose work goes through the locked release)."""
    brand_ids = sorted({t.brand_id for t in tasks})
    gates = {b: BrandGate(b, window=settings.TASK_BRAND_WINDOW) for b in brand_ids}
    if len(brand_ids) == 1:  # a create, a publish on commit: one round trip
        queued, is_limited = _admission_facts(brand_ids[0])
        gates[brand_ids[0]].queued = queued
        limited = set(brand_ids) if is_limited else set()
    else:
        limits = BrandLimit.objects.unscoped().filter(brand_id__in=brand_ids)
        limited = set(limits.values_list("brand_id", flat=True))
        for c in (
            Task.objects.unscoped()
            .filter(brand_id__in=brand_ids, status=S.QUEUED)
            .values("brand_id", "priority")
            .annotate(n=Count("id"))
            .order_by()
        ):
            gates[c["brand_id"]].queued[c["priority"]] = c["n"]
    admitted, waiting = [], {}
    for task in release_order(tasks):
        if task.brand_id in limited:
            waiting[task] = task.waiting_reason or W.BRAND_CONCURRENCY
            continue
        reason = gates[task.brand_id].admit(task)
        if reason is None:
            admitted.append(task)
        else:
            waiting[task] = reason
    return admitted, waiting, limited


def admit_one(task: Task) -> tuple[str | None, bool]:
    """admit_now for one task not saved yet (a create): the reason it waits, or None when it
    fits its brand's window, and whether its brand has limits (then it waits for the locked
    release). One round trip."""
    gate = BrandGate(task.brand_id, window=settings.TASK_BRAND_WINDOW)
    gate.queued, limited = _admission_facts(task.brand_id)
    if limited:
        return task.waiting_reason or W.BRAND_CONCURRENCY, True
    return gate.admit(task), False


def hold(waiting: dict[Task, str], *, due: bool = False) -> None:
    """Record why tasks wait; ``due``: they were on their way to the broker (their grace period
    not over), so the release may pick them up at once."""
    by_reason: dict[str, list[int]] = defaultdict(list)
    for task, reason in waiting.items():
        if due or task.waiting_reason != reason:
            by_reason[reason].append(task.pk)
            task.waiting_reason = reason
    values = {"available_at": Least("available_at", Value(timezone.now()))} if due else {}
    for reason, pks in by_reason.items():
        Task.objects.unscoped().filter(pk__in=pks, status__in=[S.PENDING, S.RETRYING]).update(
            waiting_reason=reason, **values
        )


def _lock_brands(brand_ids: list[int], *, wait: bool) -> list[int]:
    """Take each brand's release lock for this transaction (PostgreSQL advisory locks): waiting
    for it, or skipping brands another releaser holds. Returns the brands locked."""
    if connection.vendor != "postgresql" or not brand_ids:
        return list(brand_ids)
    locked = []
    with connection.cursor() as cursor:
        for brand_id in sorted(brand_ids):  # one order everywhere: no deadlock
            if wait:
                cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [LOCK_NAMESPACE, brand_id])
                locked.append(brand_id)
            else:
                cursor.execute(
                    "SELECT pg_try_advisory_xact_lock(%s, %s)", [LOCK_NAMESPACE, brand_id]
                )
                if cursor.fetchone()[0]:
                    locked.append(brand_id)
    return locked


def brands_with_due_work() -> list[int]:
    """Brands with pending or retrying tasks: a skip scan over task_brand_release_idx on
    PostgreSQL (one index probe per brand, whatever the backlog)."""
    waiting = [S.PENDING, S.RETRYING]
    if connection.vendor != "postgresql":
        return sorted(
            Task.objects.unscoped()
            .filter(status__in=waiting, available_at__lte=timezone.now())
            .values_list("brand_id", flat=True)
            .distinct()
        )
    table = Task._meta.db_table
    sql = f"""
        WITH RECURSIVE b(brand_id) AS (
            (SELECT brand_id FROM {table} WHERE status = ANY(%s) ORDER BY brand_id LIMIT 1)
            UNION ALL
            SELECT (SELECT t.brand_id FROM {table} t WHERE t.status = ANY(%s)
                    AND t.brand_id > b.brand_id ORDER BY t.brand_id LIMIT 1)
            FROM b WHERE b.brand_id IS NOT NULL
        )
        SELECT brand_id FROM b WHERE brand_id IS NOT NULL"""  # noqa: S608 - the model's table
    with connection.cursor() as cursor:
        cursor.execute(sql, [waiting, waiting])
        return [row[0] for row in cursor.fetchall()]


def release(
    brand_ids: list[int],
    *,
    actor: str,
    wait: bool,
    limit: int | None = None,
    gated: list[Task] | None = None,
    levels: set[str] | None = None,
) -> int:
    """Publish the due work of these brands, fairly, within their windows and limits.

    Under each brand's advisory lock (so the counts it reads stay true while it publishes): per
    brand and priority level, the oldest due tasks that could fit, skipping types already at
    their limit (``FOR UPDATE SKIP LOCKED``); offered in release_order and admitted one by one
    through the brand's gate; the others get their waiting reason, and so do the ``gated`` tasks
    (just held back by a publish) that were not among the candidates. ``levels``: the only
    priority levels with due work, when the caller knows them."""
    limit = limit or settings.TASK_RELEASE_BATCH
    with transaction.atomic():
        locked = _lock_brands(brand_ids, wait=wait)
        now = timezone.now()  # after the lock: the rate window is read as of now
        gates = _gates(locked, now=now)
        candidates: list[Task] = []
        for gate in gates.values():
            skipped = gate.saturated_types()
            for level, priority in enumerate(PRIORITY_ORDER):
                if levels is not None and priority not in levels:
                    continue  # the caller knows this level has no due work
                room = gate.window - sum(gate.queued.get(p, 0) for p in PRIORITY_ORDER[: level + 1])
                if room <= 0:
                    continue
                candidates += _candidates(gate.brand_id, priority, now, skipped, min(room, limit))
        planned, waiting = [], {}
        for task in release_order(candidates, {b: g.weight for b, g in gates.items()}):
            if len(planned) >= limit:
                break
            reason = gates[task.brand_id].admit(task)
            if reason is None:
                planned.append(task)
            else:
                waiting[task] = reason
        offered = {t.pk for t in candidates}
        for task in gated or []:
            if task.pk not in offered and task.brand_id in gates:
                waiting[task] = gates[task.brand_id].check(task) or W.BRAND_WINDOW
        hold(waiting)
        released = publish_planned(planned, actor=actor, now=now)
        # Stamped once sent: a publish leaves the rate window 60 s after it happened, at least.
        _record_publishes(gates, [t for t in planned if t.status == S.QUEUED], timezone.now())
    return released


_CANDIDATES_SQL = (
    f"SELECT {sm.TASK_COLUMNS} FROM task_core_task "  # noqa: S608 - the model's columns
    "WHERE brand_id = %(brand)s AND priority = %(priority)s "
    "AND status IN ('pending', 'retrying') AND available_at <= %(now)s "
    "AND NOT (task_type = ANY(%(skipped)s::text[])) "
    "ORDER BY available_at LIMIT %(n)s FOR UPDATE SKIP LOCKED"
)


def _candidates(brand_id: int, priority: str, now, skipped: list[str], n: int) -> list[Task]:
    """The brand's oldest due tasks of this priority level, not of a ``skipped`` type, at most
    ``n``, locked (SKIP LOCKED: another releaser's are left to it), by available_at then id.
    On PostgreSQL one prepared statement. It orders by available_at alone, the order of
    task_brand_release_idx, so that the LIMIT stops the index scan after n rows; ordering by
    (available_at, id) in SQL would sort every due task of the brand on each release (a backlog
    created at one instant shares one available_at). Among tasks due at the same instant the
    index's order is kept, then the n rows are sorted by id."""
    if connection.vendor != "postgresql":
        rows = list(
            Task.objects.unscoped()
            .select_for_update(skip_locked=True)
            .filter(
                brand_id=brand_id,
                priority=priority,
                status__in=[S.PENDING, S.RETRYING],
                available_at__lte=now,
            )
            .exclude(task_type__in=skipped)
            .order_by("available_at")[:n]
        )
    else:
        params = {"brand": brand_id, "priority": priority, "now": now, "skipped": skipped, "n": n}
        with sm.cursor() as cursor:
            cursor.execute(_CANDIDATES_SQL, params)
            rows = [sm.task_from_row(row, "default") for row in cursor.fetchall()]
    return sorted(rows, key=lambda t: (t.available_at, t.pk))


def brand_refill(*, brand_id: int) -> int:
    """Release one brand's waiting work into the room its finished tasks left (see refill)."""
    return refill([brand_id], actor="system:refill")


def refill(brand_ids: list[int], *, actor: str, short: dict[int, int] | None = None) -> int:
    """Release the waiting work of brands whose tasks just finished, in one release: the brands
    that have due work and whose window has room for a batch (half of the window: one release
    per few finishes, not one per task). Brands with limits always try. ``short``: filled with
    the brands skipped for want of room, each with how many tasks its room lacks for a batch."""
    if not settings.TASK_FAIR_SHARE:
        return 0
    batch = max(1, settings.TASK_BRAND_WINDOW // 2)
    woken, levels = [], set()
    for brand_id in brand_ids:
        queued, due, limited = _brand_facts(brand_id)
        if not due:
            continue
        if not limited:
            room = {
                p: settings.TASK_BRAND_WINDOW
                - sum(queued.get(q, 0) for q in PRIORITY_ORDER[: i + 1])
                for i, p in enumerate(PRIORITY_ORDER)
            }
            if all(room[p] < batch for p in due):
                if short is not None:
                    short[brand_id] = batch - max(room[p] for p in due)
                continue
        woken.append(brand_id)
        levels |= due
    if not woken:
        return 0
    return release(woken, actor=actor, wait=True, levels=levels)


_DUE_LEVEL = (
    "SELECT 'due', %s, 1 WHERE EXISTS (SELECT 1 FROM task_core_task WHERE brand_id = %s "
    "AND priority = %s AND status IN ('pending', 'retrying') AND available_at <= %s)"
)
_QUEUED_COUNTS = (
    "SELECT 'queued', priority, COUNT(*) FROM task_core_task "
    "WHERE brand_id = %s AND status = 'queued' GROUP BY priority"
)
_HAS_LIMITS = (
    "SELECT 'limited', '', 1 WHERE EXISTS (SELECT 1 FROM task_core_brandlimit WHERE brand_id = %s)"
)
BRAND_FACTS_SQL = " UNION ALL ".join(
    [_QUEUED_COUNTS, *[_DUE_LEVEL] * len(PRIORITY_ORDER), _HAS_LIMITS]
)


# The refill's probes (run at each wake-up of the releaser): the first due task of each level
# in task_brand_release_idx's order. An EXISTS may be planned as a sequential scan (or an
# index-only scan that visits the heap for every entry) that walks all the finished tasks ahead
# of the first waiting one on every wake-up; a plain index scan with LIMIT 1 stops at it and
# marks the entries of tasks that left the backlog dead, so the next probes skip them.
_DUE_FIRST = (
    "SELECT 'due', %s, 1 WHERE (SELECT id FROM task_core_task WHERE brand_id = %s "
    "AND priority = %s AND status IN ('pending', 'retrying') AND available_at <= %s "
    "ORDER BY available_at LIMIT 1) IS NOT NULL"
)
REFILL_FACTS_SQL = BRAND_FACTS_SQL.replace(_DUE_LEVEL, _DUE_FIRST)


# What admitting one brand's task needs: its queued counts per priority and whether it has
# limits (not the due probes of BRAND_FACTS_SQL, which only the release reads).
ADMISSION_FACTS_SQL = f"{_QUEUED_COUNTS} UNION ALL {_HAS_LIMITS}"


def _admission_facts(brand_id: int) -> tuple[dict[str, int], bool]:
    """The brand's queued counts per priority and whether it has limits: one round trip, a
    prepared statement on PostgreSQL (the create path runs it on every request).

    As a request's first statement it is also the kept connection's health check
    (CONN_HEALTH_CHECKS would spend a ``SELECT 1`` round trip before it): if that connection
    turns out broken, the read runs again on a new one. A read: running it twice is harmless."""

    def read():
        with sm.cursor() as cursor:
            cursor.execute(ADMISSION_FACTS_SQL, [brand_id, brand_id])
            return cursor.fetchall()

    rows = sql_parts.first_statement(read)
    queued = {priority: n for kind, priority, n in rows if kind == "queued"}
    return queued, any(kind == "limited" for kind, _, _ in rows)


def _brand_facts(brand_id: int) -> tuple[dict[str, int], set[str], bool]:
    """The releaser's read, in one round trip: the brand's queued counts per priority, the
    priority levels that have due work (one index probe each on task_brand_release_idx), and
    whether it has limits (REFILL_FACTS_SQL, prepared, on PostgreSQL)."""
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    params: list = [brand_id]
    for priority in PRIORITY_ORDER:
        params += [priority, brand_id, priority, now]
    sql = REFILL_FACTS_SQL if connection.vendor == "postgresql" else BRAND_FACTS_SQL
    with sm.cursor() as cursor:
        cursor.execute(sql, [*params, brand_id])
        rows = cursor.fetchall()
    queued = {priority: n for kind, priority, n in rows if kind == "queued"}
    due = {priority for kind, priority, _ in rows if kind == "due"}
    return queued, due, any(kind == "limited" for kind, _, _ in rows)

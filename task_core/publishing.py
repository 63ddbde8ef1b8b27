"""Putting tasks on the broker: the execution message (built once), publish on commit, batch
publish with one confirm round trip, the release loop for due tasks and the republishing of lost
messages. A publish that fails leaves the task pending; the release loop publishes it later.

Fair share between brands: the broker holds at most a window of each brand's tasks (per
priority level and above); the rest waits in PostgreSQL, pending with a ``waiting_reason``, and
is released round-robin across brands as the brand's tasks finish (``brand_refill``) or by the
release loop, within the brand's limits (BrandLimit: max_running, rate_per_minute, weight)."""

from __future__ import annotations

import logging
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Value
from django.db.models.functions import Least
from django.utils import timezone

from task_core import state_machine as sm
from task_core.models import BrandLimit, Task, TaskEvent
from task_core.registry import TaskType, get_task_type
from task_core.signals import attempt_finished

logger = logging.getLogger("megahub.tasks")
S = Task.Status
K = TaskEvent.Kind
W = Task.WaitingReason
EXECUTE_TASK_NAME = "megahub.task_execute"
PRIORITY_ORDER = ("critical", "high", "normal", "low")  # highest first
# pg_advisory_xact_lock(LOCK_NAMESPACE, brand_id): one releaser of a brand's work at a time.
LOCK_NAMESPACE = 0x6D68
RELEASED_FIELDS = ("queued_at", "available_at", "waiting_reason")


def _released(now) -> dict:
    return dict(zip(RELEASED_FIELDS, (now, None, None), strict=True))


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
                tasks, waiting, chunk_limited = _admit_now(tasks)
                _hold(waiting, due=True)
                limited |= chunk_limited
                gated += [t for t in waiting if t.brand_id in chunk_limited]
            published = tasks[: _send_many(tasks)]
            published_count += sm.transition_many(
                published, to=S.QUEUED, kind=K.QUEUED, actor=actor, fields=_released(timezone.now())
            )
        if len(published) < len(tasks):
            break
    if limited:
        published_count += _release(sorted(limited), actor=actor, wait=True, gated=gated)
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
    """Publish a committed task and record it as queued; on failure leave it to the release loop.
    With fair share, a task over its brand's window, or of a brand with limits, is released
    through the brand's queue in the database instead (it may wait there)."""
    if settings.TASK_FAIR_SHARE:
        admitted, waiting, limited = _admit_now([task])
        if not admitted:
            _hold(waiting, due=True)
            if limited:
                _release(sorted(limited), actor=actor, wait=True, gated=list(waiting))
            task.refresh_from_db(fields=["status", "waiting_reason", "available_at", "queued_at"])
            return task.status == S.QUEUED
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
            fields=_released(timezone.now()),
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
        return _release(_brands_with_due_work(), actor="system:release", wait=False, limit=limit)
    now = timezone.now()
    with transaction.atomic():
        due = list(
            Task.objects.unscoped()
            .select_for_update(skip_locked=True)
            .filter(status__in=[S.PENDING, S.RETRYING], available_at__lte=now)
            .order_by("available_at")[:limit]
        )
        return _publish_planned(due, actor="system:release", now=now)


def _publish_planned(planned: list[Task], *, actor: str, now) -> int:
    """Send ``planned`` (rows the caller holds locked) in order and record the sent ones as
    queued; if the broker stops taking them, the rest waits for the next release."""
    published = planned[: _send_many(planned)]
    released = sm.transition_many(
        published, to=S.QUEUED, kind=K.QUEUED, actor=actor, fields=_released(now)
    )
    unpublished = [t.pk for t in planned[len(published) :]]
    if unpublished:
        Task.objects.unscoped().filter(pk__in=unpublished).update(
            available_at=now + timedelta(seconds=settings.TASK_PUBLISH_GRACE_SECONDS)
        )
    return released


# --- Fair share -------------------------------------------------------------------------------


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
    limits, their queued + running counts (bounded by windows and the fleet: cheap)."""
    rows: dict[int, list[BrandLimit]] = defaultdict(list)
    for row in BrandLimit.objects.unscoped().filter(brand_id__in=brand_ids):
        rows[row.brand_id].append(row)
    counts = (
        Task.objects.unscoped()
        .filter(brand_id__in=brand_ids, status__in=[S.QUEUED, S.RUNNING])
        .values("brand_id", "task_type", "priority", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
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
    for c in counts:
        gate = gates[c["brand_id"]]
        if c["status"] == S.QUEUED:
            gate.queued[c["priority"]] = gate.queued.get(c["priority"], 0) + c["n"]
        for limit in gate.limits:
            if not limit.row.task_type or limit.row.task_type == c["task_type"]:
                limit.active += c["n"]
    return gates


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


def _admit_now(tasks: list[Task]) -> tuple[list[Task], dict[Task, str], set[int]]:
    """The publish-on-commit decision, without locks: tasks of brands without limits that fit
    in their window (release order), the others with the reason they wait, and the brands
    with limits (whose work goes through the locked release)."""
    brand_ids = sorted({t.brand_id for t in tasks})
    gates = {b: BrandGate(b, window=settings.TASK_BRAND_WINDOW) for b in brand_ids}
    if len(brand_ids) == 1:  # publish on commit: one round trip
        queued, _, is_limited = _brand_facts(brand_ids[0])
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


def _hold(waiting: dict[Task, str], *, due: bool = False) -> None:
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


def _brands_with_due_work() -> list[int]:
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


def _release(
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
                candidates += (
                    Task.objects.unscoped()
                    .select_for_update(skip_locked=True)
                    .filter(
                        brand_id=gate.brand_id,
                        priority=priority,
                        status__in=[S.PENDING, S.RETRYING],
                        available_at__lte=now,
                    )
                    .exclude(task_type__in=skipped)
                    .order_by("available_at", "id")[: min(room, limit)]
                )
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
        _hold(waiting)
        released = _publish_planned(planned, actor=actor, now=now)
        # Stamped once sent: a publish leaves the rate window 60 s after it happened, at least.
        _record_publishes(gates, [t for t in planned if t.status == S.QUEUED], timezone.now())
    return released


def brand_refill(*, brand_id: int) -> int:
    """Right after one of the brand's tasks finished: release its waiting work into the room
    that left, if the brand has due work and its window has room for a batch (half of the
    window: one release per few finishes, not one per task). Brands with limits always try."""
    if not settings.TASK_FAIR_SHARE:
        return 0
    queued, due, limited = _brand_facts(brand_id)
    if not due:
        return 0
    if not limited:
        batch = max(1, settings.TASK_BRAND_WINDOW // 2)
        room = {
            p: settings.TASK_BRAND_WINDOW - sum(queued.get(q, 0) for q in PRIORITY_ORDER[: i + 1])
            for i, p in enumerate(PRIORITY_ORDER)
        }
        if all(room[p] < batch for p in due):
            return 0
    return _release([brand_id], actor="system:refill", wait=True, levels=due)


_DUE_LEVEL = (
    "SELECT 'due', %s, 1 WHERE EXISTS (SELECT 1 FROM task_core_task WHERE brand_id = %s "
    "AND priority = %s AND status IN ('pending', 'retrying') AND available_at <= %s)"
)
BRAND_FACTS_SQL = " UNION ALL ".join(
    [
        "SELECT 'queued', priority, COUNT(*) FROM task_core_task "
        "WHERE brand_id = %s AND status = 'queued' GROUP BY priority",
        *[_DUE_LEVEL] * len(PRIORITY_ORDER),
        "SELECT 'limited', '', 1 WHERE EXISTS "
        "(SELECT 1 FROM task_core_brandlimit WHERE brand_id = %s)",
    ]
)


def _brand_facts(brand_id: int) -> tuple[dict[str, int], set[str], bool]:
    """In one round trip: the brand's queued counts per priority, the priority levels that have
    due work (one index probe each on task_brand_release_idx), and whether it has limits."""
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    params: list = [brand_id]
    for priority in PRIORITY_ORDER:
        params += [priority, brand_id, priority, now]
    with connection.cursor() as cursor:
        cursor.execute(BRAND_FACTS_SQL, [*params, brand_id])
        rows = cursor.fetchall()
    queued = {priority: n for kind, priority, n in rows if kind == "queued"}
    due = {priority for kind, priority, _ in rows if kind == "due"}
    return queued, due, any(kind == "limited" for kind, _, _ in rows)


def _refill_after_attempt(sender, task, **kwargs) -> None:
    """attempt_finished receiver (worker side, after the outcome's commit): never fails the
    attempt; a refill that fails is done by the next finish or the release loop."""
    try:
        brand_refill(brand_id=task.brand_id)
    except Exception:
        logger.warning("brand refill failed", exc_info=True, extra={"brand_id": task.brand_id})


attempt_finished.connect(_refill_after_attempt, dispatch_uid="publishing.brand_refill")


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

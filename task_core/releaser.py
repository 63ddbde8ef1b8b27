"""The releaser: publishes a brand's waiting work as soon as its room on the broker frees up,
off the workers' hot path.

A brand task's outcome statement (execution._record_outcome) also runs ``pg_notify`` on
RELEASE_CHANNEL with the brand id when fair share is on and the brand has due waiting work
(OUTCOME_NOTIFY: one index probe inside the same statement, no extra round trip; delivered at
its commit). The releaser LISTENs on that channel, gathers the brands woken within
TASK_RELEASER_COALESCE_MS and refills them in one ``fairshare.refill`` call. It runs as a thread
of every worker that consumes the ``system`` queue (ReleaserStep, megahub/celery.py), so the
default topology has no extra process. After a database error it reconnects (backing off up to
5 s), LISTENs again and refills every brand with due work, since notifications sent while it
was away are lost; the release loop (``tasks_release_due``) stays the safety net."""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings
from django.db import connection

from task_core import fairshare

logger = logging.getLogger("megahub.tasks")
RELEASE_CHANNEL = "megahub_release"
# A brand whose window lacked room for a batch is refilled again once all but SHORT_SLACK of the
# finishes it lacked have come, or after SHORT_WAIT_SECONDS (Releaser._ready).
SHORT_SLACK = 2
SHORT_WAIT_SECONDS = 0.1
APPLICATION_NAME = "megahub-releaser"  # its session in pg_stat_activity
_TASK_TABLE = "task_core_task"
# Run by the outcome statement with its moved row ``t``: a notification for the brand only if
# it has due waiting work (an index probe on task_brand_release_idx). Written as the first row
# in that index's order rather than EXISTS: the planner can then only afford the index (an
# EXISTS may become a sequential scan that walks every finished task ahead of the first waiting
# one, when the statistics still see a backlog), and a plain index scan (``w.id`` is not in the
# index) marks the entries of tasks that left the backlog dead, so later probes skip them.
OUTCOME_NOTIFY = (
    f"SELECT pg_notify('{RELEASE_CHANNEL}', t.brand_id::text) AS _n FROM t "  # noqa: S608
    f"WHERE (SELECT w.id FROM {_TASK_TABLE} w WHERE w.brand_id = t.brand_id "
    "AND w.status IN ('pending', 'retrying') AND w.available_at <= now() "
    "ORDER BY w.priority, w.available_at LIMIT 1) IS NOT NULL"
)


def outcome_notify() -> str:
    """The notify part of the outcome statement: empty when fair share or the releaser is off
    (every task is then published at once, or the release loop alone refills)."""
    if settings.TASK_FAIR_SHARE and settings.TASK_RELEASER and connection.vendor == "postgresql":
        return OUTCOME_NOTIFY
    return ""


class Releaser(threading.Thread):
    """LISTEN, coalesce, refill; reconnect on any database error."""

    def __init__(self, *, idle_timeout: float = 5.0):
        super().__init__(name="megahub-releaser", daemon=True)
        self.stopping = threading.Event()
        self.idle_timeout = idle_timeout
        self.refills = 0  # releases that published something (tests, logs)
        # brand -> (finishes still awaited before its window has room for a batch, since when)
        self.short: dict[int, tuple[int, float]] = {}

    def stop(self, timeout: float = 1.0) -> None:
        """Ask it to stop; a daemon thread, it never holds the worker's shutdown up for long."""
        self.stopping.set()
        self.join(timeout)

    def run(self) -> None:
        backoff = 0.1
        while not self.stopping.is_set():
            try:
                self._serve()
            except Exception:
                logger.warning("releaser: database connection lost; reconnecting", exc_info=True)
                self._close()
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            else:
                backoff = 0.1
        self._close()

    def _close(self) -> None:
        try:
            connection.close()
        except Exception:  # a dead connection may fail to close: it is dropped all the same
            logger.debug("releaser: close failed", exc_info=True)

    def _serve(self) -> None:
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('application_name', %s, false)", [APPLICATION_NAME])
            cursor.execute(f"LISTEN {RELEASE_CHANNEL}")
        logger.info("releaser listening", extra={"channel": RELEASE_CHANNEL})
        self.short.clear()
        # Notifications sent while it was not listening are gone: catch up once.
        self._refill(set(fairshare.brands_with_due_work()))
        raw = connection.connection
        coalesce = settings.TASK_RELEASER_COALESCE_MS / 1000
        while not self.stopping.is_set():
            timeout = self._timeout()
            woken = [int(n.payload) for n in raw.notifies(timeout=timeout, stop_after=1)]
            if not woken and not self.short:
                connection.cursor().execute("SELECT 1")  # a dead connection shows up here
                continue
            deadline = time.monotonic() + coalesce
            while woken and (left := deadline - time.monotonic()) > 0:
                woken += [int(n.payload) for n in raw.notifies(timeout=left)]
            self._refill(self._ready(woken))

    def _timeout(self) -> float:
        """Until the next notification, or until a brand's wait for finishes is over."""
        if not self.short:
            return self.idle_timeout
        first = min(since for _, since in self.short.values())
        return max(0.0, min(self.idle_timeout, first + SHORT_WAIT_SECONDS - time.monotonic()))

    def _ready(self, woken: list[int]) -> set[int]:
        """The brands to refill now. A brand whose last refill found its window short of room
        for a batch by ``n`` tasks is checked again once ``n - SHORT_SLACK`` of its tasks have
        finished (each notification is one finish, and a task is claimed, freeing its room,
        before it finishes), or SHORT_WAIT_SECONDS after that refill (room also frees up
        without a finish: a queued task cancelled); not at every finish in between."""
        now, ready = time.monotonic(), set()
        for brand in woken:
            if brand in self.short:
                left, since = self.short[brand]
                self.short[brand] = (left - 1, since)
            else:
                ready.add(brand)
        for brand, (left, since) in list(self.short.items()):
            if left <= SHORT_SLACK or now - since >= SHORT_WAIT_SECONDS:
                ready.add(brand)
        return ready

    def _refill(self, brands: set[int]) -> None:
        if brands:
            short: dict[int, int] = {}
            released = fairshare.refill(sorted(brands), actor="system:refill", short=short)
            self.refills += bool(released)
            now = time.monotonic()
            for brand in brands:
                self.short.pop(brand, None)
            self.short.update({brand: (n, now) for brand, n in short.items()})

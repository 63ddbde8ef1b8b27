"""Worker-side heartbeat: one daemon thread per worker process keeps running attempts alive.

Every TASK_HEARTBEAT_SECONDS it stamps ``heartbeat_at`` on the attempts this process runs and
raises the cancel flag of those an operator asked to cancel. A process that dies stops
heart-beating, and the sweeper rescues its tasks after TASK_HEARTBEAT_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import logging
import os
import threading

from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from task_core import state_machine as sm
from task_core.models import Task

logger = logging.getLogger("megahub.heartbeat")


class Heartbeat:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, object] = {}  # task pk -> TaskContext
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self._wake = threading.Event()

    def register(self, ctx) -> None:
        with self._lock:
            self._running[ctx.task.pk] = ctx
            if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
                # A forked pool child inherits no threads: start one per process.
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._loop, name="megahub-heartbeat", daemon=True
                )
                self._thread.start()

    def unregister(self, ctx) -> None:
        with self._lock:
            self._running.pop(ctx.task.pk, None)

    def _loop(self) -> None:
        interval = settings.TASK_HEARTBEAT_SECONDS
        while True:
            self._wake.wait(interval)
            with self._lock:
                running = dict(self._running)
            if not running:
                continue
            try:
                close_old_connections()
                self.beat(running)
            except Exception:  # a database blip must not kill the thread
                logger.warning("heartbeat failed", exc_info=True)
                connection.close()

    @staticmethod
    def beat(running: dict) -> None:
        """One statement: stamp the running attempts, and read back which are to be cancelled."""
        pks = list(running)
        with sm.cursor() as cursor:
            cursor.execute(_BEAT.format(", ".join(["%s"] * len(pks))), [timezone.now(), *pks])
            for pk, cancel_requested in cursor.fetchall():
                if cancel_requested:
                    running[pk].cancel_flag = True


# Usually one running attempt per (prefork) process: the same text, prepared once.
_BEAT = (
    f'UPDATE "{Task._meta.db_table}" SET "heartbeat_at" = %s '  # noqa: S608 - our table
    f'WHERE "id" IN ({{}}) AND "status" = \'{Task.Status.RUNNING}\' '
    'RETURNING "id", "cancel_requested"'
)


heartbeat = Heartbeat()

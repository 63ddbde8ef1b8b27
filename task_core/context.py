"""What a handler receives: its task's data, and calls to report progress, check cancellation,
add costs and save checkpoints. Handlers never touch the task row themselves."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from task_core import state_machine as sm
from task_core.models import Task, TaskEvent

if TYPE_CHECKING:
    from task_core.registry import TaskType

MILESTONES = (25, 50, 75)


class TaskCancelled(Exception):
    """Raised inside a handler at its next progress/cancellation check once cancel is requested."""


class TaskLost(Exception):
    """This attempt no longer owns its task (the sweeper gave it to another attempt)."""


class TaskPaused(Exception):
    """Raised at a checkpoint when an operator asked to pause: the attempt ends as ``paused``."""


class TaskHandedBack(Exception):
    """Raised at a checkpoint when the worker is shutting down: the task goes back to
    ``pending`` and is published again, to continue from that checkpoint elsewhere."""


# Filled by the app that stores checkpoints (task_persistence), so that task_core never imports
# it: "save"(ctx, state, items_processed) -> None (may raise TaskPaused, TaskHandedBack,
# TaskCancelled, TaskLost); "load"(ctx) -> {"sequence", "items_processed", "state"} | None;
# "worker_lost"(task=, spec=) -> bool, asked by the sweeper for a resumable task whose worker
# vanished: True resumes it now from its last checkpoint, False marks it interrupted.
checkpoint_hooks: dict[str, Callable[..., Any]] = {}


# TaskContext.progress's write: the attempt's own row (running, this attempt, not asked to
# cancel), the same text every time, so prepared once per connection (state_machine.cursor).
_PROGRESS = (
    f'UPDATE "{Task._meta.db_table}" SET "progress_percentage" = %s, "heartbeat_at" = %s '  # noqa: S608 - our table
    f'WHERE "id" = %s AND "status" = \'{Task.Status.RUNNING}\' AND "attempts" = %s '
    'AND NOT "cancel_requested"'
)


class TaskContext:
    def __init__(self, task: Task, spec: TaskType, worker: str):
        self.task = task
        self.spec = spec
        self.worker = worker
        self.data: dict = task.context_data or {}
        self.attempt = task.attempts
        self.costs: list[dict] = []
        self.cancel_flag = False  # set by the worker heartbeat when cancel is requested
        # The attempt's clocks (reset when its handler starts) and whether its outcome was recorded.
        self.started_cpu, self.started_wall = time.process_time(), time.monotonic()
        self.outcome_recorded = False
        self.error: BaseException | None = None  # the handler's exception, if it raised one
        self._last_percent = task.progress_percentage
        self._last_write = 0.0
        self._last_cancel_check = time.monotonic()
        # Resumable iteration (items()): the handler's small JSON state, the total, and how
        # often to checkpoint (the store may override these per job when loading).
        self.state: dict = {}
        self.total_items: int | None = None
        self.checkpoint_every_items: int = int(spec.options.get("checkpoint_every_items", 100))
        self.checkpoint_every_seconds: float = float(
            spec.options.get("checkpoint_every_seconds", 10.0)
        )

    # --- progress & cancellation -----------------------------------------------------------
    def progress(self, done: float, total: float | None = None, *, message: str = "") -> None:
        """Report progress (a percentage, or done/total); raises TaskCancelled when asked to stop.

        Writes at most when the whole percentage changes or once per second, so calling it for
        every item is cheap.
        """
        percent = int(done * 100 // total) if total else int(done)
        percent = max(0, min(100, percent))
        now = time.monotonic()
        if self.cancel_flag:
            raise TaskCancelled()
        if percent == self._last_percent and now - self._last_write < 1.0:
            return
        crossed = [m for m in MILESTONES if self._last_percent < m <= percent]
        if not crossed:
            # The usual write: one prepared statement, no transaction of its own (a single
            # UPDATE is atomic by itself), no ORM query to build.
            with sm.cursor() as cursor:
                stamp = cursor.db.ops.adapt_datetimefield_value(timezone.now())
                cursor.execute(_PROGRESS, [percent, stamp, self.task.pk, self.attempt])
                updated = cursor.rowcount
        else:
            with transaction.atomic():
                updated = (
                    Task.objects.unscoped()
                    .filter(self._owned(), cancel_requested=False)
                    .update(progress_percentage=percent, heartbeat_at=timezone.now())
                )
                if updated:
                    TaskEvent.objects.bulk_create(
                        TaskEvent(
                            task_id=self.task.pk,
                            brand_id=self.task.brand_id,
                            kind=TaskEvent.Kind.PROGRESS,
                            from_status=Task.Status.RUNNING,
                            to_status=Task.Status.RUNNING,
                            attempt=self.attempt,
                            actor=f"worker:{self.worker}",
                            message=message[:500],
                            data={"milestone": m, "progress_percentage": percent},
                        )
                        for m in crossed
                    )
        if not updated:
            self._raise_stop()
        self._last_percent, self._last_write = percent, now
        self._last_cancel_check = now

    def check_cancelled(self) -> None:
        """Raise TaskCancelled if cancellation was requested (reads the database at most 1/s)."""
        if self.cancel_flag:
            raise TaskCancelled()
        now = time.monotonic()
        if now - self._last_cancel_check < 1.0:
            return
        self._last_cancel_check = now
        if not Task.objects.unscoped().filter(self._owned(), cancel_requested=False).exists():
            self._raise_stop()

    def _owned(self) -> Q:
        return Q(pk=self.task.pk, status=Task.Status.RUNNING, attempts=self.attempt)

    def _raise_stop(self):
        owned = Task.objects.unscoped().filter(self._owned()).exists()
        if owned:  # the only other reason the conditional update missed
            self.cancel_flag = True
            raise TaskCancelled()
        raise TaskLost()

    # --- cost --------------------------------------------------------------------------------
    def add_cost(self, usd: float | Decimal, reason: str = "") -> None:
        """Record a cost the handler incurred (a paid API call...), added to the attempt's cost."""
        self.costs.append({"usd": float(usd), "reason": reason})

    @property
    def reported_cost_usd(self) -> float:
        return sum(c["usd"] for c in self.costs)

    # --- checkpoints (filled by task_persistence) --------------------------------------------
    def checkpoint(self, state: dict, *, items_processed: int | None = None) -> None:
        hook = checkpoint_hooks.get("save")
        if hook is None or not self.spec.resumable:
            raise NotImplementedError(
                f"task type {self.spec.name} is not resumable or no checkpoint store is installed"
            )
        hook(self, state, items_processed)

    def last_checkpoint(self) -> dict | None:
        hook = checkpoint_hooks.get("load")
        return hook(self) if hook is not None and self.spec.resumable else None

    def items(self, items: Sequence, *, state: dict | None = None) -> Iterator:
        """Yield ``items`` from the last checkpoint on, checkpointing every N items or T seconds.

        ``ctx.state`` is the handler's small JSON state (a cursor, counters): restored from the
        checkpoint, or ``state`` on a first run; it is saved with each checkpoint, so a result
        computed from it is the same after any number of resumptions. An item counts as
        processed once the handler asks for the next one. Pause and shutdown are honoured right
        after a checkpoint (nothing to redo); without a checkpoint store (or for a type that is
        not resumable) this is a plain loop with progress.
        """
        total = len(items)
        self.total_items = total
        storing = self.spec.resumable and "save" in checkpoint_hooks
        last = self.last_checkpoint() if storing else None
        start = min(int(last["items_processed"]), total) if last else 0
        self.state = dict(last["state"]) if last else dict(state or {})
        saved_items, saved_at = start, time.monotonic()
        for index in range(start, total):
            yield items[index]
            done = index + 1
            if storing and (
                done - saved_items >= self.checkpoint_every_items
                or time.monotonic() - saved_at >= self.checkpoint_every_seconds
                or done == total
            ):
                self.checkpoint(self.state, items_processed=done)
                saved_items, saved_at = done, time.monotonic()
            else:
                self.progress(done, total)

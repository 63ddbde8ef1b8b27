"""The worker side of a task: claim (one conditional UPDATE), run the handler, record the
outcome with its event and the other apps' rows in one transaction, schedule retries, and the
sweeper that rescues attempts whose worker stopped heart-beating."""

from __future__ import annotations

import logging
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    close_old_connections,
    transaction,
)
from django.utils import timezone

from megahub.errors import DomainValidationError
from task_core import sql_parts
from task_core import state_machine as sm
from task_core.context import (
    TaskCancelled,
    TaskContext,
    TaskHandedBack,
    TaskLost,
    TaskPaused,
    checkpoint_hooks,
)
from task_core.heartbeat import heartbeat
from task_core.models import Task, TaskEvent
from task_core.publishing import task_publish, tasks_requeue_lost
from task_core.registry import PermanentError, TaskType, get_task_type
from task_core.releaser import outcome_notify
from task_core.services import task_validate_request
from task_core.signals import attempt_finished, attempt_started, outcome_rows

logger = logging.getLogger("megahub.tasks")
S = Task.Status
K = TaskEvent.Kind


# The claim: queued (or pending, or retrying once its backoff is over) -> running, attempt + 1.
_CLAIM = sm.Statement(
    to=S.RUNNING,
    kind=K.STARTED,
    frm=[S.PENDING, S.QUEUED, S.RETRYING],
    columns={
        "attempts": '"attempts" + 1',
        "started_at": "%(now)s",
        "heartbeat_at": "%(now)s",
        "worker": None,
        "available_at": "NULL",
        "error_message": "NULL",
    },
    where=f'"status" <> \'{S.RETRYING}\' OR "available_at" <= %(now)s',
)


def task_claim(*, task_pk: int, worker: str) -> Task | None:
    """Claim a delivered task with one conditional update; None means someone else owns it.

    A retrying task whose backoff is over is claimable too: the release loop publishes it
    before committing "queued", and PostgreSQL evaluates the claim's WHERE against the last
    committed row, so the claim must not depend on that commit.
    """
    claim = partial(_CLAIM.run, task_pk, actor=f"worker:{worker}", values={"worker": worker[:255]})
    # It stands in for the health check's SELECT 1 before every task (megahub/celery.py skips
    # it for this entry point): a connection kept from an earlier task that died meanwhile is
    # replaced, and the claim tried once more.
    return sql_parts.first_statement(claim)


@dataclass
class Attempt:
    """What one delivery did, once recorded: the outcome ("completed", "failed", "retrying",
    "ignored", "lost"...), the task (None when ignored), the handler's exception if it raised
    one, and for a retry the time the release loop publishes the next attempt."""

    outcome: str
    task: Task | None = None
    error: BaseException | None = None

    @property
    def retry_at(self) -> datetime | None:
        return self.task.available_at if self.task is not None else None


def task_execute(*, task_pk: int, worker: str) -> str:
    """Run one delivery of a task: claim, call the handler, record the outcome."""
    return task_execute_attempt(task_pk=task_pk, worker=worker).outcome


def task_execute_attempt(*, task_pk: int, worker: str) -> Attempt:
    """task_execute, returning the recorded outcome with what the Celery entry point needs to
    report it to Celery (FAILURE with the original exception, RETRY) after the database has it."""
    # megahub/celery.py runs close_old_connections() at task_prerun (a connection past its age
    # or broken by an error is dropped); one that died while idle is replaced by the claim.
    task = task_claim(task_pk=task_pk, worker=worker)
    if task is None:
        logger.info("duplicate or stale delivery ignored", extra={"task_pk": task_pk})
        return Attempt("ignored")
    spec = get_task_type(task.task_type)
    if spec is None:
        _finish_failed(task, worker, f"Task type {task.task_type!r} is not registered.")
        return Attempt(S.FAILED, task)
    try:  # the type's limits hold whatever door (or admin edit) stored the context
        task_validate_request(
            task_type=task.task_type, priority=task.priority, context_data=task.context_data
        )
    except DomainValidationError as exc:
        _finish_failed(task, worker, f"{exc.error_code}: {exc.field_errors or exc.detail}"[:2000])
        return Attempt(S.FAILED, task, exc)
    ctx = TaskContext(task, spec, worker)
    heartbeat.register(ctx)
    _attempt_starts(task, ctx)
    ctx.started_cpu, ctx.started_wall = time.process_time(), time.monotonic()
    outcome = "lost"
    try:
        outcome = _run_handler(task, spec, ctx, worker)
    finally:
        heartbeat.unregister(ctx)
        if not ctx.outcome_recorded:  # lost its task, or crashed: its rows after the fact
            _insert_rows(_outcome_rows(task, ctx, outcome))
        if attempt_finished.has_listeners():
            attempt_finished.send(
                sender=Task, task=task, ctx=ctx, outcome=outcome, recorded=ctx.outcome_recorded,
                **_attempt_clocks(ctx),
            )  # fmt: skip
    return Attempt(outcome, task, ctx.error)


def _attempt_starts(task: Task, ctx: TaskContext) -> None:
    """What other apps do before the handler runs (outcome rows' start hooks, attempt_started
    receivers); a failure there (monitoring, say) never stops the attempt: logged, it runs."""
    for name, row in outcome_rows.items():
        if row.start is not None:
            try:
                row.start(ctx)
            except Exception:
                logger.warning("outcome row start failed", extra={"row": name}, exc_info=True)
    if attempt_started.has_listeners():
        for receiver, result in attempt_started.send_robust(sender=Task, task=task, ctx=ctx):
            if isinstance(result, Exception):
                logger.warning(
                    "attempt_started receiver failed", extra={"receiver": repr(receiver)}
                )


def _attempt_clocks(ctx: TaskContext) -> dict[str, float]:
    return {
        "cpu_time_s": time.process_time() - ctx.started_cpu,
        "wall_time_s": time.monotonic() - ctx.started_wall,
    }


def _outcome_rows(task: Task, ctx: TaskContext | None, outcome: str) -> list:
    """The rows other apps record with this attempt's outcome (task_core.signals.outcome_rows);
    a builder that fails loses its row, never the outcome."""
    if ctx is None:
        return []
    rows = []
    for name, row in outcome_rows.items():
        try:
            rows.append(row.build(task=task, ctx=ctx, outcome=outcome, **_attempt_clocks(ctx)))
        except Exception:
            logger.warning("outcome row not built", extra={"row": name}, exc_info=True)
    return rows


def _insert_rows(rows: list) -> None:
    for row in rows:
        try:
            type(row)._default_manager.bulk_create([row], ignore_conflicts=True)
        except Exception:
            logger.warning(
                "outcome row not written", extra={"row": type(row).__name__}, exc_info=True
            )


def _run_handler(task: Task, spec: TaskType, ctx: TaskContext, worker: str) -> str:
    try:
        if task.cancel_requested:
            raise TaskCancelled()
        result = spec.handler(ctx)
    except TaskCancelled:
        return _finish(task, worker, to=S.CANCELLED, kind=K.CANCELLED, ctx=ctx)
    except TaskPaused as exc:
        return _suspend(task, worker, to=S.PAUSED, kind=K.PAUSED, message=str(exc), ctx=ctx)
    except TaskHandedBack as exc:
        return _suspend(task, worker, to=S.PENDING, kind=K.INTERRUPTED, message=str(exc), ctx=ctx)
    except TaskLost:
        logger.warning("attempt lost ownership; outcome dropped", extra={"task_id": task.task_id})
        return "lost"
    except SoftTimeLimitExceeded as exc:
        ctx.error = exc
        return _attempt_failed(
            task, spec, worker, "Soft time limit exceeded.", kind=K.TIMED_OUT, ctx=ctx
        )
    except PermanentError as exc:
        ctx.error = exc
        return _finish_failed(task, worker, f"{type(exc).__name__}: {exc}", ctx=ctx)
    except Exception as exc:
        ctx.error = exc
        message = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, OperationalError | InterfaceError):
            # The attempt lost its database connection: drop it so that recording the failure
            # reconnects, instead of failing too and leaving the task running until the sweeper.
            close_old_connections()
        if not isinstance(exc, spec.retry.retry_on):
            return _finish_failed(task, worker, message, ctx=ctx)
        return _attempt_failed(task, spec, worker, message, ctx=ctx)
    return _finish(
        task,
        worker,
        to=S.COMPLETED,
        kind=K.COMPLETED,
        fields={"result_data": result if result is not None else {}, "progress_percentage": 100},
        ctx=ctx,
    )


def _worker_actor(worker: str) -> str:
    return f"worker:{worker}" if worker else "system:sweeper"


# One Statement per kind of outcome (target, event, columns written, condition), built on first
# use: the same text every time, so each is prepared once per connection.
_outcome_statements: dict[tuple, sm.Statement] = {}


def _outcome_statement(to: str, kind: str, columns: tuple, sweeping: bool) -> sm.Statement:
    notify = outcome_notify()  # fair share: wake the releaser if the brand has work waiting
    key = (to, kind, columns, sweeping, notify)
    statement = _outcome_statements.get(key)
    if statement is None:
        statement = _outcome_statements[key] = sm.Statement(
            to=to,
            kind=kind,
            frm=[S.RUNNING],
            columns=columns,
            # The sweeper re-checks the heartbeat it found stale: a late beat wins.
            where='"attempts" = %(attempt)s'
            + (' AND "heartbeat_at" < %(stale_before)s' if sweeping else ""),
            notify=notify,
        )
    return statement


def _record_outcome(
    task: Task,
    worker: str,
    *,
    to: str,
    kind: str,
    fields: dict,
    message: str = "",
    stale_before: datetime | None = None,
    ctx: TaskContext | None = None,
    data: dict | None = None,
    event_before: str | None = None,
) -> Task | None:
    """Move a running attempt to its outcome (finish, suspend, retry) with its event and the
    rows other apps record with it, in one statement; None when the attempt no longer owns the
    task (a rescued task's zombie attempt cannot end it). ``stale_before``: the sweeper's
    cutoff, re-checked in the UPDATE (a heartbeat that came meanwhile wins). ``event_before``:
    a timeline entry that explains the outcome (timed out, worker lost), kept only if the task
    moved."""
    statement = _outcome_statement(to, kind, tuple(fields), stale_before is not None)
    run = partial(
        statement.run,
        task,
        actor=_worker_actor(worker),
        values={**fields, "attempt": task.attempts}
        | ({"stale_before": stale_before} if stale_before else {}),
        message=message,
        data=data,
    )
    with transaction.atomic() if event_before else nullcontext():
        if event_before:
            sm.record_event(task, kind=event_before, actor=_worker_actor(worker), message=message)
        moved = _run_with_rows(run, _outcome_rows(task, ctx, to))
        if moved is None and event_before:  # another process owns the task: no stray entry
            transaction.set_rollback(True)
    if moved is not None and ctx is not None:
        ctx.outcome_recorded = True
    return moved


def _run_with_rows(run, rows: list) -> Task | None:
    """The outcome with the other apps' rows; if the database refuses a row, the outcome alone
    (a metrics write must never fail the task it measures)."""
    if not rows:
        return run()
    try:
        # In a transaction, a savepoint keeps a refused row from aborting it.
        with (
            transaction.atomic() if transaction.get_connection().in_atomic_block else nullcontext()
        ):
            return run(rows=rows)
    except (OperationalError, InterfaceError):
        raise
    except DatabaseError:
        logger.warning("outcome rows refused; outcome recorded without them", exc_info=True)
        return run()


def _finish(
    task: Task,
    worker: str,
    *,
    to: str,
    kind: str,
    fields=None,
    message="",
    stale_before: datetime | None = None,
    ctx: TaskContext | None = None,
) -> str:
    moved = _record_outcome(
        task,
        worker,
        to=to,
        kind=kind,
        fields={"completed_at": timezone.now(), **(fields or {})},
        message=message,
        stale_before=stale_before,
        ctx=ctx,
    )
    return to if moved is not None else "lost"


def _suspend(
    task: Task,
    worker: str,
    *,
    to: str,
    kind: str,
    message: str = "",
    stale_before: datetime | None = None,
    ctx: TaskContext | None = None,
) -> str:
    """A resumable attempt stopped right after a checkpoint: ``paused`` until an operator
    resumes it, or ``pending`` and published again (worker shutting down, worker lost)."""
    fields = {"heartbeat_at": None}
    if to == S.PENDING:
        fields["available_at"] = timezone.now() + timedelta(
            seconds=settings.TASK_PUBLISH_GRACE_SECONDS
        )
    moved = _record_outcome(
        task,
        worker,
        to=to,
        kind=kind,
        fields=fields,
        message=message,
        stale_before=stale_before,
        ctx=ctx,
    )
    if moved is None:
        return "lost"
    if to == S.PENDING:
        transaction.on_commit(lambda: task_publish(task=task))
    return to


def _finish_failed(task: Task, worker: str, message: str, *, ctx: TaskContext | None = None) -> str:
    return _finish(
        task,
        worker,
        to=S.FAILED,
        kind=K.FAILED,
        fields={"error_message": message},
        message=message,
        ctx=ctx,
    )


def retry_delay_s(spec: TaskType | None, attempt: int) -> float:
    """Exponential backoff with jitter for the retry after attempt number ``attempt`` (1-based)."""
    policy = spec.retry if spec else None
    base, cap, jitter = (
        (policy.backoff_base_s, policy.backoff_max_s, policy.jitter) if policy else (2.0, 300, 0.25)
    )
    delay = min(cap, base * 2 ** max(0, attempt - 1))
    return max(0.0, delay * (1 + random.uniform(-jitter, jitter)))


def _attempt_failed(
    task: Task,
    spec: TaskType | None,
    worker: str,
    message: str,
    *,
    kind: str = K.FAILED,
    stale_before: datetime | None = None,
    ctx: TaskContext | None = None,
) -> str:
    """An attempt failed in a retryable way: schedule the next one, or fail for good."""
    if task.attempts > task.max_retries:
        return _finish(
            task,
            worker,
            to=S.FAILED,
            kind=K.FAILED,
            fields={"error_message": message},
            message=f"{message} (attempt {task.attempts} of {task.max_retries + 1})",
            stale_before=stale_before,
            ctx=ctx,
        )
    delay = retry_delay_s(spec, task.attempts)
    moved = _record_outcome(
        task,
        worker,
        to=S.RETRYING,
        kind=K.RETRY_SCHEDULED,
        fields={
            "error_message": message,
            "available_at": timezone.now() + timedelta(seconds=delay),
            "heartbeat_at": None,
        },
        message=message,
        stale_before=stale_before,
        ctx=ctx,
        data={"delay_s": round(delay, 3), "next_attempt": task.attempts + 1},
        # timed out / worker lost: say so before the retry entry
        event_before=kind if kind != K.FAILED else None,
    )
    return S.RETRYING if moved is not None else "lost"


def _resumable_lost(
    task: Task, spec: TaskType, message: str, *, stale_before: datetime | None = None
) -> str:
    """A resumable task lost its worker: the checkpoint store's policy decides whether it
    continues from its last checkpoint now, or waits as ``interrupted`` for an operator.

    One transaction: when two sweepers race, the loser's policy bookkeeping (e.g. a count of
    automatic resumptions) is rolled back with its failed transition."""
    with transaction.atomic():
        if checkpoint_hooks["worker_lost"](task=task, spec=spec):
            outcome = _suspend(
                task,
                "",
                to=S.PENDING,
                kind=K.WORKER_LOST,
                message=message,
                stale_before=stale_before,
            )
        else:
            sm.record_event(task, kind=K.WORKER_LOST, actor="system:sweeper", message=message)
            outcome = _suspend(
                task,
                "",
                to=S.INTERRUPTED,
                kind=K.INTERRUPTED,
                message="Automatic resumptions exhausted; resume it once the cause is fixed.",
                stale_before=stale_before,
            )
        if outcome == "lost":
            transaction.set_rollback(True)
    return outcome


def tasks_sweep(*, limit: int = 500) -> int:
    """Rescue running tasks whose worker stopped heart-beating (dead, killed, or over its hard
    time limit): each counts as a failed attempt and is retried by the normal policy."""
    cutoff = timezone.now() - timedelta(seconds=settings.TASK_HEARTBEAT_TIMEOUT_SECONDS)
    stale = list(
        Task.objects.unscoped()
        .filter(status=S.RUNNING, heartbeat_at__lt=cutoff)
        .order_by("heartbeat_at")[:limit]
    )
    rescued = tasks_requeue_lost()
    for task in stale:
        spec = get_task_type(task.task_type)
        elapsed = (timezone.now() - task.started_at).total_seconds() if task.started_at else 0
        if task.cancel_requested:
            outcome = _finish(
                task,
                "",
                to=S.CANCELLED,
                kind=K.CANCELLED,
                message="worker lost",
                stale_before=cutoff,
            )
        elif spec is not None and elapsed >= spec.time_limit_s:
            message = f"Hard time limit ({spec.time_limit_s}s) exceeded."
            outcome = _attempt_failed(
                task, spec, "", message, kind=K.TIMED_OUT, stale_before=cutoff
            )
        else:
            message = f"Worker {task.worker or '?'} stopped heart-beating."
            if spec is not None and spec.resumable and "worker_lost" in checkpoint_hooks:
                outcome = _resumable_lost(task, spec, message, stale_before=cutoff)
            else:
                outcome = _attempt_failed(
                    task, spec, "", message, kind=K.WORKER_LOST, stale_before=cutoff
                )
        rescued += outcome != "lost"
    if rescued:
        logger.warning("sweeper rescued stranded tasks", extra={"count": rescued})
    return rescued

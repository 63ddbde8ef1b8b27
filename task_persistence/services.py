"""Every write of task_persistence: jobs, checkpoints, resume/pause/cancel, retention.

The checkpoint hooks (``checkpoint_save``, ``checkpoint_load``, ``job_worker_lost``) are
installed into ``task_core.context.checkpoint_hooks`` by this app's ``AppConfig.ready()``.
"""

from __future__ import annotations

import json
import logging

import psycopg
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, OuterRef, Subquery
from django.utils import timezone

from megahub.errors import Conflict, DomainValidationError
from task_core import services as core
from task_core import state_machine as sm
from task_core.context import TaskCancelled, TaskContext, TaskHandedBack, TaskLost, TaskPaused
from task_core.models import Task, TaskEvent
from task_core.registry import PermanentError, TaskType, get_task_type
from task_persistence.models import Checkpoint, PersistentJob

logger = logging.getLogger("megahub.jobs")
S = Task.Status
K = TaskEvent.Kind


class JobNotResumable(Conflict):
    error_code = "JOB_NOT_RESUMABLE"
    default_detail = "Only paused, interrupted, or failed jobs with a checkpoint can be resumed."


class JobNotPausable(Conflict):
    error_code = "JOB_NOT_PAUSABLE"
    default_detail = "Only jobs that have not finished can be paused."


class JobNotCancellable(Conflict):
    error_code = "JOB_NOT_CANCELLABLE"
    default_detail = "The job has already finished."


class CheckpointTooLarge(DomainValidationError):
    error_code = "CHECKPOINT_TOO_LARGE"
    default_detail = "The checkpoint state is over the size limit."


class CheckpointStateTooLarge(PermanentError):
    """Raised in a handler whose checkpoint state is over the limit: no retry can fix it."""


def _encode_state(state) -> str:
    if not isinstance(state, dict):
        raise DomainValidationError(field_errors={"state": ["Must be a JSON object."]})
    return json.dumps(state, separators=(",", ":"), sort_keys=True)


def _check_size(encoded: str, field: str = "state") -> int:
    size = len(encoded.encode())
    limit = settings.JOB_CHECKPOINT_MAX_STATE_BYTES
    if size > limit:
        raise CheckpointTooLarge(
            f"The checkpoint state is {size} bytes; the limit is {limit} bytes.",
            field_errors={field: [f"{size} bytes, over the limit of {limit} bytes."]},
        )
    return size


def _defaults(spec: TaskType) -> dict:
    return {
        "checkpoint_every_items": int(spec.options.get("checkpoint_every_items", 100)),
        "checkpoint_every_seconds": float(spec.options.get("checkpoint_every_seconds", 10.0)),
        "auto_resume_max": int(spec.options.get("auto_resume_max", settings.JOB_AUTO_RESUME_MAX)),
    }


def job_for_task(*, task: Task, spec: TaskType | None = None) -> PersistentJob:
    """The job of a resumable task, created with its type's defaults on first use."""
    spec = spec or get_task_type(task.task_type)
    job, _ = PersistentJob.objects.unscoped().get_or_create(
        task_id=task.pk, defaults={"brand_id": task.brand_id, **(_defaults(spec) if spec else {})}
    )
    return job


# --- create, resume, pause, cancel -----------------------------------------------------------
def job_create(
    *,
    task_type: str,
    checkpoint_every_items: int | None = None,
    checkpoint_every_seconds: float | None = None,
    auto_resume_max: int | None = None,
    state: dict | None = None,
    **task_fields,
) -> tuple[PersistentJob, bool]:
    """Create a resumable task and its job in one transaction (published on commit).

    ``task_fields`` are task_create's (brand, user, priority, context_data...), which validates
    them; this adds the job's own settings and initial state."""
    spec = get_task_type(task_type)
    if spec is not None and not spec.resumable:
        raise DomainValidationError(
            f"Task type {task_type!r} is not resumable.",
            field_errors={"task_type": [f"{task_type!r} is not a resumable task type."]},
            error_code="TASK_TYPE_NOT_RESUMABLE",
        )
    _check_size(_encode_state(state or {}))
    overrides = {
        name: value
        for name, value in {
            "checkpoint_every_items": checkpoint_every_items,
            "checkpoint_every_seconds": checkpoint_every_seconds,
            "auto_resume_max": auto_resume_max,
        }.items()
        if value is not None
    }
    with transaction.atomic():
        task, created = core.task_create(task_type=task_type, **task_fields)
        spec = get_task_type(task_type)  # registered: task_create refuses unknown types
        job, _ = PersistentJob.objects.unscoped().get_or_create(
            task_id=task.pk,
            defaults={
                "brand_id": task.brand_id,
                **_defaults(spec),
                **overrides,
                "initial_state": state or {},
            },
        )
    return job, created


def _resumable_sources(last: Checkpoint | None) -> list[str]:
    return [S.PAUSED, S.INTERRUPTED, *([S.FAILED] if last else [])]


def job_resume(*, job: PersistentJob, user=None, actor: str | None = None) -> PersistentJob:
    """Resume a paused, interrupted, or failed-with-a-checkpoint job from its last checkpoint."""
    actor = actor or core.actor_name(user)
    last = _last_checkpoint(job.pk)
    with transaction.atomic():
        moved = core.task_requeue(
            job.task,
            kind=K.RESUMED,
            actor=actor,
            frm=_resumable_sources(last),
            data={
                "from_checkpoint": last.sequence if last else 0,
                "items_processed": last.items_processed if last else 0,
            },
        )
        if moved is None:
            status = Task.objects.unscoped().values_list("status", flat=True).get(pk=job.task_id)
            raise JobNotResumable(
                f"Job is {status}; only paused, interrupted, or failed jobs with a checkpoint "
                "can be resumed."
            )
        # An operator's resume renews the automatic budget: the cause is presumed fixed.
        PersistentJob.objects.unscoped().filter(pk=job.pk).update(
            pause_requested=False, handback_requested=False, auto_resume_count=0
        )
    job.refresh_from_db()
    return job


def job_pause(*, job: PersistentJob, user=None) -> PersistentJob:
    """Ask a job to pause: it stops right after its next checkpoint (or before it starts)."""
    updated = (
        PersistentJob.objects.unscoped()
        .filter(
            pk=job.pk,
            task__status__in=[S.PENDING, S.QUEUED, S.RETRYING, S.RUNNING],
        )
        .update(pause_requested=True, updated_at=timezone.now())
    )
    job.refresh_from_db()
    if not updated:
        raise JobNotPausable(
            f"Job is {job.task.status}; only pending, queued, retrying or running jobs can be "
            "paused."
        )
    return job


def job_cancel(*, job: PersistentJob, user=None) -> PersistentJob:
    """Cancel a job (a running one stops at its next checkpoint or progress report)."""
    try:
        core.task_cancel(task=job.task, user=user)
    except core.TaskNotCancellable as exc:
        raise JobNotCancellable(exc.detail)
    PersistentJob.objects.unscoped().filter(pk=job.pk).update(pause_requested=False)
    job.refresh_from_db()
    return job


def jobs_hand_back(*, worker: str) -> int:
    """The worker ``worker`` is shutting down: its running jobs hand themselves back at their
    next checkpoint."""
    count = (
        PersistentJob.objects.unscoped()
        .filter(task__status=S.RUNNING, task__worker=worker)
        .update(handback_requested=True)
    )
    if count:
        logger.info("jobs asked to hand back", extra={"worker": worker, "count": count})
    return count


# --- checkpoint hooks (worker side) ---------------------------------------------------------
def _last_checkpoint(job_pk: int) -> Checkpoint | None:
    return (
        Checkpoint.objects.unscoped()
        .filter(job_id=job_pk)
        .order_by("-sequence")
        .only("sequence", "items_processed", "state", "created_at")
        .first()
    )


def checkpoint_load(ctx: TaskContext) -> dict | None:
    """Start of an attempt: the job's last checkpoint (or initial state), its cadence; a
    resumption is recorded in the task timeline."""
    job = job_for_task(task=ctx.task, spec=ctx.spec)
    if job.pause_requested:
        raise TaskPaused("Paused before it started.")
    ctx.checkpoint_every_items = job.checkpoint_every_items
    ctx.checkpoint_every_seconds = job.checkpoint_every_seconds
    last = _last_checkpoint(job.pk)
    ctx.checkpoint_sequence = last.sequence if last else 0
    with transaction.atomic():
        PersistentJob.objects.unscoped().filter(pk=job.pk).update(
            handback_requested=False,
            total_items=ctx.total_items if ctx.total_items is not None else F("total_items"),
            resume_count=F("resume_count") + (1 if last else 0),
            updated_at=timezone.now(),
        )
        if last:
            sm.record_event(
                ctx.task,
                kind=K.RESUMED,
                actor=f"worker:{ctx.worker}",
                message=f"Resumed from checkpoint {last.sequence} "
                f"({last.items_processed} items processed).",
                data={"from_checkpoint": last.sequence, "items_processed": last.items_processed},
            )
    if last:
        return {
            "sequence": last.sequence,
            "items_processed": last.items_processed,
            "state": last.state,
        }
    if job.initial_state:
        return {"sequence": 0, "items_processed": 0, "state": job.initial_state}
    return None


# One statement, one round trip: ownership (this attempt still runs the task), the task's
# progress (written only when it changed), the checkpoint row, and the job's pause/hand-back
# flags. The job row is only read: the checkpoint is the record of the job's position, so a
# checkpoint costs one INSERT. heartbeat_at is left to the heartbeat thread (it is indexed:
# updating it would make every checkpoint a non-HOT update of the task row).
_SAVE_SQL = """
WITH owned AS (
    SELECT id, cancel_requested FROM task_core_task
    WHERE id = %(task)s AND status = 'running' AND attempts = %(attempt)s
), progressed AS (
    UPDATE task_core_task SET progress_percentage = %(percent)s
    WHERE id = (SELECT id FROM owned) AND progress_percentage <> %(percent)s
), job AS (
    SELECT id, brand_id, pause_requested, handback_requested
    FROM task_persistence_persistentjob
    WHERE task_id = %(task)s AND EXISTS (SELECT 1 FROM owned)
), saved AS (
    INSERT INTO task_persistence_checkpoint
        (job_id, brand_id, sequence, items_processed, state, size_bytes, attempt, created_at)
    SELECT id, brand_id, %(sequence)s, %(items)s, %(state)s::jsonb, %(size)s, %(attempt)s,
        %(now)s
    FROM job
)
SELECT (SELECT cancel_requested FROM owned), pause_requested, handback_requested FROM job
"""


def checkpoint_save(ctx: TaskContext, state: dict, items_processed: int | None) -> None:
    """Save a checkpoint in its own short transaction, with processed_items and progress; then
    honour a cancel, pause or shutdown request (raises TaskCancelled/TaskPaused/TaskHandedBack)."""
    try:
        encoded = _encode_state(state)
        size = _check_size(encoded)
    except DomainValidationError as exc:
        raise CheckpointStateTooLarge(exc.detail)
    total = ctx.total_items
    items = int(items_processed if items_processed is not None else 0)
    if total is not None:
        items = min(items, total)
    percent = min(100, items * 100 // total) if total else 0
    sequence = getattr(ctx, "checkpoint_sequence", None)
    if sequence is None:  # a handler checkpointing without items()/last_checkpoint()
        last = _last_checkpoint(job_for_task(task=ctx.task, spec=ctx.spec).pk)
        sequence = last.sequence if last else 0
    sequence += 1
    params = {
        "task": ctx.task.pk,
        "attempt": ctx.attempt,
        "percent": percent,
        "now": timezone.now(),
        "sequence": sequence,
        "items": items,
        "state": encoded,
        "size": size,
    }
    try:
        if connection.vendor == "postgresql":
            row = _checkpoint_save_pg(params)
        else:
            row = _checkpoint_save_orm(state, params)
    except (IntegrityError, psycopg.IntegrityError):  # a newer attempt owns the job now
        row = None
    if row is None:
        ctx._raise_stop()  # not owned any more: TaskLost (or TaskCancelled)
        raise TaskLost()
    ctx.checkpoint_sequence = sequence
    cancel_requested, pause_requested, handback_requested = row
    ctx._last_percent = percent
    if cancel_requested or ctx.cancel_flag:
        ctx.cancel_flag = True
        raise TaskCancelled()
    if total is not None and items >= total:
        return  # the last checkpoint: finishing beats pausing or handing back
    if pause_requested:
        raise TaskPaused(f"Paused at checkpoint {sequence} ({items} items processed).")
    if handback_requested:
        raise TaskHandedBack(
            f"Worker shutting down: checkpoint {sequence} saved ({items} items processed), "
            "handed back."
        )


def _checkpoint_save_pg(params: dict):
    """_SAVE_SQL as a server-side prepared statement: planning the CTE would otherwise cost
    about as much as executing it. (Django's cursors bind client-side and never prepare.)"""
    with transaction.atomic():
        connection.ensure_connection()
        with psycopg.Cursor(connection.connection) as cursor:
            cursor.execute(_SAVE_SQL, params, prepare=True)
            return cursor.fetchone()


def _checkpoint_save_orm(state: dict, p: dict):
    """The same as _SAVE_SQL for databases without data-modifying CTEs (SQLite)."""
    with transaction.atomic():
        owned = Task.objects.unscoped().filter(
            pk=p["task"], status=S.RUNNING, attempts=p["attempt"]
        )
        cancel = owned.values_list("cancel_requested", flat=True).first()
        if cancel is None:
            return None
        owned.update(progress_percentage=p["percent"])
        job = PersistentJob.objects.unscoped().get(task_id=p["task"])
        Checkpoint.objects.create(
            job=job,
            brand_id=job.brand_id,
            sequence=p["sequence"],
            items_processed=p["items"],
            state=state,
            size_bytes=p["size"],
            attempt=p["attempt"],
            created_at=p["now"],
        )
        return cancel, job.pause_requested, job.handback_requested


def job_worker_lost(*, task: Task, spec: TaskType) -> bool:
    """Sweeper policy for a resumable task whose worker vanished: resume it automatically while
    its job has automatic resumptions left (True), else leave it interrupted (False)."""
    job = job_for_task(task=task, spec=spec)
    return bool(
        PersistentJob.objects.unscoped()
        .filter(pk=job.pk, auto_resume_count__lt=F("auto_resume_max"))
        .update(auto_resume_count=F("auto_resume_count") + 1, handback_requested=False)
    )


# --- retention ------------------------------------------------------------------------------
def checkpoints_prune(*, keep: int | None = None, task_pk: int | None = None) -> int:
    """Delete all but the last ``keep`` (>= 1) checkpoints of completed jobs; return how many
    went. The last checkpoint is kept: it is the record of the job's position."""
    keep = settings.JOB_CHECKPOINTS_KEEP if keep is None else keep
    if keep < 1:
        raise DomainValidationError(field_errors={"keep": ["Must be 1 or more."]})
    newest = Checkpoint.objects.filter(job_id=OuterRef("job_id")).order_by("-sequence")
    doomed = (
        Checkpoint.objects.unscoped()
        .filter(job__task__status=S.COMPLETED)
        .annotate(newest=Subquery(newest.values("sequence")[:1]))
        .filter(sequence__lte=F("newest") - keep)
    )
    if task_pk is not None:
        doomed = doomed.filter(job__task_id=task_pk)
    deleted = 0
    while ids := list(doomed.values_list("pk", flat=True)[:5000]):
        deleted += Checkpoint.objects.unscoped().filter(pk__in=ids).delete()[0]
    if deleted:
        logger.info("checkpoints pruned", extra={"count": deleted, "keep": keep})
    return deleted

"""Every write of the task hub. REST views, admin actions, commands and Celery tasks call these."""

from __future__ import annotations

import logging
import random
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import jsonschema
from celery import current_app
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    close_old_connections,
    transaction,
)
from django.db.models import F, Q
from django.utils import timezone
from django.utils.text import slugify

from megahub.errors import Conflict, DomainValidationError
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
from task_core.models import (
    BRAND_EVENT_SEGMENT,
    Brand,
    BrandEvent,
    BrandMembership,
    Task,
    TaskEvent,
)
from task_core.registry import PermanentError, TaskType, get_task_type
from task_core.signals import attempt_finished, attempt_recorded, attempt_started

logger = logging.getLogger("megahub.tasks")
S = Task.Status
K = TaskEvent.Kind
EXECUTE_TASK_NAME = "megahub.task_execute"


class TaskNotRetryable(Conflict):
    error_code = "TASK_NOT_RETRYABLE"
    default_detail = "Only failed or cancelled tasks can be retried."


class TaskNotCancellable(Conflict):
    error_code = "TASK_NOT_CANCELLABLE"
    default_detail = "The task has already finished."


class IdempotencyKeyReused(Conflict):
    error_code = "IDEMPOTENCY_KEY_REUSED"
    default_detail = "This Idempotency-Key was already used for a different task request."


def _actor(user) -> str:
    return f"user:{user.get_username()}" if user is not None else "system"


# --- tenancy --------------------------------------------------------------------------------
def brand_create(*, name: str, slug: str | None = None) -> tuple[Brand, bool]:
    """Create a brand, or return the existing one with that slug."""
    slug = slug or slugify(name)
    if not slug:
        raise DomainValidationError(field_errors={"name": ["A brand needs a name with letters."]})
    return Brand.objects.get_or_create(slug=slug, defaults={"name": name})


def membership_grant(*, user, brand: Brand, role: str) -> BrandMembership:
    """Give ``user`` the role ``role`` in ``brand`` (replacing any previous role)."""
    if role not in BrandMembership.Role.values:
        raise DomainValidationError(
            field_errors={"role": [f'"{role}" is not one of {BrandMembership.Role.values}.']}
        )
    membership, _ = BrandMembership.objects.unscoped().update_or_create(
        user=user, brand=brand, defaults={"role": role}
    )
    return membership


# --- brand events ---------------------------------------------------------------------------
def brand_event_create(
    *, brand: Brand, user, solution: str, model: str, action: str, event_data: dict
) -> BrandEvent:
    """Store a brand event and its outbox row in one transaction; the events relay publishes it
    to megahub.events (in id order with the lifecycle events) and fans it out to webhooks."""
    errors = {
        name: [f"Lowercase letters, digits, '_' or '-', 1 to 64 characters; got {value[:80]!r}."]
        for name, value in (("solution", solution), ("model", model), ("action", action))
        if not re.fullmatch(BRAND_EVENT_SEGMENT, value)
    }
    if errors:
        raise DomainValidationError(field_errors=errors)
    if not isinstance(event_data, dict):
        raise DomainValidationError(
            field_errors={"event_data": ["The body must be a JSON object."]}
        )
    if _has_nul(event_data):  # PostgreSQL's jsonb cannot store U+0000
        raise DomainValidationError(
            field_errors={"event_data": ["Strings must not contain the NUL character (U+0000)."]}
        )
    with transaction.atomic():
        outbox = TaskEvent.objects.create(
            brand=brand, kind=TaskEvent.Kind.BRAND_EVENT, actor=_actor(user)
        )
        return BrandEvent.objects.create(
            brand=brand,
            outbox=outbox,
            solution=solution,
            model=model,
            action=action,
            event_data=event_data,
            created_by=user,
        )


def _has_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


# --- create & publish ---------------------------------------------------------------------
def task_validate_request(*, task_type: str, priority: str, context_data) -> TaskType:
    """The business checks every door (REST, queue consumer, schedules, commands) shares."""
    spec = get_task_type(task_type)
    if spec is None:
        raise DomainValidationError(
            f"Unknown task type {task_type!r}.",
            field_errors={"task_type": [f"Unknown task type {task_type!r}; see /tasks/types/."]},
            error_code="UNKNOWN_TASK_TYPE",
        )
    if priority not in Task.Priority.values:
        raise DomainValidationError(
            field_errors={"priority": [f'"{priority}" is not a valid choice.']}
        )
    if not isinstance(context_data, dict):
        raise DomainValidationError(
            field_errors={"context_data": ["Must be a JSON object."]}, error_code="CONTEXT_INVALID"
        )
    if spec.context_schema:
        errors = sorted(
            jsonschema.Draft202012Validator(spec.context_schema).iter_errors(context_data),
            key=lambda e: list(e.path),
        )
        if errors:
            raise DomainValidationError(
                "context_data does not match the task type's schema.",
                field_errors={
                    "context_data": [
                        f"{'/'.join(str(p) for p in e.path) or '(root)'}: {e.message}"
                        for e in errors[:10]
                    ]
                },
                error_code="CONTEXT_INVALID",
            )
    return spec


def task_create(
    *,
    brand: Brand,
    user=None,
    task_type: str,
    priority: str = Task.Priority.NORMAL,
    description: str = "",
    context_data: dict | None = None,
    scheduled_for: datetime | None = None,
    idempotency_key: str | None = None,
    actor: str | None = None,
) -> tuple[Task, bool]:
    """Create a task (or return the one created with the same idempotency key).

    Returns (task, created). The task is committed first and published on commit; a task due
    later waits in the database until the release loop publishes it.
    """
    context_data = {} if context_data is None else context_data
    spec = task_validate_request(task_type=task_type, priority=priority, context_data=context_data)
    if idempotency_key:
        existing = Task.objects.for_brand(brand).filter(idempotency_key=idempotency_key).first()
        if existing is not None:
            return _idempotent_match(existing, task_type, context_data), False
    now = timezone.now()
    due_now = scheduled_for is None or scheduled_for <= now
    task = Task(
        brand=brand,
        created_by=user,
        task_type=task_type,
        queue=spec.queue,
        priority=priority,
        description=description,
        context_data=context_data,
        max_retries=spec.retry.max_retries,
        idempotency_key=idempotency_key or None,
        scheduled_for=scheduled_for,
        available_at=now + timedelta(seconds=settings.TASK_PUBLISH_GRACE_SECONDS)
        if due_now
        else scheduled_for,
    )
    try:
        with transaction.atomic():
            task.save(force_insert=True)
            sm.record_event(
                task,
                kind=K.CREATED,
                actor=actor or _actor(user),
                data={"scheduled_for": scheduled_for.isoformat()} if scheduled_for else None,
            )
            sm.log_transition(task, kind=K.CREATED, actor=actor or _actor(user))
            if due_now:
                transaction.on_commit(lambda: task_publish(task=task))
    except IntegrityError:
        if not idempotency_key:
            raise
        # Two requests with the same key raced; the other one won.
        existing = Task.objects.for_brand(brand).get(idempotency_key=idempotency_key)
        return _idempotent_match(existing, task_type, context_data), False
    return task, True


@dataclass(frozen=True)
class TaskRequest:
    """One task to create with task_create_many (same fields as task_create)."""

    brand: Brand
    task_type: str
    priority: str = Task.Priority.NORMAL
    description: str = ""
    context_data: dict = field(default_factory=dict)
    idempotency_key: str | None = None
    user: Any = None


def task_create_many(
    *, requests: list[TaskRequest], actor: str, publish: bool = True
) -> list[tuple[Task, bool]]:
    """Create many due-now tasks in a constant number of queries (schedule dispatch).

    Same validation and idempotency keys as task_create; returns (task, created) per request,
    in order. Must run inside the caller's transaction: the tasks are published together on
    commit (or, with ``publish=False``, by the caller with tasks_publish_many once it has
    committed several batches); the release loop publishes any the broker did not confirm.
    """
    if not requests:
        return []
    for req in requests:
        task_validate_request(
            task_type=req.task_type, priority=req.priority, context_data=req.context_data
        )
    keyed = [(r.brand.pk, r.idempotency_key) for r in requests if r.idempotency_key]
    existing: dict[tuple[int, str], Task] = {}
    if keyed:
        for task in Task.objects.unscoped().filter(
            idempotency_key__in={key for _, key in keyed}, brand_id__in={b for b, _ in keyed}
        ):
            existing[(task.brand_id, task.idempotency_key)] = task
    now = timezone.now()
    available_at = now + timedelta(seconds=settings.TASK_PUBLISH_GRACE_SECONDS)
    results: list[tuple[Task, bool]] = []
    new: list[Task] = []
    for req in requests:
        twin = existing.get((req.brand.pk, req.idempotency_key)) if req.idempotency_key else None
        if twin is not None:
            results.append((_idempotent_match(twin, req.task_type, req.context_data), False))
            continue
        spec = get_task_type(req.task_type)
        task = Task(
            brand=req.brand,
            created_by=req.user,
            task_type=req.task_type,
            queue=spec.queue,
            priority=req.priority,
            description=req.description,
            context_data=req.context_data,
            max_retries=spec.retry.max_retries,
            idempotency_key=req.idempotency_key or None,
            available_at=available_at,
        )
        new.append(task)
        results.append((task, True))
    Task.objects.bulk_create(new, batch_size=1000)
    TaskEvent.objects.bulk_create(
        [
            TaskEvent(
                task_id=t.pk, brand_id=t.brand_id, kind=K.CREATED, to_status=S.PENDING, actor=actor
            )
            for t in new
        ],
        batch_size=1000,
    )
    for task in new:
        sm.log_transition(task, kind=K.CREATED, actor=actor)
    if new and publish:
        pks = [t.pk for t in new]
        transaction.on_commit(lambda: tasks_publish_many(task_pks=pks))
    return results


def tasks_publish_many(*, task_pks: list[int], actor: str = "system:publisher") -> int:
    """Publish committed pending tasks (in chunks); what the broker refuses is left to the
    release loop, exactly as for task_publish."""
    published_count = 0
    for start in range(0, len(task_pks), settings.TASK_RELEASE_BATCH):
        chunk = task_pks[start : start + settings.TASK_RELEASE_BATCH]
        with transaction.atomic():
            tasks = list(
                Task.objects.unscoped()
                .select_for_update(skip_locked=True)
                .filter(pk__in=chunk, status=S.PENDING)
                .order_by("pk")
            )
            published = tasks[: _send_many(tasks)]
            published_count += sm.transition_many(
                published,
                to=S.QUEUED,
                kind=K.QUEUED,
                actor=actor,
                fields={"queued_at": timezone.now(), "available_at": None},
            )
        if len(published) < len(tasks):
            break
    return published_count


def _idempotent_match(existing: Task, task_type: str, context_data: dict) -> Task:
    if existing.task_type != task_type or existing.context_data != context_data:
        raise IdempotencyKeyReused()
    return existing


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
    """Publish a committed task and record it as queued; on failure leave it to the release loop."""
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
            fields={"queued_at": timezone.now(), "available_at": None},
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
    """Publish every pending/retrying task whose time has come (scheduled, backoff over, or an
    on-commit publish that never confirmed). Safe to run from several processes at once."""
    limit = limit or settings.TASK_RELEASE_BATCH
    now = timezone.now()
    released = 0
    with transaction.atomic():
        due = list(
            Task.objects.unscoped()
            .select_for_update(skip_locked=True)
            .filter(status__in=[S.PENDING, S.RETRYING], available_at__lte=now)
            .order_by("available_at")[:limit]
        )
        published: list[Task] = []
        for task in due:
            try:
                _send(task)
            except Exception as exc:
                logger.warning("release: broker unavailable", extra={"error": repr(exc)})
                break
            published.append(task)
        released = sm.transition_many(
            published,
            to=S.QUEUED,
            kind=K.QUEUED,
            actor="system:release",
            fields={"queued_at": now, "available_at": None},
        )
        unpublished = [t.pk for t in due[len(published) :]]
        if unpublished:
            Task.objects.unscoped().filter(pk__in=unpublished).update(
                available_at=now + timedelta(seconds=settings.TASK_PUBLISH_GRACE_SECONDS)
            )
    return released


# --- operator actions -------------------------------------------------------------------
def task_retry(*, task: Task, user=None) -> Task:
    """Give a failed or cancelled task a new attempt (same task, same id)."""
    now = timezone.now()
    moved = sm.transition(
        task,
        to=S.PENDING,
        kind=K.RETRY_REQUESTED,
        actor=_actor(user),
        frm=[S.FAILED, S.CANCELLED],
        fields={
            "available_at": now + timedelta(seconds=settings.TASK_PUBLISH_GRACE_SECONDS),
            "cancel_requested": False,
            "completed_at": None,
            "progress_percentage": 0,
        },
    )
    if moved is None:
        raise TaskNotRetryable(
            f"Task is {Task.objects.unscoped().get(pk=task.pk).status}; only failed or "
            "cancelled tasks can be retried."
        )
    transaction.on_commit(lambda: task_publish(task=task))
    return task


def task_cancel(*, task: Task, user=None) -> Task:
    """Cancel now if not started; a running task is asked to stop at its next check."""
    actor = _actor(user)
    done = sm.transition(
        task,
        to=S.CANCELLED,
        kind=K.CANCELLED,
        actor=actor,
        frm=[S.PENDING, S.QUEUED, S.RETRYING, S.PAUSED, S.INTERRUPTED],
        fields={"completed_at": timezone.now(), "available_at": None},
    )
    if done is not None:
        return task
    with transaction.atomic():
        asked = (
            Task.objects.unscoped()
            .filter(pk=task.pk, status=S.RUNNING, cancel_requested=False)
            .update(cancel_requested=True, updated_at=timezone.now())
        )
        task.refresh_from_db()
        if asked:
            sm.record_event(task, kind=K.CANCEL_REQUESTED, actor=actor)
    if task.status == S.RUNNING:
        return task  # requested now, or already requested: idempotent
    raise TaskNotCancellable(f"Task is {task.status}; it cannot be cancelled.")


# --- execution (worker side) -----------------------------------------------------------
def task_claim(*, task_pk: int, worker: str) -> Task | None:
    """Claim a delivered task with one conditional update; None means someone else owns it.

    A retrying task whose backoff is over is claimable too: the release loop publishes it
    before committing "queued", and PostgreSQL evaluates the claim's WHERE against the last
    committed row, so the claim must not depend on that commit.
    """
    now = timezone.now()
    return sm.transition(
        task_pk,
        to=S.RUNNING,
        kind=K.STARTED,
        actor=f"worker:{worker}",
        frm=[S.PENDING, S.QUEUED, S.RETRYING],
        where=~Q(status=S.RETRYING) | Q(available_at__lte=now),
        fields={
            "attempts": F("attempts") + 1,
            "started_at": now,
            "heartbeat_at": now,
            "worker": worker[:255],
            "available_at": None,
            "error_message": None,
        },
    )


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
    # A connection kept from an earlier task and dead meanwhile is replaced before this claim:
    # megahub/celery.py runs close_old_connections() at task_prerun (health check on next use).
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
    # A receiver's failure (monitoring, say) must never stop the attempt: log it and run.
    for receiver, result in attempt_started.send_robust(sender=Task, task=task, ctx=ctx):
        if isinstance(result, Exception):
            logger.warning("attempt_started receiver failed", extra={"receiver": repr(receiver)})
    ctx.started_cpu, ctx.started_wall = time.process_time(), time.monotonic()
    outcome = "lost"
    try:
        outcome = _run_handler(task, spec, ctx, worker)
    finally:
        heartbeat.unregister(ctx)
        attempt_finished.send(
            sender=Task, task=task, ctx=ctx, outcome=outcome, recorded=ctx.outcome_recorded,
            **_attempt_clocks(ctx),
        )  # fmt: skip
    return Attempt(outcome, task, ctx.error)


def _attempt_clocks(ctx: TaskContext) -> dict[str, float]:
    return {
        "cpu_time_s": time.process_time() - ctx.started_cpu,
        "wall_time_s": time.monotonic() - ctx.started_wall,
    }


def _outcome_recorded(task: Task, ctx: TaskContext | None, outcome: str) -> None:
    """Inside the outcome's transaction: let other apps write their rows (metrics) into it."""
    if ctx is None:
        return
    ctx.outcome_recorded = True
    attempt_recorded.send(sender=Task, task=task, ctx=ctx, outcome=outcome, **_attempt_clocks(ctx))


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


def _record_outcome(
    task: Task,
    worker: str,
    *,
    to: str,
    kind: str,
    fields: dict,
    message: str,
    where: Q | None,
    ctx: TaskContext | None,
) -> Task | None:
    """Move a running attempt to its outcome and record it in the same transaction; None when
    the attempt no longer owns the task (a rescued task's zombie attempt cannot end it)."""
    with transaction.atomic():
        moved = sm.transition(
            task,
            to=to,
            kind=kind,
            actor=_worker_actor(worker),
            frm=[S.RUNNING],
            where=Q(attempts=task.attempts) & (where or Q()),
            fields=fields,
            message=message,
        )
        if moved is not None:
            _outcome_recorded(task, ctx, to)
    return moved


def _finish(
    task: Task,
    worker: str,
    *,
    to: str,
    kind: str,
    fields=None,
    message="",
    where=None,
    ctx: TaskContext | None = None,
) -> str:
    moved = _record_outcome(
        task,
        worker,
        to=to,
        kind=kind,
        fields={"completed_at": timezone.now(), **(fields or {})},
        message=message,
        where=where,
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
    where: Q | None = None,
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
        task, worker, to=to, kind=kind, fields=fields, message=message, where=where, ctx=ctx
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
    where: Q | None = None,
    ctx: TaskContext | None = None,
) -> str:
    """An attempt failed in a retryable way: schedule the next one, or fail for good."""
    actor = _worker_actor(worker)
    if task.attempts <= task.max_retries:
        delay = retry_delay_s(spec, task.attempts)
        with transaction.atomic():
            if kind != K.FAILED:  # timed out / worker lost: say so before the retry entry
                sm.record_event(task, kind=kind, actor=actor, message=message)
            moved = sm.transition(
                task,
                to=S.RETRYING,
                kind=K.RETRY_SCHEDULED,
                actor=actor,
                frm=[S.RUNNING],
                where=Q(attempts=task.attempts) & (where or Q()),
                fields={
                    "error_message": message,
                    "available_at": timezone.now() + timedelta(seconds=delay),
                    "heartbeat_at": None,
                },
                message=message,
                data={"delay_s": round(delay, 3), "next_attempt": task.attempts + 1},
            )
            if moved is None:  # another process owns the task now: no stray timeline entry
                transaction.set_rollback(True)
            else:
                _outcome_recorded(task, ctx, S.RETRYING)
        return S.RETRYING if moved is not None else "lost"
    return _finish(
        task,
        worker,
        to=S.FAILED,
        kind=K.FAILED,
        fields={"error_message": message},
        message=f"{message} (attempt {task.attempts} of {task.max_retries + 1})",
        where=where,
        ctx=ctx,
    )


# --- sweeper ------------------------------------------------------------------------------
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


def _resumable_lost(task: Task, spec: TaskType, message: str, *, where: Q | None = None) -> str:
    """A resumable task lost its worker: the checkpoint store's policy decides whether it
    continues from its last checkpoint now, or waits as ``interrupted`` for an operator.

    One transaction: when two sweepers race, the loser's policy bookkeeping (e.g. a count of
    automatic resumptions) is rolled back with its failed transition."""
    with transaction.atomic():
        if checkpoint_hooks["worker_lost"](task=task, spec=spec):
            outcome = _suspend(
                task, "", to=S.PENDING, kind=K.WORKER_LOST, message=message, where=where
            )
        else:
            sm.record_event(task, kind=K.WORKER_LOST, actor="system:sweeper", message=message)
            outcome = _suspend(
                task,
                "",
                to=S.INTERRUPTED,
                kind=K.INTERRUPTED,
                message="Automatic resumptions exhausted; resume it once the cause is fixed.",
                where=where,
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
    still_stale = Q(heartbeat_at__lt=cutoff)  # re-checked in the UPDATE: a late beat wins
    for task in stale:
        spec = get_task_type(task.task_type)
        elapsed = (timezone.now() - task.started_at).total_seconds() if task.started_at else 0
        if task.cancel_requested:
            outcome = _finish(
                task, "", to=S.CANCELLED, kind=K.CANCELLED, message="worker lost", where=still_stale
            )
        elif spec is not None and elapsed >= spec.time_limit_s:
            message = f"Hard time limit ({spec.time_limit_s}s) exceeded."
            outcome = _attempt_failed(task, spec, "", message, kind=K.TIMED_OUT, where=still_stale)
        else:
            message = f"Worker {task.worker or '?'} stopped heart-beating."
            if spec is not None and spec.resumable and "worker_lost" in checkpoint_hooks:
                outcome = _resumable_lost(task, spec, message, where=still_stale)
            else:
                outcome = _attempt_failed(
                    task, spec, "", message, kind=K.WORKER_LOST, where=still_stale
                )
        rescued += outcome != "lost"
    if rescued:
        logger.warning("sweeper rescued stranded tasks", extra={"count": rescued})
    return rescued

"""Every write of the task hub that a request or command starts: brands and memberships, brand
events, task create (one or many), retry and cancel. REST views, admin actions, commands and the
queue consumer call these; publishing.py puts the created tasks on the broker and execution.py
runs them."""

from __future__ import annotations

import logging
import re
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import jsonschema
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from megahub.errors import Conflict, DomainValidationError
from task_core import state_machine as sm
from task_core.models import (
    BRAND_EVENT_SEGMENT,
    Brand,
    BrandEvent,
    BrandMembership,
    Task,
    TaskEvent,
)
from task_core.publishing import (
    task_admit_created,
    task_insert_due,
    task_publish,
    task_send_queued,
    tasks_publish_many,
)
from task_core.registry import TaskType, get_task_type

logger = logging.getLogger("megahub.tasks")
S = Task.Status
K = TaskEvent.Kind


class TaskNotRetryable(Conflict):
    error_code = "TASK_NOT_RETRYABLE"
    default_detail = "Only failed or cancelled tasks can be retried."


class TaskNotCancellable(Conflict):
    error_code = "TASK_NOT_CANCELLABLE"
    default_detail = "The task has already finished."


class IdempotencyKeyReused(Conflict):
    error_code = "IDEMPOTENCY_KEY_REUSED"
    default_detail = "This Idempotency-Key was already used for a different task request."


def actor_name(user, *, system: str = "system") -> str:
    """Who did it, as the timeline's ``actor`` says: ``user:<username>``, or ``system`` (or the
    system part named, e.g. ``system:scheduler``) when no user did."""
    return f"user:{user.get_username()}" if user is not None else system


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
            brand=brand, kind=TaskEvent.Kind.BRAND_EVENT, actor=actor_name(user)
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

    Returns (task, created). One transaction inserts the task and its ``created`` event and,
    when it is due and admitted now, records it ``queued`` too (one durable commit); its
    message is sent after the commit without waiting for the broker's confirm
    (publishing.task_send_queued). A task due later, or held by fair share, waits in the
    database until the release loop publishes it.
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
    created_actor = actor or actor_name(user)
    created_data = {"scheduled_for": scheduled_for.isoformat()} if scheduled_for else None
    connection = transaction.get_connection()
    try:
        if due_now and connection.vendor == "postgresql":
            # One statement (after the fair-share read): its own transaction, or a savepoint
            # in the caller's.
            with transaction.atomic() if connection.in_atomic_block else nullcontext():
                queued = task_insert_due(task, actor=created_actor, data=created_data)
            if queued:
                transaction.on_commit(lambda: task_send_queued(task=task))
            return task, True
        with transaction.atomic():
            task.save(force_insert=True)
            sm.record_event(
                task,
                kind=K.CREATED,
                actor=created_actor,
                data=created_data,
            )
            sm.log_transition(task, kind=K.CREATED, actor=created_actor)
            if due_now and task_admit_created(task):
                transaction.on_commit(lambda: task_send_queued(task=task))
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
    *, requests: list[TaskRequest], actor: str, publish: bool = True, validated: bool = False
) -> list[tuple[Task, bool]]:
    """Create many due-now tasks in a constant number of queries (schedule dispatch).

    Same validation and idempotency keys as task_create; returns (task, created) per request,
    in order. Must run inside the caller's transaction: the tasks are published together on
    commit (or, with ``publish=False``, by the caller with tasks_publish_many once it has
    committed several batches); the release loop publishes any the broker did not confirm.
    ``validated=True`` says the caller has run task_validate_request on every request already.
    """
    if not requests:
        return []
    for req in [] if validated else requests:
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


def _idempotent_match(existing: Task, task_type: str, context_data: dict) -> Task:
    if existing.task_type != task_type or existing.context_data != context_data:
        raise IdempotencyKeyReused()
    return existing


def task_requeue(
    task: Task, *, kind: str, actor: str, frm: list[str], fields=None, data=None
) -> Task | None:
    """Put a stopped task back to ``pending`` for a new attempt (operator retry, job resume)
    and publish it on commit; None when it is no longer in one of the ``frm`` states."""
    moved = sm.transition(
        task,
        to=S.PENDING,
        kind=kind,
        actor=actor,
        frm=frm,
        fields={
            "available_at": timezone.now() + timedelta(seconds=settings.TASK_PUBLISH_GRACE_SECONDS),
            "cancel_requested": False,
            "completed_at": None,
            **(fields or {}),
        },
        data=data,
    )
    if moved is not None:
        transaction.on_commit(lambda: task_publish(task=task))
    return moved


def task_retry(*, task: Task, user=None) -> Task:
    """Give a failed or cancelled task a new attempt (same task, same id)."""
    moved = task_requeue(
        task,
        kind=K.RETRY_REQUESTED,
        actor=actor_name(user),
        frm=[S.FAILED, S.CANCELLED],
        fields={"progress_percentage": 0},
    )
    if moved is None:
        raise TaskNotRetryable(
            f"Task is {Task.objects.unscoped().get(pk=task.pk).status}; only failed or "
            "cancelled tasks can be retried."
        )
    return task


def task_cancel(*, task: Task, user=None) -> Task:
    """Cancel now if not started; a running task is asked to stop at its next check."""
    actor = actor_name(user)
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

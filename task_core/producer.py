"""Submitting tasks from Python: the public producer API (docs/task-types.md).

    from task_core import producer

    task = producer.submit("send_report", brand="humari", context={"report_id": 7})
    task = producer.wait(task, timeout=30)      # the task once completed, failed or cancelled

A task type object has the same door: ``get_task_type("send_report").submit(brand=..., ...)``.

``submit`` goes through the service every other door uses (REST ``POST /tasks/``, the queue
consumer, schedules, ``manage.py tasks submit``): the same validation (known type, priority,
the type's context schema), the same idempotency keys, published when the caller's transaction
commits. Bad input raises ``megahub.errors.DomainValidationError`` (``error_code`` and
``field_errors`` as in the REST error body); an unknown brand raises
``task_core.tenancy.UnknownBrand``.
"""

from __future__ import annotations

import time
from datetime import datetime

from task_core import execution, registry, services
from task_core.models import Brand, Task
from task_core.tenancy import brand_get

__all__ = ["run_inline", "submit", "wait"]


def submit(
    task_type: str | registry.TaskType,
    *,
    brand: Brand | int | str,
    context: dict | None = None,
    priority: str = Task.Priority.NORMAL,
    scheduled_for: datetime | None = None,
    idempotency_key: str | None = None,
    user=None,
    description: str = "",
) -> Task:
    """Create a task of ``task_type`` for ``brand`` (a Brand, its id or its slug) and return it.

    With an ``idempotency_key`` already used in the brand, the existing task is returned (the
    same request) or ``IdempotencyKeyReused`` is raised (a different one). A task due now is
    published when the surrounding transaction commits; one ``scheduled_for`` later waits for
    its time. ``user`` is recorded as the creator (``created_by``, the timeline's actor).
    """
    name = task_type.name if isinstance(task_type, registry.TaskType) else task_type
    task, _created = services.task_create(
        brand=brand_get(brand),
        user=user,
        task_type=name,
        priority=priority,
        description=description,
        context_data=context,
        scheduled_for=scheduled_for,
        idempotency_key=idempotency_key,
    )
    return task


def wait(task: Task, timeout: float, *, interval: float = 0.2) -> Task:
    """Return ``task`` (refreshed from the database) once it is completed, failed or cancelled;
    raise ``TimeoutError`` if it is not after ``timeout`` seconds. The task is not cancelled on
    timeout. A worker must be running (``make worker``) for a task to make progress."""
    deadline = time.monotonic() + timeout
    while True:
        task.refresh_from_db()
        if task.is_terminal:
            return task
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"task {task.task_id} is still {task.status} after {timeout:g} s")
        time.sleep(min(interval, remaining))


def run_inline(task: Task, *, worker: str = "inline") -> Task:
    """Run one attempt of ``task`` now, in this process, exactly as a worker would (claim, the
    handler, the outcome, the timeline, metrics), and return the task refreshed: for unit tests
    of a handler and for scripts, no broker or worker needed. A retryable failure leaves the
    task ``retrying``; call again for the next attempt."""
    execution.task_execute(task_pk=task.pk, worker=worker)
    task.refresh_from_db()
    return task


registry.set_submitter(submit)

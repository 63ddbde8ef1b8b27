"""Helpers of the task_persistence tests: jobs in a given state, and running them in-process."""

from django.utils import timezone

from task_core import execution
from task_core.models import Task
from task_persistence import services
from task_persistence.models import Checkpoint, PersistentJob, ProcessedItem

WORKER = "test-worker@host"


def make_job(brand, *, ids=10, status=None, last_sequence=0, **kwargs) -> PersistentJob:
    """A seo_keyword_audit job (not published: the test's transaction never commits)."""
    context = {"keyword_ids": list(range(1, ids + 1)), "delay_ms": 0}
    context.update(kwargs.pop("context", {}))
    job, _ = services.job_create(
        brand=brand, task_type=kwargs.pop("task_type", "seo_keyword_audit"),
        context_data=context, **kwargs,
    )  # fmt: skip
    if status:
        Task.objects.unscoped().filter(pk=job.task_id).update(status=status, worker=WORKER)
    for sequence in range(1, last_sequence + 1):
        Checkpoint.objects.create(
            job=job, brand=brand, sequence=sequence, items_processed=sequence, state={},
            size_bytes=2, attempt=1, created_at=timezone.now(),
        )  # fmt: skip
    return reload(job)


def reload(job) -> PersistentJob:
    """The job re-read with its position (processed_items, last_sequence...)."""
    return PersistentJob.objects.unscoped().with_position().select_related("task").get(pk=job.pk)


def run(job_or_task, worker=WORKER) -> str:
    """One delivery of the job's task, executed in this process as a worker would."""
    task_pk = getattr(job_or_task, "task_id", None) or job_or_task.pk
    Task.objects.unscoped().filter(pk=task_pk, status="retrying").update(
        available_at=timezone.now()
    )
    return execution.task_execute(task_pk=task_pk, worker=worker)


def processed_counts(task_pk) -> dict[int, int]:
    counts: dict[int, int] = {}
    for item_id in (
        ProcessedItem.objects.unscoped().filter(task_id=task_pk).values_list("item_id", flat=True)
    ):
        counts[item_id] = counts.get(item_id, 0) + 1
    return counts


def kinds(task_pk) -> list[str]:
    return list(
        Task.objects.unscoped().get(pk=task_pk).events.order_by("id").values_list("kind", flat=True)
    )

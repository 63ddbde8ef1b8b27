"""Non-trivial reads of task_persistence."""

from __future__ import annotations

from django.db.models import Exists, OuterRef, Q, QuerySet

from task_core.models import Brand, Task
from task_core.registry import all_task_types
from task_persistence.models import Checkpoint, PersistentJob

S = Task.Status


def resumable_q() -> Q:
    """Jobs an operator can resume: paused, interrupted, or failed with a checkpoint."""
    has_checkpoint = Exists(Checkpoint.objects.filter(job_id=OuterRef("pk")))
    return Q(task__status__in=[S.PAUSED, S.INTERRUPTED]) | (
        Q(task__status=S.FAILED) & has_checkpoint
    )


def jobs_resumable(*, queryset: QuerySet[PersistentJob]) -> QuerySet[PersistentJob]:
    return queryset.filter(resumable_q())


def jobs_interrupted(*, brand: Brand | None = None) -> QuerySet[PersistentJob]:
    """Interrupted jobs of one brand, or of all brands (operator commands)."""
    qs = PersistentJob.objects.for_brand(brand) if brand else PersistentJob.objects.unscoped()
    return (
        qs.filter(task__status=S.INTERRUPTED)
        .with_position()
        .select_related("task", "brand")
        .order_by("id")
    )


def job_last_checkpoint(*, job: PersistentJob) -> Checkpoint | None:
    return Checkpoint.objects.unscoped().filter(job_id=job.pk).order_by("-sequence").first()


def resumable_task_types() -> list[str]:
    return [t.name for t in all_task_types() if t.resumable]


def job_summary(task: Task) -> dict | None:
    """The ``persistent_job`` block of a task detail (None for other tasks)."""
    if task.task_type not in resumable_task_types():
        return None
    fields = ["id", "total_items", "processed_items", "resume_count", "last_sequence"]
    return (
        PersistentJob.objects.unscoped()
        .filter(task_id=task.pk)
        .with_position()
        .values(*fields, "last_checkpoint_at")
        .first()
    )

"""Persistent jobs (one per resumable task), their checkpoints, and the demo types' item ledger."""

from django.db import models
from django.db.models import OuterRef, Q, Subquery, Value
from django.db.models.functions import Coalesce

from task_core.models import Brand, Task
from task_core.tenancy import BrandScopedManager, BrandScopedQuerySet


class PersistentJobQuerySet(BrandScopedQuerySet):
    def with_position(self) -> "PersistentJobQuerySet":
        """Annotate processed_items, last_sequence and last_checkpoint_at from the job's last
        checkpoint (one index lookup each). The checkpoint row is the only record of a job's
        position, so that saving one is a single INSERT and no UPDATE of the job."""
        last = Checkpoint.objects.filter(job_id=OuterRef("pk")).order_by("-sequence")
        return self.annotate(
            processed_items=Coalesce(Subquery(last.values("items_processed")[:1]), Value(0)),
            last_sequence=Coalesce(Subquery(last.values("sequence")[:1]), Value(0)),
            last_checkpoint_at=Subquery(last.values("created_at")[:1]),
        )


class PersistentJob(models.Model):
    """The resumable side of a task: its policy and flags. Its position (processed items,
    last sequence) is its last checkpoint: ``PersistentJob.objects.unscoped().with_position()``."""

    # The (brand, -id) index serves brand lookups.
    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="+", db_index=False)
    task = models.OneToOneField(Task, on_delete=models.CASCADE, related_name="persistent_job")
    total_items = models.PositiveIntegerField(null=True, blank=True)  # known once it starts
    checkpoint_every_items = models.PositiveIntegerField(default=100)
    checkpoint_every_seconds = models.FloatField(default=10.0)
    # Automatic resumptions after a lost worker; past auto_resume_max the job is interrupted.
    auto_resume_max = models.PositiveSmallIntegerField(default=3)
    auto_resume_count = models.PositiveIntegerField(default=0)
    resume_count = models.PositiveIntegerField(default=0)  # attempts that started from a checkpoint
    initial_state = models.JSONField(default=dict, blank=True)  # ctx.state before any checkpoint
    pause_requested = models.BooleanField(default=False)
    # Set when the worker running the job shuts down: checkpoint and hand the job back.
    handback_requested = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = BrandScopedManager.from_queryset(PersistentJobQuerySet)()

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(checkpoint_every_items__gte=1), name="job_checkpoint_every_items_gte_1"
            ),
        ]
        indexes = [
            # GET /tasks/persistent-jobs/ keyset pages: WHERE brand_id = ? ORDER BY id DESC
            models.Index(fields=["brand", "-id"], name="job_brand_id_idx"),
        ]

    def __str__(self) -> str:
        return f"job {self.pk} ({self.task_id})"

    @property
    def progress_percentage(self) -> int:
        """From the annotated position (with_position()); 0 when not annotated."""
        processed = getattr(self, "processed_items", 0) or 0
        if not self.total_items:
            return 100 if self.total_items == 0 else 0
        return min(100, processed * 100 // self.total_items)


class Checkpoint(models.Model):
    """One saved position of a job: items processed so far and the handler's JSON state."""

    # Checkpoints are the hot write path, so they carry no more than their two indexes below:
    # no single-column indexes (those serve the same lookups), and no database foreign keys,
    # whose triggers would lock the job and brand rows on every checkpoint (about a third of
    # its cost). Rows are written only by services.checkpoint_save from the job row itself, and
    # deletions cascade through the ORM (jobs go with their task).
    job = models.ForeignKey(
        PersistentJob,
        on_delete=models.CASCADE,
        related_name="checkpoints",
        db_index=False,
        db_constraint=False,
    )
    brand = models.ForeignKey(
        Brand, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    sequence = models.PositiveIntegerField()
    items_processed = models.PositiveIntegerField()
    state = models.JSONField(default=dict)
    size_bytes = models.PositiveIntegerField()  # of the state as JSON
    attempt = models.PositiveIntegerField()
    created_at = models.DateTimeField()

    objects = BrandScopedManager()

    class Meta:
        ordering = ["-id"]
        constraints = [
            # Also serves the last checkpoint of a job: WHERE job_id = ? ORDER BY sequence DESC
            models.UniqueConstraint(fields=["job", "sequence"], name="checkpoint_unique_job_seq"),
        ]
        indexes = [
            # GET /tasks/persistent-jobs/checkpoints/ keyset pages: WHERE brand_id = ? ORDER BY id
            models.Index(fields=["brand", "-id"], name="checkpoint_brand_id_idx"),
        ]

    def __str__(self) -> str:
        return f"checkpoint {self.sequence} of job {self.job_id}"


class ProcessedItem(models.Model):
    """Ledger of the items a demo job processed, one row per processing (duplicates show)."""

    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="+")
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="+")
    item_id = models.BigIntegerField()
    attempt = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    objects = BrandScopedManager()

    class Meta:
        indexes = [
            # "which items did this task process, how often": WHERE task_id = ? GROUP BY item_id
            models.Index(fields=["task", "item_id"], name="processeditem_task_item_idx"),
        ]

    def __str__(self) -> str:
        return f"item {self.item_id} of task {self.task_id} (attempt {self.attempt})"

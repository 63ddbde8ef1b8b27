"""Persistent jobs (one per resumable task), their checkpoints, and the demo types' item ledger."""

from django.db import models
from django.db.models import F, Q

from megahub.tenancy import BrandScopedQuerySet
from task_core.models import Brand, Task


class PersistentJob(models.Model):
    """The resumable side of a task: where it stands (items, last checkpoint) and its policy."""

    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="+")
    task = models.OneToOneField(Task, on_delete=models.CASCADE, related_name="persistent_job")
    total_items = models.PositiveIntegerField(null=True, blank=True)  # known once it starts
    processed_items = models.PositiveIntegerField(default=0)  # as of the last checkpoint
    checkpoint_every_items = models.PositiveIntegerField(default=100)
    checkpoint_every_seconds = models.FloatField(default=10.0)
    # Automatic resumptions after a lost worker; past auto_resume_max the job is interrupted.
    auto_resume_max = models.PositiveSmallIntegerField(default=3)
    auto_resume_count = models.PositiveIntegerField(default=0)
    resume_count = models.PositiveIntegerField(default=0)  # attempts that started from a checkpoint
    last_sequence = models.PositiveIntegerField(default=0)  # sequence of the last checkpoint
    last_checkpoint_at = models.DateTimeField(null=True, blank=True)
    initial_state = models.JSONField(default=dict, blank=True)  # ctx.state before any checkpoint
    pause_requested = models.BooleanField(default=False)
    # Set when the worker running the job shuts down: checkpoint and hand the job back.
    handback_requested = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = BrandScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(total_items__isnull=True) | Q(processed_items__lte=F("total_items")),
                name="job_processed_lte_total",
            ),
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
        if not self.total_items:
            return 100 if self.total_items == 0 else 0
        return min(100, self.processed_items * 100 // self.total_items)


class Checkpoint(models.Model):
    """One saved position of a job: items processed so far and the handler's JSON state."""

    job = models.ForeignKey(PersistentJob, on_delete=models.CASCADE, related_name="checkpoints")
    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="+")
    sequence = models.PositiveIntegerField()
    items_processed = models.PositiveIntegerField()
    state = models.JSONField(default=dict)
    size_bytes = models.PositiveIntegerField()  # of the state as JSON
    attempt = models.PositiveIntegerField()
    created_at = models.DateTimeField()

    objects = BrandScopedQuerySet.as_manager()

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

    objects = BrandScopedQuerySet.as_manager()

    class Meta:
        indexes = [
            # "which items did this task process, how often": WHERE task_id = ? GROUP BY item_id
            models.Index(fields=["task", "item_id"], name="processeditem_task_item_idx"),
        ]

    def __str__(self) -> str:
        return f"item {self.item_id} of task {self.task_id} (attempt {self.attempt})"

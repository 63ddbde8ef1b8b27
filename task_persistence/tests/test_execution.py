"""Resumable execution in-process: checkpoints, resumption, pause, hand-back, worker loss."""

from datetime import timedelta

import pytest
from django.utils import timezone

from task_core import execution
from task_core.models import Task
from task_core.registry import RetryPolicy, task_type
from task_persistence import services
from task_persistence.models import Checkpoint, PersistentJob, ProcessedItem
from task_persistence.tests.helpers import (
    WORKER,
    kinds,
    make_job,
    processed_counts,
    reload,
    run,
)

pytestmark = pytest.mark.django_db


class Boom(Exception):
    pass


@task_type(
    "test_resumable_hooks",
    resumable=True,
    retry=RetryPolicy(max_retries=3, backoff_base_s=0.0, jitter=0.0),
    options={"checkpoint_every_items": 100, "checkpoint_every_seconds": 3600},
)
def resumable_with_hooks(ctx):
    """Processes ids into the ledger; at `fail_at` (first attempt) raises, at `pause_at`
    asks for a pause, at `hand_back_at` its worker starts shutting down; `big_state` bloats
    the state."""
    for item in ctx.items(ctx.data["ids"], state={"sum": 0}):
        ctx.state["sum"] += item
        if ctx.data.get("big_state"):
            ctx.state["blob"] = "x" * 70_000
        ProcessedItem.objects.create(
            brand_id=ctx.task.brand_id, task_id=ctx.task.pk, item_id=item, attempt=ctx.attempt
        )
        if ctx.attempt == 1 and item == ctx.data.get("fail_at"):
            raise Boom("upstream died")
        if item == ctx.data.get("pause_at") and ctx.attempt == 1:
            services.job_pause(job=PersistentJob.objects.unscoped().get(task_id=ctx.task.pk))
        if item == ctx.data.get("hand_back_at") and ctx.attempt == 1:
            services.jobs_hand_back(worker=ctx.worker)
    return {"sum": ctx.state["sum"]}


def hooks_job(brand, **data):
    return make_job(brand, task_type="test_resumable_hooks", context={"ids": list(range(1, 251)),
                    **data})  # fmt: skip


def test_job_checkpoints_every_n_items_and_at_the_end(brand):
    job = hooks_job(brand)
    assert run(job) == "completed"
    job = reload(job)
    checkpoints = list(Checkpoint.objects.unscoped().filter(job=job).order_by("sequence"))
    assert [(c.sequence, c.items_processed) for c in checkpoints] == [(1, 100), (2, 200), (3, 250)]
    assert checkpoints[-1].state == {"sum": sum(range(1, 251))}
    assert checkpoints[0].size_bytes == len(b'{"sum":5050}')
    assert (job.processed_items, job.total_items, job.last_sequence) == (250, 250, 3)
    assert job.progress_percentage == 100 and job.resume_count == 0
    task = Task.objects.unscoped().get(pk=job.task_id)
    assert task.result_data == {"sum": sum(range(1, 251))} and task.progress_percentage == 100


def test_checkpoint_every_t_seconds(brand):
    job = make_job(brand, ids=5, context={"delay_ms": 60}, checkpoint_every_items=1000,
                   checkpoint_every_seconds=0.1)  # fmt: skip
    assert run(job) == "completed"
    # about every other item by time (60 ms each), plus the final checkpoint
    assert 2 <= Checkpoint.objects.unscoped().filter(job=job).count() <= 5


def test_failed_attempt_resumes_from_last_checkpoint_redoing_only_items_since(brand):
    job = hooks_job(brand, fail_at=150)
    assert run(job) == "retrying"
    assert run(job) == "completed"
    counts = processed_counts(job.task_id)
    assert sorted(counts) == list(range(1, 251))
    assert sorted(i for i, n in counts.items() if n == 2) == list(range(101, 151))
    task = Task.objects.unscoped().get(pk=job.task_id)
    assert task.result_data == {"sum": sum(range(1, 251))}  # state restored, not recounted
    timeline = kinds(job.task_id)
    assert timeline.count("started") == 2 and timeline.count("resumed") == 1
    resumed = task.events.get(kind="resumed")
    assert resumed.attempt == 2 and resumed.data == {"from_checkpoint": 1, "items_processed": 100}
    job = reload(job)
    assert job.resume_count == 1


def test_pause_is_honoured_at_next_checkpoint_and_resume_redoes_nothing(brand):
    job = hooks_job(brand, pause_at=120)
    assert run(job) == "paused"
    job = reload(job)
    assert Task.objects.unscoped().get(pk=job.task_id).status == "paused"
    assert job.processed_items == 200 and job.pause_requested
    services.job_resume(job=job)
    job = reload(job)
    assert (
        not job.pause_requested and Task.objects.unscoped().get(pk=job.task_id).status == "pending"
    )
    assert run(job) == "completed"
    assert set(processed_counts(job.task_id).values()) == {1}
    assert kinds(job.task_id).count("paused") == 1


def test_pause_requested_before_start_pauses_without_work(brand):
    job = hooks_job(brand)
    services.job_pause(job=job)
    assert run(job) == "paused"
    assert ProcessedItem.objects.unscoped().filter(task_id=job.task_id).count() == 0


def test_worker_shutdown_hands_back_after_a_checkpoint(brand):
    job = hooks_job(brand, hand_back_at=30)
    assert run(job) == "pending"
    task = Task.objects.unscoped().get(pk=job.task_id)
    event = task.events.order_by("id").last()
    assert (event.kind, event.from_status, event.to_status) == ("interrupted", "running", "pending")
    assert "handed back" in event.message
    assert task.available_at is not None
    assert run(job) == "completed"
    assert set(processed_counts(job.task_id).values()) == {1}  # nothing redone


def test_checkpoint_state_over_the_limit_fails_the_job(brand):
    job = hooks_job(brand, big_state=True)
    assert run(job) == "failed"
    task = Task.objects.unscoped().get(pk=job.task_id)
    assert "CheckpointStateTooLarge" in task.error_message
    assert not Checkpoint.objects.unscoped().filter(job=job).exists()


def test_cancel_is_honoured_at_next_checkpoint(brand):
    job = hooks_job(brand)
    Task.objects.unscoped().filter(pk=job.task_id).update(cancel_requested=True)
    assert run(job) == "cancelled"


def _stale_running(job, attempts):
    Task.objects.unscoped().filter(pk=job.task_id).update(
        status="running", attempts=attempts, worker=WORKER,
        heartbeat_at=timezone.now() - timedelta(minutes=5), started_at=timezone.now(),
    )  # fmt: skip


def test_lost_worker_auto_resumes_k_times_then_interrupts(brand):
    job = make_job(brand, auto_resume_max=2)
    for attempt in (1, 2):
        _stale_running(job, attempt)
        assert execution.tasks_sweep() == 1
        assert Task.objects.unscoped().get(pk=job.task_id).status == "pending"
    _stale_running(job, 3)
    assert execution.tasks_sweep() == 1
    task = Task.objects.unscoped().get(pk=job.task_id)
    assert task.status == "interrupted"
    job = reload(job)
    assert job.auto_resume_count == 2
    timeline = kinds(job.task_id)
    assert timeline.count("worker_lost") == 3 and timeline[-1] == "interrupted"
    assert "retry_scheduled" not in timeline
    services.job_resume(job=job)  # an operator's resume renews the budget
    job = reload(job)
    assert (
        job.auto_resume_count == 0
        and Task.objects.unscoped().get(pk=job.task_id).status == "pending"
    )


def test_zombie_attempt_cannot_save_a_checkpoint(brand):
    job = hooks_job(brand)
    Task.objects.unscoped().filter(pk=job.task_id).update(status="running", attempts=2)
    from task_core.context import TaskContext, TaskLost
    from task_core.registry import get_task_type

    task = Task.objects.unscoped().get(pk=job.task_id)
    task.attempts = 1  # the sweeper gave the task to attempt 2
    ctx = TaskContext(task, get_task_type(task.task_type), WORKER)
    with pytest.raises(TaskLost):
        services.checkpoint_save(ctx, {"a": 1}, 5)
    assert not Checkpoint.objects.unscoped().filter(job=job).exists()


def test_prune_keeps_the_last_n_checkpoints_of_completed_jobs(brand, settings):
    done, failed = hooks_job(brand), hooks_job(brand, fail_at=150)
    run(done)
    run(failed)  # retrying, with one checkpoint: never pruned
    assert services.checkpoints_prune(keep=1) == 2
    assert list(
        Checkpoint.objects.unscoped().filter(job=done).values_list("sequence", flat=True)
    ) == [3]
    assert Checkpoint.objects.unscoped().filter(job=failed).count() == 1


def test_completion_prunes_to_jobs_checkpoints_keep(brand, settings):
    settings.JOB_CHECKPOINTS_KEEP = 2
    job = hooks_job(brand)
    run(job)
    assert sorted(
        Checkpoint.objects.unscoped().filter(job=job).values_list("sequence", flat=True)
    ) == [2, 3]


def test_sweeper_that_loses_the_race_does_not_count_a_resumption(brand):
    job = make_job(brand, auto_resume_max=2)
    _stale_running(job, 1)
    stale = Task.objects.unscoped().get(pk=job.task_id)
    Task.objects.unscoped().filter(pk=job.task_id).update(status="pending")  # another sweeper won
    assert execution._resumable_lost(stale, stale_spec(stale), "lost") == "lost"
    job = reload(job)
    assert job.auto_resume_count == 0


def stale_spec(task):
    from task_core.registry import get_task_type

    return get_task_type(task.task_type)


def test_pause_requested_at_the_last_checkpoint_lets_the_job_finish(brand):
    job = hooks_job(brand, pause_at=240)  # the next checkpoint is the last one (250)
    assert run(job) == "completed"

"""Resumable jobs against real workers: SIGKILL, killed pool child, SIGTERM, pause/resume over
the API, and a job that crashes its worker every time."""

import os
import signal
import time

import pytest

from task_core.models import Task
from task_persistence import services
from task_persistence.models import Checkpoint, PersistentJob, ProcessedItem
from task_persistence.selectors import jobs_interrupted
from task_persistence.tests.helpers import reload
from tests.integration.conftest import wait_for
from tests.integration.test_worker import kinds, wait_status

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

ITEMS = 2000
EVERY = 100  # checkpoint every 100 items (and every 60 s, which these jobs never reach)


def create_job(brand, **context):
    job, _ = services.job_create(
        brand=brand,
        task_type="seo_keyword_audit",
        context_data={"keyword_ids": list(range(1, ITEMS + 1)), "delay_ms": 3, **context},
        checkpoint_every_items=EVERY,
        checkpoint_every_seconds=60,
        auto_resume_max=2,
    )
    return job


def checkpoints(job, at_least):
    wait_for(lambda: Checkpoint.objects.unscoped().filter(job=job).count() >= at_least, 90,
             message=f"{at_least} checkpoints")  # fmt: skip


def counts(job) -> dict[int, int]:
    seen: dict[int, int] = {}
    for item in (
        ProcessedItem.objects.unscoped()
        .filter(task_id=job.task_id)
        .values_list("item_id", flat=True)
    ):
        seen[item] = seen.get(item, 0) + 1
    return seen


def assert_resumed_after_loss(job):
    """Completed, every item processed, and the only items processed twice are those the lost
    attempt did after its last checkpoint."""
    task = wait_status(job.task_id, "completed", timeout=180)
    seen = counts(job)
    assert sorted(seen) == list(range(1, ITEMS + 1))
    assert max(seen.values()) <= 2
    resumed = task.events.get(kind="resumed")
    from_items = resumed.data["items_processed"]
    assert from_items >= 2 * EVERY  # at least two checkpoints were written before the kill
    done_by_lost = ProcessedItem.objects.unscoped().filter(task_id=job.task_id, attempt=1).count()
    twice = [item for item, n in seen.items() if n == 2]
    assert len(twice) == done_by_lost - from_items
    assert len(twice) < EVERY
    assert sorted(twice) == list(range(from_items + 1, done_by_lost + 1))
    assert task.attempts == 2 and task.result_data["keywords_processed"] == ITEMS
    timeline = kinds(task)
    assert timeline.count("started") == 2 and timeline.count("completed") == 1
    assert timeline.index("worker_lost") < timeline.index("resumed")
    assert "retry_scheduled" not in timeline
    job = reload(job)
    assert job.auto_resume_count == 1 and job.resume_count == 1
    assert job.processed_items == job.total_items == ITEMS


def test_sigkilled_worker_job_resumes_from_last_checkpoint(brand, start_process):
    first = start_process("worker")
    start_process("beat")
    job = create_job(brand)
    checkpoints(job, 2)
    first.kill(signal.SIGKILL)  # main process and pool children, no goodbye
    start_process("worker")
    assert_resumed_after_loss(job)


def test_killed_pool_child_job_resumes_from_last_checkpoint(brand, start_process):
    worker = start_process("worker", concurrency=1)
    start_process("beat")
    job = create_job(brand)
    checkpoints(job, 2)
    (child,) = worker.pool_children()
    os.kill(child, signal.SIGKILL)  # the worker survives and forks a new child
    assert_resumed_after_loss(job)
    assert worker.popen.poll() is None


def test_sigterm_checkpoints_and_hands_the_job_back_without_reprocessing(brand, start_process):
    first = start_process("worker")
    start_process("beat")
    job = create_job(brand)
    checkpoints(job, 2)
    # SIGTERM to the worker's main process only, as `docker stop` (through tini) or Kubernetes
    # do: a warm shutdown.
    first.popen.send_signal(signal.SIGTERM)
    assert first.popen.wait(60) == 0
    task = Task.objects.unscoped().get(pk=job.task_id)
    assert task.status in ("pending", "queued")  # handed back, not finished
    job = reload(job)
    assert job.processed_items < ITEMS
    assert (
        ProcessedItem.objects.unscoped().filter(task_id=job.task_id).count() == job.processed_items
    )
    start_process("worker")
    task = wait_status(job.task_id, "completed", timeout=180)
    seen = counts(job)
    assert sorted(seen) == list(range(1, ITEMS + 1)) and set(seen.values()) == {1}
    timeline = kinds(task)
    handed_back = task.events.get(kind="interrupted")
    assert (handed_back.from_status, handed_back.to_status) == ("running", "pending")
    assert "worker_lost" not in timeline and timeline.count("started") == 2
    assert timeline.count("resumed") == 1


def test_pause_then_resume_over_the_api(api, owner, brand, worker, beat):
    client = api(owner, brand)
    response = client.post(
        "/tasks/persistent-jobs/persistent-jobs/",
        {
            "task_type": "seo_keyword_audit",
            "context_data": {"keyword_ids": list(range(1, ITEMS + 1)), "delay_ms": 3},
            "checkpoint_every_items": EVERY,
            "checkpoint_every_seconds": 60,
        },
        format="json",
    )
    assert response.status_code == 201
    job = PersistentJob.objects.unscoped().get(pk=response.json()["id"])
    checkpoints(job, 1)
    response = client.post(f"/tasks/persistent-jobs/persistent-jobs/{job.pk}/pause/")
    assert response.status_code == 202 and response.json()["pause_requested"] is True
    wait_status(job.task_id, "paused", timeout=60)
    job = reload(job)
    paused_at = job.processed_items
    assert 0 < paused_at < ITEMS
    time.sleep(2)  # really stopped: nothing processed beyond the checkpoint
    assert ProcessedItem.objects.unscoped().filter(task_id=job.task_id).count() == paused_at
    listed = client.get("/tasks/persistent-jobs/persistent-jobs/resumable/").json()["results"]
    assert [j["id"] for j in listed] == [job.pk]
    response = client.post(f"/tasks/persistent-jobs/persistent-jobs/{job.pk}/resume/")
    assert response.status_code == 200
    assert response.json()["status"] in ("pending", "queued", "running")  # a worker may be quick
    task = wait_status(job.task_id, "completed", timeout=180)
    seen = counts(job)
    assert sorted(seen) == list(range(1, ITEMS + 1)) and set(seen.values()) == {1}
    timeline = kinds(task)
    assert timeline.count("paused") == 1 and timeline.count("resumed") == 2  # request + attempt
    detail = client.get(f"/tasks/persistent-jobs/persistent-jobs/{job.pk}/").json()
    assert detail["progress_percentage"] == 100 and detail["resume_count"] == 1


def test_job_crashing_its_worker_every_time_is_interrupted_after_k_resumptions(brand, worker, beat):
    job = create_job(brand, crash_after_items=150)  # auto_resume_max=2
    task = wait_status(job.task_id, "interrupted", timeout=180)
    timeline = kinds(task)
    assert task.attempts == 3
    assert timeline.count("started") == 3 and timeline.count("worker_lost") == 3
    assert timeline.count("resumed") == 2 and timeline[-1] == "interrupted"
    job = reload(job)
    assert job.auto_resume_count == 2 and job.processed_items < ITEMS
    assert job in jobs_interrupted(brand=brand)
    time.sleep(3)  # stays interrupted: no automatic retry
    assert Task.objects.unscoped().get(pk=job.task_id).status == "interrupted"
    assert worker.popen.poll() is None

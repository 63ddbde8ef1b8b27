"""End to end over a real celery worker, RabbitMQ and PostgreSQL."""

import itertools

import pytest
from django.db.models import Count, Q

from task_core import broker, execution, services
from task_core.models import Task
from tests.factories import TaskFactory
from tests.integration.conftest import broker_unreachable, wait_for

pytestmark = [pytest.mark.integration]


def status_of(task_pk):
    return Task.objects.unscoped().values_list("status", flat=True).get(pk=task_pk)


def wait_status(task_pk, statuses, timeout=30):
    statuses = {statuses} if isinstance(statuses, str) else set(statuses)
    wait_for(lambda: status_of(task_pk) in statuses, timeout, message=f"task {task_pk} {statuses}")
    return Task.objects.unscoped().get(pk=task_pk)


def kinds(task):
    return list(task.events.order_by("id").values_list("kind", flat=True))


def test_task_created_over_rest_completes_with_result_and_timeline(api, owner, brand, worker):
    payload = {
        "task_type": "seo_keyword_analysis",
        "description": "Analyser 20 mots-clés",
        "context_data": {"keyword_ids": list(range(1, 21)), "delay_ms": 20},
    }
    response = api(owner, brand).post("/tasks/", payload, format="json")
    assert response.status_code == 201
    assert response.json()["status"] == "queued"  # committed, then published on commit
    task = wait_status(response.json()["id"], "completed")
    assert task.result_data["keywords_processed"] == 20
    assert task.attempts == 1 and task.progress_percentage == 100
    assert task.worker.startswith("w") and task.started_at and task.completed_at
    assert kinds(task) == [
        "created", "queued", "started", "progress", "progress", "progress", "completed",
    ]  # fmt: skip
    detail = api(owner, brand).get(f"/tasks/{task.pk}/").json()
    assert detail["status"] == "completed" and detail["result_data"] == task.result_data


def test_failing_type_retries_with_backoff_then_fails(brand, worker, beat):
    task, _ = services.task_create(brand=brand, task_type="flaky_api_call")
    task = wait_status(task.pk, "failed", timeout=60)
    assert task.attempts == 4  # 1 + max_retries=3
    assert "UpstreamUnavailable" in task.error_message
    events = list(task.events.order_by("id"))
    retries = [e for e in events if e.kind == "retry_scheduled"]
    assert [e.data["next_attempt"] for e in retries] == [2, 3, 4]
    delays = [e.data["delay_s"] for e in retries]
    assert delays[0] < delays[1] < delays[2]  # exponential (jitter is +/-25%)
    starts = [e.created_at for e in events if e.kind == "started"]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
    assert all(gap >= delay * 0.9 for gap, delay in zip(gaps, delays, strict=True)), (gaps, delays)
    assert events[-1].kind == "failed" and "attempt 4 of 4" in events[-1].message


def test_cancel_a_running_task(api, owner, brand, worker):
    task, _ = services.task_create(brand=brand, task_type="sleep", context_data={"seconds": 60})
    wait_status(task.pk, "running")
    response = api(owner, brand).post(f"/tasks/{task.pk}/cancel/")
    assert response.status_code == 202
    task = wait_status(task.pk, "cancelled", timeout=10)
    assert task.completed_at is not None
    assert kinds(task)[-2:] == ["cancel_requested", "cancelled"]


def test_duplicate_deliveries_run_the_handler_once(brand, start_process):
    task, _ = services.task_create(brand=brand, task_type="sleep", context_data={"seconds": 1})
    for _ in range(3):  # the same message delivered again, as after a redelivery
        broker.send(task)
    worker = start_process("worker", concurrency=4)
    task = wait_status(task.pk, "completed")
    wait_for(
        lambda: worker.output().count("duplicate or stale delivery ignored") == 3, 10,
        message="the 3 other deliveries to be acknowledged and ignored",
    )  # fmt: skip
    assert task.attempts == 1 and kinds(task).count("started") == 1


def test_task_whose_publish_failed_is_published_by_the_release_loop(brand, worker, beat, settings):
    settings.TASK_PUBLISH_GRACE_SECONDS = 2
    with broker_unreachable():
        task, _ = services.task_create(brand=brand, task_type="noop")
    task.refresh_from_db()
    assert task.status == "pending"  # committed, handed back: not on the broker
    assert kinds(task) == ["created", "queued", "publish_failed"]
    failed = task.events.get(kind="publish_failed")
    assert (failed.from_status, failed.to_status) == ("queued", "pending")
    task = wait_status(task.pk, "completed", timeout=30)
    assert task.attempts == 1
    timeline = ["created", "queued", "publish_failed", "queued", "started", "completed"]
    assert kinds(task) == timeline
    queued = task.events.filter(kind="queued").order_by("id")
    assert [e.actor for e in queued] == ["system:publisher", "system:release"]


def test_critical_task_overtakes_a_low_priority_backlog(brand, start_process):
    backlog = [
        services.task_create(brand=brand, task_type="sleep", priority="low",
                             context_data={"seconds": 0.2})[0]
        for _ in range(15)
    ]  # fmt: skip
    critical, _ = services.task_create(
        brand=brand, task_type="sleep", priority="critical", context_data={"seconds": 0.2}
    )
    start_process("worker", concurrency=1)
    wait_status(critical.pk, "completed", timeout=30)
    order = list(
        Task.objects.unscoped()
        .filter(started_at__isnull=False)
        .order_by("started_at")
        .values_list("pk", flat=True)
    )
    assert critical.pk in order[:2], (order.index(critical.pk), len(order))
    assert len(order) < len(backlog)  # it did not wait for the backlog


def test_scheduled_task_is_released_when_due(brand, worker, beat):
    from datetime import timedelta

    from django.utils import timezone

    task, _ = services.task_create(
        brand=brand, task_type="noop", scheduled_for=timezone.now() + timedelta(seconds=3)
    )
    assert status_of(task.pk) == "pending"
    task = wait_status(task.pk, "completed", timeout=20)
    assert task.started_at >= task.scheduled_for


def test_every_task_of_a_burst_completes_once(brand, start_process):
    tasks = [services.task_create(brand=brand, task_type="noop")[0] for _ in range(200)]
    start_process("worker", concurrency=2)
    wait_for(
        lambda: Task.objects.unscoped().filter(status="completed").count() == len(tasks), 60,
        message="200 tasks completed",
    )  # fmt: skip
    per_task = (
        Task.objects.unscoped()
        .annotate(starts=Count("events", filter=Q(events__kind="started")))
        .values_list("starts", flat=True)
    )
    assert set(per_task) == {1}


def test_queued_task_whose_message_was_lost_is_republished(brand, settings, purge_queues):
    from datetime import timedelta

    from django.utils import timezone

    from task_core.selectors import broker_queue_stats

    settings.TASK_QUEUED_LOST_SECONDS = 60
    lost = TaskFactory(
        brand=brand, status="queued", queued_at=timezone.now() - timedelta(minutes=5)
    )
    fresh = TaskFactory(brand=brand, status="queued", queued_at=timezone.now())
    assert broker_queue_stats(["default"])["queues"]["default"]["depth"] == 0
    assert execution.tasks_sweep() == 1
    wait_for(lambda: broker_queue_stats(["default"])["queues"]["default"]["depth"] == 1, 5,
             message="the republished message")  # fmt: skip
    assert lost.events.get().message == "republished: message lost"
    assert not fresh.events.exists()
    assert execution.tasks_sweep() == 0  # its queue is no longer empty


def test_lost_message_is_republished_under_a_backlog(brand, settings, purge_queues):
    """A queue that never empties: a queued task is taken as lost once a task of its queue with
    the same or a lower priority, queued well after it, is running."""
    from datetime import timedelta

    from django.utils import timezone

    from task_core.selectors import broker_queue_stats

    settings.TASK_QUEUED_LOST_SECONDS = 60
    now = timezone.now()
    long_ago = now - timedelta(minutes=5)
    lost = TaskFactory(brand=brand, status="queued", priority="normal", queued_at=long_ago)
    # A low-priority message legitimately waits behind normal ones published after it.
    behind = TaskFactory(brand=brand, status="queued", priority="low", queued_at=long_ago)
    # Queued within the grace period after the running one: its send may have come later.
    close = TaskFactory(
        brand=brand,
        status="queued",
        priority="normal",
        queued_at=now - timedelta(minutes=1, seconds=5),
    )
    TaskFactory(
        brand=brand, status="running", priority="normal", queued_at=now - timedelta(minutes=1),
        started_at=now, heartbeat_at=now,
    )  # fmt: skip
    backlog = TaskFactory(brand=brand, status="queued", queued_at=now)
    broker.send(backlog)
    wait_for(lambda: broker_queue_stats(["default"])["queues"]["default"]["depth"] == 1, 5,
             message="the backlog")  # fmt: skip
    assert execution.tasks_sweep() == 1
    assert lost.events.get().message == "republished: message lost"
    assert not behind.events.exists() and not close.events.exists()
    wait_for(lambda: broker_queue_stats(["default"])["queues"]["default"]["depth"] == 2, 5,
             message="the republished message")  # fmt: skip

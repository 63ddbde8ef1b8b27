"""Faults with real processes: killed workers, killed pool children, time limits, killed
database connections."""

import os
import signal
import time

import pytest

from task_core import services
from task_core.models import Task
from tests.integration.conftest import wait_for
from tests.integration.test_worker import kinds, wait_status

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

SLOW_SEO = {"keyword_ids": list(range(1, 41)), "delay_ms": 150}  # ~6 s of work


def test_sigkilled_worker_task_is_rescued_and_completes_on_another(brand, start_process):
    first = start_process("worker")
    start_process("beat")
    task, _ = services.task_create(brand=brand, task_type="seo_keyword_analysis",
                                   context_data=SLOW_SEO)  # fmt: skip
    wait_for(lambda: Task.objects.unscoped().get(pk=task.pk).progress_percentage >= 10, 20,
             message="the task to make progress")  # fmt: skip
    first.kill(signal.SIGKILL)  # main process and pool children, no goodbye
    start_process("worker")
    task = wait_status(task.pk, "completed", timeout=60)
    assert task.attempts == 2
    assert task.result_data["keywords_processed"] == 40
    timeline = kinds(task)
    assert timeline.count("started") == 2 and timeline.count("completed") == 1
    assert "worker_lost" in timeline
    assert timeline.index("worker_lost") < timeline.index("retry_scheduled")


def test_killed_pool_child_task_is_rescued(brand, start_process):
    worker = start_process("worker", concurrency=1)
    start_process("beat")
    task, _ = services.task_create(brand=brand, task_type="seo_keyword_analysis",
                                   context_data=SLOW_SEO)  # fmt: skip
    wait_for(lambda: Task.objects.unscoped().get(pk=task.pk).progress_percentage >= 10, 20,
             message="the task to make progress")  # fmt: skip
    (child,) = worker.pool_children()
    os.kill(child, signal.SIGKILL)  # the worker itself survives and forks a new child
    task = wait_status(task.pk, "completed", timeout=60)
    assert worker.popen.poll() is None
    assert task.attempts == 2 and "worker_lost" in kinds(task)
    assert kinds(task).count("completed") == 1


def test_soft_time_limit_is_recorded_and_retried(brand, worker, beat):
    task, _ = services.task_create(brand=brand, task_type="stuck_call",
                                   context_data={"seconds": 10})  # fmt: skip
    task = wait_status(task.pk, "failed", timeout=30)
    assert task.attempts == 2  # max_retries=1
    assert task.error_message.startswith("Soft time limit exceeded")
    assert kinds(task).count("timed_out") == 1  # first attempt; the last one is "failed"


def test_hard_time_limit_kills_the_attempt_and_is_recorded(brand, worker, beat):
    task, _ = services.task_create(
        brand=brand, task_type="stuck_call", context_data={"seconds": 10, "ignore_soft_limit": True}
    )
    task = wait_status(task.pk, "failed", timeout=60)
    assert task.attempts == 2
    assert "Hard time limit (4s) exceeded" in task.error_message
    assert kinds(task).count("timed_out") == 1
    assert worker.popen.poll() is None  # the worker replaced its killed child


def _other_sessions_count(cursor) -> int:
    cursor.execute("SELECT pg_stat_clear_snapshot()")
    cursor.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
    return cursor.fetchone()[0]


def test_worker_keeps_its_database_connection_and_replaces_a_killed_one(brand, start_process):
    from django.db import connection

    start_process("worker", concurrency=1, env={"DB_CONN_MAX_AGE": "300"})
    first, _ = services.task_create(brand=brand, task_type="noop")
    wait_status(first.pk, "completed")
    with connection.cursor() as cursor:
        time.sleep(1.5)  # PostgreSQL flushes session counts at most once a second
        before = _other_sessions_count(cursor)
        burst = [services.task_create(brand=brand, task_type="noop")[0] for _ in range(10)]
        for task in burst:
            wait_status(task.pk, "completed")
        time.sleep(1.5)
        # One connection for the ten tasks (CELERY_DB_REUSE_MAX), not one per task.
        assert _other_sessions_count(cursor) - before <= 3
        # PostgreSQL drops every connection of the worker between two tasks.
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert cursor.fetchone()[0] >= 1
    after, _ = services.task_create(brand=brand, task_type="noop")
    # The health check before the next task replaces the dead connection: no failed attempt.
    after = wait_status(after.pk, "completed")
    # "queued" is committed with the task, before its message is sent.
    assert after.attempts == 1 and kinds(after) == ["created", "queued", "started", "completed"]

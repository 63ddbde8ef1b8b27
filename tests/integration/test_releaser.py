"""The fair-share releaser (task_core/releaser.py) over a real worker, RabbitMQ and PostgreSQL,
without beat (the release loop never runs): a finish wakes it and it publishes the brand's next
window at once; after its database session is killed it reconnects and no task is lost."""

import time

import pytest
from django.db import connection, transaction
from django.db.models import Count, Q

from task_core import services
from task_core.models import Task, TaskEvent
from task_core.releaser import APPLICATION_NAME
from task_core.services import TaskRequest
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.integration]
WINDOW = 5
ENV = {"TASK_BRAND_WINDOW": str(WINDOW), "TASK_RELEASE_INTERVAL_SECONDS": "3600"}


@pytest.fixture
def window(settings):
    settings.TASK_BRAND_WINDOW = WINDOW  # this process publishes on commit with the same window


def create_many(brand, n):
    requests = [TaskRequest(brand=brand, task_type="noop")] * n
    with transaction.atomic():
        services.task_create_many(requests=requests, actor="test")


def releaser_sessions() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
            "AND datname = current_database()",
            [APPLICATION_NAME],
        )
        return cursor.fetchone()[0]


def assert_each_started_once(brand, n):
    starts = (
        Task.objects.for_brand(brand)
        .annotate(k=Count("events", filter=Q(events__kind="started")))
        .values_list("k", flat=True)
    )
    assert sorted(starts) == [1] * n


def test_a_finish_wakes_the_releaser_which_publishes_the_next_window(brand, window, start_process):
    worker = start_process("worker", concurrency=2, env=ENV)
    wait_for(lambda: releaser_sessions() == 1, 30, message="the releaser listening")
    started = time.monotonic()
    create_many(brand, 40)  # the first window goes on commit; 35 wait for the releaser
    assert Task.objects.for_brand(brand).filter(status="pending").count() == 40 - WINDOW
    wait_for(
        lambda: Task.objects.for_brand(brand).filter(status="completed").count() == 40,
        30,
        interval=0.1,
        message="40 completed",
    )
    elapsed = time.monotonic() - started
    by_releaser = (
        TaskEvent.objects.for_brand(brand).filter(kind="queued", actor="system:refill").count()
    )
    assert by_releaser == 40 - WINDOW, worker.output()
    # Promptly: each release came within moments of the finish that woke it (the release loop
    # is an hour away here), so the whole backlog drained in seconds.
    assert elapsed < 15, elapsed
    assert_each_started_once(brand, 40)


def test_the_releaser_reconnects_after_its_session_is_killed(brand, window, start_process):
    worker = start_process("worker", concurrency=2, env=ENV)
    wait_for(lambda: releaser_sessions() == 1, 30, message="the releaser listening")
    create_many(brand, 60)
    done = Task.objects.for_brand(brand).filter(status="completed")
    wait_for(lambda: done.count() >= 10, 30, interval=0.05, message="10 completed")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = %s AND datname = current_database()",
            [APPLICATION_NAME],
        )
        assert cursor.fetchone()[0] == 1
    assert done.count() < 60  # killed while work was still waiting
    wait_for(lambda: done.count() == 60, 60, interval=0.2, message="all 60 completed")
    assert "reconnecting" in worker.output()
    assert releaser_sessions() == 1
    assert_each_started_once(brand, 60)

"""Fair share and brand limits over a real worker, beat, RabbitMQ and PostgreSQL: a brand's
backlog does not delay another brand, max_running and rate_per_minute hold, nothing is lost
or run twice."""

import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connections, transaction
from django.db.models import Count, Q

from task_core import services
from task_core.models import BrandLimit, Task
from task_core.services import TaskRequest
from tests.factories import BrandFactory
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.integration]


def create_many(brand, n, task_type="noop", context_data=None):
    requests = [TaskRequest(brand=brand, task_type=task_type, context_data=context_data or {})]
    with transaction.atomic():
        services.task_create_many(requests=requests * n, actor="test")


def all_done(brands, total, timeout):
    tasks = Task.objects.unscoped().filter(brand__in=brands)
    wait_for(
        lambda: tasks.filter(status="completed").count() == total,
        timeout,
        interval=0.5,
        message=f"{total} tasks completed",
    )


def assert_each_started_once(brands):
    starts = (
        Task.objects.unscoped()
        .filter(brand__in=brands)
        .annotate(n=Count("events", filter=Q(events__kind="started")))
        .values_list("n", flat=True)
    )
    assert set(starts) == {1}


BACKLOG = 2000  # B's wait is held to A's window while well over 1000 of these still wait


def test_another_brand_is_not_starved_by_a_backlog(brand, start_process):
    other = BrandFactory(name="Small", slug="small")
    create_many(brand, BACKLOG)
    start_process("worker", concurrency=4)
    start_process("beat")
    # A's backlog is draining; now B sends 20 tasks.
    wait_for(
        lambda: Task.objects.for_brand(brand).filter(status="completed").count() >= 100,
        60,
        message="brand A draining",
    )
    b_tasks = [services.task_create(brand=other, task_type="noop")[0] for _ in range(20)]
    sent_at = min(t.created_at for t in b_tasks)
    wait_for(
        lambda: Task.objects.for_brand(other).filter(status="completed").count() == 20,
        60,
        message="brand B's 20 tasks completed",
    )
    last_b_start = max(Task.objects.for_brand(other).values_list("started_at", flat=True))
    a_starts_between = (
        Task.objects.for_brand(brand)
        .filter(started_at__gte=sent_at, started_at__lte=last_b_start)
        .count()
    )
    # B waited behind at most A's window (20) and what the worker had prefetched, not the
    # thousands of A's tasks still waiting in the database.
    assert a_starts_between <= 200, a_starts_between
    assert Task.objects.for_brand(brand).exclude(status="completed").count() > 1000
    all_done([brand, other], BACKLOG + 20, timeout=300)
    assert_each_started_once([brand, other])


def test_max_running_holds_while_tasks_run(brand, start_process):
    BrandLimit.objects.create(brand=brand, max_running=2)
    create_many(brand, 20, task_type="sleep", context_data={"seconds": 0.5})
    samples: list[int] = []
    done = threading.Event()

    def sample():
        try:
            running = Task.objects.for_brand(brand).filter(status="running")
            while not done.is_set():
                samples.append(running.count())
                time.sleep(0.05)
        finally:
            connections.close_all()

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        start_process("worker", concurrency=4)
        start_process("beat")
        all_done([brand], 20, timeout=90)
    finally:
        done.set()
        sampler.join()
    assert max(samples) == 2, max(samples)  # reached, never exceeded
    assert_each_started_once([brand])


def test_rate_quota_holds_over_two_minutes(brand, start_process):
    BrandLimit.objects.create(brand=brand, rate_per_minute=60)
    create_many(brand, 110)  # 60 + 50: the quota fills, then refills once its minute has passed
    start_process("worker", concurrency=2)
    start_process("beat")
    all_done([brand], 110, timeout=180)
    tasks = Task.objects.for_brand(brand)
    starts = sorted(tasks.values_list("started_at", flat=True))
    publishes = sorted(
        tasks.filter(events__kind="queued").values_list("events__created_at", flat=True)
    )
    # The quota's own definition: publishes in any sliding 60 s.
    worst = max(sum(1 for t in publishes if s <= t < s + timedelta(seconds=60)) for s in publishes)
    assert worst <= 60, worst
    # Starts, minute by minute from the first publish (a start lags its publish by the queue).
    minutes = Counter(int((t - publishes[0]).total_seconds() // 60) for t in starts)
    assert max(minutes.values()) <= 60, minutes
    assert len(minutes) >= 2, minutes  # it did wait for the quota: two minutes of starts
    assert starts[-1] - starts[0] >= timedelta(seconds=60)  # it did wait for the quota
    assert_each_started_once([brand])

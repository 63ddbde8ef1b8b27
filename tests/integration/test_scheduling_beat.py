"""Schedules fired by real celery beat and worker processes (RabbitMQ + PostgreSQL)."""

import itertools
import time
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from task_core.models import Task
from task_scheduling import services
from task_scheduling.models import ScheduleRun
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

FAST_DISPATCH = {"SCHEDULE_DISPATCH_INTERVAL_SECONDS": "1"}


# Three real minutes: its own xdist group, so the rest of the suite runs beside it.
@pytest.mark.xdist_group("scheduling-two-beats")
def test_two_beats_for_three_minutes_fire_a_minute_schedule_exactly_three_times(
    brand, start_process
):
    beats = [start_process("beat", env=FAST_DISPATCH) for _ in range(2)]
    start_process("worker", concurrency=3, env=FAST_DISPATCH)
    start = timezone.now()
    end = start + timedelta(minutes=3)
    schedule = services.schedule_create(
        brand=brand,
        name="every minute",
        task_type="noop",
        cron_expression="* * * * *",
        overlap_policy="allow",
        start_at=start,
        end_at=end,
    )
    # Both beats send the dispatcher every second; three workers processes run them at once.
    wait_for(
        lambda: Task.objects.unscoped().filter(status="completed").count() >= 3,
        timeout=(end - timezone.now()).total_seconds() + 30,
        interval=1,
        message="three completed runs",
    )
    time.sleep(max(0.0, (end - timezone.now()).total_seconds()) + 3)
    for beat in beats:
        assert beat.popen.poll() is None, beat.output()[-2000:]
    runs = list(ScheduleRun.objects.unscoped().filter(schedule=schedule).order_by("fire_time"))
    assert [r.outcome for r in runs] == ["fired"] * 3
    minutes = [r.fire_time for r in runs]
    assert all(t.second == 0 and t.microsecond == 0 for t in minutes)
    assert [(b - a).total_seconds() for a, b in itertools.pairwise(minutes)] == [
        60.0,
        60.0,
    ]
    tasks = Task.objects.unscoped().filter(pk__in=[r.task_id for r in runs])
    assert Task.objects.unscoped().count() == 3 and tasks.count() == 3
    assert set(tasks.values_list("status", flat=True)) == {"completed"}
    # Each fire was dispatched within seconds of its time.
    for run in runs:
        assert (run.created_at - run.fire_time).total_seconds() < 10


def test_beat_registers_the_platform_entries_in_django_celery_beat(start_process):
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    # A row left by an older release under a name the code no longer declares (the
    # checkpoint prune loop was megahub.tasks_prune_checkpoints) must not keep firing it.
    every = IntervalSchedule.objects.create(every=3600, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(
        name="megahub.tasks_prune_checkpoints", task="megahub.tasks_prune_checkpoints",
        interval=every,
    )  # fmt: skip
    PeriodicTask.objects.create(name="ops.hand_made", task="ops.hand_made", interval=every)
    start_process("beat")
    expected = {
        "megahub.schedules_dispatch_due",
        "megahub.tasks_release_due",
        "megahub.tasks_sweep",
    }
    wait_for(
        lambda: expected <= set(PeriodicTask.objects.values_list("name", flat=True)),
        timeout=20,
        message="the platform entries in django-celery-beat's tables",
    )
    entry = PeriodicTask.objects.select_related("interval").get(
        name="megahub.schedules_dispatch_due"
    )
    assert entry.enabled and entry.interval.every == 2 and entry.interval.period == "seconds"
    names = set(PeriodicTask.objects.values_list("name", flat=True))
    assert "megahub.tasks_prune_checkpoints" not in names
    assert "ops.hand_made" in names  # rows outside megahub.* are the operator's
    assert {n for n in names if n.startswith("megahub.")} <= set(
        django_settings.CELERY_BEAT_SCHEDULE
    )

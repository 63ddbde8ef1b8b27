"""The platform loops: each tick recorded by the worker, /health/ready/ reporting a late loop,
Celery's per-tick INFO lines kept out of INFO logs, ticks not counted as processed work."""

import logging
from datetime import timedelta
from types import SimpleNamespace

from django.utils import timezone

from megahub.logging import PlatformTicksAtDebug
from task_monitoring import loops, services, workers
from task_monitoring.models import PlatformLoop

RELEASE, SWEEP = "megahub.tasks_release_due", "megahub.tasks_sweep"


def _tick(name, state="SUCCESS", retval=0, task_id="t1"):
    sender = SimpleNamespace(name=name)
    loops._loop_started(sender=sender, task_id=task_id)
    loops._loop_finished(sender=sender, task_id=task_id, state=state, retval=retval)


def test_each_tick_of_a_platform_loop_is_recorded_once_per_loop(db):
    _tick(RELEASE)
    first = PlatformLoop.objects.get(task_name=RELEASE)
    assert first.last_run_at is not None and first.last_duration_ms is not None
    _tick(RELEASE, state="FAILURE", retval=ConnectionError("broker down"))
    _tick("megahub.task_execute")  # brand work is no loop
    row = PlatformLoop.objects.get()
    assert row.last_run_at == first.last_run_at  # a failure is not a run
    assert row.first_run_at == first.first_run_at
    assert row.last_error == "ConnectionError: broker down" and row.last_failed_at is not None


def _age(row_name, seconds, first_seconds=None):
    now = timezone.now()
    PlatformLoop.objects.update_or_create(
        task_name=row_name,
        defaults={
            "last_run_at": now - timedelta(seconds=seconds) if seconds is not None else None,
            "first_run_at": now - timedelta(seconds=first_seconds or seconds or 0),
        },
    )


def test_readiness_reports_a_loop_silent_for_three_intervals(client, db, settings):
    settings.CELERY_BEAT_SCHEDULE = {  # the intervals readiness compares with
        RELEASE: {"task": RELEASE, "schedule": 20.0},
        SWEEP: {"task": SWEEP, "schedule": 10.0},
        "megahub.schedules_dispatch_due": {
            "task": "megahub.schedules_dispatch_due", "schedule": 10.0,
        },
    }  # fmt: skip
    _age(RELEASE, 45)  # within 3 x 20 s
    _age(SWEEP, 31)  # more than 3 x 10 s
    response = client.get("/health/ready/")
    assert response.status_code in (200, 503)  # the broker decides; loops only warn
    check = response.json()["checks"]["loops"]
    by_task = {loop["task"]: loop for loop in check["loops"]}
    assert check["status"] == "warn"
    assert check["detail"] == f"late: {SWEEP}, megahub.schedules_dispatch_due"
    assert by_task[RELEASE]["status"] == "ok" and by_task[RELEASE]["interval_s"] == 20.0
    assert by_task[SWEEP]["status"] == "late" and by_task[SWEEP]["age_s"] >= 31
    assert by_task[SWEEP]["last_run_at"] is not None
    # never ran although the platform has been ticking for 45 s: late too
    assert by_task["megahub.schedules_dispatch_due"]["status"] == "late"
    _age(SWEEP, 1)
    PlatformLoop.objects.filter(task_name=SWEEP).update(first_run_at=timezone.now())
    PlatformLoop.objects.filter(task_name=RELEASE).update(first_run_at=timezone.now())
    check = client.get("/health/ready/").json()["checks"]["loops"]
    by_task = {loop["task"]: loop for loop in check["loops"]}
    assert check["status"] == "ok"
    assert by_task["megahub.schedules_dispatch_due"]["status"] == "pending"  # just started


def test_readiness_before_any_tick_lists_every_loop_as_pending(client, db, settings):
    check = client.get("/health/ready/").json()["checks"]["loops"]
    assert check["status"] == "ok"
    names = {loop["task"] for loop in check["loops"]}
    assert {RELEASE, SWEEP, "megahub.events_relay", "megahub.schedules_dispatch_due",
            "megahub.alert_rules_evaluate", "megahub.webhooks_deliver_due",
            "megahub.alert_notifications_deliver"} <= names  # fmt: skip
    assert {loop["status"] for loop in check["loops"]} == {"pending"}


def _record(name, msg, args=(), data=None):
    record = logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, None)
    if data is not None:
        record.data = data
    return record


def test_platform_ticks_are_logged_at_debug_and_brand_work_at_info(settings):
    ticks = PlatformTicksAtDebug()
    received = "Task %(name)s[%(id)s] received"
    assert not ticks.filter(_record("celery.worker.strategy", received,
                                    data={"name": RELEASE, "id": "x"}))  # fmt: skip
    assert not ticks.filter(_record("celery.app.trace", "Task %(name)s succeeded",
                                    data={"name": SWEEP}))  # fmt: skip
    assert not ticks.filter(_record("celery.beat", "Scheduler: Sending due task %s (%s)",
                                    (RELEASE, RELEASE)))  # fmt: skip
    brand = _record("celery.worker.strategy", received, data={"name": "megahub.task_execute"})
    assert ticks.filter(brand) and brand.levelno == logging.INFO
    assert ticks.filter(_record("celery.beat", "beat: Starting..."))
    failed = _record("celery.app.trace", "Task %(name)s raised", data={"name": RELEASE})
    failed.levelno = logging.ERROR
    assert ticks.filter(failed)  # failures keep their level
    logging.getLogger("celery.app.trace").setLevel(logging.DEBUG)
    try:
        record = _record("celery.app.trace", "Task %(name)s succeeded", data={"name": SWEEP})
        assert ticks.filter(record) and record.levelname == "DEBUG"
    finally:
        logging.getLogger("celery.app.trace").setLevel(logging.NOTSET)


def test_platform_ticks_do_not_count_as_processed_work(monkeypatch):
    from celery.worker import state

    monkeypatch.setattr(state, "total_count", {"megahub.task_execute": 7, RELEASE: 500, SWEEP: 40})
    consumer = SimpleNamespace(
        hostname="brand@h", pool=None, task_consumer=SimpleNamespace(queues=[]), app=None
    )
    assert workers._snapshot(consumer)["processed"] == 7


def test_platform_loop_record_upserts(db):
    services.platform_loop_record(task_name=SWEEP, ok=True, duration_ms=12)
    services.platform_loop_record(task_name=SWEEP, ok=True, duration_ms=15)
    assert PlatformLoop.objects.get().last_duration_ms == 15

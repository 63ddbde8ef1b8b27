"""The dispatcher with an injected clock: once per fire time, policies, calendars, DST, bulk."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from task_core.models import Task
from task_scheduling import services
from task_scheduling.models import Calendar, PeriodicSchedule, ScheduleRun

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)  # a Monday, noon UTC


def utc(*args):
    return datetime(*args, tzinfo=UTC)


def make(brand, now=T0, **fields):
    defaults = {"name": f"s{PeriodicSchedule.objects.unscoped().count()}", "task_type": "noop"}
    defaults.setdefault("cron_expression", "* * * * *")
    return services.schedule_create(brand=brand, now=now, **{**defaults, **fields})


def dispatch(now):
    return services.schedules_dispatch_due(now=now)


def ledger(schedule):
    return list(
        ScheduleRun.objects.unscoped()
        .filter(schedule=schedule)
        .order_by("fire_time")
        .values_list("fire_time", "outcome")
    )


def walk(start, end, step=timedelta(seconds=30)):
    """Run the dispatcher as beat would, at every step of an injected clock."""
    now = start
    while now <= end:
        dispatch(now)
        now += step


# --- once per fire time ---------------------------------------------------------------------
def test_a_due_schedule_fires_once_and_advances(brand):
    schedule = make(brand)
    assert schedule.next_run_at == T0 + timedelta(minutes=1)
    assert dispatch(T0 + timedelta(seconds=30)) == {}  # not due yet
    assert dispatch(T0 + timedelta(minutes=1, seconds=2)) == {"fired": 1}
    assert dispatch(T0 + timedelta(minutes=1, seconds=3)) == {}  # same tick again: nothing
    schedule.refresh_from_db()
    assert schedule.next_run_at == T0 + timedelta(minutes=2)
    assert schedule.last_run_at == T0 + timedelta(minutes=1)
    run = ScheduleRun.objects.unscoped().get()
    assert run.outcome == "fired" and run.task == schedule.last_task
    task = run.task
    assert task.brand == brand and task.task_type == "noop" and task.status == "pending"
    assert task.idempotency_key == f"schedule:{schedule.pk}:{run.fire_time.isoformat()}"
    assert list(task.events.values_list("kind", "actor")) == [("created", "system:scheduler")]


def test_the_ledger_refuses_a_second_row_for_a_fire_time(brand):
    schedule = make(brand)
    ScheduleRun.objects.create(brand=brand, schedule=schedule, fire_time=T0, outcome="fired")
    with pytest.raises(IntegrityError), transaction.atomic():
        ScheduleRun.objects.create(brand=brand, schedule=schedule, fire_time=T0, outcome="fired")


def test_a_fire_time_already_in_the_ledger_creates_no_task(brand):
    schedule = make(brand)
    fire = schedule.next_run_at
    ScheduleRun.objects.create(brand=brand, schedule=schedule, fire_time=fire, outcome="fired")
    dispatch(fire + timedelta(seconds=1))
    assert not Task.objects.unscoped().exists()
    schedule.refresh_from_db()
    assert schedule.next_run_at == fire + timedelta(minutes=1)


@pytest.mark.django_db(transaction=True)
def test_concurrent_dispatchers_fire_each_schedule_once(brand):
    if connection.vendor != "postgresql":
        pytest.skip("concurrent writers and SKIP LOCKED need PostgreSQL (make test)")
    schedules = [make(brand, name=f"c{i}") for i in range(40)]
    now = T0 + timedelta(minutes=1, seconds=1)
    barrier = threading.Barrier(4)
    errors = []

    def run():
        try:
            barrier.wait()
            services.schedules_dispatch_due(now=now, batch_size=7)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert ScheduleRun.objects.unscoped().count() == 40
    assert Task.objects.unscoped().count() == 40
    assert set(ScheduleRun.objects.unscoped().values_list("schedule_id", flat=True)) == {
        s.pk for s in schedules
    }


def test_dispatch_costs_the_same_queries_for_5_or_60_schedules(brand, other_brand):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite splits bulk statements by its variable limit")

    def queries_for(count, name):
        for i in range(count):
            make(brand if i % 2 else other_brand, name=f"{name}{i}")
        with CaptureQueriesContext(connection) as ctx:
            totals = dispatch(T0 + timedelta(minutes=1, seconds=1))
        assert totals == {"fired": count}
        return len(ctx.captured_queries)

    few = queries_for(5, "few")
    PeriodicSchedule.objects.unscoped().all().delete()
    many = queries_for(60, "many")
    assert few == many <= 15, (few, many)


# --- edits, pause, resume, bounds --------------------------------------------------------
def test_an_edit_takes_effect_at_the_next_tick(brand):
    schedule = make(brand, cron_expression="0 * * * *")
    assert schedule.next_run_at == T0 + timedelta(hours=1)
    services.schedule_update(schedule=schedule, cron_expression="*/5 * * * *", now=T0)
    schedule.refresh_from_db()
    assert schedule.next_run_at == T0 + timedelta(minutes=5)
    dispatch(T0 + timedelta(minutes=5, seconds=1))
    assert ledger(schedule) == [(T0 + timedelta(minutes=5), "fired")]


def test_a_non_timing_edit_keeps_the_next_run(brand):
    schedule = make(brand)
    updated = services.schedule_update(schedule=schedule, description="x", now=T0 + timedelta(1))
    assert updated.next_run_at == schedule.next_run_at


def test_a_paused_schedule_does_not_fire_and_resumes_from_now(brand):
    schedule = make(brand)
    services.schedule_pause(schedule=schedule)
    walk(T0, T0 + timedelta(minutes=5))
    assert not ScheduleRun.objects.unscoped().exists()
    schedule.refresh_from_db()
    assert schedule.next_run_at is None and schedule.status == "paused"
    services.schedule_resume(schedule=schedule, now=T0 + timedelta(minutes=5, seconds=10))
    schedule.refresh_from_db()
    assert schedule.next_run_at == T0 + timedelta(minutes=6)


def test_start_and_end_bound_the_runs(brand):
    schedule = make(
        brand,
        start_at=T0 + timedelta(minutes=2, seconds=30),
        end_at=T0 + timedelta(minutes=5),
    )
    walk(T0, T0 + timedelta(minutes=8))
    assert [f for f, _ in ledger(schedule)] == [
        T0 + timedelta(minutes=3),
        T0 + timedelta(minutes=4),
        T0 + timedelta(minutes=5),
    ]
    schedule.refresh_from_db()
    assert schedule.next_run_at is None


def test_run_now_creates_a_manual_run_without_moving_the_timing(brand, owner):
    schedule = make(brand)
    run = services.schedule_run_now(schedule=schedule, user=owner)
    assert run.outcome == "manual" and run.task.created_by == owner
    schedule.refresh_from_db()
    assert schedule.next_run_at == T0 + timedelta(minutes=1)
    assert schedule.last_task == run.task


def test_a_schedule_whose_task_type_disappeared_records_a_failed_run(brand):
    schedule = make(brand)
    PeriodicSchedule.objects.unscoped().filter(pk=schedule.pk).update(task_type="gone")
    dispatch(T0 + timedelta(minutes=1, seconds=1))
    run = ScheduleRun.objects.unscoped().get()
    assert run.outcome == "failed" and "UNKNOWN_TASK_TYPE" in run.detail and run.task is None


# --- overlap policies ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "policy,previous_status,outcome",
    [
        ("skip", "running", "skipped_overlap"),
        ("skip", "queued", "skipped_overlap"),
        ("skip", "completed", "fired"),
        ("allow", "running", "fired"),
        ("queue_one", "running", "fired"),
        ("queue_one", "queued", "skipped_overlap"),
        ("queue_one", "failed", "fired"),
    ],
)
def test_overlap_policy(brand, policy, previous_status, outcome):
    schedule = make(brand, overlap_policy=policy)
    dispatch(T0 + timedelta(minutes=1, seconds=1))
    Task.objects.unscoped().update(status=previous_status)
    dispatch(T0 + timedelta(minutes=2, seconds=1))
    assert ledger(schedule)[-1] == (T0 + timedelta(minutes=2), outcome)
    assert Task.objects.unscoped().count() == (2 if outcome == "fired" else 1)


# --- catch-up after downtime ---------------------------------------------------------------
def downtime(brand, policy, **fields):
    """The dispatcher was down from 12:01 to 12:10:30: nine fire times went by."""
    schedule = make(brand, catchup_policy=policy, overlap_policy="allow", **fields)
    totals = dispatch(T0 + timedelta(minutes=10, seconds=30))
    return schedule, totals


def test_downtime_leaves_a_ledger_row_per_expected_fire(brand):
    schedule, _ = downtime(brand, "skip")
    fires = [f for f, _ in ledger(schedule)]
    assert fires == [T0 + timedelta(minutes=m) for m in range(1, 11)]
    schedule.refresh_from_db()
    assert schedule.next_run_at == T0 + timedelta(minutes=11)


def test_catchup_skip_runs_only_the_on_time_fire(brand):
    schedule, totals = downtime(brand, "skip")
    assert totals == {"missed": 9, "fired": 1}  # 12:10 is within the misfire grace
    assert ledger(schedule)[-1] == (T0 + timedelta(minutes=10), "fired")
    assert Task.objects.unscoped().count() == 1


def test_catchup_run_once_runs_one_task_for_the_missed_period(brand, settings):
    settings.SCHEDULE_MISFIRE_GRACE_SECONDS = 10
    schedule, totals = downtime(brand, "run_once")
    assert totals == {"missed": 9, "caught_up": 1}
    assert ledger(schedule)[-1] == (T0 + timedelta(minutes=10), "caught_up")
    assert Task.objects.unscoped().count() == 1


def test_catchup_run_all_runs_the_missed_fires_within_the_window(brand, settings):
    settings.SCHEDULE_MISFIRE_GRACE_SECONDS = 10
    schedule, totals = downtime(brand, "run_all", catchup_window_s=300)
    outcomes = dict(ledger(schedule))
    assert totals == {"missed": 5, "caught_up": 5}
    assert outcomes[T0 + timedelta(minutes=5)] == "missed"  # 5 min 30 s late > 300 s
    assert outcomes[T0 + timedelta(minutes=6)] == "caught_up"
    assert Task.objects.unscoped().count() == 5


def test_a_long_downtime_is_recorded_over_several_batches(brand, settings):
    settings.SCHEDULE_MAX_FIRES_PER_TICK = 4
    schedule, _ = downtime(brand, "run_once")
    assert len(ledger(schedule)) == 10
    assert Task.objects.unscoped().count() == 1  # run once: only the last missed fire
    assert ledger(schedule)[-1][1] in ("caught_up", "fired")


# --- calendars -----------------------------------------------------------------------------
def test_blackout_windows_skip_runs(brand):
    calendar = services.calendar_create(
        brand=brand,
        name="maintenance",
        blackout_windows=[
            {"starts_at": T0 + timedelta(minutes=2), "ends_at": T0 + timedelta(minutes=4)}
        ],
    )
    schedule = make(brand, calendar=calendar, overlap_policy="allow")
    walk(T0, T0 + timedelta(minutes=5, seconds=10))
    assert ledger(schedule) == [
        (T0 + timedelta(minutes=1), "fired"),
        (T0 + timedelta(minutes=2), "skipped_blackout"),  # the window includes its start
        (T0 + timedelta(minutes=3), "skipped_blackout"),
        (T0 + timedelta(minutes=4), "fired"),  # and excludes its end
        (T0 + timedelta(minutes=5), "fired"),
    ]
    assert Task.objects.unscoped().count() == 3


def test_a_calendar_of_another_brand_is_refused(brand, other_brand):
    foreign = Calendar.objects.create(brand=other_brand, name="theirs")
    with pytest.raises(services.DomainValidationError) as info:
        make(brand, calendar=foreign)
    assert "calendar" in info.value.field_errors


# --- DST through the dispatcher (injected clock) -------------------------------------------
@pytest.mark.parametrize(
    "zone,expression,start,expected",
    [
        # Europe/Paris spring-forward: 02:30 does not exist on 2026-03-29 -> 03:00 CEST.
        ("Europe/Paris", "30 2 * * *", utc(2026, 3, 28), [
            (utc(2026, 3, 28, 1, 30), ""), (utc(2026, 3, 29, 1, 0), "gap"),
            (utc(2026, 3, 30, 0, 30), ""),
        ]),
        # Europe/Paris fall-back: 02:30 happens twice on 2026-10-25 -> once, CEST.
        ("Europe/Paris", "30 2 * * *", utc(2026, 10, 24), [
            (utc(2026, 10, 24, 0, 30), ""), (utc(2026, 10, 25, 0, 30), "overlap"),
            (utc(2026, 10, 26, 1, 30), ""),
        ]),
        # America/New_York spring-forward (2026-03-08) and fall-back (2026-11-01).
        ("America/New_York", "30 2 * * *", utc(2026, 3, 7, 12), [
            (utc(2026, 3, 8, 7, 0), "gap"), (utc(2026, 3, 9, 6, 30), ""),
            (utc(2026, 3, 10, 6, 30), ""),
        ]),
        ("America/New_York", "30 1 * * *", utc(2026, 10, 31, 12), [
            (utc(2026, 11, 1, 5, 30), "overlap"), (utc(2026, 11, 2, 6, 30), ""),
            (utc(2026, 11, 3, 6, 30), ""),
        ]),
    ],
)  # fmt: skip
def test_dst_policy_holds_through_the_dispatcher(brand, zone, expression, start, expected):
    schedule = make(
        brand, now=start, timezone=zone, cron_expression=expression, overlap_policy="allow"
    )
    # Beat ticks every minute around each expected run, and hourly in between.
    for fire, _ in expected:
        for offset in range(-90, 120, 15):
            dispatch(fire + timedelta(minutes=offset / 15))
        for hours in range(1, 20, 3):
            dispatch(fire + timedelta(hours=hours))
    rows = list(
        ScheduleRun.objects.unscoped()
        .filter(schedule=schedule)
        .order_by("fire_time")
        .values_list("fire_time", "dst", "outcome")
    )
    assert [(f, d) for f, d, _ in rows] == expected
    assert {o for _, _, o in rows} == {"fired"}
    assert Task.objects.unscoped().count() == 3


def test_dst_gap_skip_policy_through_the_dispatcher(brand):
    schedule = make(
        brand,
        now=utc(2026, 3, 28),
        timezone="Europe/Paris",
        cron_expression="30 2 * * *",
        dst_gap_policy="skip",
    )
    walk(utc(2026, 3, 28, 1), utc(2026, 3, 30, 1), step=timedelta(minutes=20))
    assert [f for f, _ in ledger(schedule)] == [utc(2026, 3, 28, 1, 30), utc(2026, 3, 30, 0, 30)]


# --- /tasks/?is_periodic -------------------------------------------------------------------
def test_is_periodic_filters_tasks_created_by_schedules(api, owner, brand):
    make(brand)
    dispatch(T0 + timedelta(minutes=1, seconds=1))
    manual = Task.objects.create(brand=brand, task_type="noop")
    client = api(owner, brand)
    periodic = client.get("/tasks/?is_periodic=true").json()["results"]
    others = client.get("/tasks/?is_periodic=false").json()["results"]
    assert [t["id"] for t in periodic] == [ScheduleRun.objects.unscoped().get().task_id]
    assert [t["id"] for t in others] == [manual.pk]


def test_dispatched_tasks_are_published_together_after_commit(
    brand, django_capture_on_commit_callbacks
):
    for i in range(3):
        make(brand, name=f"p{i}")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        dispatch(T0 + timedelta(minutes=1, seconds=1))
    assert len(callbacks) == 1  # one publish for the whole tick
    assert set(Task.objects.unscoped().values_list("status", flat=True)) == {"queued"}
    for task in Task.objects.unscoped().all():
        assert list(task.events.values_list("kind", flat=True)) == ["created", "queued"]

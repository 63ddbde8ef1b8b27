"""Execution semantics in-process: the state machine, claims, retries, cancel, sweeper."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from task_core import broker, execution, publishing, services
from task_core import state_machine as sm
from task_core.models import Task
from tests.factories import TaskFactory


def run(task):
    return execution.task_execute(task_pk=task.pk, worker="test@host")


def kinds(task):
    return list(task.events.order_by("id").values_list("kind", flat=True))


# --- state machine ----------------------------------------------------------------------------
def test_every_status_has_a_row_in_the_transition_table():
    assert set(sm.TRANSITIONS) == set(Task.Status.values)
    assert sm.TRANSITIONS[Task.Status.COMPLETED] == frozenset()


def test_illegal_transitions_are_refused(brand):
    task = TaskFactory(brand=brand, status="completed")
    assert sm.transition(task, to="running", kind="started", actor="t") is None
    with pytest.raises(sm.IllegalTransition):
        sm.transition(task, to="running", kind="started", actor="t", frm=["completed"])
    task.refresh_from_db()
    assert task.status == "completed" and not task.events.exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_exactly_one_wins(brand):
    task = TaskFactory(brand=brand, status="queued")
    barrier = threading.Barrier(8)
    winners = []

    def claim():
        barrier.wait()
        try:
            if execution.task_claim(task_pk=task.pk, worker="w") is not None:
                winners.append(1)
        finally:
            connection.close()

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    task.refresh_from_db()
    assert task.status == "running" and task.attempts == 1
    assert task.events.filter(kind="started").count() == 1


# --- execution --------------------------------------------------------------------------------
def test_a_task_runs_to_completion_with_progress_milestones(brand):
    task, _ = services.task_create(
        brand=brand, task_type="seo_keyword_analysis",
        context_data={"keyword_ids": list(range(1, 41)), "delay_ms": 0},
    )  # fmt: skip
    assert run(task) == "completed"
    task.refresh_from_db()
    assert task.status == "completed" and task.progress_percentage == 100
    assert task.result_data["keywords_processed"] == 40
    assert kinds(task) == [
        "created",
        "queued",
        "started",
        "progress",
        "progress",
        "progress",
        "completed",
    ]
    milestones = [e.data["milestone"] for e in task.events.filter(kind="progress")]
    assert milestones == [25, 50, 75]


def test_seo_analysis_is_deterministic(brand):
    results = []
    for _ in range(2):
        task, _ = services.task_create(
            brand=brand, task_type="seo_keyword_analysis",
            context_data={"keyword_ids": [3, 1, 4, 1, 5, 9, 2, 6], "delay_ms": 0},
        )  # fmt: skip
        run(task)
        task.refresh_from_db()
        results.append(task.result_data)
    assert results[0] == results[1]


def test_duplicate_delivery_runs_the_handler_once(brand):
    task, _ = services.task_create(brand=brand, task_type="noop")
    assert run(task) == "completed"
    assert run(task) == "ignored"
    task.refresh_from_db()
    assert task.attempts == 1 and kinds(task).count("started") == 1


def test_failure_schedules_a_retry_with_backoff(brand):
    task, _ = services.task_create(brand=brand, task_type="flaky_api_call")
    before = timezone.now()
    assert run(task) == "retrying"
    task.refresh_from_db()
    assert task.status == "retrying" and "UpstreamUnavailable" in task.error_message
    delay = (task.available_at - before).total_seconds()
    assert 0.5 <= delay <= 1.5  # base 1s, +/-25% jitter
    event = task.events.get(kind="retry_scheduled")
    assert event.data["next_attempt"] == 2


def test_retry_delays_grow_exponentially_and_are_capped():
    from task_core.registry import get_task_type

    spec = get_task_type("flaky_api_call")
    delays = [execution.retry_delay_s(spec, n) for n in range(1, 10)]
    assert 0.75 <= delays[0] <= 1.25 and 1.5 <= delays[1] <= 2.5 and 3 <= delays[2] <= 5
    assert max(delays) <= 30 * 1.25


def test_retries_exhausted_then_failed_with_the_error(brand):
    task, _ = services.task_create(brand=brand, task_type="flaky_api_call")
    outcomes = []
    for _ in range(4):
        outcomes.append(run(task))
        Task.objects.unscoped().filter(pk=task.pk, status="retrying").update(status="queued")
    assert outcomes == ["retrying", "retrying", "retrying", "failed"]
    task.refresh_from_db()
    assert task.status == "failed" and task.attempts == 4
    assert "attempt 4" in task.events.filter(kind="failed").get().message


def test_permanent_error_is_not_retried(brand):
    task, _ = services.task_create(
        brand=brand, task_type="flaky_api_call", context_data={"permanent": True}
    )
    assert run(task) == "failed"
    task.refresh_from_db()
    assert task.attempts == 1 and "HTTP 422" in task.error_message


def test_cancel_requested_before_the_handler_starts_is_honoured(brand):
    task, _ = services.task_create(brand=brand, task_type="sleep", context_data={"seconds": 5})
    Task.objects.unscoped().filter(pk=task.pk).update(cancel_requested=True)
    assert run(task) == "cancelled"


@pytest.mark.django_db(transaction=True)
def test_running_task_stops_at_its_next_progress_call(brand):
    task, _ = services.task_create(brand=brand, task_type="sleep", context_data={"seconds": 30})
    timer = threading.Timer(
        0.3, lambda: Task.objects.unscoped().filter(pk=task.pk).update(cancel_requested=True)
    )
    timer.start()
    started = timezone.now()
    assert run(task) == "cancelled"
    assert (timezone.now() - started).total_seconds() < 5
    task.refresh_from_db()
    assert task.status == "cancelled" and task.completed_at is not None


def test_zombie_attempt_cannot_finish_a_rescued_task(brand):
    task, _ = services.task_create(brand=brand, task_type="noop")
    claimed = execution.task_claim(task_pk=task.pk, worker="old")
    Task.objects.unscoped().filter(pk=task.pk).update(
        attempts=2
    )  # the sweeper gave it a new attempt
    assert execution._finish(claimed, "old", to="completed", kind="completed") == "lost"


# --- sweeper & release ------------------------------------------------------------------------
def test_sweeper_rescues_a_task_whose_worker_died(brand, settings):
    task, _ = services.task_create(
        brand=brand, task_type="seo_keyword_analysis", context_data={"keyword_ids": [1]}
    )
    execution.task_claim(task_pk=task.pk, worker="dead@host")
    stale = timezone.now() - timedelta(seconds=settings.TASK_HEARTBEAT_TIMEOUT_SECONDS + 5)
    Task.objects.unscoped().filter(pk=task.pk).update(heartbeat_at=stale)
    assert execution.tasks_sweep() == 1
    task.refresh_from_db()
    assert task.status == "retrying" and "dead@host" in task.error_message
    assert kinds(task)[-2:] == ["worker_lost", "retry_scheduled"]
    assert execution.tasks_sweep() == 0


def test_sweeper_leaves_live_tasks_alone(brand):
    task, _ = services.task_create(brand=brand, task_type="noop")
    execution.task_claim(task_pk=task.pk, worker="alive")
    assert execution.tasks_sweep() == 0


def test_release_publishes_due_tasks_and_skips_future_ones(brand, monkeypatch):
    sent = []
    monkeypatch.setattr(broker, "send", lambda task, **kw: sent.append(task.pk))
    due, _ = services.task_create(
        brand=brand, task_type="noop", scheduled_for=timezone.now() + timedelta(hours=1)
    )
    later, _ = services.task_create(
        brand=brand, task_type="noop", scheduled_for=timezone.now() + timedelta(hours=2)
    )
    Task.objects.unscoped().filter(pk=due.pk).update(
        available_at=timezone.now() - timedelta(seconds=1)
    )
    assert publishing.tasks_release_due() == 1
    assert sent == [due.pk]
    due.refresh_from_db()
    later.refresh_from_db()
    assert (due.status, later.status) == ("queued", "pending")


def test_release_keeps_tasks_when_the_broker_is_down(brand, monkeypatch):
    def down(task):
        raise ConnectionRefusedError("broker down")

    monkeypatch.setattr(broker, "send", down)
    later = timezone.now() + timedelta(hours=1)  # pending: left to the release loop
    task, _ = services.task_create(brand=brand, task_type="noop", scheduled_for=later)
    Task.objects.unscoped().filter(pk=task.pk).update(
        available_at=timezone.now() - timedelta(seconds=1)
    )
    assert publishing.tasks_release_due() == 0
    task.refresh_from_db()
    assert task.status == "pending" and task.available_at > timezone.now()


def test_sweeper_does_not_rescue_a_task_whose_heartbeat_arrived_meanwhile(brand, settings):
    task, _ = services.task_create(brand=brand, task_type="noop")
    claimed = execution.task_claim(task_pk=task.pk, worker="slow@host")
    stale = timezone.now() - timedelta(seconds=settings.TASK_HEARTBEAT_TIMEOUT_SECONDS + 5)
    claimed.heartbeat_at = stale  # what the sweeper read...
    Task.objects.unscoped().filter(pk=task.pk).update(
        heartbeat_at=timezone.now()
    )  # ...then a beat came
    cutoff = timezone.now() - timedelta(seconds=settings.TASK_HEARTBEAT_TIMEOUT_SECONDS)
    outcome = execution._attempt_failed(
        claimed, None, "", "lost?", kind="worker_lost", stale_before=cutoff
    )
    assert outcome == "lost"
    task.refresh_from_db()
    assert task.status == "running" and kinds(task) == ["created", "queued", "started"]


@pytest.mark.django_db(transaction=True)
def test_a_claim_on_a_connection_that_died_while_idle_reconnects_and_runs_once(brand):
    if connection.vendor != "postgresql":
        pytest.skip("kills a PostgreSQL backend (runs in make test, not on SQLite)")
    task = TaskFactory(brand=brand, status="queued")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()

    def kill():  # another connection (another thread) terminates this one's backend
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        finally:
            connection.close()

    killer = threading.Thread(target=kill)
    killer.start()
    killer.join()
    connection.health_check_done = True  # as megahub/celery.py leaves it before a task
    assert run(task) == "completed"
    task.refresh_from_db()
    assert task.attempts == 1 and kinds(task) == ["started", "completed"]


def test_heartbeat_stamps_running_attempts_and_raises_the_cancel_flag(brand):
    from task_core.heartbeat import Heartbeat

    stale = timezone.now() - timedelta(minutes=5)
    running = TaskFactory(brand=brand, status="running", heartbeat_at=stale)
    cancelled = TaskFactory(
        brand=brand, status="running", heartbeat_at=stale, cancel_requested=True
    )
    finished = TaskFactory(brand=brand, status="completed", heartbeat_at=stale)

    class Ctx:
        cancel_flag = False

    contexts = {t.pk: Ctx() for t in (running, cancelled, finished)}
    Heartbeat.beat(contexts)
    for task in (running, cancelled, finished):
        task.refresh_from_db()
    assert running.heartbeat_at > stale and cancelled.heartbeat_at > stale
    assert finished.heartbeat_at == stale  # only running attempts are kept alive
    assert [contexts[t.pk].cancel_flag for t in (running, cancelled, finished)] == [
        False,
        True,
        False,
    ]


@pytest.mark.django_db
def test_the_kept_cursor_is_not_handed_out_while_its_results_are_still_read():
    """state_machine.cursor() hands out one kept cursor per connection; a statement run while
    that cursor is still open gets a cursor of its own, so neither loses its rows."""
    with sm.cursor() as outer:
        outer.execute("SELECT 1 UNION ALL SELECT 2")
        with sm.cursor() as inner:
            inner.execute("SELECT 3")
            assert inner.fetchall() == [(3,)]
        assert outer.fetchall() == [(1,), (2,)]
    with sm.cursor() as again:  # the kept one serves again once closed
        again.execute("SELECT 4")
        assert again.fetchall() == [(4,)]

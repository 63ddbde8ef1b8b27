"""RabbitMQ itself stopped (`rabbitmqctl stop_app`) while tasks are created and run.

These tests stop the shared broker, so `make test` runs them alone, after the parallel run
(marker `broker_outage`)."""

import contextlib
import subprocess
import time

import pytest
from celery import current_app
from kombu import Consumer, Queue

from task_core import services
from task_core.events import events_exchange
from task_core.models import Task, TaskEvent
from tests.integration.conftest import wait_for
from tests.integration.effect_types import create_effect_tasks, effects
from tests.integration.test_worker import kinds

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.broker_outage]


def rabbitmqctl(*args):
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


@contextlib.contextmanager
def broker_stopped():
    rabbitmqctl("stop_app")
    try:
        yield
    finally:
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")


def test_no_task_and_no_event_is_lost_when_rabbitmq_stops(brand, start_process):
    exchange = events_exchange()
    events = Queue(f"{exchange.name}.outage-test", exchange=exchange,
                   routing_key=f"{brand.pk}.#", durable=True)  # fmt: skip
    with current_app.connection_for_write() as conn:
        events(conn.default_channel).declare()
        events(conn.default_channel).purge()
    start_process("worker", concurrency=2)
    start_process("beat")
    running = [services.task_create(brand=brand, task_type="sleep",
                                    context_data={"seconds": 4})[0] for _ in range(2)]  # fmt: skip
    wait_for(lambda: Task.objects.unscoped().filter(status="running").count() == 2, 30,
             message="2 running tasks")  # fmt: skip
    with broker_stopped():
        # Created while the broker is down: accepted, kept, published later.
        during = [services.task_create(brand=brand, task_type="noop")[0] for _ in range(3)]
        assert set(Task.objects.unscoped().filter(pk__in=[t.pk for t in during])
                   .values_list("status", flat=True)) == {"pending"}  # fmt: skip
        # The running ones finish meanwhile; their events wait in the outbox.
        wait_for(lambda: Task.objects.unscoped().filter(status="completed").count() == 2, 30,
                 message="the running tasks to finish during the outage")  # fmt: skip
        time.sleep(2)
        assert TaskEvent.objects.unscoped().filter(published_at__isnull=True).exists()
    tasks = running + during
    wait_for(lambda: Task.objects.unscoped().filter(status="completed").count() == len(tasks), 90,
             message="every task completed after the broker came back")  # fmt: skip
    unpublished = TaskEvent.objects.unscoped().filter(published_at__isnull=True)
    wait_for(lambda: not unpublished.exists(), 60, message="the outbox to drain")
    expected = TaskEvent.objects.unscoped().count()
    received = []
    with current_app.connection_for_read() as conn, Consumer(
        conn.channel(), queues=[events], accept=["json"],
        callbacks=[lambda body, msg: (received.append(body), msg.ack())],
    ):  # fmt: skip
        deadline = time.monotonic() + 30
        while len(received) < expected and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=1)
    with current_app.connection_for_write() as conn:
        events(conn.default_channel).delete()
    ids = [e["event_id"] for e in received]
    assert len(set(ids)) == expected, (len(set(ids)), expected)  # every event, none lost
    for task in tasks:
        mine = [e for e in received if e["task"]["id"] == task.pk]
        kinds = [e["event"] for e in sorted(mine, key=lambda e: e["event_id"])]
        assert [e["event"] for e in mine] == kinds  # in order per task
        assert kinds[0] == "created" and kinds[-1] == "completed"
        assert kinds.count("started") == 1


def test_tasks_in_flight_complete_once_when_rabbitmq_restarts(
    brand, effect_worker, effect_log, start_process
):
    worker = effect_worker(concurrency=2)
    start_process("beat")
    tasks = create_effect_tasks(brand, 8, seconds=3)  # 2 running (acknowledged), 6 waiting
    wait_for(lambda: Task.objects.unscoped().filter(status="running").count() == 2, 30,
             message="2 running tasks")  # fmt: skip
    time.sleep(0.5)
    running = set(Task.objects.unscoped().filter(status="running").values_list("pk", flat=True))
    with broker_stopped():
        # The running attempts finish meanwhile (acknowledged when taken: nothing to send).
        finished = Task.objects.unscoped().filter(pk__in=running, status="completed")
        wait_for(lambda: finished.count() == 2, 30,
                 message="the running tasks to finish during the outage")  # fmt: skip
    wait_for(lambda: Task.objects.unscoped().filter(status="completed").count() == len(tasks), 120,
             message="every task completed after the broker came back")  # fmt: skip
    assert effects(effect_log) == {task.pk: 1 for task in tasks}
    for task in Task.objects.unscoped().all():
        assert task.attempts == 1 and kinds(task).count("started") == 1, kinds(task)
    # The running tasks' messages were acknowledged when taken: none came back to be ignored
    # (the prefetched ones, never taken, were requeued by RabbitMQ and ran once).
    assert "duplicate or stale delivery ignored" not in worker.output()

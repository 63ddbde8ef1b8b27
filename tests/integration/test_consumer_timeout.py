"""A task that runs longer than RabbitMQ's consumer_timeout (30 min by default; task types allow
hard limits up to ~61 min). RabbitMQ closes a channel holding a delivery unacknowledged past
the timeout and redelivers the message; an execution message is therefore acknowledged when the
worker takes it, and the database claim, heartbeat and sweeper own the task from then on
(docs/execution.md).

RabbitMQ 3.10 has no per-queue consumer timeout: the test lowers the broker's global one at
runtime (channels opened meanwhile keep it) and restores the previous value, so it is marked
`broker_outage` and runs alone after the parallel run."""

import contextlib
import subprocess

import pytest
from django.conf import settings

from task_core.models import Task
from tests.integration.conftest import wait_for
from tests.integration.effect_types import create_effect_tasks, effects
from tests.integration.test_worker import kinds

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.broker_outage]

CONSUMER_TIMEOUT_MS = 15000


def rabbit_eval(expression: str) -> str:
    return subprocess.run(
        ["rabbitmqctl", "eval", expression], check=True, capture_output=True, text=True, timeout=60
    ).stdout.strip()


@contextlib.contextmanager
def rabbit_env(**values: int):
    """Set the `rabbit` application's environment for the block; restore exactly what was there.

    channel_tick_interval (60 s by default) is how often a channel checks its deliveries against
    consumer_timeout: lowered too, the timeout fires within a second of expiring."""
    saved = {key: rabbit_eval(f"application:get_env(rabbit, {key}).") for key in values}
    try:
        for key, value in values.items():
            rabbit_eval(f"application:set_env(rabbit, {key}, {int(value)}).")
        yield
    finally:
        for key, before in saved.items():
            if before == "undefined":
                rabbit_eval(f"application:unset_env(rabbit, {key}).")
            else:  # "{ok,1800000}"
                value = before.removeprefix("{ok,").removesuffix("}")
                rabbit_eval(f"application:set_env(rabbit, {key}, {value}).")
        for key, before in saved.items():
            assert rabbit_eval(f"application:get_env(rabbit, {key}).") == before


def queue_counts() -> dict[str, tuple[int, int]]:
    """Ready and unacknowledged messages of this run's queues."""
    out = subprocess.run(
        ["rabbitmqctl", "list_queues", "-q", "--no-table-headers", "name", "messages_ready",
         "messages_unacknowledged"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    counts = {}
    for line in out.splitlines():
        name, ready, unacked = line.split()
        if name.startswith(settings.CELERY_QUEUE_PREFIX):
            counts[name.removeprefix(settings.CELERY_QUEUE_PREFIX)] = (int(ready), int(unacked))
    return counts


def test_a_task_longer_than_the_consumer_timeout_completes_once(brand, effect_worker, effect_log):
    seconds = CONSUMER_TIMEOUT_MS / 1000 + 7
    with rabbit_env(consumer_timeout=CONSUMER_TIMEOUT_MS, channel_tick_interval=1000):
        # Started inside: a channel takes the broker's consumer_timeout when it opens.
        worker = effect_worker(concurrency=1)
        (long,) = create_effect_tasks(brand, 1, seconds=seconds)
        (after,) = create_effect_tasks(brand, 1, seconds=0.2)  # waits behind it
        completed = Task.objects.unscoped().filter(status="completed")
        wait_for(lambda: completed.count() == 2, seconds + 40,
                 message="both tasks completed")  # fmt: skip
    assert effects(effect_log) == {long.pk: 1, after.pk: 1}
    for task in Task.objects.unscoped().all():
        timeline = kinds(task)
        assert task.attempts == 1 and timeline.count("started") == 1, timeline
        assert timeline.count("completed") == 1
    assert worker.popen.poll() is None, worker.output()[-3000:]  # the worker is still serving
    # The long task's message was never redelivered: nothing to ignore, nothing left behind.
    output = worker.output()
    assert "duplicate or stale delivery ignored" not in output
    assert queue_counts()["default"] == (0, 0)
    assert not Task.objects.unscoped().exclude(status="completed").exists()

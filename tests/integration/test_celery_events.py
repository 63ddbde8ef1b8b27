"""Celery-native visibility: what Flower or `celery events` see of brand tasks, read from
Celery's own event stream while a real worker (and beat, for DB-released retries) runs them."""

import threading
from collections import defaultdict

import pytest
from celery import current_app
from django.conf import settings as django_settings

from task_core import broker, publishing, services
from task_core.models import Task
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.integration]


class EventStream:
    """Every Celery event on the broker's event exchange, captured in a thread."""

    def __init__(self):
        self.events: list[dict] = []
        self._lock = threading.Lock()
        self._conn = current_app.connection_for_read()
        self._receiver = current_app.events.Receiver(self._conn, handlers={"*": self._on_event})
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _on_event(self, event):
        with self._lock:
            self.events.append(event)

    def _run(self):
        self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._receiver.should_stop = True
        self._thread.join(timeout=10)
        self._conn.release()

    def snapshot(self) -> list[dict]:
        with self._lock:
            return list(self.events)

    def of_task(self, task: Task) -> dict[str, list[dict]]:
        """The task's deliveries (Celery uuids), found by the args repr of their task-received
        event, with every event of those deliveries by type."""
        events = self.snapshot()
        uuids = {
            e["uuid"]
            for e in events
            if e["type"] == "task-received" and f"task_id={task.task_id}," in (e["args"] or "")
        }
        by_type = defaultdict(list)
        for e in events:
            if e.get("uuid") in uuids:
                by_type[e["type"]].append(e)
        return by_type


@pytest.fixture
def event_stream(purge_queues):
    stream = EventStream().start()
    yield stream
    stream.stop()


def wait_status(task, status, timeout=60):
    wait_for(
        lambda: Task.objects.unscoped().values_list("status", flat=True).get(pk=task.pk) == status,
        timeout,
        message=f"task {task.task_id} {status}",
    )


def test_brand_tasks_show_in_celery_events_under_their_type(brand, start_process, event_stream):
    worker = start_process("worker")
    start_process("beat")  # the release loop publishes retries from the database
    wait_for(
        lambda: any(e["type"].startswith("worker-") for e in event_stream.snapshot()),
        message="the event stream to see a worker",
    )
    done, _ = services.task_create(brand=brand, task_type="noop")
    failing, _ = services.task_create(
        brand=brand, task_type="flaky_api_call", context_data={"permanent": True}
    )
    retried, _ = services.task_create(
        brand=brand, task_type="flaky_api_call", context_data={"fail_attempts": 1}
    )
    for task, status in ((done, "completed"), (failing, "failed"), (retried, "completed")):
        wait_status(task, status)

    def seen(task, *types):
        return lambda: all(event_stream.of_task(task)[t] for t in types)

    # A completed task: received under its own name, args repr with task id and brand, success.
    wait_for(seen(done, "task-received", "task-succeeded"), 15, message="noop events")
    events = event_stream.of_task(done)
    (received,) = events["task-received"]
    assert received["name"] == "megahub.noop"
    assert received["args"] == f"(task_id={done.task_id}, brand={brand.pk}, type=noop)"
    assert not events["task-failed"] and not events["task-retried"]

    # A permanent failure: Celery FAILURE (task-failed), under the type's name, the handler's
    # own exception; exactly one delivery (no redelivery, no Celery-side retry).
    wait_for(seen(failing, "task-failed"), 15, message="task-failed")
    events = event_stream.of_task(failing)
    (received,) = events["task-received"]
    assert received["name"] == "megahub.flaky_api_call"
    (failed,) = events["task-failed"]
    assert "PermanentError" in failed["exception"] and "HTTP 422" in failed["exception"]
    assert not events["task-succeeded"]

    # A retry: the first delivery is a Celery retry (task-retried), the next attempt is a new
    # delivery published by megahub's release loop after the database backoff, and succeeds.
    wait_for(seen(retried, "task-retried", "task-succeeded"), 15, message="retry events")
    events = event_stream.of_task(retried)
    first, second = sorted(events["task-received"], key=lambda e: e["timestamp"])
    assert {first["name"], second["name"]} == {"megahub.flaky_api_call"}
    (retry,) = events["task-retried"]
    assert retry["uuid"] == first["uuid"] and "UpstreamUnavailable" in retry["exception"]
    (success,) = events["task-succeeded"]
    assert success["uuid"] == second["uuid"]
    assert not events["task-failed"]
    retried.refresh_from_db()
    assert retried.attempts == 2
    kinds = list(retried.events.order_by("id").values_list("kind", flat=True))
    assert kinds.count("started") == 2 and kinds.count("retry_scheduled") == 1

    # The task_failure signal fired (Celery logs the failure where it sends it) under the name.
    log = worker.output()
    assert "megahub.flaky_api_call[" in log and "raised unexpected" in log

    # The platform's ticks (beat ran the release loop) send no events from this worker.
    hostnames = {e["hostname"] for e in event_stream.of_task(done)["task-received"]}
    tick_events = [
        e
        for e in event_stream.snapshot()
        if e.get("hostname") in hostnames
        and e.get("name") in django_settings.MEGAHUB_PLATFORM_LOOPS
    ]
    assert tick_events == []  # the release loop did run: it published the second attempt


def test_batch_release_counts_confirms_with_sent_events_and_labels_messages(
    brand, purge_queues, settings
):
    """The release loop's batch publish (one confirm channel; with task_send_sent_event each
    execution message is followed by its task-sent event) marks every confirmed task queued,
    at once; each message carries the type's Celery name, brand and task id."""
    import time
    from datetime import timedelta

    from django.utils import timezone

    assert current_app.conf.task_send_sent_event  # on by default
    later = timezone.now() + timedelta(hours=1)
    tasks = [
        services.task_create(brand=brand, task_type="noop", scheduled_for=later)[0]
        for _ in range(5)
    ]
    Task.objects.for_brand(brand).update(available_at=timezone.now())
    started = time.monotonic()
    assert publishing.tasks_release_due() == 5
    assert time.monotonic() - started < 10  # every confirm counted: no wait for the deadline
    assert set(Task.objects.for_brand(brand).values_list("status", flat=True)) == {"queued"}

    queue = next(q for q in settings.CELERY_TASK_QUEUES if q.name.endswith("default"))
    messages = []
    with current_app.connection_for_read() as conn:
        with conn.Consumer(queue, callbacks=[lambda body, msg: messages.append(msg)]):
            deadline = time.monotonic() + 10
            while len(messages) < 5 and time.monotonic() < deadline:
                conn.drain_events(timeout=2)
        for message in messages:
            message.ack()
    by_task_id = {m.headers["megahub_task_id"]: m.headers for m in messages}
    assert set(by_task_id) == {t.task_id for t in tasks}
    for task in tasks:
        headers = by_task_id[task.task_id]
        assert headers["task"] == broker.EXECUTE_TASK_NAME
        assert headers["shadow"] == "megahub.noop"
        assert headers["megahub_brand_id"] == brand.pk
        assert headers["megahub_task_type"] == "noop"
        assert headers["argsrepr"] == f"(task_id={task.task_id}, brand={brand.pk}, type=noop)"


@pytest.mark.parametrize("used_before", [False, True], ids=["fresh", "already-confirming"])
def test_worker_events_are_published_without_waiting_for_confirms(used_before):
    """The broker connection confirms publishes (execution messages); the worker's event
    dispatcher channel must not (megahub.celery.EventsWithoutConfirms), and still delivers.
    In a worker the Events step has already published (worker-online) when the step starts,
    so the channel is in confirm mode for good: the dispatcher gets a plain channel."""
    from megahub.celery import EventsWithoutConfirms

    stream = EventStream().start()
    conn = current_app.connection_for_write()
    dispatcher = current_app.events.Dispatcher(conn, hostname="probe@events", enabled=True)
    try:
        first = dispatcher.producer.channel
        assert first.basic_publish.__name__ == "basic_publish_confirm"  # confirm_publish is on
        if used_before:
            dispatcher.send("worker-online")
            assert first._confirm_selected

        class Consumer:
            event_dispatcher = dispatcher

        EventsWithoutConfirms.start(None, Consumer)
        channel = dispatcher.producer.channel
        assert channel.basic_publish.__name__ == "_basic_publish"
        assert (channel is not first) == used_before
        assert conn.connection.confirm_publish  # other channels still confirm

        def delivered() -> bool:  # sent until the stream, which binds its queue first, has one
            dispatcher.send("worker-heartbeat", freq=2.0)
            return any(e.get("hostname") == "probe@events" for e in stream.snapshot())

        wait_for(delivered, 15, message="the probe's event")
        assert not channel._confirm_selected
    finally:
        dispatcher.close()
        conn.release()
        stream.stop()

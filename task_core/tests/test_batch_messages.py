"""The batch publish's messages (task_core.broker._batch_message): every message of a batch is
the one Celery's own ``send_task`` builds for that task, whether it went through ``send_task``
(the first of its type, queue and priority) or was made from that first one."""

from unittest import mock

import pytest
from celery import current_app

from task_core import broker
from task_core.models import Task
from tests.factories import BrandFactory

VOLATILE_EVENT_FIELDS = {"clock", "timestamp"}
# Sentry's Celery integration, once an earlier test has initialised it, stamps every send_task
# with a span of its own and the time of the call; a copy keeps its prototype's (same trace).
VOLATILE_HEADERS = {"sentry-task-enqueued-time", "sentry-trace", "baggage"}


def _stable(options: dict) -> dict:
    headers = {k: v for k, v in options["headers"].items() if k not in VOLATILE_HEADERS}
    if isinstance(headers.get("headers"), dict):
        headers["headers"] = {
            k: v for k, v in headers["headers"].items() if k not in VOLATILE_HEADERS
        }
    return {**options, "headers": headers}


def _celery_message(task: Task, task_id: str) -> tuple:
    """What Celery's send_task would publish for ``task`` with this Celery task id."""
    capture = broker._Capture(current_app.connection_for_write())
    options = broker._message_options(task, broker.get_task_type(task.task_type))
    current_app.send_task(broker.EXECUTE_TASK_NAME, **options, producer=capture, task_id=task_id)
    return capture.message[0], capture.message[1], capture.event


def _made(tasks: list[Task], ids: list[str]) -> list[tuple]:
    prototypes: dict = {}
    connection = current_app.connection_for_write()
    with mock.patch.object(broker, "uuid", side_effect=ids):
        return [broker._batch_message(current_app, t, prototypes, connection) for t in tasks]


def _same(made: tuple, celery: tuple) -> None:
    body, options, event = made
    c_body, c_options, c_event = celery
    assert list(body[0]) == list(c_body[0]) and body[1:] == c_body[1:]
    assert _stable(options) == _stable(
        c_options
    )  # headers, properties, queue, routing key, priority, delivery
    if c_event is None:
        assert event is None
        return
    fields, event_options = event
    c_fields, c_event_options = c_event
    assert event_options == c_event_options
    assert set(fields) == set(c_fields)
    for name in set(fields) - VOLATILE_EVENT_FIELDS:
        assert fields[name] == c_fields[name], name
    assert fields["clock"] >= c_fields["clock"] - 10 and fields["timestamp"] > 0


@pytest.mark.django_db
@pytest.mark.parametrize("sent_events", [True, False])
def test_every_message_of_a_batch_is_the_one_send_task_builds(sent_events, settings):
    brand = BrandFactory()
    shapes = [
        ("noop", "default", "normal"),
        ("noop", "default", "normal"),
        ("noop", "default", "normal"),
        ("noop", "default", "high"),
        ("noop", "long", "normal"),
        ("noop", "default", "normal"),
    ]
    tasks = [
        Task.objects.create(brand=brand, task_type=t, queue=q, priority=p, context_data={})
        for t, q, p in shapes
    ]
    ids = [f"celery-id-{i}" for i in range(len(tasks))]
    before = current_app.conf.task_send_sent_event
    current_app.conf.task_send_sent_event = sent_events
    try:
        made = _made(tasks, ids)
        for task, task_id, message in zip(tasks, ids, made, strict=True):
            _same(message, _celery_message(task, task_id))
    finally:
        current_app.conf.task_send_sent_event = before
    headers = [m[1]["headers"] for m in made]
    assert [h["id"] for h in headers] == ids  # a Celery task id of its own each
    assert [h["megahub_task_id"] for h in headers] == [str(t.task_id) for t in tasks]
    assert {m[1]["priority"] for m in made} == {
        Task.BROKER_PRIORITY["normal"],
        Task.BROKER_PRIORITY["high"],
    }


@pytest.fixture
def sentry_on():
    """Sentry's Celery integration, as SENTRY_DSN turns it on (nothing leaves the process)."""
    import sentry_sdk
    from sentry_sdk.transport import Transport

    from megahub import sentry

    class Dropped(Transport):
        def capture_envelope(self, envelope):
            pass

    sentry.init("https://public@sentry.invalid/1", transport=Dropped)
    yield
    sentry_sdk.get_client().close()
    sentry_sdk.init()  # no DSN: the client is inactive again for the rest of the run


@pytest.mark.django_db
def test_with_sentry_every_copy_names_its_own_task_in_the_nested_headers(sentry_on):
    """Sentry's integration copies the custom headers into a nested ``headers`` dict; a copy
    made from the batch's first message names its own task there too, not the first one."""
    brand = BrandFactory()
    tasks = [Task.objects.create(brand=brand, task_type="noop", context_data={}) for _ in range(3)]
    ids = [f"celery-id-{i}" for i in range(len(tasks))]
    made = _made(tasks, ids)
    for task, task_id, message in zip(tasks, ids, made, strict=True):
        _same(message, _celery_message(task, task_id))
        assert message[1]["headers"]["headers"]["megahub_task_id"] == str(task.task_id)

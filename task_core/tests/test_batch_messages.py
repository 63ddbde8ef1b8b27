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
    assert options == c_options  # headers, properties, queue, routing key, priority, delivery
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

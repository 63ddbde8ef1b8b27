"""The unconfirmed single send of a create (broker.send(confirm=False)): the message and its
task-sent event are the ones Celery's ``send_task`` builds for the task, whether the send went
through ``send_task`` (the first of its shape in the thread) or was copied from that one; and
whatever must see each ``send_task`` call still gets one."""

from unittest import mock

import pytest
from celery import current_app, signals

from task_core import broker, registry
from task_core.models import Task
from task_core.tests.test_batch_messages import _celery_message, _same, sentry_on  # noqa: F401
from tests.factories import BrandFactory

_publish_hooks = broker._publish_hooks


@pytest.fixture
def published(monkeypatch):
    """What the copied sends write to the channel: (body, options) per publish."""
    out: list[tuple] = []
    monkeypatch.setattr(
        broker._BatchProducer, "publish", lambda self, body, **options: out.append((body, options))
    )
    monkeypatch.setattr(broker, "_singles", broker.threading.local())  # no earlier prototypes
    # Sentry's Celery integration, once an earlier test has set it up, sees every send_task
    # call: sends go through send_task then (test_with_sentry_every_send_goes_through_send_task).
    monkeypatch.setattr(broker, "_publish_hooks", lambda: False)
    return out


def _sent(published: list[tuple]) -> list[tuple]:
    """(body, options, event) per execution message, as _batch_message returns them."""
    messages = []
    for body, options in published:
        if options.get("routing_key") == broker._BatchProducer.EVENT_KEY:
            messages[-1] = (*messages[-1][:2], (body, options))
        else:
            messages.append((body, options, None))
    return messages


@pytest.mark.django_db
@pytest.mark.parametrize("sent_events", [True, False])
def test_each_single_send_publishes_the_message_send_task_builds(sent_events, published):
    brand = BrandFactory()
    shapes = [("default", "normal"), ("default", "normal"), ("default", "high"), ("long", "normal")]
    tasks = [
        Task.objects.create(brand=brand, task_type="noop", queue=q, priority=p, context_data={})
        for q, p in shapes
    ]
    ids = [f"celery-id-{i}" for i in range(len(tasks))]
    before = current_app.conf.task_send_sent_event
    current_app.conf.task_send_sent_event = sent_events
    try:
        with mock.patch.object(broker, "uuid", side_effect=ids):
            for task in tasks:
                broker.send(task, confirm=False)
        sent = _sent(published)
        assert len(sent) == len(tasks)
        for task, task_id, message in zip(tasks, ids, sent, strict=True):
            _same(message, _celery_message(task, task_id))
    finally:
        current_app.conf.task_send_sent_event = before


@pytest.mark.django_db
def test_a_type_whose_time_limits_changed_gets_a_message_of_its_own(published, monkeypatch):
    task = Task.objects.create(brand=BrandFactory(), task_type="limits_probe", context_data={})
    for limit in (30, 60):
        spec = registry.TaskType(name="limits_probe", handler=lambda ctx: None, time_limit_s=limit)
        monkeypatch.setitem(registry._REGISTRY, "limits_probe", spec)
        with mock.patch.object(broker, "uuid", side_effect=[f"id-{limit}"]):
            broker.send(task, confirm=False)
        _same(_sent(published)[-1], _celery_message(task, f"id-{limit}"))
        assert _sent(published)[-1][1]["headers"]["timelimit"][0] == limit


@pytest.mark.django_db
@pytest.mark.usefixtures("sentry_on")
def test_with_sentry_every_send_goes_through_send_task():
    task = Task.objects.create(brand=BrandFactory(), task_type="noop", context_data={})
    with (
        mock.patch.object(broker._BatchProducer, "publish") as copied,
        mock.patch.object(current_app, "send_task") as send_task,
    ):
        broker.send(task, confirm=False)
        broker.send(task, confirm=False)
    assert send_task.call_count == 2 and not copied.called


@pytest.mark.django_db
def test_with_a_publish_signal_receiver_every_send_goes_through_send_task(published, monkeypatch):
    monkeypatch.setattr(broker, "_publish_hooks", _publish_hooks)
    task = Task.objects.create(brand=BrandFactory(), task_type="noop", context_data={})
    seen = []

    def receiver(sender=None, headers=None, **kwargs):
        seen.append(headers["megahub_task_id"])

    signals.before_task_publish.connect(receiver)
    try:
        with mock.patch.object(broker._BatchProducer, "publish") as copied:
            broker.send(task, confirm=False)
            broker.send(task, confirm=False)
    finally:
        signals.before_task_publish.disconnect(receiver)
    assert seen == [str(task.task_id)] * 2 and not copied.called


@pytest.mark.django_db
def test_a_copied_send_that_fails_before_writing_goes_through_send_task(published, monkeypatch):
    task = Task.objects.create(brand=BrandFactory(), task_type="noop", context_data={})

    def broken(self, body, **options):
        raise ConnectionResetError("connection reset")

    monkeypatch.setattr(broker._BatchProducer, "publish", broken)
    with mock.patch.object(current_app, "send_task") as send_task:
        broker.send(task, confirm=False)
    # (the first of its shape is built by send_task into a _Capture, then published as itself)
    published_by_celery = [c for c in send_task.call_args_list if c.kwargs.get("retry")]
    assert len(published_by_celery) == 1
    assert published_by_celery[0].kwargs["headers"]["megahub_task_id"] == str(task.task_id)

"""Task requests through RabbitMQ and lifecycle events, with real consumer/worker processes."""

import contextlib
import json
import signal
import time
import uuid

import pytest
from celery import current_app
from kombu import Consumer, Queue

from task_core import events, intake, services
from task_core.models import Task
from tests.factories import MembershipFactory, UserFactory
from tests.integration.conftest import wait_for
from tests.integration.test_worker import wait_status

pytestmark = [pytest.mark.integration]


@pytest.fixture
def requester(brand):
    user = UserFactory(username="importer")
    MembershipFactory(user=user, brand=brand, role="operator")
    return user


@pytest.fixture
def request_queues(purge_queues):
    with current_app.connection_for_write() as conn:
        channel = conn.default_channel
        for queue in (intake.requests_queue(), intake.requests_dead_queue()):
            queue(channel).declare()
            queue(channel).purge()
    yield
    with current_app.connection_for_write() as conn:
        for queue in (intake.requests_queue(), intake.requests_dead_queue()):
            queue(conn.default_channel).delete()


def publish_raw(bodies, content_type="application/json"):
    with current_app.producer_or_acquire() as producer:
        for body in bodies:
            producer.publish(
                body if isinstance(body, bytes) else json.dumps(body).encode(),
                exchange="",
                routing_key=intake.requests_queue().name,
                content_type=content_type,
                content_encoding="utf-8",
                delivery_mode=2,
            )


def drain(queue: Queue, expected: int, timeout=20) -> list[dict]:
    """Consume `expected` JSON messages from `queue` (fails on fewer)."""
    received = []
    with (
        current_app.connection_for_read() as conn,
        Consumer(conn.channel(), queues=[queue], accept=["json"],
                 callbacks=[lambda body, msg: (received.append(body), msg.ack())]),
    ):  # fmt: skip
        deadline = time.monotonic() + timeout
        while len(received) < expected and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=1)
    assert len(received) == expected, received
    return received


def request(brand, n, **extra):
    return {
        "brand_id": brand.pk, "task_type": "noop", "priority": "low",
        "description": f"imported {n}", "context_data": {}, "idempotency_key": f"import-{n}",
        "requested_by": "importer", **extra,
    }  # fmt: skip


REQUESTS = 400


def test_requests_become_tasks_once_even_if_the_consumer_is_killed(
    brand, requester, request_queues, start_process
):
    # The consumer holds TASK_REQUESTS_PREFETCH (20) unacked requests at a time: killed after
    # 100, those in flight (some already turned into tasks) are delivered again to the next one.
    publish_raw([request(brand, n) for n in range(REQUESTS)])
    consumer = start_process("consume_task_requests")
    wait_for(
        lambda: Task.objects.unscoped().count() >= 100, 60, message="100 tasks before the kill"
    )
    consumer.kill(signal.SIGKILL)  # unacked messages go back to the queue
    assert Task.objects.unscoped().count() < REQUESTS  # killed mid-stream
    start_process("consume_task_requests")
    wait_for(lambda: Task.objects.unscoped().count() >= REQUESTS, 120, message="every task")
    keys = list(Task.objects.unscoped().values_list("idempotency_key", flat=True))
    assert len(keys) == len(set(keys)) == REQUESTS
    assert (
        Task.objects.unscoped().filter(created_by=requester, brand=brand, priority="low").count()
        == REQUESTS
    )


def test_invalid_requests_are_dead_lettered_with_reasons(
    brand, other_brand, requester, request_queues, start_process
):
    publish_raw([b"{not json", b'"a string"', b"x" * 70000])
    publish_raw([
        {k: v for k, v in request(brand, 1).items() if k != "brand_id"},
        request(brand, 2, task_type="rm_rf"),
        request(other_brand, 3),  # importer is not a member of other_brand
        request(brand, 4, priority="urgent"),
        request(brand, 5, status="completed"),
        request(brand, 6),  # the one valid request
    ])  # fmt: skip
    start_process("consume_task_requests")
    dead = drain(intake.requests_dead_queue(), 8)
    codes = [body["error_code"] for body in dead]
    assert codes == [
        "MALFORMED_REQUEST", "MALFORMED_REQUEST", "REQUEST_TOO_LARGE", "VALIDATION_ERROR",
        "UNKNOWN_TASK_TYPE", "BRAND_FORBIDDEN", "VALIDATION_ERROR", "VALIDATION_ERROR",
    ]  # fmt: skip
    assert "brand_id" in dead[3]["field_errors"] and "priority" in dead[6]["field_errors"]
    assert "status" in dead[7]["field_errors"]
    assert dead[4]["original"].startswith("{") and dead[4]["reason"]
    wait_for(lambda: Task.objects.unscoped().count() == 1, 10, message="the valid request's task")
    assert Task.objects.unscoped().get().idempotency_key == "import-6"


def test_events_consumer_receives_every_transition_in_order(brand, start_process):
    exchange = events.events_exchange()
    key = f"{brand.pk}.seo_keyword_analysis.#"
    queue = Queue(f"events-{uuid.uuid4().hex}", exchange=exchange, routing_key=key,
                  exclusive=True, auto_delete=True)  # fmt: skip
    received = []
    with current_app.connection_for_read() as conn:
        channel = conn.channel()
        bound = queue(channel)
        exchange(channel).declare()
        bound.declare()
        on_event = lambda body, msg: (received.append(body), msg.ack())  # noqa: E731
        with Consumer(channel, queues=[bound], accept=["json"], callbacks=[on_event]):
            start_process("worker")
            start_process("beat")
            task, _ = services.task_create(
                brand=brand, task_type="seo_keyword_analysis",
                context_data={"keyword_ids": list(range(1, 9)), "delay_ms": 10},
            )  # fmt: skip

            def all_in():
                with contextlib.suppress(TimeoutError):
                    conn.drain_events(timeout=1)
                return received and received[-1]["event"] == "completed"

            wait_for(all_in, 30, message="the completed event")
    assert [e["event"] for e in received] == [
        "created", "queued", "started", "progress", "progress", "progress", "completed",
    ]  # fmt: skip
    assert all(e["task"]["task_id"] == task.task_id for e in received)
    assert [e["event_id"] for e in received] == sorted(e["event_id"] for e in received)
    assert received[0]["schema"] == "megahub.task_event/1"
    wait_status(task.pk, "completed")


def test_webhook_receiver_verifies_signatures_and_sees_retries(brand, start_process):
    from task_core.models import Webhook
    from tests.webhook_receiver import Receiver

    receiver = Receiver(answers=[500, 200])
    try:
        hook = Webhook.objects.create(brand=brand, url=receiver.url, event_types=["completed"])
        receiver.secret = hook.secret
        start_process("worker", env={"WEBHOOK_BACKOFF_SECONDS": "1"})
        start_process("beat", env={"WEBHOOK_DELIVER_INTERVAL_SECONDS": "1"})
        task, _ = services.task_create(brand=brand, task_type="noop")
        wait_for(lambda: len(receiver.requests) >= 2, 60, message="the retried delivery")
    finally:
        receiver.close()
    assert all(r["signature_valid"] for r in receiver.requests)
    assert [r["body"]["event"] for r in receiver.requests] == ["completed", "completed"]
    assert receiver.requests[0]["body"]["task"]["task_id"] == task.task_id
    delivery = hook.deliveries.get()
    wait_for(lambda: hook.deliveries.get().status == "delivered", 10, message="delivered")
    delivery.refresh_from_db()
    assert [h["status_code"] for h in delivery.history] == [500, 200]

"""Brand events end to end: posted over REST to a gunicorn process, relayed by a real worker
to the megahub.events exchange, consumed from a queue bound there, while the relay's broker
connection is cut (through a TCP relay: RabbitMQ itself keeps running for everyone else)."""

import contextlib
import threading
import time
import uuid
from urllib.parse import urlsplit

import pytest
import requests
from celery import current_app
from django.conf import settings
from kombu import Consumer, Queue
from rest_framework_simplejwt.tokens import AccessToken

from task_core import events
from task_core.models import BrandEvent, TaskEvent
from tests.integration.conftest import free_port, wait_for
from tests.integration.test_connection_faults import through

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

EVENTS = 60


def test_posted_events_reach_the_exchange_once_in_order_across_a_cut_connection(
    brand, owner, start_process, tcp_proxy
):
    port = free_port()
    start_process("web", env={"PORT": str(port), "SECURE_SSL_REDIRECT": "0"})
    proxy = tcp_proxy(urlsplit(settings.CELERY_BROKER_URL).port or 5672)
    # The worker runs the relay (small batches, so the cut lands between and inside them);
    # its broker connections go through the proxy. Beat reaches RabbitMQ directly.
    worker = start_process("worker", env={
        "CELERY_BROKER_URL": through(settings.CELERY_BROKER_URL, proxy.port),
        "EVENTS_RELAY_BATCH": "5",
    })  # fmt: skip
    start_process("beat")
    http = requests.Session()
    http.headers.update({"Authorization": f"Bearer {AccessToken.for_user(owner)}",
                         "X-Brand-ID": str(brand.pk)})  # fmt: skip
    posted: list[str] = []

    def post_all():
        for n in range(EVENTS):
            response = http.post(
                f"http://127.0.0.1:{port}/events/shop/order/created/",
                json={"order_id": n, "customer": "John Doe"},
                timeout=10,
            )
            assert response.status_code == 201, response.text
            posted.append(response.json()["event_uid"])
            time.sleep(0.05)

    exchange = events.events_exchange()
    queue = Queue(
        f"brand-events-{uuid.uuid4().hex}",
        exchange=exchange,
        routing_key=f"brand_event.{brand.pk}.#",
        exclusive=True,
        auto_delete=True,
    )
    received: list[tuple[dict, str]] = []
    with current_app.connection_for_read() as conn:
        channel = conn.channel()
        exchange(channel).declare()
        queue(channel).declare()
        on_event = lambda body, msg: (  # noqa: E731
            received.append((body, msg.properties.get("message_id"))),
            msg.ack(),
        )
        with Consumer(channel, queues=[queue], accept=["json"], callbacks=[on_event]):

            def received_count() -> int:
                with contextlib.suppress(TimeoutError):
                    conn.drain_events(timeout=0.5)
                return len(received)

            poster = threading.Thread(target=post_all, daemon=True)
            poster.start()
            wait_for(lambda: received_count() >= 5, 30, message="the first relayed events")
            connections_before = len(proxy.connected)
            proxy.cut()  # the relay's connection reset mid-stream, then refused for 4 s
            time.sleep(4)
            proxy.restore()
            poster.join(60)
            assert len(posted) == EVENTS
            wait_for(lambda: received_count() >= EVENTS, 90, message=f"{EVENTS} relayed events")
            deadline = time.monotonic() + 3  # a little longer: a duplicate would arrive now
            while time.monotonic() < deadline:
                received_count()
    bodies = [body for body, _ in received]
    assert [b["event_uid"] for b in bodies] == posted  # every one, exactly once, in order
    assert [b["event_data"]["order_id"] for b in bodies] == list(range(EVENTS))
    assert [m for _, m in received] == [f"brand-event-{uid}" for uid in posted]
    assert {b["schema"] for b in bodies} == {"megahub.brand_event/1"}
    assert {b["event_type"] for b in bodies} == {"shop.order.created"}
    ids = [b["event_id"] for b in bodies]
    assert ids == sorted(ids)
    # The cut was felt: the relay reconnected, and events posted during it waited in the outbox.
    assert len(proxy.connected) > connections_before
    assert "publish failed; retrying" in worker.output(), worker.output()[-3000:]
    assert BrandEvent.objects.unscoped().count() == EVENTS
    assert not TaskEvent.objects.unscoped().filter(published_at__isnull=True).exists()

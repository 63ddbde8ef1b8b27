"""Brand webhooks: the admin API, fan-out of relayed events, signed deliveries with retries."""

import base64
import hashlib
import hmac
from importlib import import_module

import pytest
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.utils import timezone
from standardwebhooks import Webhook as StandardWebhook
from standardwebhooks import WebhookVerificationError

from megahub.webhooks import new_signing_secret, standard_secret
from task_core import events, execution, services, webhooks
from task_core.models import Webhook, WebhookDelivery
from task_core.signals import webhook_disabled
from tests.factories import BrandFactory
from tests.webhook_receiver import Receiver

HOOK = {"url": "https://hooks.example.com/megahub", "event_types": ["completed", "failed"]}


def test_admin_subscribes_and_sees_the_secret_once(api, owner, brand):
    client = api(owner, brand)
    created = client.post("/tasks/webhooks/", HOOK, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["secret"].startswith("whsec_") and created.json()["is_active"] is True
    assert len(base64.b64decode(created.json()["secret"].removeprefix("whsec_"))) == 32
    listed = client.get("/tasks/webhooks/").json()["results"]
    assert [w["id"] for w in listed] == [created.json()["id"]] and "secret" not in listed[0]
    detail = client.get(f"/tasks/webhooks/{created.json()['id']}/").json()
    assert "secret" not in detail
    assert Webhook.objects.unscoped().get().brand == brand


@pytest.mark.parametrize(
    "url",
    ["ftp://files.example.com/x", "http://169.254.169.254/latest/meta-data",
     "http://[fe80::1]/hook", "http://metadata.google.internal/", "not a url",
     "https://user:pw@hooks.example.com/"],
)  # fmt: skip
def test_unsafe_webhook_urls_are_refused(api, owner, brand, url):
    response = api(owner, brand).post("/tasks/webhooks/", {**HOOK, "url": url}, format="json")
    assert response.status_code == 400 and "url" in response.json()["field_errors"]
    assert not Webhook.objects.unscoped().exists()


@pytest.mark.parametrize(
    "payload,field",
    [
        ({**HOOK, "event_types": ["exploded"]}, "event_types"),
        ({**HOOK, "event_types": []}, "event_types"),
        ({**HOOK, "event_types": "completed"}, "event_types"),
        ({**HOOK, "consecutive_failures": 0}, "consecutive_failures"),
        ({**HOOK, "brand": 2}, "brand"),
        ({**HOOK, "secret": "mine"}, "secret"),
    ],
)  # fmt: skip
def test_bad_webhook_input_is_a_400(api, owner, brand, payload, field):
    response = api(owner, brand).post("/tasks/webhooks/", payload, format="json")
    assert response.status_code == 400 and field in response.json()["field_errors"], response.json()
    assert not Webhook.objects.unscoped().exists()


def test_relayed_events_fan_out_to_matching_webhooks_of_their_brand(brand, other_brand):
    on_completed = Webhook.objects.create(brand=brand, url=HOOK["url"], event_types=["completed"])
    on_all = Webhook.objects.create(brand=brand, url=HOOK["url"], event_types=["*"])
    Webhook.objects.create(brand=other_brand, url=HOOK["url"], event_types=["*"])
    Webhook.objects.create(brand=brand, url=HOOK["url"], event_types=["*"], is_active=False)
    task, _ = services.task_create(brand=brand, task_type="noop")
    execution.task_execute(task_pk=task.pk, worker="w")
    events.events_relay()
    assert set(on_completed.deliveries.values_list("event_name", flat=True)) == {"completed"}
    # ("queued" is recorded in the create's own transaction)
    assert sorted(on_all.deliveries.values_list("event_name", flat=True)) == [
        "completed", "created", "queued", "started",
    ]  # fmt: skip
    assert WebhookDelivery.objects.unscoped().count() == 5
    events.events_relay()  # nothing left to relay: no duplicate delivery
    assert WebhookDelivery.objects.unscoped().count() == 5


def _deliver_now():
    WebhookDelivery.objects.unscoped().filter(status="pending").update(
        next_attempt_at=timezone.now()
    )
    return webhooks.webhooks_deliver_due()


def test_delivery_is_signed_and_retried_after_a_500(brand, settings):
    receiver = Receiver(answers=[500, 502, 200])
    try:
        hook = Webhook.objects.create(brand=brand, url=receiver.url, event_types=["completed"])
        receiver.secret = hook.secret
        task, _ = services.task_create(brand=brand, task_type="noop")
        execution.task_execute(task_pk=task.pk, worker="w")
        events.events_relay()
        delivery = WebhookDelivery.objects.unscoped().get()
        assert _deliver_now() == 1
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts, delivery.last_status_code) == (
            "pending",
            1,
            500,
        )
        assert 1 <= (delivery.next_attempt_at - timezone.now()).total_seconds() <= 3  # backoff
        _deliver_now()
        _deliver_now()
        delivery.refresh_from_db()
        assert delivery.status == "delivered" and delivery.attempts == 3
        assert [h["status_code"] for h in delivery.history] == [500, 502, 200]
    finally:
        receiver.close()
    assert len(receiver.requests) == 3 and all(r["signature_valid"] for r in receiver.requests)
    first = receiver.requests[0]
    assert first["body"]["event"] == "completed" and first["body"]["task"]["id"] == task.pk
    assert first["headers"]["X-Megahub-Event"] == "completed"
    # one message: every retry carries the same webhook-id
    assert {r["headers"]["webhook-id"] for r in receiver.requests} == {f"delivery-{delivery.pk}"}
    hook.refresh_from_db()
    assert hook.consecutive_failures == 0


def test_a_received_delivery_verifies_with_the_standardwebhooks_library(brand):
    receiver = Receiver(answers=[200])
    try:
        hook = Webhook.objects.create(brand=brand, url=receiver.url, event_types=["created"])
        task, _ = services.task_create(brand=brand, task_type="noop")
        events.events_relay()
        assert _deliver_now() == 1
    finally:
        receiver.close()
    (request,) = receiver.requests
    body, headers = request["raw_body"], request["headers"]
    # What a receiver does: the standardwebhooks library over the raw body and the headers.
    payload = StandardWebhook(hook.secret).verify(body, headers)
    assert payload["event"] == "created" and payload["task"]["id"] == task.pk
    assert headers["X-Megahub-Event"] == "created"
    for secret, data in [(new_signing_secret(), body), (hook.secret, body.replace(b"}", b" }"))]:
        with pytest.raises(WebhookVerificationError):  # another secret, a changed body
            StandardWebhook(secret).verify(data, headers)
    assert WebhookDelivery.objects.unscoped().get().status == "delivered"


def test_older_secrets_are_migrated_to_the_standard_format_with_the_same_key(brand):
    legacy = "Vb3kq0Zr1c2Yl0mW8s9Xx1p4Qe7tUu2Aa5Bb6Cc7Dd8"  # token_urlsafe(32), as before
    hook = Webhook.objects.create(brand=brand, url=HOOK["url"], event_types=["*"], secret=legacy)
    name = "0006_webhook_secrets_standard_webhooks"
    state = MigrationLoader(connection).project_state(("task_core", name))  # its models
    import_module(f"task_core.migrations.{name}").to_standard_webhooks(state.apps, None)
    hook.refresh_from_db()
    assert hook.secret == standard_secret(legacy) and hook.secret.startswith("whsec_")
    # The key is the old secret's bytes: a signature made with the old key still verifies.
    signed = f"msg-1.{int(timezone.now().timestamp())}.{{}}"
    digest = hmac.new(legacy.encode(), signed.encode(), hashlib.sha256).digest()
    headers = {"webhook-id": "msg-1", "webhook-timestamp": signed.split(".")[1],
               "webhook-signature": "v1," + base64.b64encode(digest).decode()}  # fmt: skip
    assert StandardWebhook(hook.secret).verify(b"{}", headers) == {}


def test_webhook_is_disabled_after_consecutive_failures(brand, settings):
    settings.WEBHOOK_DISABLE_AFTER_FAILURES = 3
    receiver = Receiver(answers=[500])
    disabled = []
    webhook_disabled.connect(lambda sender, webhook, reason, **kw: disabled.append(reason),
                             weak=False, dispatch_uid="test-disabled")  # fmt: skip
    try:
        hook = Webhook.objects.create(brand=brand, url=receiver.url, event_types=["*"])
        services.task_create(brand=brand, task_type="noop")
        events.events_relay()  # one "created" delivery
        for _ in range(3):
            _deliver_now()
    finally:
        receiver.close()
        webhook_disabled.disconnect(dispatch_uid="test-disabled")
    hook.refresh_from_db()
    assert not hook.is_active and "3 consecutive" in hook.disabled_reason
    assert disabled == [hook.disabled_reason]
    assert not WebhookDelivery.objects.unscoped().filter(status="pending").exists()


def test_a_hanging_receiver_times_out_and_is_recorded(brand, settings):
    settings.WEBHOOK_TIMEOUT_SECONDS = 1
    receiver = Receiver(answers=[200], delay_s=3)
    try:
        hook = Webhook.objects.create(brand=brand, url=receiver.url, event_types=["created"])
        services.task_create(brand=brand, task_type="noop")
        events.events_relay()
        _deliver_now()
    finally:
        receiver.close()
    delivery = WebhookDelivery.objects.unscoped().get(webhook=hook)
    assert delivery.status == "pending" and "timed out" in delivery.last_error.lower()


def test_reenabling_a_webhook_resets_its_failures(api, owner, brand):
    hook = Webhook.objects.create(
        brand=brand, url=HOOK["url"], event_types=["*"], is_active=False,
        consecutive_failures=20, disabled_reason="20 failures",
    )  # fmt: skip
    response = api(owner, brand).patch(f"/tasks/webhooks/{hook.pk}/", {"is_active": True},
                                       format="json")  # fmt: skip
    assert response.status_code == 200
    assert response.json()["consecutive_failures"] == 0 and response.json()["disabled_reason"] == ""


def test_deliveries_endpoint_lists_attempts(api, owner, brand):
    hook = Webhook.objects.create(brand=brand, url=HOOK["url"], event_types=["*"])
    services.task_create(brand=brand, task_type="noop")
    events.events_relay()
    body = api(owner, brand).get(f"/tasks/webhooks/{hook.pk}/deliveries/").json()
    assert [d["event_name"] for d in body["results"]] == ["queued", "created"]  # newest first
    other = BrandFactory()
    assert not WebhookDelivery.objects.filter(brand=other).exists()

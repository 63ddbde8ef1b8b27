"""Brand events (the events seed): POST /events/<solution>/<model>/<action>/, GET /events/,
their outbox rows and routing keys, webhook subscriptions by brand event type, and the relay's
publish backoff."""

from datetime import timedelta

import pytest
from django.utils import timezone

from megahub.backoff import backoff_delay_s
from task_core import events, execution, services
from task_core.models import BrandEvent, TaskEvent, Webhook, WebhookDelivery

SEED_BODY = {"order_id": 12345, "customer": "John Doe", "total_amount": 250}
HOOK_URL = "https://hooks.example.com/megahub"


def post_event(client, path="shop/order/created", body=None):
    return client.post(f"/events/{path}/", SEED_BODY if body is None else body, format="json")


def test_post_answers_the_seed_shape_and_writes_the_outbox(api, user_with_role, brand):
    response = post_event(api(user_with_role("operator"), brand))
    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == {"event_uid", "event_timestamp", "event_data"}
    assert body["event_data"] == SEED_BODY and body["event_timestamp"].endswith("Z")
    event = BrandEvent.objects.unscoped().get(event_uid=body["event_uid"])
    assert (event.brand, event.event_type) == (brand, "shop.order.created")
    outbox = event.outbox
    assert outbox.kind == TaskEvent.Kind.BRAND_EVENT and outbox.task is None
    assert outbox.brand == brand and outbox.published_at is None


@pytest.mark.parametrize(
    "path,field",
    [("Shop/order/created", "solution"), ("shop/or.der/created", "model"),
     ("shop/order/" + "a" * 65, "action"), ("shop/order/cré", "action")],
)  # fmt: skip
def test_path_segments_outside_the_allow_list_are_a_400(api, owner, brand, path, field):
    response = post_event(api(owner, brand), path)
    assert response.status_code == 400, response.content
    assert response.json()["error_code"] == "VALIDATION_ERROR"
    assert field in response.json()["field_errors"]
    assert not BrandEvent.objects.unscoped().exists() and not TaskEvent.objects.unscoped().exists()


@pytest.mark.parametrize(
    "body, field",
    [([1, 2], "event_data"), ("text", "event_data"), (5, "event_data"), ({"k": "nul\x00"}, "k")],
)
def test_a_body_that_is_not_a_storable_json_object_is_a_400(api, owner, brand, body, field):
    response = post_event(api(owner, brand), body=body)
    assert response.status_code == 400, response.content
    assert field in response.json()["field_errors"]
    assert not BrandEvent.objects.unscoped().exists()


def test_a_body_over_the_request_limit_is_a_413(api, owner, brand, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    client = api(owner, brand)
    response = post_event(client, body={"blob": "x" * 2000})
    assert response.status_code == 413, response.content
    assert response.json()["error_code"] == "REQUEST_TOO_LARGE"
    assert set(response.json()) == {"detail", "error_code", "field_errors"}
    assert post_event(client, body={"blob": "x" * 100}).status_code == 201


def test_non_json_bodies_are_refused(api, owner, brand):
    response = api(owner, brand).post("/events/shop/order/created/", {"a": "b"})  # multipart
    assert response.status_code == 415
    assert not BrandEvent.objects.unscoped().exists()


def test_viewer_lists_but_may_not_post(api, user_with_role, brand):
    viewer = api(user_with_role("viewer"), brand)
    response = post_event(viewer)
    assert response.status_code == 403 and response.json()["error_code"] == "ROLE_FORBIDDEN"
    assert not BrandEvent.objects.unscoped().exists()
    assert viewer.get("/events/").status_code == 200


def test_foreign_brand_events_are_never_listed_and_their_ids_are_404(
    api, owner, member, brand, other_brand
):
    own = services.brand_event_create(
        brand=brand, user=owner, solution="shop", model="order", action="created",
        event_data={"n": 1},
    )  # fmt: skip
    foreign = services.brand_event_create(
        brand=other_brand, user=None, solution="shop", model="order", action="created",
        event_data={"secret": "FOREIGN"},
    )  # fmt: skip
    client = api(owner, brand)
    listed = client.get("/events/").json()["results"]
    assert [e["id"] for e in listed] == [own.pk]
    assert "FOREIGN" not in client.get("/events/").content.decode()
    missing = client.get(f"/events/{foreign.pk}/")
    assert missing.status_code == 404 and missing.json()["error_code"] == "EVENT_NOT_FOUND"
    detail = client.get(f"/events/{own.pk}/").json()
    assert (
        detail["event_uid"] == str(own.event_uid) and detail["event_type"] == "shop.order.created"
    )
    assert detail["created_by"]["username"] == owner.username
    # A member of both brands sees each brand's events under its own header only.
    assert [e["id"] for e in api(member, other_brand).get("/events/").json()["results"]] == [
        foreign.pk
    ]
    # Another brand's header for a non-member: refused before anything is read.
    refused = api(owner, other_brand).get("/events/")
    assert refused.status_code == 403 and refused.json()["error_code"] == "BRAND_FORBIDDEN"


def test_list_filters(api, owner, brand):
    make = lambda s, m, a: services.brand_event_create(  # noqa: E731
        brand=brand, user=owner, solution=s, model=m, action=a, event_data={}
    )
    a, b, c = (
        make("shop", "order", "created"),
        make("shop", "order", "paid"),
        make("crm", "lead", "created"),
    )
    two_days_ago = timezone.now() - timedelta(days=2)
    BrandEvent.objects.unscoped().filter(pk=a.pk).update(created_at=two_days_ago)
    client = api(owner, brand)

    def ids(**query):
        response = client.get("/events/", query)
        assert response.status_code == 200, response.content
        return [e["id"] for e in response.json()["results"]]

    assert ids() == [c.pk, b.pk, a.pk]
    assert ids(solution="shop") == [b.pk, a.pk]
    assert ids(model="lead") == [c.pk]
    assert ids(action="created") == [c.pk, a.pk]
    assert ids(solution="shop", action="paid") == [b.pk]
    cut = (timezone.now() - timedelta(days=1)).isoformat()
    assert ids(created_after=cut) == [c.pk, b.pk]
    assert ids(created_before=cut) == [a.pk]
    assert ids(page_size=1) == [c.pk]
    bad = client.get("/events/", {"created_after": "yesterday"})
    assert bad.status_code == 400 and "created_after" in bad.json()["field_errors"]


def test_routing_keys_of_the_two_kinds_cannot_collide(brand, owner):
    event = services.brand_event_create(
        brand=brand, user=owner, solution="shop", model="order", action="created",
        event_data={"n": 1},
    )  # fmt: skip
    task, _ = services.task_create(brand=brand, task_type="noop")
    outbox = TaskEvent.objects.unscoped().select_related("task", "brand_event")
    brand_row = outbox.get(kind="brand_event")
    key = events.event_routing_key(brand_row)
    assert key == f"brand_event.{brand.pk}.shop.order.created"
    lifecycle = events.event_routing_key(outbox.get(task=task, kind="created"))
    assert lifecycle == f"{brand.pk}.noop.created"
    # Lifecycle keys start with the (numeric) brand id, brand event keys with a word.
    assert lifecycle.split(".")[0].isdigit() and not key.split(".")[0].isdigit()
    payload = events.event_payload(brand_row)
    assert payload["schema"] == "megahub.brand_event/1"
    assert payload["event_uid"] == str(event.event_uid) and payload["event_data"] == {"n": 1}
    assert payload["event_id"] == brand_row.pk


def test_the_relay_publishes_brand_and_lifecycle_events_in_one_id_order(brand, owner):
    task, _ = services.task_create(brand=brand, task_type="noop")
    services.brand_event_create(
        brand=brand, user=owner, solution="shop", model="order", action="created", event_data={}
    )
    execution.task_execute(task_pk=task.pk, worker="w")
    pending = list(TaskEvent.objects.unscoped().order_by("id").values_list("kind", flat=True))
    assert pending == ["created", "queued", "brand_event", "started", "completed"]
    assert events.events_relay() == 5
    assert not TaskEvent.objects.unscoped().filter(published_at__isnull=True).exists()


def test_webhooks_subscribe_to_brand_event_types(api, owner, brand):
    client = api(owner, brand)
    for event_types in (["brand_event.*"], ["brand_event.shop.order.created", "completed"],
                        ["brand_event.shop.*.*"], ["*", "brand_event.*.*.paid"]):  # fmt: skip
        response = client.post("/tasks/webhooks/", {"url": HOOK_URL, "event_types": event_types},
                               format="json")  # fmt: skip
        assert response.status_code == 201, (event_types, response.content)
    for event_types in (["brand_event.shop"], ["brand_event.Shop.order.created"],
                        ["brand_event.a.b.c.d"], ["shop.order.created"]):  # fmt: skip
        response = client.post("/tasks/webhooks/", {"url": HOOK_URL, "event_types": event_types},
                               format="json")  # fmt: skip
        assert response.status_code == 400, (event_types, response.content)
        assert "event_types" in response.json()["field_errors"]


def test_brand_events_fan_out_to_webhooks_by_event_type(brand, other_brand, owner):
    hooks = {
        name: Webhook.objects.create(brand=brand, url=HOOK_URL, event_types=types)
        for name, types in {
            "all_brand": ["brand_event.*"],
            "exact": ["brand_event.shop.order.created"],
            "wildcard": ["brand_event.shop.*.created"],
            "other_type": ["brand_event.crm.lead.created"],
            "lifecycle_all": ["*"],
        }.items()
    }
    foreign = Webhook.objects.create(brand=other_brand, url=HOOK_URL, event_types=["brand_event.*"])
    services.brand_event_create(
        brand=brand, user=owner, solution="shop", model="order", action="created",
        event_data={"order_id": 1},
    )  # fmt: skip
    events.events_relay()
    wanted = {name for name, hook in hooks.items() if hook.deliveries.exists()}
    assert wanted == {"all_brand", "exact", "wildcard"}
    assert not foreign.deliveries.exists()
    delivery = hooks["exact"].deliveries.get()
    assert delivery.event_name == "brand_event.shop.order.created"
    assert delivery.payload["event_data"] == {"order_id": 1}
    assert WebhookDelivery.objects.unscoped().count() == 3


def test_backoff_is_exponential_with_jitter_and_capped():
    for attempt, full in [(1, 0.2), (2, 0.4), (3, 0.8), (4, 1.6), (5, 3.2), (9, 3.2)]:
        delays = [backoff_delay_s(attempt, base=0.2, cap=3.2) for _ in range(200)]
        assert all(full / 2 <= d <= full for d in delays), (attempt, min(delays), max(delays))
        assert len(set(delays)) > 100  # jittered, not a fixed step


class FlakyProducer:
    """Fails the first `failures` publishes with a connection error."""

    def __init__(self, failures, connection):
        self.failures, self.connection, self.published, self.revived = failures, connection, [], 0

    def publish(self, body, **options):
        if self.failures:
            self.failures -= 1
            raise ConnectionResetError("connection cut")
        self.published.append(body)

    def revive(self, channel):
        self.revived += 1


class FakeConnection:
    recoverable_connection_errors = (ConnectionError,)
    recoverable_channel_errors = ()
    default_channel = object()

    def collect(self):
        pass

    def ensure_connection(self, **kwargs):
        pass


def test_publish_retries_wait_exponentially_longer(monkeypatch):
    sleeps = []
    monkeypatch.setattr(events.time, "sleep", sleeps.append)
    monkeypatch.setattr("megahub.backoff.random.uniform", lambda low, high: high)
    producer = FlakyProducer(3, FakeConnection())
    events.publish_with_backoff(producer, {"n": 1}, routing_key="k")
    assert producer.published == [{"n": 1}] and producer.revived == 3
    assert sleeps == [0.2, 0.4, 0.8]  # doubling, not a fixed step
    given_up = FlakyProducer(events.PUBLISH_ATTEMPTS, FakeConnection())
    with pytest.raises(ConnectionResetError):
        events.publish_with_backoff(given_up, {"n": 2}, routing_key="k")
    assert len(sleeps) == 3 + events.PUBLISH_ATTEMPTS - 1


def test_admin_lists_brand_events_and_their_outbox_rows_per_brand(client, brand, other_brand):
    from django.contrib.auth.models import Permission

    from tests.factories import MembershipFactory, UserFactory

    staff = UserFactory(username="staffer", is_staff=True)
    staff.user_permissions.set(Permission.objects.filter(content_type__app_label="task_core"))
    MembershipFactory(user=staff, brand=brand, role="operator")
    make = lambda b, s: services.brand_event_create(  # noqa: E731
        brand=b, user=None, solution=s, model="order", action="created", event_data={}
    )
    mine, foreign = make(brand, "visible-shop"), make(other_brand, "hidden-shop")
    client.force_login(staff)
    page = client.get("/admin/task_core/brandevent/")
    assert page.status_code == 200
    assert str(mine.event_uid) in page.content.decode()
    assert str(foreign.event_uid) not in page.content.decode()
    timeline = client.get("/admin/task_core/taskevent/")  # outbox rows without a task
    assert timeline.status_code == 200 and "brand_event" in timeline.content.decode()
    detail = client.get(f"/admin/task_core/brandevent/{mine.pk}/change/")
    assert detail.status_code == 200


def test_the_backoff_spread_is_a_parameter_the_task_retry_delay_can_use():
    # +-25 % around the step (task types' RetryPolicy.jitter), and no jitter at all.
    delays = [backoff_delay_s(3, base=2.0, cap=300, jitter=(0.75, 1.25)) for _ in range(200)]
    assert all(6.0 <= d <= 10.0 for d in delays) and min(delays) < 8.0 < max(delays)
    assert backoff_delay_s(3, base=2.0, cap=300, jitter=(1, 1)) == 8.0
    assert backoff_delay_s(20, base=2.0, cap=300, jitter=(1, 1)) == 300

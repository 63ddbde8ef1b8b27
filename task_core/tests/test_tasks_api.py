"""The /tasks/ REST API: shapes, validation, tenancy, roles, errors."""

import json
from datetime import timedelta
from urllib.parse import quote

import pytest
from django.core.cache import cache
from django.utils import timezone

from task_core.models import Task
from tests.factories import MembershipFactory, TaskFactory, UserFactory

SEO = {
    "task_type": "seo_keyword_analysis",
    "priority": "normal",
    "description": "Analyser 500 mots-clés",
    "context_data": {"keyword_ids": [1, 2, 3, 4, 5], "analysis_depth": "full"},
}
SEED_DETAIL_KEYS = {
    "id", "task_id", "task_type", "status", "priority", "progress_percentage", "description",
    "context_data", "brand", "created_by", "created_at", "started_at", "completed_at",
    "attempts", "max_retries", "error_message", "result_data", "metrics",
}  # fmt: skip


def assert_error(response, status, code):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["error_code"] == code, body
    assert isinstance(body["detail"], str) and body["detail"]
    assert "Traceback" not in response.content.decode()
    return body


# --- create ---------------------------------------------------------------------------------
def test_create_returns_the_seed_detail_shape(api, owner, brand):
    response = api(owner, brand).post("/tasks/", SEO, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) >= SEED_DETAIL_KEYS
    assert body["status"] == "queued"  # recorded in the create's transaction, sent on commit
    assert body["brand"] == {"id": brand.id, "name": "Humari"}
    assert body["created_by"] == {"id": owner.id, "username": "owner"}
    assert body["task_id"].startswith("task_")
    assert body["max_retries"] == 3 and body["attempts"] == 0
    task = Task.objects.unscoped().get(pk=body["id"])
    assert task.brand == brand and task.context_data == SEO["context_data"]
    assert list(task.events.order_by("id").values_list("kind", flat=True)) == ["created", "queued"]


def test_create_publishes_after_commit(api, owner, brand, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = api(owner, brand).post("/tasks/", SEO, format="json")
    assert response.status_code == 201
    assert len(callbacks) == 1
    task = Task.objects.unscoped().get(pk=response.json()["id"])
    assert task.status == "queued" and task.queued_at is not None
    assert list(task.events.values_list("kind", flat=True)) == ["created", "queued"]


@pytest.mark.django_db(transaction=True)
def test_queued_mark_skips_the_disk_flush_only_in_its_own_transaction(brand):
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from task_core import publishing

    def relaxed(queries):
        return any("synchronous_commit = off" in q["sql"] for q in queries)

    own, inside = (TaskFactory(brand=brand, status="pending") for _ in range(2))
    with CaptureQueriesContext(connection) as ctx:
        assert publishing.task_publish(task=own)
    assert relaxed(ctx.captured_queries) == (connection.vendor == "postgresql")  # not on SQLite
    with CaptureQueriesContext(connection) as ctx, transaction.atomic():
        assert publishing.task_publish(task=inside)  # a caller's transaction stays durable
    assert not relaxed(ctx.captured_queries)
    assert set(Task.objects.unscoped().values_list("status", flat=True)) == {"queued"}


@pytest.mark.parametrize(
    "field,value",
    [("status", "completed"), ("brand", 999), ("created_by", 1), ("result_data", {"x": 1}),
     ("attempts", 5), ("task_id", "task_mine"), ("progress_percentage", 100)],
)  # fmt: skip
def test_server_owned_fields_are_refused_and_nothing_is_created(api, owner, brand, field, value):
    response = api(owner, brand).post("/tasks/", {**SEO, field: value}, format="json")
    body = assert_error(response, 400, "VALIDATION_ERROR")
    assert field in body["field_errors"]
    assert not Task.objects.unscoped().exists()


@pytest.mark.parametrize(
    "payload,code,field",
    [
        ({**SEO, "task_type": "rm_rf"}, "UNKNOWN_TASK_TYPE", "task_type"),
        ({**SEO, "priority": "urgent"}, "VALIDATION_ERROR", "priority"),
        ({**SEO, "context_data": [1, 2]}, "VALIDATION_ERROR", "context_data"),
        ({**SEO, "context_data": {"keyword_ids": "all"}}, "CONTEXT_INVALID", "context_data"),
        ({**SEO, "context_data": {"analysis_depth": "full"}}, "CONTEXT_INVALID", "context_data"),
        ({"priority": "low"}, "VALIDATION_ERROR", "task_type"),
        ({**SEO, "scheduled_for": "tomorrow"}, "VALIDATION_ERROR", "scheduled_for"),
    ],
)
def test_bad_create_input_is_a_400_with_field_errors(api, owner, brand, payload, code, field):
    body = assert_error(api(owner, brand).post("/tasks/", payload, format="json"), 400, code)
    assert field in body["field_errors"], body
    assert not Task.objects.unscoped().exists()


def test_invalid_priority_message_matches_the_contract(api, owner, brand):
    body = api(owner, brand).post("/tasks/", {**SEO, "priority": "urgent"}, format="json").json()
    assert body["field_errors"]["priority"] == ['"urgent" is not a valid choice.']


def test_malformed_json_is_a_clear_400(api, owner, brand):
    response = api(owner, brand).post(
        "/tasks/", data='{"task_type": ', content_type="application/json"
    )
    body = assert_error(response, 400, "MALFORMED_REQUEST")
    assert body["field_errors"] == {}


def test_unsupported_media_type_is_415(api, owner, brand):
    response = api(owner, brand).post("/tasks/", data="task_type=noop", content_type="text/plain")
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")


def test_idempotency_key_returns_the_same_task_with_200(api, owner, brand):
    client = api(owner, brand)
    first = client.post("/tasks/", SEO, format="json", HTTP_IDEMPOTENCY_KEY="order-42")
    again = client.post("/tasks/", SEO, format="json", HTTP_IDEMPOTENCY_KEY="order-42")
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert Task.objects.unscoped().count() == 1


def test_idempotency_key_is_per_brand(api, member, brand, other_brand):
    a = api(member, brand).post("/tasks/", SEO, format="json", HTTP_IDEMPOTENCY_KEY="k")
    b = api(member, other_brand).post("/tasks/", SEO, format="json", HTTP_IDEMPOTENCY_KEY="k")
    assert (a.status_code, b.status_code) == (201, 201)
    assert a.json()["id"] != b.json()["id"]


def test_idempotency_key_reused_for_another_request_is_409(api, owner, brand):
    client = api(owner, brand)
    client.post("/tasks/", SEO, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    other = {**SEO, "context_data": {"keyword_ids": [9]}}
    response = client.post("/tasks/", other, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    assert_error(response, 409, "IDEMPOTENCY_KEY_REUSED")
    assert Task.objects.unscoped().count() == 1


def test_scheduled_task_waits_in_the_database(
    api, owner, brand, django_capture_on_commit_callbacks
):
    when = timezone.now() + timedelta(hours=2)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = api(owner, brand).post(
            "/tasks/", {**SEO, "scheduled_for": when.isoformat()}, format="json"
        )
    assert response.status_code == 201
    assert callbacks == []  # nothing published now: the release loop does it when due
    task = Task.objects.unscoped().get(pk=response.json()["id"])
    assert task.status == "pending" and task.available_at == when


# --- list & detail ----------------------------------------------------------------------------
def test_list_contains_only_the_brands_rows(api, member, brand, other_brand):
    mine = TaskFactory.create_batch(3, brand=brand)
    TaskFactory.create_batch(2, brand=other_brand)
    body = api(member, brand).get("/tasks/").json()
    assert sorted(r["id"] for r in body["results"]) == sorted(t.id for t in mine)
    assert set(body) == {"next", "previous", "results"}


def test_list_filters(api, owner, brand):
    TaskFactory(brand=brand, status="failed", task_type="flaky_api_call", priority="high")
    TaskFactory(brand=brand, status="completed", task_type="noop")
    TaskFactory(brand=brand, status="running", task_type="noop", description="export catalogue")
    client = api(owner, brand)

    def ids(query):
        response = client.get(f"/tasks/?{query}")
        assert response.status_code == 200, response.content
        return [r["status"] for r in response.json()["results"]]

    assert ids("status=failed") == ["failed"]
    assert sorted(ids("status=active")) == ["running"]
    assert sorted(ids("status=failed,completed")) == ["completed", "failed"]
    assert ids("priority=high") == ["failed"]
    assert sorted(ids("task_type=noop")) == ["completed", "running"]
    assert ids("search=catalogue") == ["running"]
    assert ids("search=flaky") == ["failed"]
    minute_ago = quote((timezone.now() - timedelta(minutes=1)).isoformat())
    assert len(ids(f"created_after={minute_ago}")) == 3
    assert ids(f"created_before={minute_ago}") == []


def test_list_rows_are_exactly_what_the_list_serializer_documents(api, owner, brand):
    from task_core.api.serializers import TaskListSerializer

    now = timezone.now().replace(microsecond=123456)
    TaskFactory(brand=brand, created_by=owner, description="été ✓")
    TaskFactory(brand=brand, created_by=None, status="failed", error_message="Boom: é",
                attempts=2, started_at=now, completed_at=now + timedelta(seconds=3),
                scheduled_for=now - timedelta(days=1), cancel_requested=True,
                priority="critical", progress_percentage=42, queue="reports")  # fmt: skip
    documented = json.loads(
        json.dumps(
            TaskListSerializer(
                Task.objects.filter(brand=brand).select_related("brand", "created_by")
                .order_by("-id"), many=True,
            ).data
        )
    )  # fmt: skip
    for query in ("", "?ordering=created_at", "?status=failed"):
        response = api(owner, brand).get(f"/tasks/{query}")
        assert response.status_code == 200
        expected = documented[::-1] if "ordering" in query else documented
        if "status" in query:
            expected = [row for row in documented if row["status"] == "failed"]
        assert response.json()["results"] == expected
        assert [list(row) for row in response.json()["results"]] == [list(row) for row in expected]


def test_list_bytes_are_the_list_serializers_rendered_by_drf(api, owner, brand):
    """The rows PostgreSQL builds as JSON render to the very bytes ListModelMixin would write
    with TaskListSerializer: key order, nulls, unicode, escapes, datetimes with and without
    microseconds (DRF writes no fraction for 0), booleans and integers. (The list has no
    decimal field.)"""
    from rest_framework.renderers import JSONRenderer

    from task_core.api.serializers import TaskListSerializer

    whole = timezone.now().replace(microsecond=0)
    fraction = whole.replace(microsecond=7)
    creator = UserFactory(username="zoë-\u2028")
    TaskFactory(brand=brand, created_by=creator, description='quote " back\\slash \t tab 🚀',
                started_at=whole, completed_at=fraction, scheduled_for=None,
                cancel_requested=True, progress_percentage=0, priority="low")  # fmt: skip
    TaskFactory(brand=brand, created_by=None, description="", error_message="Ünïcode\x01ctl",
                status="failed", attempts=32767, scheduled_for=fraction)  # fmt: skip
    TaskFactory(brand=brand, created_by=owner, started_at=None, completed_at=None)
    tasks = Task.objects.filter(brand=brand).select_related("brand", "created_by")
    for query, order in (("", "-id"), ("?ordering=created_at", "created_at")):
        response = api(owner, brand).get(f"/tasks/{query}", HTTP_ACCEPT="application/json")
        assert response.status_code == 200
        page = {
            "next": None,
            "previous": None,
            "results": TaskListSerializer(tasks.order_by(order), many=True).data,
        }
        assert response.content == JSONRenderer().render(page)


def test_list_rejects_an_unknown_status(api, owner, brand):
    body = assert_error(api(owner, brand).get("/tasks/?status=exploded"), 400, "VALIDATION_ERROR")
    assert "status" in body["field_errors"]


def test_page_size_is_capped_and_cursor_pages_do_not_overlap(api, owner, brand, settings):
    settings.API_MAX_PAGE_SIZE = 7
    TaskFactory.create_batch(12, brand=brand)
    client = api(owner, brand)
    first = client.get("/tasks/?page_size=100000").json()
    assert len(first["results"]) == 7
    second = client.get(first["next"]).json()
    assert len(second["results"]) == 5 and second["next"] is None
    seen = [r["id"] for r in first["results"] + second["results"]]
    assert seen == sorted(seen, reverse=True) and len(set(seen)) == 12


def test_list_query_count_is_constant(api, owner, brand, django_assert_max_num_queries):
    TaskFactory.create_batch(30, brand=brand, created_by=owner)
    client = api(owner, brand)
    with django_assert_max_num_queries(4):  # membership, page, (savepoints none)
        response = client.get("/tasks/?page_size=30")
    assert len(response.json()["results"]) == 30


def test_detail_of_own_task(api, owner, brand):
    task = TaskFactory(brand=brand, status="completed", result_data={"keywords_processed": 5})
    body = api(owner, brand).get(f"/tasks/{task.pk}/").json()
    assert set(body) >= SEED_DETAIL_KEYS
    assert body["result_data"] == {"keywords_processed": 5} and body["metrics"] is None


# --- tenancy ----------------------------------------------------------------------------------
def test_member_of_both_brands_sees_each_only_under_its_header(api, member, brand, other_brand):
    in_other = TaskFactory(brand=other_brand)
    assert api(member, brand).get(f"/tasks/{in_other.pk}/").status_code == 404
    assert api(member, other_brand).get(f"/tasks/{in_other.pk}/").status_code == 200


@pytest.mark.parametrize("header", [None, "", "abc", "-3", "0", "1.5", "99999999999999999999"])
def test_missing_or_malformed_brand_header_is_400(api, owner, header):
    client = api(owner, brand_header=header) if header is not None else api(owner)
    assert_error(client.get("/tasks/"), 400, "BRAND_REQUIRED")


def test_inactive_brand_is_403(api, owner, brand):
    brand.is_active = False
    brand.save()
    assert_error(api(owner, brand).get("/tasks/"), 403, "BRAND_FORBIDDEN")


def test_brand_query_parameter_is_a_fallback_for_the_browsable_api(api, owner, brand):
    TaskFactory(brand=brand)
    response = api(owner).get(f"/tasks/?brand={brand.pk}")
    assert response.status_code == 200 and len(response.json()["results"]) == 1


# --- roles ------------------------------------------------------------------------------------
# --- retry & cancel ---------------------------------------------------------------------------
def test_retry_of_a_failed_task(api, owner, brand):
    task = TaskFactory(brand=brand, status="failed", attempts=4, error_message="boom")
    response = api(owner, brand).post(f"/tasks/{task.pk}/retry/")
    assert response.status_code == 200
    assert response.json()["status"] == "pending"
    assert task.events.filter(kind="retry_requested", actor="user:owner").exists()


@pytest.mark.parametrize("status", ["completed", "running", "queued", "pending"])
def test_retry_of_a_task_that_did_not_fail_is_409(api, owner, brand, status):
    task = TaskFactory(brand=brand, status=status)
    assert_error(api(owner, brand).post(f"/tasks/{task.pk}/retry/"), 409, "TASK_NOT_RETRYABLE")
    task.refresh_from_db()
    assert task.status == status and not task.events.exists()


def test_cancel_of_a_queued_task_is_immediate(api, owner, brand):
    task = TaskFactory(brand=brand, status="queued")
    response = api(owner, brand).post(f"/tasks/{task.pk}/cancel/")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"


def test_cancel_of_a_running_task_is_requested(api, owner, brand):
    task = TaskFactory(brand=brand, status="running", attempts=1)
    client = api(owner, brand)
    response = client.post(f"/tasks/{task.pk}/cancel/")
    assert response.status_code == 202
    assert response.json()["status"] == "running" and response.json()["cancel_requested"] is True
    assert client.post(f"/tasks/{task.pk}/cancel/").status_code == 202  # idempotent
    assert task.events.filter(kind="cancel_requested").count() == 1


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
def test_cancel_of_a_finished_task_is_409(api, owner, brand, status):
    task = TaskFactory(brand=brand, status=status)
    assert_error(api(owner, brand).post(f"/tasks/{task.pk}/cancel/"), 409, "TASK_NOT_CANCELLABLE")


# --- timeline, stats, types -------------------------------------------------------------------
def test_events_are_the_timeline_in_order(api, owner, brand):
    created = api(owner, brand).post("/tasks/", SEO, format="json").json()
    api(owner, brand).post(f"/tasks/{created['id']}/cancel/")
    events = api(owner, brand).get(f"/tasks/{created['id']}/events/").json()["results"]
    assert [(e["kind"], e["to_status"]) for e in events] == [
        ("created", "pending"),
        ("queued", "queued"),
        ("cancelled", "cancelled"),
    ]
    assert events[0]["actor"] == "user:owner"


def test_queue_stats_counts_the_brands_tasks_only(api, owner, brand, other_brand):
    TaskFactory.create_batch(2, brand=brand, status="queued", queued_at=timezone.now())
    TaskFactory(brand=brand, status="completed", completed_at=timezone.now())
    TaskFactory.create_batch(5, brand=other_brand, status="queued")
    body = api(owner, brand).get("/tasks/queue-stats/").json()
    assert body["queues"]["default"]["by_status"] == {"queued": 2}
    assert body["queues"]["default"]["by_priority"]["normal"] == {"queued": 2}
    assert body["queues"]["default"]["oldest_queued_age_s"] >= 0
    assert body["throughput"]["completed_5m"] == 1
    assert body["events_outbox"]["unpublished"] >= 0


def test_queue_stats_fleet_figures_are_for_staff_only(api, owner, brand, other_brand):
    """A brand sees its own outbox; the broker's depth and consumers and the whole outbox
    (every brand's activity) are in a `fleet` section that only staff users get."""
    from task_core import services

    services.task_create(brand=brand, task_type="noop")
    for _ in range(3):
        services.task_create(brand=other_brand, task_type="noop")
    body = api(owner, brand).get("/tasks/queue-stats/").json()
    assert "fleet" not in body and "broker" not in body
    assert body["events_outbox"]["unpublished"] == 2  # its own "created" and "queued" events

    staff = UserFactory(username="ops", is_staff=True)
    MembershipFactory(user=staff, brand=brand, role="viewer")
    body = api(staff, brand).get("/tasks/queue-stats/").json()
    assert body["events_outbox"]["unpublished"] == 2
    assert body["fleet"]["events_outbox"]["unpublished"] == 8
    assert "available" in body["fleet"]["broker"]


def test_types_lists_the_registry(api, owner, brand):
    body = api(owner, brand).get("/tasks/types/").json()
    by_name = {t["name"]: t for t in body}
    assert {"seo_keyword_analysis", "flaky_api_call", "sleep", "noop"} <= set(by_name)
    seo = by_name["seo_keyword_analysis"]
    assert seo["queue"] == "default" and seo["retry_policy"]["max_retries"] == 3
    assert seo["context_schema"]["required"] == ["keyword_ids"]


# --- error format on every kind of error -----------------------------------------------------
def test_method_not_allowed_is_json_405(api, owner, brand):
    task = TaskFactory(brand=brand)
    assert_error(api(owner, brand).delete(f"/tasks/{task.pk}/"), 405, "METHOD_NOT_ALLOWED")


def test_unknown_url_is_json_404(api, owner, brand):
    assert_error(api(owner, brand).get("/nothing-here/"), 404, "NOT_FOUND")


def test_unexpected_error_is_a_500_without_internals(api, owner, brand, monkeypatch):
    from task_core import selectors

    def explode(**kwargs):
        raise RuntimeError("SELECT secret FROM passwords")

    monkeypatch.setattr(selectors, "queue_stats", explode)
    client = api(owner, brand)
    client.raise_request_exception = False
    response = client.get("/tasks/queue-stats/")
    assert_error(response, 500, "INTERNAL_ERROR")
    assert "secret" not in response.content.decode()


def test_error_bodies_are_valid_json_objects(api, brand):
    response = api(None, brand).get("/tasks/")
    assert json.loads(response.content)["error_code"] == "NOT_AUTHENTICATED"


def test_browsable_api_renders_for_a_viewer_with_session_auth(client, user_with_role, brand):
    viewer = user_with_role("viewer")
    client.force_login(viewer)
    TaskFactory(brand=brand)
    response = client.get(f"/tasks/?brand={brand.pk}", HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert b"Task" in response.content


def test_create_costs_a_constant_number_of_queries(
    api, owner, brand, django_capture_on_commit_callbacks
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from task_core.api.serializers import detail_sections

    client = api(owner, brand)
    counts = []
    for size in (1, 500):
        payload = {**SEO, "context_data": {"keyword_ids": list(range(1, size + 1))}}
        cache.clear()  # both requests read the user and the membership (the cold path)
        with (
            CaptureQueriesContext(connection) as ctx,
            django_capture_on_commit_callbacks(execute=True),
        ):
            assert client.post("/tasks/", payload, format="json").status_code == 201
        counts.append(len([q for q in ctx.captured_queries if "SAVEPOINT" not in q["sql"]]))
    # user (JWT), membership, insert task + event; after commit, the brand's fair-share facts
    # (one read: queued counts and limits) and the queued mark: one UPDATE ... RETURNING with
    # its event (+ SET LOCAL synchronous_commit outside a test transaction) = 7, plus one read
    # per detail section other apps add to the response, except metrics (a new task has no
    # attempt yet).
    assert counts[0] == counts[1] <= 7 + len(set(detail_sections) - {"metrics"})

"""services.task_create on PostgreSQL: the fair-share read, then the task, its events and (when
admitted) its queued mark as one statement, its own transaction outside a caller's."""

from unittest import mock

import psycopg
import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from task_core import broker, services
from task_core.models import BrandLimit, Task, TaskEvent
from tests.factories import TaskFactory

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the one-statement create is PostgreSQL's"
)


@pytest.fixture
def sends(monkeypatch):
    sent = []
    monkeypatch.setattr(broker, "send", lambda task, **kw: sent.append((task.pk, kw)))
    return sent


def timeline(task):
    return list(
        TaskEvent.objects.unscoped()
        .filter(task_id=task.pk)
        .order_by("id")
        .values_list("kind", "from_status", "to_status", "actor", "attempt", "data")
    )


@pytest.mark.django_db(transaction=True)
def test_an_admitted_create_is_one_write_statement_and_sent_after_it(brand, owner, sends):
    with CaptureQueriesContext(connection) as ctx:
        task, created = services.task_create(
            brand=brand, user=owner, task_type="noop", description="x"
        )
    statements = [q["sql"].split()[0].upper() for q in ctx.captured_queries]
    assert statements == ["SELECT", "WITH"]  # the fair-share read, the insert: no BEGIN/COMMIT
    # The read admitting it: the queued counts and the limits, not the release's due probes.
    assert "'due'" not in ctx.captured_queries[0]["sql"]
    assert created and sends == [(task.pk, {"confirm": False})]
    row = Task.objects.unscoped().get(pk=task.pk)
    assert row.status == task.status == "queued"
    assert row.queued_at == task.queued_at == row.created_at == row.updated_at
    assert row.available_at is None and row.waiting_reason is None
    assert (row.task_id, row.created_by_id, row.description) == (task.task_id, owner.pk, "x")
    assert timeline(task) == [
        ("created", "pending", "pending", "user:owner", 0, {}),
        ("queued", "pending", "queued", "system:publisher", 0, {}),
    ]


@pytest.mark.django_db(transaction=True)
def test_a_create_over_the_brand_window_waits_pending_and_is_not_sent(
    brand, owner, sends, settings
):
    settings.TASK_BRAND_WINDOW = 1
    TaskFactory(brand=brand, status="queued")
    task, _ = services.task_create(brand=brand, user=owner, task_type="noop")
    row = Task.objects.unscoped().get(pk=task.pk)
    assert (row.status, row.waiting_reason, row.queued_at) == ("pending", "brand_window", None)
    assert row.available_at <= row.created_at  # due at once for the release
    assert [kind for kind, *_ in timeline(task)] == ["created"]
    assert sends == []


@pytest.mark.django_db(transaction=True)
def test_a_create_of_a_brand_with_limits_goes_through_the_release_once_committed(
    brand, owner, sends
):
    BrandLimit.objects.create(brand=brand, task_type="", max_running=5)
    task, _ = services.task_create(brand=brand, user=owner, task_type="noop")
    row = Task.objects.unscoped().get(pk=task.pk)
    assert row.status == "queued" and sends and sends[0][0] == task.pk  # released, published
    assert [kind for kind, *_ in timeline(task)] == ["created", "queued"]


@pytest.mark.django_db(transaction=True)
def test_a_create_inside_a_callers_transaction_is_sent_on_its_commit(brand, owner, sends):
    with transaction.atomic():
        task, _ = services.task_create(brand=brand, user=owner, task_type="noop")
        assert sends == []
    assert sends == [(task.pk, {"confirm": False})]


@pytest.mark.django_db(transaction=True)
def test_an_idempotency_key_race_returns_the_winner(brand, owner, sends, monkeypatch):
    first, _ = services.task_create(
        brand=brand, user=owner, task_type="noop", idempotency_key="k-1"
    )
    # The other request's lookup ran before this one committed: its insert meets the key.
    queryset_class = type(Task.objects.for_brand(brand))
    real_filter, missed = queryset_class.filter, []

    def filter_missing_once(self, *args, **kwargs):
        if kwargs == {"idempotency_key": "k-1"} and not missed:
            missed.append(True)
            return self.none()
        return real_filter(self, *args, **kwargs)

    monkeypatch.setattr(queryset_class, "filter", filter_missing_once)
    twin, created = services.task_create(
        brand=brand, user=owner, task_type="noop", idempotency_key="k-1"
    )
    assert not created and twin.pk == first.pk
    assert missed and Task.objects.unscoped().count() == 1
    assert len(sends) == 1


@pytest.mark.django_db(transaction=True)
def test_the_created_task_answers_its_context_as_a_read_of_it(api, owner, brand, sends):
    context = {"zz_long_key": 1, "a": [1.5, 100.0], "m": {"y": 1, "b": None}}
    client = api(owner, brand)
    created = client.post("/tasks/", {"task_type": "noop", "context_data": context}, format="json")
    read = client.get(f"/tasks/{created.json()['id']}/")
    assert created.status_code == 201 and read.status_code == 200
    as_created, as_read = (r.content.split(b'"context_data":')[1] for r in (created, read))
    assert as_created.split(b',"result_data"')[0] == as_read.split(b',"result_data"')[0]
    assert list(created.json()["context_data"]) == ["a", "m", "zz_long_key"]  # jsonb's order


@pytest.mark.django_db(transaction=True)
def test_the_admission_read_is_the_requests_connection_health_check(brand, owner, sends):
    """A request's first statement on a kept connection: no SELECT 1 round trip before it."""
    connection.ensure_connection()
    connection.health_check_done = False  # as at the start of a request (close_old_connections)
    with mock.patch.object(connection, "is_usable", wraps=connection.is_usable) as checked:
        task, created = services.task_create(brand=brand, user=owner, task_type="noop")
    assert created and task.status == "queued" and not checked.called


@pytest.mark.django_db(transaction=True)
def test_a_create_on_a_connection_the_server_closed_runs_on_a_new_one(brand, owner, sends):
    connection.ensure_connection()
    old_pid = connection.connection.info.backend_pid
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [old_pid])
    connection.health_check_done = False  # a new request on the kept connection
    task, created = services.task_create(brand=brand, user=owner, task_type="noop")
    assert created and Task.objects.unscoped().get(pk=task.pk).status == "queued"
    assert connection.connection.info.backend_pid != old_pid
    assert sends == [(task.pk, {"confirm": False})]

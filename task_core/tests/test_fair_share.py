"""Fair share between brands and per-brand limits, in-process: the release order, the gates
(window, max_running, rate_per_minute), the waiting reasons, /tasks/limits/ and queue-stats."""

from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.db import transaction
from django.utils import timezone

from task_core import fairshare, publishing, services
from task_core.fairshare import BrandGate, release_order
from task_core.models import BrandLimit, Task
from task_core.services import TaskRequest

pytestmark = pytest.mark.django_db(transaction=True)
T0 = timezone.now()


def fake(brand_id, priority="normal", age=0):
    return SimpleNamespace(
        brand_id=brand_id, priority=priority, available_at=T0 - timedelta(seconds=age)
    )


def create_many(brand, n, task_type="noop", priority="normal"):
    with transaction.atomic():
        results = services.task_create_many(
            requests=[TaskRequest(brand=brand, task_type=task_type, priority=priority)] * n,
            actor="test",
        )
    return [task for task, _ in results]


def counts(brand):
    tasks = Task.objects.for_brand(brand)
    return {
        "queued": tasks.filter(status="queued").count(),
        "waiting": tasks.filter(status="pending", waiting_reason__isnull=False).count(),
    }


def reasons(brand):
    return set(
        Task.objects.for_brand(brand)
        .filter(status="pending")
        .values_list("waiting_reason", flat=True)
    )


def finish(brand, n, status="queued"):
    """Stand-in for workers: n of the brand's tasks in `status` complete."""
    pks = Task.objects.for_brand(brand).filter(status=status).values_list("pk", flat=True)[:n]
    Task.objects.unscoped().filter(pk__in=list(pks)).update(status="completed")


# --- release order and gates (no database) -------------------------------------------------------
@pytest.mark.django_db(transaction=False)
def test_release_order_is_round_robin_across_brands_level_by_level():
    a = [fake(1, age=10) for _ in range(4)]
    b = [fake(2, age=5) for _ in range(2)]
    critical = fake(2, "critical")
    low = fake(3, "low", age=99)
    order = release_order([*a, *b, critical, low])
    assert order == [critical, a[0], b[0], a[1], b[1], a[2], a[3], low]


@pytest.mark.django_db(transaction=False)
def test_the_brand_whose_head_waited_longest_goes_first():
    a, b = fake(1, age=1), fake(2, age=30)
    assert release_order([a, b]) == [b, a]


@pytest.mark.django_db(transaction=False)
def test_weights_give_a_brand_that_many_tasks_per_round():
    a = [fake(1, age=10) for _ in range(6)]
    b = [fake(2, age=5) for _ in range(3)]
    order = release_order([*a, *b], {1: 3})
    assert [t.brand_id for t in order] == [1, 1, 1, 2, 1, 1, 1, 2, 2]


@pytest.mark.django_db(transaction=False)
def test_the_window_counts_the_task_level_and_those_above():
    gate = BrandGate(1, window=2, queued={"low": 2})
    assert gate.check(fake(1, "low")) == "brand_window"
    assert gate.admit(fake(1, "critical")) is None
    assert gate.admit(fake(1, "critical")) is None
    assert gate.check(fake(1, "critical")) == "brand_window"  # two critical queued now
    assert gate.queued == {"low": 2, "critical": 2}


# --- publish on commit and release ---------------------------------------------------------------
def test_a_backlog_waits_beyond_the_window_and_another_brand_is_not_behind_it(
    brand, other_brand, settings
):
    settings.TASK_BRAND_WINDOW = 5
    create_many(brand, 30)
    assert counts(brand) == {"queued": 5, "waiting": 25}
    assert reasons(brand) == {"brand_window"}
    waiting = Task.objects.for_brand(brand).filter(status="pending")
    assert not waiting.filter(available_at__gt=timezone.now()).exists()  # due: releasable
    other, _ = services.task_create(brand=other_brand, task_type="noop")
    other.refresh_from_db()
    assert other.status == "queued" and other.waiting_reason is None


def test_a_finish_refills_the_window_and_a_release_clears_the_reason(brand, settings):
    settings.TASK_BRAND_WINDOW = 8
    create_many(brand, 20)
    assert fairshare.brand_refill(brand_id=brand.pk) == 0  # window full: nothing to do
    finish(brand, 4)
    assert fairshare.brand_refill(brand_id=brand.pk) == 4
    assert counts(brand) == {"queued": 8, "waiting": 8}
    released = Task.objects.for_brand(brand).filter(status="queued").order_by("-queued_at")[0]
    assert released.waiting_reason is None
    assert released.events.filter(kind="queued", actor="system:refill").exists()


def test_refill_waits_for_a_batch_of_room(brand, settings):
    settings.TASK_BRAND_WINDOW = 8  # batch: 8 // 2 = 4
    create_many(brand, 12)
    finish(brand, 3)
    assert fairshare.brand_refill(brand_id=brand.pk) == 0
    finish(brand, 1)
    assert fairshare.brand_refill(brand_id=brand.pk) == 4


def test_a_critical_task_is_not_held_behind_the_brand_s_low_backlog(brand, settings):
    settings.TASK_BRAND_WINDOW = 3
    create_many(brand, 10, priority="low")
    critical, _ = services.task_create(brand=brand, task_type="noop", priority="critical")
    critical.refresh_from_db()
    assert critical.status == "queued"


def test_the_release_loop_shares_the_batch_between_brands(brand, other_brand, settings):
    settings.TASK_BRAND_WINDOW = 4
    create_many(brand, 40)
    create_many(other_brand, 40)
    finish(brand, 4)
    finish(other_brand, 4)
    assert publishing.tasks_release_due(limit=6) == 6
    assert counts(brand)["queued"] == 3 and counts(other_brand)["queued"] == 3


def test_release_skips_brands_another_releaser_holds(brand, settings):
    from django.db import connection, connections

    if connection.vendor != "postgresql":
        pytest.skip("advisory locks need PostgreSQL (make test)")
    settings.TASK_BRAND_WINDOW = 2
    create_many(brand, 6)
    finish(brand, 2)
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s, %s)", [fairshare.LOCK_NAMESPACE, brand.pk])
            assert publishing.tasks_release_due() == 0
            cursor.execute(
                "SELECT pg_advisory_unlock(%s, %s)", [fairshare.LOCK_NAMESPACE, brand.pk]
            )
    finally:
        other.close()
    assert publishing.tasks_release_due() == 2


def test_fair_share_off_publishes_everything(brand, settings):
    settings.TASK_FAIR_SHARE = False
    settings.TASK_BRAND_WINDOW = 2
    create_many(brand, 10)
    assert counts(brand) == {"queued": 10, "waiting": 0}


# --- limits ------------------------------------------------------------------------------------
def test_max_running_counts_queued_and_running(brand, settings):
    BrandLimit.objects.create(brand=brand, max_running=2)
    create_many(brand, 5)
    assert counts(brand) == {"queued": 2, "waiting": 3}
    assert reasons(brand) == {"brand_concurrency"}
    Task.objects.for_brand(brand).filter(status="queued").update(status="running")
    assert publishing.tasks_release_due() == 0
    finish(brand, 1, status="running")
    assert fairshare.brand_refill(brand_id=brand.pk) == 1
    assert Task.objects.for_brand(brand).filter(status__in=["queued", "running"]).count() == 2


def test_rate_quota_holds_over_a_sliding_minute(brand):
    limit = BrandLimit.objects.create(brand=brand, rate_per_minute=3)
    create_many(brand, 5)
    assert counts(brand) == {"queued": 3, "waiting": 2}
    assert reasons(brand) == {"brand_rate"}
    finish(brand, 3)
    assert publishing.tasks_release_due() == 0  # finishing frees nothing: publishes count
    limit.refresh_from_db()
    assert sum(limit.recent_publishes.values()) == 3
    limit.recent_publishes = {str(int(k) - 61): n for k, n in limit.recent_publishes.items()}
    limit.save()
    assert publishing.tasks_release_due() == 2


def test_a_type_limit_holds_its_type_only(brand):
    BrandLimit.objects.create(brand=brand, task_type="sleep", max_running=1)
    create_many(brand, 3, task_type="sleep")
    create_many(brand, 2, task_type="noop")
    queued = Task.objects.for_brand(brand).filter(status="queued")
    assert sorted(queued.values_list("task_type", flat=True)) == ["noop", "noop", "sleep"]
    assert reasons(brand) == {"type_concurrency"}


def test_weight_widens_the_brand_s_window(brand, settings):
    settings.TASK_BRAND_WINDOW = 2
    BrandLimit.objects.create(brand=brand, weight=3)
    create_many(brand, 10)
    assert counts(brand) == {"queued": 6, "waiting": 4}


def test_removing_a_limit_lets_the_waiting_work_go(brand, settings):
    settings.TASK_BRAND_WINDOW = 20
    limit = BrandLimit.objects.create(brand=brand, max_running=1)
    create_many(brand, 4)
    limit.delete()
    assert publishing.tasks_release_due() == 3


# --- API -----------------------------------------------------------------------------------------
URL = "/tasks/limits/"


def test_admin_manages_limits_and_viewer_reads_them(api, owner, brand, user_with_role):
    client = api(owner, brand)
    made = client.post(URL, {"max_running": 2, "rate_per_minute": 60, "weight": 2}, format="json")
    assert made.status_code == 201, made.json()
    body = made.json()
    assert body["task_type"] == "" and body["max_running"] == 2 and body["weight"] == 2
    typed = client.post(URL, {"task_type": "sleep", "max_running": 1}, format="json")
    assert typed.status_code == 201
    changed = client.patch(f"{URL}{body['id']}/", {"max_running": 3}, format="json")
    assert changed.status_code == 200 and changed.json()["max_running"] == 3
    viewer = api(user_with_role("viewer"), brand)
    assert len(viewer.get(URL).json()) == 2
    denied = viewer.post(URL, {"task_type": "noop", "max_running": 1}, format="json")
    assert denied.status_code == 403
    assert client.delete(f"{URL}{typed.json()['id']}/").status_code == 204
    assert BrandLimit.objects.for_brand(brand).count() == 1


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"max_running": 0}, "max_running"),
        ({"max_running": -1}, "max_running"),
        ({"max_running": "abc"}, "max_running"),
        ({"max_running": 1.5}, "max_running"),
        ({"max_running": 10_001}, "max_running"),
        ({"rate_per_minute": 0}, "rate_per_minute"),
        ({"rate_per_minute": "1e3"}, "rate_per_minute"),
        ({"weight": 0}, "weight"),
        ({"weight": 101}, "weight"),
        ({"task_type": "no_such_type"}, "task_type"),
        ({"task_type": "noop", "weight": 2}, "weight"),
        ({"recent_publishes": {}}, "recent_publishes"),
        ({"brand": 1}, "brand"),
    ],
)
def test_bad_limit_input_is_a_400(api, owner, brand, payload, field):
    response = api(owner, brand).post(URL, payload, format="json")
    assert response.status_code == 400, response.json()
    assert field in response.json()["field_errors"]
    assert not BrandLimit.objects.for_brand(brand).exists()


def test_a_second_limit_for_the_same_type_is_a_409(api, owner, brand):
    client = api(owner, brand)
    assert (
        client.post(URL, {"task_type": "noop", "max_running": 1}, format="json").status_code == 201
    )
    again = client.post(URL, {"task_type": "noop", "max_running": 5}, format="json")
    assert again.status_code == 409 and again.json()["error_code"] == "LIMIT_EXISTS"
    assert BrandLimit.objects.for_brand(brand).get().max_running == 1


def test_a_bad_patch_changes_nothing(api, owner, brand):
    limit = BrandLimit.objects.create(brand=brand, max_running=4)
    response = api(owner, brand).patch(f"{URL}{limit.pk}/", {"max_running": 0}, format="json")
    assert response.status_code == 400
    limit.refresh_from_db()
    assert limit.max_running == 4


def test_cross_brand_limits(api, owner, outsider, member, brand, other_brand):
    mine = BrandLimit.objects.create(brand=brand, max_running=4)
    theirs = BrandLimit.objects.create(brand=other_brand, max_running=7)
    outsider_client = api(outsider, other_brand)
    assert [r["id"] for r in outsider_client.get(URL).json()] == [theirs.pk]
    for method, data in (("get", None), ("patch", {"max_running": 1}), ("delete", None)):
        response = getattr(outsider_client, method)(f"{URL}{mine.pk}/", data, format="json")
        assert response.status_code == 404, (method, response.json())
        assert response.json()["error_code"] == "LIMIT_NOT_FOUND"
    assert api(outsider, brand).get(URL).json()["error_code"] == "BRAND_FORBIDDEN"
    # A member of both brands, naming one brand, cannot reach the other's limit (operator
    # reads; writes need the admin role).
    assert api(member, other_brand).get(f"{URL}{mine.pk}/").status_code == 404
    assert (
        api(member, brand).patch(f"{URL}{mine.pk}/", {"max_running": 1}, format="json").status_code
        == 403
    )
    mine.refresh_from_db()
    assert mine.max_running == 4 and BrandLimit.objects.for_brand(brand).count() == 1
    assert api(owner, brand, brand_header="abc").get(URL).json()["error_code"] == "BRAND_REQUIRED"


def test_waiting_work_shows_in_the_task_api_and_queue_stats(api, owner, brand, settings):
    settings.TASK_BRAND_WINDOW = 2
    BrandLimit.objects.create(brand=brand, task_type="noop", rate_per_minute=100)
    create_many(brand, 5)
    client = api(owner, brand)
    waiting = Task.objects.for_brand(brand).filter(status="pending").first()
    assert client.get(f"/tasks/{waiting.pk}/").json()["waiting_reason"] == "brand_window"
    rows = client.get("/tasks/?status=pending").json()["results"]
    assert {r["waiting_reason"] for r in rows} == {"brand_window"}
    share = client.get("/tasks/queue-stats/").json()["brand_share"]
    assert share["window"] == 2 and share["waiting"] == 3 and share["released"] == 2
    assert share["waiting_by_reason"] == {"brand_window": 3}
    assert share["running"] == 0
    assert share["limits"][0]["task_type"] == "noop"
    # Read-only: a client cannot set it.
    created = client.post("/tasks/", {"task_type": "noop", "waiting_reason": None}, format="json")
    assert created.status_code == 400


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"task_type": "no_such_type"}, "task_type", "Unknown task type 'no_such_type'"),
        ({"task_type": "noop", "weight": 2}, "weight", "set it on the brand-wide limit"),
    ],
)
def test_the_admin_form_applies_the_limits_service_rules(brand, data, field, message):
    from task_core.admin import BrandLimitForm

    form = BrandLimitForm(data={"brand": brand.pk, "weight": 1, **data})
    assert not form.is_valid()
    assert message in form.errors[field][0]
    assert BrandLimitForm(data={"brand": brand.pk, "task_type": "noop", "weight": 1}).is_valid()


def test_the_outcome_statement_notifies_the_releaser_only_with_due_work(
    transactional_db, brand, settings, monkeypatch
):
    """A finish wakes the releaser (pg_notify in the outcome statement, delivered at its
    commit) when the brand has due waiting work, and not otherwise."""
    from django.db import connection

    from task_core import broker, execution
    from task_core.releaser import RELEASE_CHANNEL

    if connection.vendor != "postgresql":
        pytest.skip("LISTEN/NOTIFY needs PostgreSQL (runs in make test, not on SQLite)")
    monkeypatch.setattr(broker, "send", lambda task, **kw: None)
    settings.TASK_BRAND_WINDOW = 1
    first, _ = services.task_create(brand=brand, task_type="noop")
    second, _ = services.task_create(brand=brand, task_type="noop")  # waits: window of 1
    raw = connection.connection
    with connection.cursor() as cursor:
        cursor.execute(f"LISTEN {RELEASE_CHANNEL}")
    try:
        execution.task_execute_attempt(task_pk=first.pk, worker="w")
        assert [n.payload for n in raw.notifies(timeout=1)] == [str(brand.pk)]
        Task.objects.unscoped().filter(pk=second.pk).update(status="cancelled")
        third, _ = services.task_create(brand=brand, task_type="noop")
        execution.task_execute_attempt(task_pk=third.pk, worker="w")
        assert [n.payload for n in raw.notifies(timeout=0.3)] == []
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"UNLISTEN {RELEASE_CHANNEL}")


def test_the_releaser_runs_only_on_a_system_worker_over_postgresql(db, settings):
    """ReleaserStep starts the releaser thread in a worker consuming the system queue when the
    database has LISTEN/NOTIFY (PostgreSQL); on SQLite (make run's embedded default) the release
    loop refills and no thread would retry LISTEN forever; a brand-only worker never runs it."""
    from types import SimpleNamespace

    from django.db import connection

    from megahub.celery import ReleaserStep

    def worker(queues):
        consume_from = {f"{settings.CELERY_QUEUE_PREFIX}{q}": None for q in queues}
        return SimpleNamespace(app=SimpleNamespace(amqp=SimpleNamespace(
            queues=SimpleNamespace(consume_from=consume_from))))  # fmt: skip

    brand_only = ReleaserStep(SimpleNamespace())
    brand_only.start(worker(["default", "long"]))
    assert brand_only.releaser is None
    step = ReleaserStep(SimpleNamespace())
    step.start(worker(["system"]))
    thread = step.releaser
    try:
        assert (thread is not None) == (connection.vendor == "postgresql")
    finally:
        step.stop(worker(["system"]))
    assert step.releaser is None
    if thread is not None:  # its session gone before the test database is dropped
        thread.join(10)
        assert not thread.is_alive()


def test_refill_reports_how_short_of_a_batch_each_window_is(brand, settings, monkeypatch):
    """refill tells the releaser by how many tasks a brand's window lacks room for a batch (it
    checks that brand again only after about that many finishes)."""
    from task_core import broker

    monkeypatch.setattr(broker, "send", lambda task, **kw: None)
    monkeypatch.setattr(broker, "send_many", lambda tasks: len(tasks))
    settings.TASK_BRAND_WINDOW = 10  # a batch: 5
    create_many(brand, 14)  # 10 queued on commit, 4 wait
    queued = Task.objects.for_brand(brand).filter(status="queued").order_by("id")
    Task.objects.unscoped().filter(pk__in=list(queued.values_list("pk", flat=True)[:2])).update(
        status="completed"
    )
    short = {}
    assert fairshare.refill([brand.pk], actor="test", short=short) == 0
    assert short == {brand.pk: 3}  # room for 2, a batch is 5
    Task.objects.unscoped().filter(pk__in=list(queued.values_list("pk", flat=True)[:3])).update(
        status="completed"
    )
    short = {}
    assert fairshare.refill([brand.pk], actor="test", short=short) == 4
    assert short == {}


def test_the_releaser_waits_for_the_finishes_a_short_window_lacks(monkeypatch):
    """A brand short of room by n is refilled again once n - SHORT_SLACK of its tasks have
    finished, or SHORT_WAIT_SECONDS after its last refill; another brand at its first finish."""
    from task_core import releaser as rel

    clock = [100.0]
    monkeypatch.setattr(rel.time, "monotonic", lambda: clock[0])
    thread = rel.Releaser()
    thread.short = {1: (5, 100.0)}
    assert thread._ready([1, 2]) == {2}
    assert thread._ready([1]) == set()
    assert thread._ready([1]) == {1}  # 5 - 3 finishes: SHORT_SLACK left
    thread.short = {1: (9, 100.0)}
    assert thread._timeout() == pytest.approx(rel.SHORT_WAIT_SECONDS)
    clock[0] += rel.SHORT_WAIT_SECONDS + 0.001
    assert thread._ready([]) == {1}

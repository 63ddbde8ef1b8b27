"""The security suite's world: one object of every kind in the caller's brand and in another
brand, the other brand's text marked so that a leak shows in any response body."""

import base64
import json
from dataclasses import dataclass
from datetime import timedelta

import pytest
from _pytest.mark.expression import Expression
from django.core import signals
from django.db import close_old_connections, transaction
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from megahub import webhooks
from task_core import services as core_services
from task_core.models import BrandLimit, Task, Webhook
from task_monitoring import services as monitoring
from task_monitoring.models import Alert
from task_monitoring.tests.factories import AlertRuleFactory, MetricFactory, WorkerFactory
from task_persistence.models import Checkpoint
from task_persistence.tests.helpers import make_job
from task_scheduling import services as scheduling
from task_scheduling.models import PeriodicSchedule
from tests.factories import BrandFactory, MembershipFactory, TaskFactory, UserFactory
from tests.security.operations import CALLS, Op, body_for, call_for

LEAK = "FOREIGN-LEAK"
PUBLIC_ADDRESS = "93.184.215.14"  # a global unicast address (once example.com's)


def _objects(brand, mark: str) -> dict:
    task = TaskFactory(
        brand=brand, status="queued", description=f"{mark} task", context_data={"k": mark}
    )
    failed = TaskFactory(brand=brand, status="failed", description=f"{mark} failed", attempts=1)
    rule = AlertRuleFactory(brand=brand, threshold=0, name=f"{mark} rule")
    monitoring.alert_rule_evaluate(rule=rule)  # the queued task makes it fire
    job = make_job(brand, description=f"{mark} job")
    paused = make_job(brand, description=f"{mark} paused job", status="paused", last_sequence=1)
    schedule = scheduling.schedule_create(
        brand=brand, name=f"{mark} schedule", task_type="noop", cron_expression="0 3 * * *"
    )
    scheduling.schedule_run_now(schedule=schedule)
    # Due now (no dispatcher runs in these tests): listed by ready-for-execution.
    PeriodicSchedule.objects.unscoped().filter(pk=schedule.pk).update(
        next_run_at=timezone.now() - timedelta(minutes=1)
    )
    paused_schedule = scheduling.schedule_create(
        brand=brand, name=f"{mark} paused", task_type="noop", cron_expression="0 4 * * *",
        enabled=False,
    )  # fmt: skip
    return {
        "brand_event": core_services.brand_event_create(
            brand=brand,
            user=None,
            solution="shop",
            model="order",
            action="created",
            event_data={"customer": f"{mark} customer"},
        ),
        "task": task,
        "failed_task": failed,
        "brand_limit": BrandLimit.objects.create(brand=brand, max_running=50, rate_per_minute=600),
        "webhook": Webhook.objects.create(
            brand=brand, url="https://hooks.example.com/h", event_types=["*"], description=mark
        ),
        "metric": MetricFactory(task__brand=brand, task__description=f"{mark} measured"),
        "alert_rule": rule,
        "alert": Alert.objects.unscoped().get(rule=rule),
        "job": job,
        "paused_job": paused,
        "checkpoint": Checkpoint.objects.unscoped().filter(job=paused).first(),
        "schedule": schedule,
        "paused_schedule": paused_schedule,
        "calendar": scheduling.calendar_create(brand=brand, name=f"{mark} calendar"),
        "cron_job": scheduling.cron_job_create(
            brand=brand,
            task_type="noop",
            name=f"{mark} once",
            run_at=timezone.now() + timedelta(days=1),
        ),
    }


@dataclass
class World:
    brand: object
    other_brand: object
    owner: object  # admin of `brand` only
    users: dict  # role -> a user with that role in `brand` only
    own: dict
    foreign: dict

    def foreign_ids(self, kind: str) -> set[int]:
        model = type(self.foreign[kind])
        return set(model.objects.filter(brand=self.other_brand).values_list("pk", flat=True))

    def leak_markers(self) -> list[str]:
        """Strings of the other brand that no response to the caller may contain."""
        return [
            LEAK,
            *Task.objects.filter(brand=self.other_brand).values_list("task_id", flat=True),
        ]


@pytest.fixture(scope="module")
def _world(django_db_setup, django_db_blocker):
    """Built once per module inside a transaction that is rolled back at the end; each test
    runs in a savepoint inside it (pytest-django's ``db``), so writes never leak between tests."""
    with django_db_blocker.unblock():
        outer = transaction.atomic()
        outer.__enter__()
        try:
            brand = BrandFactory(name="Humari", slug="sec-humari")
            other_brand = BrandFactory(name="Acme", slug="sec-acme")
            owner = UserFactory(username="sec-owner")
            MembershipFactory(user=owner, brand=brand, role="admin")
            outsider = UserFactory(username="sec-outsider")
            MembershipFactory(user=outsider, brand=other_brand, role="admin")
            users = {"admin": owner}
            for role in ("viewer", "operator"):
                users[role] = UserFactory(username=f"sec-{role}")
                MembershipFactory(user=users[role], brand=brand, role=role)
            own, foreign = _objects(brand, "own"), _objects(other_brand, LEAK)
            own["worker"] = foreign["worker"] = WorkerFactory()
            yield World(brand, other_brand, owner, users, own, foreign)
        finally:
            transaction.set_rollback(True)
            outer.__exit__(None, None, None)


@pytest.fixture
def world(_world, db):
    return _world


# --- credentials -------------------------------------------------------------------------------
def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def expired_token(user) -> str:
    token = AccessToken.for_user(user)
    token.set_exp(lifetime=-timedelta(seconds=1))
    return str(token)


def tampered_token(user) -> str:
    header, payload, signature = str(AccessToken.for_user(user)).split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return f"{header}.{payload}.{flipped}"


def alg_none_token(user) -> str:
    payload = dict(AccessToken.for_user(user).payload)
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(payload)}."


def client_for(token: str | None, brand_header: str | None) -> APIClient:
    client = APIClient()
    headers = {}
    if token is not None:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    if brand_header is not None:
        headers["HTTP_X_BRAND_ID"] = brand_header
    client.credentials(**headers)
    return client


def send(client: APIClient, op: Op, world: World, pk: int | None, body=None):
    """Call the operation as the registry says (body and query), with ``pk`` in the path."""
    call = call_for(op)
    if body is None:
        body = body_for(op, world)
    url = op.url(pk)
    if op.method in ("GET", "DELETE"):
        return getattr(client, op.method.lower())(url, call.query)
    return getattr(client, op.method.lower())(url, body or {}, format="json")


def own_pk(op: Op, world: World) -> int | None:
    kind = call_for(op).kind
    return world.own[kind].pk if op.has_id else None


def foreign_pk(op: Op, world: World) -> int | None:
    kind = call_for(op).kind
    return world.foreign[kind].pk if op.has_id else None


def pytest_ignore_collect(collection_path, config):
    """The schemathesis modules (every test in them marked ``schemathesis``) are not even
    collected when ``-m`` leaves that marker out (make test-fast): collecting them builds every
    operation's coverage cases, seconds of work per pytest process for tests then deselected."""
    if not collection_path.name.startswith("test_schemathesis"):
        return None
    markexpr = config.getoption("markexpr")
    if not markexpr:
        return None
    selected = Expression.compile(markexpr).evaluate(
        lambda name, **kwargs: name == "schemathesis" and not kwargs
    )
    return True if not selected else None


def pytest_collection_modifyitems(items):
    # schemathesis names each operation's item "test[GET /path]", but with pytest 9 the node id
    # keeps only the function's name; pytest-xdist schedules by node id, so make them unique.
    from schemathesis.pytest.plugin import SchemathesisFunction

    for item in items:
        if isinstance(item, SchemathesisFunction) and not item.nodeid.endswith("]"):
            item._id = item.parent.id.child(item.name)


@pytest.fixture
def in_test_transaction():
    """The WSGI handler closes "obsolete" connections around each request, which would end
    the test's transaction; Django's own test client disconnects the same receivers."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def public_dns(monkeypatch):
    """Every host name resolves, at once, to one public address. The property-based tests
    generate hundreds of random webhook hosts: asking the real resolver costs ~50 ms each and
    answers differently on different networks. What a save does with the addresses a name
    resolves to has its own tests (tests/test_webhook_url_policy.py)."""
    monkeypatch.setattr(webhooks, "_resolve", lambda host, port: [PUBLIC_ADDRESS])


@pytest.fixture
def unthrottled(settings):
    settings.THROTTLE_USER_RATE = "1000000/minute"
    settings.THROTTLE_ANON_RATE = "1000000/minute"


def call_case_as_owner(case, world, checks, *, fill_id: bool = True) -> None:
    """Send a schemathesis case as the brand's admin, ``{id}`` (when ``fill_id``) set to the
    brand's own object of the operation's kind, and run ``checks`` on the answer."""
    headers = {
        "Authorization": f"Bearer {AccessToken.for_user(world.owner)}",
        "X-Brand-ID": str(world.brand.pk),
    }
    kind = CALLS[f"{case.operation.method.upper()} {case.operation.path}"].kind
    if fill_id and "id" in (case.path_parameters or {}) and kind:
        case.path_parameters["id"] = world.own[kind].pk
    case.call_and_validate(headers=headers, checks=checks)

"""Connections cut under running processes: a worker's PostgreSQL backend terminated mid-task,
a worker's broker connection cut, the web process's database unreachable.

Nothing here stops a shared service: each fault is aimed at one process's own connections
(pg_terminate_backend on its backends, a TCP relay between it and the service)."""

import threading
import time
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests
from django.conf import settings
from django.db import connection
from rest_framework_simplejwt.tokens import AccessToken

from task_core.models import Task
from tests.integration.conftest import free_port, wait_for
from tests.integration.effect_types import create_effect_tasks, effects
from tests.integration.test_worker import kinds, status_of, wait_status

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


def terminate_backends(application_name: str) -> int:
    """Terminate every PostgreSQL backend of this database opened under `application_name`."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %s"
            " AND pid <> pg_backend_pid()",
            [application_name],
        )
        return cursor.fetchone()[0]


# --- PostgreSQL connection killed under a running task --------------------------------------
@pytest.mark.parametrize(
    ("poll", "conn_max_age"),
    [("progress", "60"), ("check_cancelled", "0")],
    ids=["killed-in-a-transaction", "killed-between-reads"],
)
def test_worker_database_connection_killed_mid_task_retries_and_completes_once(
    brand, effect_worker, start_process, effect_log, poll, conn_max_age
):
    # libpq names every connection of the worker (main process and pool child) after it.
    app_name = f"megahub-worker-{poll}"
    effect_worker(concurrency=1, env={"PGAPPNAME": app_name, "DB_CONN_MAX_AGE": conn_max_age})
    start_process("beat")
    (task,) = create_effect_tasks(brand, 1, seconds=4, poll=poll)
    wait_for(lambda: status_of(task.pk) == "running", 30, message="the task to start")
    time.sleep(1)  # well inside the handler
    assert terminate_backends(app_name) >= 1
    task = wait_status(task.pk, "completed", timeout=60)
    assert effects(effect_log) == {task.pk: 1}  # the killed attempt never reached its effect
    timeline = kinds(task)
    assert timeline.count("completed") == 1 and timeline.count("started") == task.attempts
    assert task.attempts == 2, timeline  # the killed attempt is retried, not lost
    assert "OperationalError" in task.events.get(kind="retry_scheduled").message
    # Its connections killed again while it idles: the next task still runs at once.
    terminate_backends(app_name)
    (after,) = create_effect_tasks(brand, 1, seconds=0.2)
    after = wait_status(after.pk, "completed", timeout=30)
    assert after.attempts == 1
    assert effects(effect_log) == {task.pk: 1, after.pk: 1}
    assert not Task.objects.unscoped().filter(status="running").exists()


def through(url: str, port: int) -> str:
    """`url` with its host and port replaced by the loopback relay's."""
    parts = urlsplit(url)
    auth = parts.netloc.rpartition("@")[0]
    return urlunsplit(
        parts._replace(netloc=f"{auth}@127.0.0.1:{port}" if auth else f"127.0.0.1:{port}")
    )


# --- one worker's broker connection cut ------------------------------------------------------
@pytest.mark.parametrize("outage_s", [0, 5], ids=["reset", "unreachable-5s"])
def test_worker_reconnects_after_its_broker_connection_is_cut(
    brand, effect_worker, effect_log, tcp_proxy, outage_s
):
    proxy = tcp_proxy(urlsplit(settings.CELERY_BROKER_URL).port or 5672)
    # No beat: no sweeper or release loop can rescue anything; only the broker's redelivery of
    # the messages still unacknowledged (prefetched, not yet taken) can.
    worker = effect_worker(
        concurrency=2, env={"CELERY_BROKER_URL": through(settings.CELERY_BROKER_URL, proxy.port)}
    )
    before = create_effect_tasks(brand, 4, seconds=3)
    wait_for(lambda: Task.objects.unscoped().filter(status="running").count() == 2, 30,
             message="2 running tasks")  # fmt: skip
    time.sleep(0.5)
    connections_before = len(proxy.connected)
    if outage_s:  # the broker out of this worker's reach for outage_s (connections refused)
        proxy.cut()
        time.sleep(outage_s)
        restored_at = time.monotonic()
        proxy.restore()
    else:  # a reset connection (as `rabbitmqctl close_connection` does); the path stays open
        restored_at = time.monotonic()
        proxy.cut(refuse_new=False)
    wait_for(lambda: len(proxy.connected) > connections_before, 30,
             message="the worker to reconnect")  # fmt: skip
    reconnect_s = proxy.connected[connections_before] - restored_at
    print(f"worker reconnected {reconnect_s:.2f}s after the broker was reachable again")
    # docs/execution.md (Connection faults): at once after a reset; within one retry interval
    # (2 s, then 4 s, 6 s... up to 30 s) after an outage.
    assert reconnect_s < (1 if outage_s == 0 else 5)
    after = create_effect_tasks(brand, 2, seconds=0.2)  # published after the cut
    tasks = before + after
    wait_for(lambda: Task.objects.unscoped().filter(status="completed").count() == len(tasks), 60,
             message="every task completed")  # fmt: skip
    assert effects(effect_log) == {task.pk: 1 for task in tasks}
    for task in Task.objects.unscoped().all():
        assert task.attempts == 1 and kinds(task).count("started") == 1, kinds(task)
    # The running tasks' messages were acknowledged when taken: none came back to be ignored.
    assert "duplicate or stale delivery ignored" not in worker.output()


# --- the web process's database unreachable --------------------------------------------------
def test_web_answers_503_while_its_database_is_unreachable_and_recovers(
    brand, owner, start_process, tcp_proxy
):
    db = connection.settings_dict
    proxy = tcp_proxy(int(db["PORT"] or 5432))
    port = free_port()
    start_process("web", concurrency=2, env={
        "PORT": str(port),
        "DATABASE_URL": f"postgres://{db['USER']}@127.0.0.1:{proxy.port}/{db['NAME']}",
        "DB_CONN_MAX_AGE": "60",  # the production default: connections are kept and health-checked
        "DB_CONNECT_TIMEOUT": "2",
        "SECURE_SSL_REDIRECT": "0",  # plain http on loopback
    })  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    http = requests.Session()
    http.headers.update({"Authorization": f"Bearer {AccessToken.for_user(owner)}",
                         "X-Brand-ID": str(brand.pk)})  # fmt: skip

    def create(n):
        return http.post(f"{base}/tasks/", json={"task_type": "noop", "description": f"req-{n}"},
                         timeout=10)  # fmt: skip

    start_process("worker")  # worker and beat reach PostgreSQL directly
    start_process("beat")
    assert create(0).status_code == 201
    assert http.get(f"{base}/tasks/", timeout=10).status_code == 200
    # Clients keep creating tasks while the database goes away and comes back.
    answers: dict[int, requests.Response] = {}
    stop = threading.Event()

    def client_loop():
        n = 1
        while not stop.is_set() and n < 2000:
            answers[n] = create(n)
            n += 1
            time.sleep(0.02)

    client = threading.Thread(target=client_loop, daemon=True)
    client.start()
    time.sleep(1)
    proxy.cut()
    try:
        time.sleep(1)
        for response in (create("during"), http.get(f"{base}/tasks/", timeout=10)):
            assert response.status_code == 503, response.text
            body = response.json()
            assert body == {"detail": "The database is unavailable; retry shortly.",
                            "error_code": "DATABASE_UNAVAILABLE", "field_errors": {}}  # fmt: skip
            assert response.headers["Retry-After"] == "5"
            assert "Traceback" not in response.text and "psycopg" not in response.text
        ready = http.get(f"{base}/health/ready/", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"]["status"] == "fail"
        time.sleep(1)
    finally:
        proxy.restore()
    wait_for(lambda: http.get(f"{base}/tasks/", timeout=10).status_code == 200, 15,
             message="the web process to serve again")  # fmt: skip
    recovered = create("after")
    assert recovered.status_code == 201, recovered.text
    ready = http.get(f"{base}/health/ready/", timeout=10)
    assert ready.json()["checks"]["database"]["status"] == "ok"
    time.sleep(1)
    stop.set()
    client.join(15)
    codes = [r.status_code for r in answers.values()]
    assert 201 in codes and 503 in codes, codes
    assert set(codes) <= {201, 503}, codes  # never a 500
    # No half-written task: every task that exists is whole and runs once; every 201 names
    # one of them; the request refused while the database was away left nothing behind, and
    # of those refused at the cut, at most the one cut after its commit exists.
    created = {r.json()["id"] for r in answers.values() if r.status_code == 201}
    created |= {recovered.json()["id"]}
    tasks = {t.pk: t for t in Task.objects.unscoped().all()}
    assert created <= set(tasks)
    assert "req-during" not in {t.description for t in tasks.values()}
    refused = {f"req-{n}" for n, r in answers.items() if r.status_code == 503}
    committed_anyway = [t for t in tasks.values() if t.description in refused]
    assert len(committed_anyway) <= 1, committed_anyway
    wait_for(lambda: Task.objects.unscoped().filter(status="completed").count() == len(tasks), 60,
             message="every task to complete")  # fmt: skip
    for task in Task.objects.unscoped().all():
        timeline = kinds(task)
        assert timeline[0] == "created" and timeline.count("created") == 1, timeline
        assert timeline.count("started") == 1 and timeline[-1] == "completed", timeline

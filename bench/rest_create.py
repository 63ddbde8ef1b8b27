"""REST create: POST /tasks/ (a `noop` task) vs the peer and the floor, through gunicorn.

The peer (bench/peers.py, POST /bench/peer/tasks/) is what a Django team would write: a DRF
ModelSerializer create with the same JWT authentication and brand-membership rule, publishing
its Celery task with delay_on_commit. The floor (bench/urls.py, POST /bench/noop/) is a
BrandScopedViewSet action that returns {}: the same DRF stack, JWT authentication, throttles
and HasBrandRole permission (brand header + membership lookup + action_roles) as POST /tasks/,
and nothing else.

No worker drains the created tasks, so the brand's fair-share window (TASK_BRAND_WINDOW, 20)
would be full after 20 creates and every later create would wait in the database, never
publishing, while the peer publishes every time. The server runs with a window no run fills
(BENCH_WINDOW), so each create does what an idle brand's create does: admitted, published.
Each run (endpoint x repetition) starts from empty task tables and queues (reset()): what
piles up during a run (a few hundred queued tasks) is what the admission read counts.

Load: gunicorn (megahub.wsgi, 2 sync workers, bench.settings) on 127.0.0.1, driven by a
closed-loop client (threads, one http.client connection per request since gunicorn's sync
workers close connections). Two phases, alternating the endpoints within every repetition:
  - latency: 1 client thread (unloaded p50/p95, the target compares p50s);
  - throughput: --concurrency client threads, enough to keep both gunicorn workers busy.
In-process (Django test client + CaptureQueriesContext): SQL queries and database
transactions per request, for create, the no-op and the list (10 vs 50 rows: constant).
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common

DB = "megahub_bench"
TARGET_P50_RATIO = 1.0  # p50 <= the peer's
TARGET_THROUGHPUT_RATIO = 1.0  # throughput (4 clients) >= the peer's
BENCH_WINDOW = "100000000"
ENDPOINTS = {"create": "/tasks/", "peer": "/bench/peer/tasks/", "noop": "/bench/noop/"}
BODY = json.dumps({"task_type": "noop"}).encode()


def setup_fixtures() -> dict:
    """The brand, an operator member, a long-lived JWT and 120 existing tasks."""
    from django.contrib.auth import get_user_model
    from rest_framework_simplejwt.tokens import AccessToken

    from task_core import services
    from task_core.models import Task

    brand, _ = services.brand_create(name="Bench REST", slug="bench-rest")
    user, _ = get_user_model().objects.get_or_create(username="bench-operator")
    services.membership_grant(user=user, brand=brand, role="operator")
    if Task.objects.for_brand(brand).count() < 120:
        Task.objects.bulk_create(
            Task(brand=brand, created_by=user, task_type="noop", status="completed")
            for _ in range(120)
        )
    return {"brand_id": brand.pk, "token": str(AccessToken.for_user(user))}


def count_queries(fixtures: dict) -> dict:
    """SQL statements and transactions per request, measured in-process."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=f"Bearer {fixtures['token']}",
        HTTP_X_BRAND_ID=str(fixtures["brand_id"]),
    )
    calls = {
        "create": lambda: client.post("/tasks/", {"task_type": "noop"}, format="json"),
        "peer": lambda: client.post("/bench/peer/tasks/", {"task_type": "noop"}, format="json"),
        "noop": lambda: client.post("/bench/noop/", {"task_type": "noop"}, format="json"),
        "list_10": lambda: client.get("/tasks/?page_size=10"),
        "list_50": lambda: client.get("/tasks/?page_size=50"),
    }
    out = {}
    for name, call in calls.items():
        call()  # warm: first-request imports and caches
        with CaptureQueriesContext(connection) as captured:
            response = call()
        if response.status_code >= 300:
            raise RuntimeError(f"{name}: HTTP {response.status_code} {response.content[:300]!r}")
        kinds = common.captured_statements(captured)
        # Transactions: pg_stat_database's commit counter around 50 requests on a fresh
        # connection (closing the connection flushes the server-side counters).
        connection.close()
        time.sleep(0.3)
        x0 = common.xact_commits(DB)
        for _ in range(50):
            call()
        connection.close()
        time.sleep(0.5)
        xacts = (common.xact_commits(DB) - x0) / 50
        out[name] = {
            "queries": len(kinds),
            "kinds": kinds,
            "xacts": xacts,
        }
    return out


def create_breakdown(fixtures: dict, n: int = 100) -> dict:
    """services.task_create in-process, split into its parts (ms per create): the create
    transaction (insert, admission, queued mark, events, durable commit) and the send after
    commit."""
    from django.contrib.auth import get_user_model

    from task_core import broker, services
    from task_core.models import Brand

    brand = Brand.objects.get(pk=fixtures["brand_id"])
    user = get_user_model().objects.get(username="bench-operator")
    spent = {"publish": 0.0, "sends": 0}
    real_send = broker.send

    def send(task, **kwargs):
        t0 = time.perf_counter()
        try:
            return real_send(task, **kwargs)
        finally:
            spent["publish"] += time.perf_counter() - t0
            spent["sends"] += 1

    broker.send = send
    try:
        for _ in range(10):
            services.task_create(brand=brand, user=user, task_type="noop")
        spent.update(publish=0.0, sends=0)
        t0 = time.perf_counter()
        for _ in range(n):
            services.task_create(brand=brand, user=user, task_type="noop")
        total = time.perf_counter() - t0
    finally:
        broker.send = real_send
    return {
        "total_ms": total / n * 1000,
        "publish_ms": spent["publish"] / n * 1000,
        "sends_per_create": spent["sends"] / n,
        "create_transaction_ms": (total - spent["publish"]) / n * 1000,
    }


def auth_headers(fixtures: dict) -> dict[str, str]:
    """Headers of an API call as the fixtures' brand admin."""
    return {
        "Authorization": f"Bearer {fixtures['token']}",
        "X-Brand-ID": str(fixtures["brand_id"]),
        "Content-Type": "application/json",
    }


def one_request(port: int, path: str, headers: dict) -> tuple[float, int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    t0 = time.perf_counter()
    try:
        conn.request("POST", path, body=BODY, headers=headers)
        response = conn.getresponse()
        response.read()
        return time.perf_counter() - t0, response.status
    finally:
        conn.close()


def load(port: int, path: str, headers: dict, *, threads: int, seconds: float) -> dict:
    """Closed loop: each thread sends its next request as soon as the previous one answered."""
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[int] = [0] * threads
    statuses: dict[int, int] = {}
    start = threading.Barrier(threads + 1)
    deadline = [0.0]

    def client(i: int) -> None:
        start.wait()
        while time.perf_counter() < deadline[0]:
            try:
                elapsed, status = one_request(port, path, headers)
            except OSError:
                errors[i] += 1
                continue
            if 200 <= status < 300:
                latencies[i].append(elapsed)
            else:
                errors[i] += 1
                statuses[status] = statuses.get(status, 0) + 1

    pool = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    deadline[0] = time.perf_counter() + seconds
    t0 = time.perf_counter()
    start.wait()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - t0
    flat = [x * 1000 for per in latencies for x in per]
    if sum(errors):
        raise RuntimeError(f"{path}: {sum(errors)} failed requests (statuses {statuses})")
    return {
        "requests": len(flat),
        "throughput": len(flat) / elapsed,
        "p50_ms": common.percentile(flat, 50),
        "p95_ms": common.percentile(flat, 95),
    }


def reset(prefix: str, peer_queue: str) -> None:
    """Every run starts with no task in the database or the queues: creates pile up (nothing
    drains them), and a brand's admission read counts its queued tasks."""
    with common.pg_connect(DB) as pg:
        pg.execute("TRUNCATE task_core_task, task_core_taskevent CASCADE")
    for queue in (f"{prefix}default", peer_queue):
        common.queue_purge(queue)


def run(reps: int, seconds: float, concurrency: int, gunicorn_workers: int) -> dict:
    info = common.configure(DB)
    common.django_setup(DB)
    from bench import peer_celery  # after configure: its queue carries this run's prefix

    prefix = info["prefix"]
    fixtures = setup_fixtures()
    from django.test import override_settings

    with override_settings(TASK_BRAND_WINDOW=int(BENCH_WINDOW)):  # admitted and published
        results: dict = {
            "queries": count_queries(fixtures),
            "create_breakdown": create_breakdown(fixtures),
        }
    headers = auth_headers(fixtures)
    from django.db import connection

    connection.close()
    server, port = common.start_gunicorn(
        "rest-gunicorn", gunicorn_workers, TASK_BRAND_WINDOW=BENCH_WINDOW
    )
    phases = {"latency": 1, "throughput": concurrency}
    runs: dict = {phase: {name: [] for name in ENDPOINTS} for phase in phases}
    try:
        for path in ENDPOINTS.values():  # warm every worker: connections, imports, JWT
            load(port, path, headers, threads=concurrency, seconds=1.5)
        for phase, threads in phases.items():
            for rep in range(reps):
                names = list(ENDPOINTS)[rep % 3 :] + list(ENDPOINTS)[: rep % 3]
                for name in names:
                    reset(prefix, peer_celery.QUEUE)
                    r = load(port, ENDPOINTS[name], headers, threads=threads, seconds=seconds)
                    runs[phase][name].append(r)
                    print(
                        f"rest {phase:10s} rep {rep + 1}: {name:6s} p50 {r['p50_ms']:6.2f} ms "
                        f"p95 {r['p95_ms']:6.2f} ms {r['throughput']:7.1f} req/s",
                        flush=True,
                    )
    finally:
        server.stop()
        common.broker_cleanup(
            [f"{prefix}default", f"{prefix}long", peer_celery.QUEUE],
            [f"{prefix}megahub.tasks", f"{prefix}megahub.events", peer_celery.EXCHANGE],
        )
    for phase in phases:
        results[phase] = {
            name: {
                "p50_ms": common.summary([r["p50_ms"] for r in rs]),
                "p95_ms": common.summary([r["p95_ms"] for r in rs]),
                "throughput": common.summary([r["throughput"] for r in rs]),
                "requests": sum(r["requests"] for r in rs),
                "runs": rs,
            }
            for name, rs in runs[phase].items()
        }
    lat, thr = results["latency"], results["throughput"]
    extra = lat["create"]["p50_ms"]["median"] - lat["noop"]["p50_ms"]["median"]
    p50_ratio = lat["create"]["p50_ms"]["median"] / lat["peer"]["p50_ms"]["median"]
    ratio = thr["create"]["throughput"]["median"] / thr["peer"]["throughput"]["median"]
    q = results["queries"]
    results.update(
        {
            "benchmark": "rest",
            "params": {
                "reps": reps,
                "seconds": seconds,
                "concurrency": concurrency,
                "gunicorn_workers": gunicorn_workers,
            },
            "p50_extra_ms": extra,  # over the floor, for the analysis
            "p50_ratio": p50_ratio,
            "target_p50_ratio": TARGET_P50_RATIO,
            "p50_pass": p50_ratio <= TARGET_P50_RATIO,
            "throughput_ratio": ratio,
            "target_throughput_ratio": TARGET_THROUGHPUT_RATIO,
            "throughput_pass": ratio >= TARGET_THROUGHPUT_RATIO,
            "list_queries_constant": q["list_10"]["queries"] == q["list_50"]["queries"],
        }
    )
    return results


def main(argv: list[str] | None = None) -> dict:
    global DB
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of one load run")
    parser.add_argument("--concurrency", type=int, default=4, help="threads, throughput phase")
    parser.add_argument("--gunicorn-workers", type=int, default=2)
    parser.add_argument("--result-name", default="rest", help="bench/results/<name>.json")
    parser.add_argument(
        "--db", default=DB, help="bench database (megahub_bench*; created and migrated if missing)"
    )
    args = parser.parse_args(argv)
    DB = args.db
    result = run(args.reps, args.seconds, args.concurrency, args.gunicorn_workers)
    common.write_result(args.result_name, result)
    lat, thr = result["latency"], result["throughput"]
    print(
        f"rest: p50 create {lat['create']['p50_ms']['median']:.2f} ms vs peer "
        f"{lat['peer']['p50_ms']['median']:.2f} ms -> {result['p50_ratio']:.2f}x (target <= "
        f"{TARGET_P50_RATIO:g}x; floor {lat['noop']['p50_ms']['median']:.2f} ms); throughput "
        f"{thr['create']['throughput']['median']:.0f} vs peer "
        f"{thr['peer']['throughput']['median']:.0f} req/s -> {result['throughput_ratio']:.2f}x"
        f" (target >= {TARGET_THROUGHPUT_RATIO}); queries/request "
        + ", ".join(f"{k} {v['queries']}" for k, v in result["queries"].items()),
        flush=True,
    )
    return result


if __name__ == "__main__":
    main()

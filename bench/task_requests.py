"""Task creation through the `megahub.task_requests` queue vs through `POST /tasks/`.

Both paths run the same validation and `services.task_create` (INSERT, commit, publish to the
task queue, QUEUED transition); no worker runs, so the created tasks stay queued.

Queue: --consumers `manage.py consume_task_requests` processes (default 2, as many as the
gunicorn workers of the REST side), started and ready before the repetition. The benchmark
publishes N JSON requests (`{"brand_id", "requested_by", "task_type": "noop"}`, persistent,
publisher confirms) to the quorum queue, then waits until N tasks exist.

REST: gunicorn (megahub.wsgi, bench.settings, 2 sync workers, 127.0.0.1); a closed-loop
client with --concurrency threads sends N `POST /tasks/` (`{"task_type": "noop"}`).

Rate of a side = N / (last created_at - first created_at) of its N tasks (the same measure on
both sides, from the database); the end-to-end rate (first publish or request to the N-th
task committed, client clock) is reported too. --reps repetitions per side, alternated.
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
BODY = json.dumps({"task_type": "noop"}).encode()


def max_task_id(pg) -> int:
    return pg.execute("SELECT coalesce(max(id), 0) FROM task_core_task").fetchone()[0]


def created_span(pg, after_id: int, n: int, timeout: float) -> tuple[float, float]:
    """Wait until n tasks with id > after_id exist; (first, last) created_at as timestamps."""

    def ready():
        count, first, last = pg.execute(
            "SELECT count(*), min(created_at), max(created_at) FROM task_core_task WHERE id > %s",
            [after_id],
        ).fetchone()
        return (first.timestamp(), last.timestamp(), time.time()) if count >= n else None

    return common.wait_until(ready, timeout=timeout, interval=0.05, what=f"{n} tasks")


def queue_side(n: int, fixtures: dict, pg) -> dict:
    from celery import current_app

    from task_core import intake

    queue = intake.requests_queue()
    body = {"brand_id": fixtures["brand_id"], "requested_by": "bench-operator", "task_type": "noop"}
    after = max_task_id(pg)
    with current_app.connection_for_write() as conn:
        producer = conn.Producer()
        t0 = time.time()
        for _ in range(n):
            producer.publish(
                body,
                exchange="",
                routing_key=queue.name,
                serializer="json",
                delivery_mode=2,
                retry=True,
            )
        published = time.time() - t0
    first, last, _ = created_span(pg, after, n, timeout=60 + n / 5)
    return {
        "rate": n / (last - first),
        "end_to_end_rate": n / (last - t0),
        "publish_s": published,
    }


def rest_side(n: int, port: int, headers: dict, concurrency: int, pg) -> dict:
    after = max_task_id(pg)
    remaining = [n]
    lock = threading.Lock()
    errors: list[str] = []

    def client():
        while True:
            with lock:
                if remaining[0] <= 0:
                    return
                remaining[0] -= 1
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.request("POST", "/tasks/", body=BODY, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status != 201:
                    errors.append(f"HTTP {response.status}")
            except OSError as exc:
                errors.append(repr(exc))
            finally:
                conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"POST /tasks/: {len(errors)} failed ({errors[:3]})")
    first, last, _ = created_span(pg, after, n, timeout=60)
    return {"rate": n / (last - first), "end_to_end_rate": n / (last - t0)}


def run(n: int, reps: int, consumers: int, concurrency: int) -> dict:
    from bench.rest_create import auth_headers, setup_fixtures

    info = common.configure(DB)
    common.django_setup(DB)
    prefix = info["prefix"]
    fixtures = setup_fixtures()
    from django.db import connection

    connection.close()
    headers = auth_headers(fixtures)
    procs: list[common.Proc] = []
    runs: dict[str, list[dict]] = {"queue": [], "rest": []}
    pg = common.pg_connect(DB)
    try:
        server, port = common.start_gunicorn("requests-gunicorn")
        procs.append(server)
        for i in range(consumers):
            procs.append(
                common.Proc(
                    f"requests-consumer-{i}",
                    [common.PYTHON, "manage.py", "consume_task_requests"],
                    common.child_env(),
                )
            )
        for proc in procs[1:]:

            def ready(proc=proc):
                if not proc.alive():
                    raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
                return "ready" in proc.tail(200)

            common.wait_until(ready, timeout=60, interval=0.2, what=f"{proc.name} ready")
        queue_side(50, fixtures, pg)  # warm both paths
        rest_side(50, port, headers, concurrency, pg)
        for rep in range(reps):
            order = ("queue", "rest") if rep % 2 == 0 else ("rest", "queue")
            for side in order:
                r = (
                    queue_side(n, fixtures, pg)
                    if side == "queue"
                    else rest_side(n, port, headers, concurrency, pg)
                )
                runs[side].append(r)
                print(
                    f"requests rep {rep + 1}: {side:5s} {r['rate']:7.1f} tasks/s "
                    f"(end to end {r['end_to_end_rate']:7.1f}/s)",
                    flush=True,
                )
                common.queue_purge(f"{prefix}default")  # the created tasks' messages
    finally:
        pg.close()
        for proc in reversed(procs):
            proc.stop()
        common.broker_cleanup(
            [
                f"{prefix}default",
                f"{prefix}long",
                f"{prefix}megahub.task_requests",
                f"{prefix}megahub.task_requests.dead",
            ],
            [f"{prefix}megahub.tasks", f"{prefix}megahub.events"],
        )
    out = {
        side: {
            "rate": common.summary([r["rate"] for r in rs]),
            "end_to_end_rate": common.summary([r["end_to_end_rate"] for r in rs]),
            "runs": rs,
        }
        for side, rs in runs.items()
    }
    return {
        "benchmark": "requests",
        "params": {"tasks": n, "reps": reps, "consumers": consumers, "concurrency": concurrency},
        **out,
        "ratio": out["queue"]["rate"]["median"] / out["rest"]["rate"]["median"],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000, help="tasks per side and repetition")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--consumers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4, help="REST client threads")
    args = parser.parse_args(argv)
    result = run(args.tasks, args.reps, args.consumers, args.concurrency)
    common.write_result("requests", result)
    print(
        f"requests: queue {result['queue']['rate']['median']:.1f} tasks/s vs POST /tasks/ "
        f"{result['rest']['rate']['median']:.1f} tasks/s -> {result['ratio']:.2f}x",
        flush=True,
    )
    return result


if __name__ == "__main__":
    main()

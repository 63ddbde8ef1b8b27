"""Idle latency: POST /tasks/ -> the task is running, vs bare Celery apply_async -> task start.

The system is idle and one task is in flight at a time: a sample starts only once the previous
task finished (and a short pause passed).

Project: gunicorn (megahub.wsgi, bench.settings, 2 sync workers, 127.0.0.1) and
`celery -A megahub worker -c K` on the bench queues. t0 = the client's clock just before it
sends `POST /tasks/` (`{"task_type": "noop"}`); running = the task's `started_at` (set by the
worker's claim, the moment the attempt starts). Latency = started_at - t0.

Baseline: bench/bare_celery.py's worker (same worker command, same broker settings). t0 = the
clock just before `send_task` (apply_async) of the no-op; start = time.time() in the pool
process's `task_prerun`. Latency = start - t0.

The project's samples are also split (BREAKDOWN) at the task's `created_at`, taken by the
create service once the request is authenticated, permitted and validated: the request up to
there, then the admission read, the create statement and its durable commit, the send, the
broker's delivery, the worker's dispatch to a pool process and the claim; and the time the
client had its response.

Everything runs on this machine, so both sides read the same clock. --reps repetitions of
--samples samples per side, sides alternated per repetition; per repetition the p50 of each
side, then the median of the repetitions.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from bench.drain import worker_argv

DB = "megahub_bench"
TARGET_EXTRA_MS = 5.0
PAUSE_S = 0.05  # idle time between samples
BODY = json.dumps({"task_type": "noop"}).encode()
# The project's sample split at the task's created_at (taken in the create service, after the
# request's authentication, permission and validation, before the admission read), and the
# response: both sides of it, and when the client had the answer (the worker may start first).
BREAKDOWN = ("to_create_ms", "create_to_running_ms", "response_ms")


class ProjectSide:
    def __init__(self, port: int, headers: dict, pg):
        self.port, self.headers, self.pg = port, headers, pg
        self.parts: list[dict] = []  # per sample: where the time went (BREAKDOWN)

    def sample(self) -> float:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        t0 = time.time()
        try:
            conn.request("POST", "/tasks/", body=BODY, headers=self.headers)
            response = conn.getresponse()
            body = response.read()
            answered = time.time()
        finally:
            conn.close()
        if response.status != 201:
            raise RuntimeError(f"POST /tasks/: HTTP {response.status} {body[:300]!r}")
        pk = json.loads(body)["id"]

        def done():
            row = self.pg.execute(
                "SELECT created_at, started_at, completed_at FROM task_core_task WHERE id = %s",
                [pk],
            ).fetchone()
            return row if row and row[2] is not None else None

        created, started, _ = common.wait_until(done, timeout=60, interval=0.002, what=f"task {pk}")
        self.parts.append(
            {
                "to_create_ms": (created.timestamp() - t0) * 1000,
                "create_to_running_ms": (started.timestamp() - created.timestamp()) * 1000,
                "response_ms": (answered - t0) * 1000,
            }
        )
        return started.timestamp() - t0


class BareSide:
    def __init__(self, bare, start_file: str, stats_dir: str):
        self.bare, self.start_file, self.stats_dir = bare, start_file, stats_dir
        self.sent = 0

    def sample(self) -> float:
        app = self.bare.app
        with app.producer_or_acquire() as producer:
            t0 = time.time()
            app.send_task(
                self.bare.TASK_NAME,
                args=[self.sent],
                queue=self.bare.QUEUE,
                routing_key="bare",
                priority=4,
                producer=producer,
            )
        self.sent += 1

        def finished():
            return self.bare.read_stats(self.stats_dir)[2] >= self.sent

        common.wait_until(finished, timeout=60, interval=0.002, what="bare task")
        return self.bare.read_start(self.start_file) - t0


def run(reps: int, samples: int, k: int) -> dict:
    from bench import bare_celery
    from bench.rest_create import auth_headers, setup_fixtures

    info = common.configure(DB)
    common.django_setup(DB)
    prefix = info["prefix"]
    fixtures = setup_fixtures()
    from django.db import connection

    connection.close()
    # An idle system: no task left over by an earlier benchmark in the database (a brand whose
    # window is full would have its new tasks wait for a release) or in the queue.
    with common.pg_connect(DB) as pg:
        pg.execute("TRUNCATE task_core_task, task_core_taskevent CASCADE")
    common.queue_purge(f"{prefix}default")
    headers = auth_headers(fixtures)
    tmp = tempfile.mkdtemp(prefix="megahub-bench-latency-")
    start_file = os.path.join(tmp, "start.bin")
    stats_dir = os.path.join(tmp, "stats")
    os.mkdir(stats_dir)
    procs: list[common.Proc] = []
    runs: dict[str, list[dict]] = {"project": [], "bare": []}
    pg = None
    try:
        server, port = common.start_gunicorn("latency-gunicorn")
        procs.append(server)
        procs.append(
            common.Proc(
                "latency-worker-project",
                worker_argv("megahub", f"{prefix}default", k, f"bench-lat-{os.getpid()}"),
                common.child_env(),
            )
        )
        procs.append(
            common.Proc(
                "latency-worker-bare",
                worker_argv(
                    "bench.bare_celery", bare_celery.QUEUE, k, f"bench-lat-bare-{os.getpid()}"
                ),
                common.child_env(BENCH_BARE_STATS_DIR=stats_dir, BENCH_BARE_START_FILE=start_file),
            )
        )
        pg = common.pg_connect(DB)
        sides = {
            "project": ProjectSide(port, headers, pg),
            "bare": BareSide(bare_celery, start_file, stats_dir),
        }
        for name, side in sides.items():  # warm: workers up, connections, imports
            for _ in range(10):
                for proc in procs:
                    if not proc.alive():
                        raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
                side.sample()
                time.sleep(PAUSE_S)
            print(f"latency: {name} warm", flush=True)
        for rep in range(reps):
            order = ("project", "bare") if rep % 2 == 0 else ("bare", "project")
            for name in order:
                values = []
                if name == "project":
                    sides[name].parts = []
                for _ in range(samples):
                    values.append(sides[name].sample() * 1000)
                    time.sleep(PAUSE_S)
                r = {
                    "p50_ms": common.percentile(values, 50),
                    "p95_ms": common.percentile(values, 95),
                    "min_ms": min(values),
                    "samples_ms": values,
                }
                if name == "project":
                    r["parts_p50_ms"] = {
                        part: common.percentile([p[part] for p in sides[name].parts], 50)
                        for part in BREAKDOWN
                    }
                runs[name].append(r)
                print(
                    f"latency rep {rep + 1}: {name:7s} p50 {r['p50_ms']:7.2f} ms "
                    f"p95 {r['p95_ms']:7.2f} ms",
                    flush=True,
                )
    finally:
        if pg is not None:
            pg.close()
        for proc in reversed(procs):
            proc.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        common.broker_cleanup(
            [f"{prefix}default", f"{prefix}long", f"{prefix}bare"],
            [f"{prefix}megahub.tasks", f"{prefix}bare.tasks", f"{prefix}megahub.events"],
        )
    out = {
        name: {
            "p50_ms": common.summary([r["p50_ms"] for r in rs]),
            "p95_ms": common.summary([r["p95_ms"] for r in rs]),
            "runs": rs,
        }
        for name, rs in runs.items()
    }
    out["project"]["parts_p50_ms"] = {
        part: common.summary([r["parts_p50_ms"][part] for r in runs["project"]])
        for part in BREAKDOWN
    }
    extra = out["project"]["p50_ms"]["median"] - out["bare"]["p50_ms"]["median"]
    return {
        "benchmark": "latency",
        "params": {"reps": reps, "samples": samples, "workers": k, "pause_s": PAUSE_S},
        **out,
        "extra_ms": extra,
        "target_extra_ms": TARGET_EXTRA_MS,
        "pass": extra <= TARGET_EXTRA_MS,
    }


def main(argv: list[str] | None = None) -> dict:
    global DB
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--samples", type=int, default=40, help="samples per repetition")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="pool size K")
    parser.add_argument(
        "--db", default=DB, help="bench database (megahub_bench*; created and migrated if missing)"
    )
    args = parser.parse_args(argv)
    DB = args.db
    result = run(args.reps, args.samples, args.workers)
    common.write_result("latency", result)
    print(
        f"latency: project p50 {result['project']['p50_ms']['median']:.2f} ms vs bare "
        f"{result['bare']['p50_ms']['median']:.2f} ms -> +{result['extra_ms']:.2f} ms "
        f"(target <= +{TARGET_EXTRA_MS:g} ms)",
        flush=True,
    )
    return result


if __name__ == "__main__":
    main()

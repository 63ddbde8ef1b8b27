"""The releaser's cost per released task, in process: what ``fairshare.refill`` (the releaser's
work for one wake-up) spends in CPU, wall time and database round trips per task it publishes.

One brand's backlog of N due `pending` rows; each round marks the brand's `--finish` oldest
queued tasks completed (as the workers would: not measured), then times one
``fairshare.refill`` on that brand, which publishes into the room they left. Nothing consumes
the broker queue (purged at the end). Sides: this process's code as it is; the figures are for
comparing commits run one after the other on the same machine (CPU time moves far less with
the machine's load than wall time does).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common

DB = "megahub_bench_fairrel"


def run(n: int, finish: int, rounds: int) -> dict:
    info = common.configure(DB)
    common.django_setup(DB)
    from django.db import connection
    from django.test import override_settings

    from bench.drain import ProjectDrain
    from task_core import fairshare
    from task_core.models import Task

    project = ProjectDrain(n, 2, "megahub.settings")
    queue = f"{info['prefix']}default"
    calls = {"n": 0}

    def count(execute, sql, params, many, context):
        calls["n"] += 1
        return execute(sql, params, many, context)

    results = []
    pg_cpu = 0.0
    try:
        with override_settings(TASK_FAIR_SHARE=True):
            project.load()
            fairshare.release([project.brand.pk], actor="bench", wait=True)  # the first window
            cpu = wall = 0.0
            released = statements = 0
            for _ in range(rounds):
                done = list(
                    Task.objects.unscoped()
                    .filter(brand_id=project.brand.pk, status=Task.Status.QUEUED)
                    .order_by("queued_at", "id")
                    .values_list("pk", flat=True)[:finish]
                )
                Task.objects.unscoped().filter(pk__in=done).update(status=Task.Status.COMPLETED)
                calls["n"] = 0
                backend = _backend_cpu(connection)
                c0, t0 = time.process_time(), time.perf_counter()
                with connection.execute_wrapper(count):
                    got = fairshare.refill([project.brand.pk], actor="bench")
                cpu += time.process_time() - c0
                wall += time.perf_counter() - t0
                pg_cpu += _backend_cpu(connection) - backend
                statements += calls["n"]
                released += got
                results.append(got)
    finally:
        common.queue_purge(queue)
        common.broker_cleanup([queue], [])
    return {
        "benchmark": "release_cost",
        "params": {"tasks": n, "finish": finish, "rounds": rounds},
        "released": released,
        "releases": sum(1 for r in results if r),
        "cpu_ms_per_task": cpu / released * 1000,
        "postgres_cpu_ms_per_task": pg_cpu / released * 1000,
        "wall_ms_per_task": wall / released * 1000,
        "wall_ms_per_release": wall / max(1, sum(1 for r in results if r)) * 1000,
        "statements_per_release": statements / max(1, sum(1 for r in results if r)),
        "loadavg": os.getloadavg()[0],
    }


def _backend_cpu(connection) -> float:
    """CPU seconds of this connection's PostgreSQL backend so far (a local server, Linux)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=3000, help="the brand's backlog")
    parser.add_argument("--finish", type=int, default=12, help="tasks finished per round")
    parser.add_argument("--rounds", type=int, default=200, help="refills timed")
    args = parser.parse_args(argv)
    result = run(args.tasks, args.finish, args.rounds)
    print(
        f"release cost: {result['released']} tasks in {result['releases']} releases; "
        f"CPU {result['cpu_ms_per_task']:.3f} ms/task (its PostgreSQL backend "
        f"{result['postgres_cpu_ms_per_task']:.3f}), wall {result['wall_ms_per_task']:.3f} "
        f"ms/task ({result['wall_ms_per_release']:.2f} ms/release), "
        f"{result['statements_per_release']:.1f} statements/release (Django's cursor; "
        f"BEGIN/COMMIT not counted); load {result['loadavg']:.1f}",
        flush=True,
    )
    return result


if __name__ == "__main__":
    main()

"""Checkpoint and progress writes against a raw INSERT/UPDATE, and job throughput.

    .venv/bin/python bench/checkpoints.py [--reps 7] [--writes 300] [--items 5000]

PostgreSQL only (no broker: Celery runs on ``memory://``). Database ``megahub_bench_persist``
on DATABASE_URL's server (or ``BENCH_DATABASE_URL``), created and migrated here. Writes
bench/results/checkpoints.json.

1. Checkpoint write latency (``task_persistence.services.checkpoint_save``: the task's progress
   and heartbeat, the job's position and the checkpoint row, one statement, one transaction)
   against a raw ``INSERT`` of the same JSON payload into a plain table, each in its own
   transaction, through the same connection. 1 KB and 10 KB states; one write of each kind in
   turn (both see the same machine load), medians per repetition, then the median of the
   repetitions (>= 5).
2. Progress write latency (``TaskContext.progress``: progress percentage + heartbeat of the
   running attempt, one statement committed on its own) against a raw ``UPDATE`` of the same
   two columns of the same row, also one statement committed on its own (autocommit),
   alternated the same way.
3. Throughput of the resumable demo job (``seo_keyword_audit``, no per-item delay, no item
   ledger) over --items items, checkpointing every 100 items vs. never during the run (only
   the final checkpoint), executed in-process as a worker does. Meanwhile a second connection
   samples ``pg_stat_activity`` every 5 ms for the age of the open transaction of the
   executing backend: no transaction may stay open across the task.
"""

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DB_NAME = "megahub_bench_persist"
_source = os.environ.get("BENCH_SOURCE_DATABASE_URL") or os.environ.get(
    "DATABASE_URL", "postgres://postgres@localhost:5432/megahub"
)
URL = os.environ.get(
    "BENCH_DATABASE_URL", urlunparse(urlparse(_source)._replace(path=f"/{DB_NAME}"))
)
os.environ.update(
    DATABASE_URL=URL,
    CELERY_BROKER_URL="memory://",
    DJANGO_SETTINGS_MODULE="megahub.settings",
    LOG_LEVEL="WARNING",
    DB_CONN_MAX_AGE="600",
    MEGAHUB_DEMO_TASK_TYPES="1",  # the workload is the seo_keyword_audit demo type
)
os.environ.setdefault("SECRET_KEY", "bench-only-secret-key-not-for-any-deployment")

TARGET_RATIO = 1.5
REPS = 7
WRITES = 300
ITEMS = 5000


def ensure_database():
    import psycopg

    name = URL.rsplit("/", 1)[1]
    with psycopg.connect(URL.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def setup():
    ensure_database()
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def state_of(size: int) -> dict:
    import json

    state = {"cursor": 123456, "insights": 42, "blob": ""}
    state["blob"] = "x" * (size - len(json.dumps(state, separators=(",", ":"))))
    return state


def running_task(brand, **job):
    from django.utils import timezone

    from task_core.models import Task
    from task_persistence.models import PersistentJob

    task = Task.objects.create(
        brand=brand,
        task_type="seo_keyword_audit",
        status="running",
        attempts=1,
        started_at=timezone.now(),
        heartbeat_at=timezone.now(),
        context_data={},
    )
    PersistentJob.objects.create(brand=brand, task=task, **job)
    return task


def _alternate(fns: list, reps: int, writes: int) -> list[list[float]]:
    """Per repetition, the median seconds of each fn, called in turn (same load for all)."""
    medians: list[list[float]] = [[] for _ in fns]
    for _ in range(20):  # warm-up: connection, statement caches
        for fn in fns:
            fn()
    for _ in range(reps):
        samples: list[list[float]] = [[] for _ in fns]
        for _ in range(writes):
            for fn, out in zip(fns, samples, strict=True):
                t0 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t0)
        for out, med in zip(samples, medians, strict=True):
            med.append(statistics.median(out))
    return medians


def _summary_ms(values: list[float]) -> dict:
    ms = [v * 1000 for v in values]
    return {"median": statistics.median(ms), "min": min(ms), "max": max(ms), "runs": ms}


def bench_latency(brand, reps: int, writes: int) -> dict:
    from django.db import connection, transaction

    from task_core.context import TaskContext
    from task_core.registry import get_task_type
    from task_persistence.services import checkpoint_save

    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS bench_raw_checkpoint (id bigserial PRIMARY KEY, "
            "payload jsonb NOT NULL, created_at timestamptz NOT NULL)"
        )
    spec = get_task_type("seo_keyword_audit")
    results = {}
    for size in (1024, 10 * 1024):
        state = state_of(size)
        encoded = json.dumps(state, separators=(",", ":"), sort_keys=True)
        task = running_task(brand)
        ctx = TaskContext(task, spec, "bench")
        ctx.total_items = 10**9
        written = 0

        def save(ctx=ctx, state=state):
            nonlocal written
            written += 1
            checkpoint_save(ctx, state, written)

        def insert(encoded=encoded):
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    "INSERT INTO bench_raw_checkpoint (payload, created_at) "
                    "VALUES (%s::jsonb, now())",
                    [encoded],
                )

        ours, raw = _alternate([save, insert], reps, writes)
        results[f"checkpoint_{size // 1024}kb"] = {
            "project_ms": _summary_ms(ours),
            "raw_ms": _summary_ms(raw),
            "ratio": statistics.median(ours) / statistics.median(raw),
        }
    # Progress: a write per call (the percentage alternates 1/2: no milestone, no event row).
    task = running_task(brand)
    ctx = TaskContext(task, spec, "bench")
    flip, flop = [1], [1]

    def progress():
        flip[0] = 3 - flip[0]
        ctx.progress(flip[0])

    def update():
        # One statement, committed on its own (autocommit): what the progress write is too.
        flop[0] = 3 - flop[0]
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE task_core_task SET progress_percentage = %s, heartbeat_at = now() "
                "WHERE id = %s",
                [flop[0], task.pk],
            )

    ours, raw = _alternate([progress, update], reps, writes)
    results["progress"] = {
        "project_ms": _summary_ms(ours),
        "raw_ms": _summary_ms(raw),
        "ratio": statistics.median(ours) / statistics.median(raw),
    }
    return results


class OpenTransactionProbe:
    """Samples, from a second connection, how long the watched backend's current transaction
    has been open (pg_stat_activity.xact_start); keeps the longest."""

    def __init__(self, backend_pid: int, interval: float = 0.005):
        import psycopg

        self.conn = psycopg.connect(URL.replace("postgres://", "postgresql://", 1), autocommit=True)
        self.pid, self.interval = backend_pid, interval
        self.longest_s, self.samples = 0.0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            row = self.conn.execute(
                "SELECT extract(epoch FROM clock_timestamp() - xact_start) "
                "FROM pg_stat_activity WHERE pid = %s",
                [self.pid],
            ).fetchone()
            self.samples += 1
            if row and row[0] is not None:
                self.longest_s = max(self.longest_s, float(row[0]))
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.conn.close()


def bench_throughput(brand, reps: int, items: int) -> dict:
    from django.db import connection

    from task_core import execution
    from task_persistence import services

    modes = (("every 100 items", 100), ("none during the run", 10**9))
    runs: dict[str, list[float]] = {label: [] for label, _ in modes}
    longest, durations = 0.0, []
    for _ in range(reps):
        for label, every in modes:  # alternate, so both see the same load
            job, _ = services.job_create(
                brand=brand,
                task_type="seo_keyword_audit",
                context_data={
                    "keyword_ids": list(range(1, items + 1)),
                    "delay_ms": 0,
                    "record_items": False,
                },
                checkpoint_every_items=every,
                checkpoint_every_seconds=10**6,
            )
            connection.ensure_connection()
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                backend = cursor.fetchone()[0]
            with OpenTransactionProbe(backend) as probe:
                t0 = time.perf_counter()
                outcome = execution.task_execute(task_pk=job.task_id, worker="bench")
                elapsed = time.perf_counter() - t0
            assert outcome == "completed", outcome
            runs[label].append(items / elapsed)
            longest = max(longest, probe.longest_s)
            durations.append(elapsed)
    rates = {
        label: {
            "median": statistics.median(v),
            "min": min(v),
            "max": max(v),
            "runs": v,
        }
        for label, v in runs.items()
    }
    base = rates["none during the run"]["median"]
    return {
        "rates": rates,
        "ratio": rates["every 100 items"]["median"] / base,
        "longest_open_transaction_s": longest,
        "shortest_task_s": min(durations),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=REPS)
    parser.add_argument("--writes", type=int, default=WRITES, help="writes per repetition")
    parser.add_argument("--items", type=int, default=ITEMS, help="job items (throughput)")
    args = parser.parse_args(argv)
    setup()
    from task_core.services import brand_create

    brand, _ = brand_create(name="Bench", slug="bench-checkpoints")
    print(f"checkpoints: {args.reps} repetitions, database {DB_NAME}", flush=True)
    latency = bench_latency(brand, args.reps, args.writes)
    for name, r in latency.items():
        print(
            f"  {name:<16} {r['project_ms']['median']:7.3f} ms vs raw "
            f"{r['raw_ms']['median']:7.3f} ms -> {r['ratio']:.2f}x (target <= {TARGET_RATIO})",
            flush=True,
        )
    throughput = bench_throughput(brand, args.reps, args.items)
    for label, r in throughput["rates"].items():
        print(f"  job, checkpoints {label:<22} {r['median']:>9.0f} items/s", flush=True)
    print(
        f"  longest open transaction while a job ran: "
        f"{throughput['longest_open_transaction_s'] * 1000:.1f} ms (shortest job "
        f"{throughput['shortest_task_s']:.2f} s)",
        flush=True,
    )
    worst = max(r["ratio"] for r in latency.values())
    result = {
        "benchmark": "checkpoints",
        "params": {"reps": args.reps, "writes": args.writes, "items": args.items},
        "latency": latency,
        "throughput": throughput,
        "target_ratio": TARGET_RATIO,
        "ratio_worst": worst,
        "ratio_pass": worst <= TARGET_RATIO,
        # "No transaction held open across a task": far shorter than the task itself.
        "no_open_transaction_pass": throughput["longest_open_transaction_s"]
        < min(1.0, throughput["shortest_task_s"] / 4),
    }
    sys.path.insert(0, str(ROOT))
    from bench import common

    common.write_result("checkpoints", result)
    return result


if __name__ == "__main__":
    main()

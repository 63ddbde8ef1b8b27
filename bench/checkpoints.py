"""Checkpoint benchmark: write latency against a raw INSERT, and job throughput.

Standalone: ``.venv/bin/python bench/checkpoints.py`` (PostgreSQL needed; no broker).
It uses ``BENCH_DATABASE_URL`` (default postgres://postgres@localhost:5432/megahub_bench_persist),
creates and migrates that database if needed, and prints its results.

1. Checkpoint write latency (``task_persistence.services.checkpoint_save``: the task's progress
   and heartbeat, the job's position and the checkpoint row, one statement, one transaction)
   against a raw ``INSERT`` of the same JSON payload into a plain table, each in its own
   transaction, through the same connection. 1 KB and 10 KB states; one write of each kind in
   turn (both see the same machine load), medians per repetition, then the median of the
   repetitions (>= 5).
2. Throughput of the resumable demo job (``seo_keyword_audit``, no per-item delay, no item
   ledger) over 5,000 items, checkpointing every 100 items vs. never during the run (only the
   final checkpoint), executed in-process as a worker does.
"""

import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgres://postgres@localhost:5432/megahub_bench_persist"
)
os.environ.update(
    DATABASE_URL=URL,
    CELERY_BROKER_URL="memory://",
    DJANGO_SETTINGS_MODULE="megahub.settings",
    LOG_LEVEL="WARNING",
    DB_CONN_MAX_AGE="600",
)
os.environ.setdefault("SECRET_KEY", "bench-only-secret-key-not-for-any-deployment")

REPS = int(os.environ.get("BENCH_REPS", 7))
WRITES = int(os.environ.get("BENCH_WRITES", 300))
ITEMS = int(os.environ.get("BENCH_ITEMS", 5000))


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


def bench_latency(brand):
    import json

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
        ours, raw = [], []
        task = running_task(brand)
        ctx = TaskContext(task, spec, "bench")
        ctx.total_items = 10**9
        written = 0

        def save():
            nonlocal written
            written += 1
            checkpoint_save(ctx, state, written)

        def insert():
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    "INSERT INTO bench_raw_checkpoint (payload, created_at) "
                    "VALUES (%s::jsonb, now())",
                    [encoded],
                )

        for _ in range(20):  # warm-up: connection, statement caches
            save()
            insert()
        for _ in range(REPS):
            ours_s, raw_s = [], []
            for _ in range(WRITES):  # alternate, so both see the same load
                for fn, samples in ((save, ours_s), (insert, raw_s)):
                    t0 = time.perf_counter()
                    fn()
                    samples.append(time.perf_counter() - t0)
            ours.append(statistics.median(ours_s))
            raw.append(statistics.median(raw_s))
        results[size] = (statistics.median(ours), statistics.median(raw), ours, raw)
    return results


def bench_throughput(brand):
    from task_core import services as core
    from task_persistence import services

    modes = (("every 100 items", 100), ("none during the run", 10**9))
    runs: dict[str, list[float]] = {label: [] for label, _ in modes}
    for _ in range(REPS):
        for label, every in modes:  # alternate, so both see the same load
            job, _ = services.job_create(
                brand=brand,
                task_type="seo_keyword_audit",
                context_data={
                    "keyword_ids": list(range(1, ITEMS + 1)),
                    "delay_ms": 0,
                    "record_items": False,
                },
                checkpoint_every_items=every,
                checkpoint_every_seconds=10**6,
            )
            t0 = time.perf_counter()
            outcome = core.task_execute(task_pk=job.task_id, worker="bench")
            elapsed = time.perf_counter() - t0
            assert outcome == "completed", outcome
            runs[label].append(ITEMS / elapsed)
    rates = {label: (statistics.median(values), values) for label, values in runs.items()}
    return rates


def main():
    setup()
    from task_core.services import brand_create

    brand, _ = brand_create(name="Bench", slug="bench-checkpoints")
    print(f"checkpoint benchmark: {REPS} repetitions, database {URL}")
    print(f"\n1. write latency, median of {WRITES} writes per repetition, then median of reps")
    print(f"{'state':>8} {'checkpoint_save':>16} {'raw INSERT':>11} {'ratio':>6}  target <= 1.5x")
    for size, (ours, raw, _, _) in bench_latency(brand).items():
        ratio = ours / raw
        print(f"{size // 1024:>5} KB {ours * 1000:>13.3f} ms {raw * 1000:>8.3f} ms {ratio:>5.2f}x")
    print(f"\n2. seo_keyword_audit throughput over {ITEMS} items (median items/s)")
    rates = bench_throughput(brand)
    base = rates["none during the run"][0]
    for label, (rate, _) in rates.items():
        print(f"  checkpoints {label:<22} {rate:>9.0f} items/s  {rate / base:>5.2f}x")


if __name__ == "__main__":
    main()

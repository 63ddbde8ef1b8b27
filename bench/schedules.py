"""Scheduling benchmark: N schedules due in the same minute (SPEC section 5).

megahub: N ``* * * * *`` schedules spread over 10 brands; at the minute boundary, D dispatcher
processes run ``schedules_dispatch_due`` as beat's ticks would (every
SCHEDULE_DISPATCH_INTERVAL_SECONDS, the first one at the boundary). Lag of a fire = when its
task was published (``queued_at``) minus the fire time; also the ledger row's creation. The
dispatchers run with fair share off (TASK_FAIR_SHARE=0): with it on, each brand's tasks past
its window (TASK_BRAND_WINDOW) wait in the database until workers take the earlier ones, and
no worker drains in this benchmark, so only 10 x 20 would ever be published.

Baseline: stock django-celery-beat, N PeriodicTask rows on one ``* * * * *`` crontab, driven
by its DatabaseScheduler's own tick loop in one process (what one beat does), publishing a
message per entry. Lag = when beat sent the entry minus the fire time.

Both publish to RabbitMQ queues of their own (``bench-sched-<pid>.*``, deleted afterwards) and
run in a PostgreSQL database of their own (``megahub_bench_schedules``, created and migrated
here). Prints one line per run and the medians over the repetitions; writes
bench/results/schedules.json.

    .venv/bin/python bench/schedules.py [--schedules 10000] [--dispatchers 2] [--repeat 5]
                                        [--baseline-repeat 2] [--baseline-timeout 240]

The baseline takes minutes per run at 10k entries (that is the point of the comparison), so
it runs --baseline-repeat times (default 2), each given up after --baseline-timeout seconds;
lags are then over the entries it sent in time, and the count says how many that was.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse, urlunparse

REPO = Path(__file__).resolve().parent.parent
DB_NAME = "megahub_bench_schedules"
TARGET_P95_S = 10.0


def configure(db_name: str = DB_NAME) -> None:
    source = os.environ.get("BENCH_SOURCE_DATABASE_URL") or os.environ.get(
        "DATABASE_URL", "postgres://postgres@localhost:5432/megahub"
    )
    parsed = urlparse(source)
    if not parsed.scheme.startswith("postgres"):
        raise SystemExit("this benchmark needs PostgreSQL (DATABASE_URL=postgres://...)")
    os.environ["DATABASE_URL"] = urlunparse(parsed._replace(path=f"/{db_name}"))
    os.environ.setdefault("CELERY_BROKER_URL", "amqp://guest:guest@localhost:5672//")
    if not os.environ["CELERY_BROKER_URL"].startswith(("amqp://", "pyamqp://")):
        raise SystemExit("this benchmark needs RabbitMQ (CELERY_BROKER_URL=amqp://...)")
    os.environ["CELERY_QUEUE_PREFIX"] = f"bench-sched-{os.getpid()}."
    os.environ.setdefault("SECRET_KEY", "bench-only-secret-key")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ["DJANGO_SETTINGS_MODULE"] = "megahub.settings"
    os.environ["MEGAHUB_DEMO_TASK_TYPES"] = "1"  # the schedules fire the `noop` demo type
    sys.path.insert(0, str(REPO))
    import psycopg

    admin = urlunparse(parsed._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db_name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{db_name}"')
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def next_boundary(margin_s: float = 8.0) -> datetime:
    """The next minute boundary at least ``margin_s`` away."""
    now = datetime.now(UTC)
    boundary = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return (
        boundary if (boundary - now).total_seconds() >= margin_s else boundary + timedelta(1 / 1440)
    )


def sleep_until(instant: datetime) -> None:
    delay = (instant - datetime.now(UTC)).total_seconds()
    if delay > 0:
        time.sleep(delay)


def reset() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE task_scheduling_schedulerun, task_scheduling_periodicschedule, "
            "task_core_taskevent, task_core_task, django_celery_beat_periodictask, "
            "django_celery_beat_crontabschedule RESTART IDENTITY CASCADE"
        )


def brands():
    from task_core.models import Brand

    return [
        Brand.objects.get_or_create(slug=f"bench-{i}", defaults={"name": f"B{i}"})[0]
        for i in range(10)
    ]


# --- megahub -------------------------------------------------------------------------------
def _dispatcher(boundary_ts: float, interval: float, queue) -> None:
    from django.db import connection, connections

    connections.close_all()
    from task_scheduling.services import schedules_dispatch_due

    queries = 0

    def count(execute, sql, params, many, context):
        nonlocal queries
        queries += 1
        return execute(sql, params, many, context)

    ticks, busy = 0, 0.0
    with connection.execute_wrapper(count):
        time.sleep(max(0.0, boundary_ts - time.time()))
        idle_ticks = 0
        while idle_ticks < 2:
            started = time.monotonic()
            totals = schedules_dispatch_due()
            busy += time.monotonic() - started
            ticks += 1
            idle_ticks = idle_ticks + 1 if not totals else 0
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
    queue.put({"queries": queries, "ticks": ticks, "busy_s": busy})


def run_megahub(n: int, dispatchers: int) -> dict:
    from django.conf import settings
    from django.db import connections

    from task_core.models import Task
    from task_scheduling.models import PeriodicSchedule, ScheduleRun

    reset()
    boundary = next_boundary()
    owners = brands()
    PeriodicSchedule.objects.bulk_create(
        [
            PeriodicSchedule(
                brand=owners[i % len(owners)],
                name=f"s{i}",
                task_type="noop",
                cron_expression="* * * * *",
                overlap_policy="allow",
                end_at=boundary,  # one fire each: the minute measured
                next_run_at=boundary,
            )
            for i in range(n)
        ],
        batch_size=2000,
    )
    connections.close_all()
    settings.TASK_FAIR_SHARE = False  # inherited by the forked dispatchers (see the docstring)
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=_dispatcher,
            args=(boundary.timestamp(), settings.SCHEDULE_DISPATCH_INTERVAL_SECONDS, results),
        )
        for _ in range(dispatchers)
    ]
    for proc in procs:
        proc.start()
    stats = [results.get(timeout=900) for _ in procs]
    for proc in procs:
        proc.join()
    runs = ScheduleRun.objects.unscoped().filter(fire_time=boundary)
    recorded = [(r - boundary).total_seconds() for r in runs.values_list("created_at", flat=True)]
    queued = [
        (q - boundary).total_seconds()
        for q in Task.objects.unscoped()
        .filter(queued_at__isnull=False)
        .values_list("queued_at", flat=True)
    ]
    return {
        "tasks": Task.objects.unscoped().count(),
        "runs": runs.count(),
        "duplicates": runs.count() - runs.values("schedule_id").distinct().count(),
        "queued": len(queued),
        "recorded_p95_s": pct(recorded, 95),
        "p50_s": pct(queued, 50),
        "p95_s": pct(queued, 95),
        "max_s": max(queued, default=float("nan")),
        "queries": sum(s["queries"] for s in stats),
        "ticks": sum(s["ticks"] for s in stats),
        "busy_s": sum(s["busy_s"] for s in stats),
    }


# --- stock django-celery-beat -------------------------------------------------------------
def run_baseline(n: int, timeout_s: float = 600.0) -> dict:
    from celery import current_app
    from django.conf import settings
    from django.db import connection
    from django_celery_beat.models import CrontabSchedule, PeriodicTask
    from django_celery_beat.schedulers import DatabaseScheduler

    reset()
    queue = f"{settings.CELERY_QUEUE_PREFIX}default"
    crontab = CrontabSchedule.objects.create(minute="*", hour="*", timezone="UTC")
    PeriodicTask.objects.bulk_create(
        [
            PeriodicTask(
                name=f"bench-{i}", task="bench.noop", crontab=crontab, queue=queue,
                routing_key="default",
            )
            for i in range(n)
        ],
        batch_size=2000,
    )  # fmt: skip
    app = current_app
    app.conf.beat_schedule = {}  # only the bench entries
    queries = 0

    def count(execute, sql, params, many, context):
        nonlocal queries
        queries += 1
        return execute(sql, params, many, context)

    sent: list[float] = []
    scheduler = DatabaseScheduler(app=app)
    original = scheduler.apply_async

    def apply_async(entry, producer=None, advance=True, **kwargs):
        result = original(entry, producer, advance, **kwargs)
        if entry.name.startswith("bench-"):
            sent.append(time.time())
        return result

    scheduler.apply_async = apply_async
    # Load the entries before the boundary, as a running beat has them.
    scheduler.schedule
    boundary = next_boundary()
    sleep_until(boundary)
    deadline = time.monotonic() + timeout_s
    with connection.execute_wrapper(count):
        while len(sent) < n and time.monotonic() < deadline:
            wait = scheduler.tick()
            if wait:
                time.sleep(min(wait, 0.05))
    lags = [t - boundary.timestamp() for t in sent]
    return {
        "sent": len(sent),
        "p50_s": pct(lags, 50),
        "p95_s": pct(lags, 95),
        "max_s": max(lags, default=float("nan")),
        "queries": queries,
        "timed_out": len(sent) < n,
    }


def delete_queues() -> None:
    from celery import current_app
    from django.conf import settings

    with current_app.connection_for_write() as conn:
        channel = conn.default_channel
        for queue in settings.CELERY_TASK_QUEUES:
            queue(channel).delete()
            queue.exchange(channel).delete()


def _summary(values: list[float]) -> dict:
    values = [v for v in values if v == v]  # drop NaN (a run that published nothing)
    if not values:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def _line(label: str, rep: int, result: dict) -> str:
    return f"{label} run {rep}: " + ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--dispatchers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--baseline-repeat", type=int, default=2)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument(
        "--baseline-timeout", type=float, default=240, help="seconds before giving beat up"
    )
    args = parser.parse_args(argv)
    configure()
    ours, theirs = [], []
    baseline_reps = 0 if args.no_baseline else args.baseline_repeat
    try:
        for rep in range(1, max(args.repeat, baseline_reps) + 1):
            if rep <= args.repeat:
                result = run_megahub(args.schedules, args.dispatchers)
                ours.append(result)
                print(_line("megahub ", rep, result), flush=True)
            if rep <= baseline_reps:
                result = run_baseline(args.schedules, args.baseline_timeout)
                theirs.append(result)
                print(_line("baseline", rep, result), flush=True)
    finally:
        delete_queues()
    print(
        f"\n{args.schedules} schedules due in the same minute, {args.dispatchers} dispatchers, "
        f"medians of {args.repeat} run(s):"
    )
    for name, results in (("megahub", ours), ("django-celery-beat", theirs)):
        if results:
            p95 = statistics.median(r["p95_s"] for r in results)
            mx = statistics.median(r["max_s"] for r in results)
            q = statistics.median(r["queries"] for r in results)
            done = statistics.median(r.get("sent", r.get("queued", 0)) for r in results)
            print(
                f"  {name:20s} p95 lag {p95:7.2f} s   max {mx:7.2f} s   queries {q:.0f}"
                f"   published {done:.0f}/{args.schedules}"
                + (
                    "  (timed out: lags are over the published ones only)"
                    if done < args.schedules
                    else ""
                )
            )
    p95 = _summary([r["p95_s"] for r in ours])
    result = {
        "benchmark": "schedules",
        "params": {
            "schedules": args.schedules,
            "dispatchers": args.dispatchers,
            "reps": args.repeat,
            "baseline_reps": baseline_reps,
            "baseline_timeout_s": args.baseline_timeout,
            "dispatch_interval_s": _dispatch_interval(),
        },
        "project": {
            "p50_s": _summary([r["p50_s"] for r in ours]),
            "p95_s": p95,
            "max_s": _summary([r["max_s"] for r in ours]),
            "recorded_p95_s": _summary([r["recorded_p95_s"] for r in ours]),
            "queries": _summary([r["queries"] for r in ours]),
            "complete": all(r["queued"] == args.schedules for r in ours),
            "duplicates": sum(r["duplicates"] for r in ours),
            "runs": ours,
        },
        "baseline": {
            "p50_s": _summary([r["p50_s"] for r in theirs]),
            "p95_s": _summary([r["p95_s"] for r in theirs]),
            "max_s": _summary([r["max_s"] for r in theirs]),
            "sent": _summary([r["sent"] for r in theirs]),
            "queries": _summary([r["queries"] for r in theirs]),
            "timed_out": any(r["timed_out"] for r in theirs),
            "runs": theirs,
        }
        if theirs
        else None,
        "target_p95_s": TARGET_P95_S,
        "p95_pass": p95["median"] <= TARGET_P95_S
        and all(r["queued"] == args.schedules and not r["duplicates"] for r in ours),
    }
    sys.path.insert(0, str(REPO))
    from bench import common

    common.write_result("schedules", result)
    return result


def _dispatch_interval() -> float:
    from django.conf import settings

    return settings.SCHEDULE_DISPATCH_INTERVAL_SECONDS


if __name__ == "__main__":
    main()

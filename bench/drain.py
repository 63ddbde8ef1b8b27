"""End-to-end drain: N `noop` tasks drained by K worker processes, vs bare Celery.

Project, per repetition:
  1. TRUNCATE the bench task tables; bulk-insert N `noop` rows as `pending` with
     available_at=now, each with its `created` event (what N task_create calls leave behind).
  2. Publish them the way the project publishes due tasks: `publishing.tasks_release_due()` in
     batches of 500 until none is left (SELECT ... FOR UPDATE SKIP LOCKED, one confirmed publish
     per task, one UPDATE + one bulk INSERT of `queued` events per batch).
  3. Start `celery -A megahub worker -c K -Q <prefix>default` and wait for N terminal rows.
  Rate = N / (max(completed_at) - min(started_at)); database transactions per task = the
  pg_stat_database xact_commit delta of the bench database while the worker ran / N.

Bare Celery (bench/bare_celery.py), per repetition: publish N messages to a queue declared
with the same arguments, start the same worker command on it, wait until the pool processes
report N tasks run. Rate = N / (last task end - first task start).

Peer (bench/peer_celery.py: Celery + django-celery-results, `django-db` backend,
task_track_started, result_extended, megahub's worker settings), per repetition: TRUNCATE the
result table, publish N messages, start the same worker command on its queue, wait for N
SUCCESS rows. Rate = N / (max(date_done) - min(date_created)) (the row is created when the task
starts); database transactions per task as for the project.

Every worker starts after its messages are queued, so the rates measure draining only. The
three sides run in a rotating order, one repetition of each at a time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common

DB = "megahub_bench"
TARGET_RATIO_PEER = 2.0  # >= 2x Celery + django-celery-results
TARGET_RATIO = 0.5  # >= 0.5x bare Celery (long-run goal 0.7x)
TARGET_XACTS = 2.0  # durable commits per task


def worker_argv(app: str, queue: str, k: int, name: str) -> list[str]:
    # The same command for both apps; mingle/gossip off only to make startup quicker.
    return [
        str(common.VENV_BIN / "celery"),
        "-A",
        app,
        "worker",
        "-P",
        "prefork",
        "-c",
        str(k),
        "-Q",
        queue,
        "-n",
        f"{name}@%h",
        "--loglevel",
        common.CHILD_LOG_LEVEL,
        "--without-mingle",
        "--without-gossip",
    ]


class ProjectDrain:
    def __init__(self, n: int, k: int, worker_settings: str):
        from django.db import connection

        from task_core.models import Brand

        self.n, self.k = n, k
        self.worker_settings = worker_settings
        self.prefix = os.environ["CELERY_QUEUE_PREFIX"]
        self.queue = f"{self.prefix}default"
        self.connection = connection
        self.brand, _ = Brand.objects.get_or_create(
            slug="bench-drain", defaults={"name": "Bench drain"}
        )

    def load(self) -> None:
        from django.core.management import call_command
        from django.utils import timezone

        from task_core.models import Task, TaskEvent

        # The tree may have gained a migration since the last repetition (the worker loads the
        # code afresh each time): keep the schema in step with it.
        call_command("migrate", verbosity=0, interactive=False)
        with self.connection.cursor() as cur:
            # CASCADE: other apps' tables that point at tasks (metrics, checkpoints...).
            cur.execute("TRUNCATE task_core_task, task_core_taskevent CASCADE")
        now = timezone.now()
        tasks = Task.objects.bulk_create(
            (
                Task(
                    brand=self.brand,
                    task_type="noop",
                    queue="default",
                    status=Task.Status.PENDING,
                    context_data={},
                    max_retries=0,
                    available_at=now,
                )
                for _ in range(self.n)
            ),
            batch_size=2000,
        )
        TaskEvent.objects.bulk_create(
            (
                TaskEvent(
                    task_id=t.pk,
                    brand_id=self.brand.pk,
                    kind=TaskEvent.Kind.CREATED,
                    to_status=Task.Status.PENDING,
                    actor="system:bench",
                )
                for t in tasks
            ),
            batch_size=2000,
        )
        with self.connection.cursor() as cur:
            cur.execute("ANALYZE task_core_task")
            cur.execute("ANALYZE task_core_taskevent")

    def publish(self) -> dict:
        from django.test import override_settings

        from task_core import publishing

        self.connection.close()
        time.sleep(0.3)
        x0 = common.xact_commits(DB)
        t0 = time.perf_counter()
        released = 0
        # Everything on the broker before the worker starts, as the measure needs: fair share
        # would hold all but the brand's window back (bench/fairness.py measures that mode).
        with override_settings(TASK_FAIR_SHARE=False):
            while batch := publishing.tasks_release_due(limit=500):
                released += batch
        seconds = time.perf_counter() - t0
        self.connection.close()
        time.sleep(0.3)
        xacts = common.xact_commits(DB) - x0
        if released != self.n:
            raise RuntimeError(f"release loop published {released} of {self.n} tasks")
        return {"seconds": seconds, "rate": self.n / seconds, "xacts_per_task": xacts / self.n}

    def drain(self, rep: int) -> dict:
        import psycopg

        depth = common.queue_depth_now(self.queue)
        if depth != self.n:
            raise RuntimeError(f"{self.queue} holds {depth} messages, expected {self.n}")
        x0 = common.xact_commits(DB)
        worker = common.Proc(
            f"drain-project-{rep}",
            worker_argv("megahub", self.queue, self.k, f"bench-drain-{os.getpid()}-{rep}"),
            common.child_env(DJANGO_SETTINGS_MODULE=self.worker_settings),
        )
        polls = 0
        pg = None
        cpu = common.CpuWindow(worker.pid, self.n, DB)
        try:

            def finished() -> bool:
                nonlocal polls, pg
                if not worker.alive():
                    raise RuntimeError(f"worker exited:\n{worker.tail()}")
                try:
                    if pg is None or pg.closed:
                        pg = common.pg_connect(DB)
                    polls += 1  # each poll is one autocommit transaction in the bench database
                    (done,) = pg.execute(
                        "SELECT count(*) FROM task_core_task "
                        "WHERE brand_id = %s AND completed_at IS NOT NULL",
                        [self.brand.pk],
                    ).fetchone()
                except (OSError, psycopg.Error):  # the server dropped us: reconnect next poll
                    pg = None
                    return False
                cpu.poll(done)
                return done == self.n

            common.wait_until(finished, timeout=180 + self.n / 10, interval=0.5, what="completions")
        finally:
            if pg is not None:
                pg.close()
            worker.stop()
        time.sleep(0.5)  # exiting backends flush their transaction counters
        xacts = common.xact_commits(DB) - x0 - polls
        with common.pg_connect(DB) as pg:
            first, last, completed, total = pg.execute(
                "SELECT min(started_at), max(completed_at), "
                "count(*) FILTER (WHERE status = 'completed'), count(*) "
                "FROM task_core_task WHERE brand_id = %s",
                [self.brand.pk],
            ).fetchone()
            (events,) = pg.execute(
                "SELECT count(*) FROM task_core_taskevent WHERE brand_id = %s", [self.brand.pk]
            ).fetchone()
            (writes,) = pg.execute(WRITE_XACTS, {"brand": self.brand.pk}).fetchone()
        if completed != self.n or total != self.n:
            raise RuntimeError(f"{completed} of {total} tasks completed, expected {self.n}")
        seconds = (last - first).total_seconds()
        return {
            "seconds": seconds,
            "rate": self.n / seconds,
            "xacts_per_task": xacts / self.n,
            "write_xacts_per_task": writes / self.n,
            "events_per_task": events / self.n,
            "cpu_ms_per_task": cpu.per_task_ms(),
        }


# Write transactions of the drain: the distinct transaction ids (xmin) of the rows the worker left
# behind - the tasks' last versions and their events past `created`/`queued`. Each is a
# transaction that wrote, i.e. a durable commit (a read-only one has no xid). The metrics row is
# left out: the finish's own statement inserts it (task_monitoring's OutcomeRow), so its xmin is
# the finish's.
WRITE_XACTS = """
SELECT count(DISTINCT x) FROM (
    SELECT xmin::text AS x FROM task_core_task WHERE brand_id = %(brand)s
    UNION ALL
    SELECT xmin::text FROM task_core_taskevent
    WHERE brand_id = %(brand)s AND kind NOT IN ('created', 'queued')
) AS rows_written
"""


class BareDrain:
    def __init__(self, n: int, k: int):
        from bench import bare_celery

        self.n, self.k = n, k
        self.bare = bare_celery

    def publish(self) -> dict:
        t0 = time.perf_counter()
        self.bare.publish(self.n)
        seconds = time.perf_counter() - t0
        depth = common.queue_depth_now(self.bare.QUEUE)
        if depth != self.n:
            raise RuntimeError(f"{self.bare.QUEUE} holds {depth} messages, expected {self.n}")
        return {"seconds": seconds, "rate": self.n / seconds}

    def drain(self, rep: int) -> dict:
        stats_dir = tempfile.mkdtemp(prefix="megahub-bench-bare-")
        worker = common.Proc(
            f"drain-bare-{rep}",
            worker_argv(
                "bench.bare_celery", self.bare.QUEUE, self.k, f"bench-bare-{os.getpid()}-{rep}"
            ),
            common.child_env(BENCH_BARE_STATS_DIR=stats_dir),
        )
        cpu = common.CpuWindow(worker.pid, self.n)
        try:

            def finished() -> bool:
                if not worker.alive():
                    raise RuntimeError(f"bare worker exited:\n{worker.tail()}")
                done = self.bare.read_stats(stats_dir)[2]
                cpu.poll(done)
                return done >= self.n

            common.wait_until(finished, timeout=120 + self.n / 50, interval=0.1, what="bare drain")
        finally:
            worker.stop()
        first, last, count = self.bare.read_stats(stats_dir)
        shutil.rmtree(stats_dir, ignore_errors=True)
        if count < self.n:  # more is possible: a dropped connection redelivers unacked ones
            raise RuntimeError(f"bare worker ran {count} tasks, expected {self.n}")
        seconds = last - first
        return {"seconds": seconds, "rate": self.n / seconds, "cpu_ms_per_task": cpu.per_task_ms()}


class PeerDrain:
    """Celery + django-celery-results (bench/peer_celery.py) on megahub's database and broker."""

    def __init__(self, n: int, k: int):
        from bench import peer_celery

        self.n, self.k = n, k
        self.peer = peer_celery
        self.queue = peer_celery.QUEUE

    def publish(self) -> dict:
        with common.pg_connect(DB) as pg:
            pg.execute("TRUNCATE django_celery_results_taskresult")
        t0 = time.perf_counter()
        self.peer.publish(self.n)
        seconds = time.perf_counter() - t0
        depth = common.queue_depth_now(self.queue)
        if depth != self.n:
            raise RuntimeError(f"{self.queue} holds {depth} messages, expected {self.n}")
        return {"seconds": seconds, "rate": self.n / seconds}

    def start_worker(self, name: str) -> common.Proc:
        return common.Proc(
            name,
            worker_argv("bench.peer_celery", self.queue, self.k, f"{name}-{os.getpid()}"),
            common.child_env(DJANGO_SETTINGS_MODULE="bench.settings"),
        )

    @staticmethod
    def done(pg) -> int:
        return pg.execute(
            "SELECT count(*) FROM django_celery_results_taskresult WHERE status = 'SUCCESS'"
        ).fetchone()[0]

    def drain(self, rep: int) -> dict:
        x0 = common.xact_commits(DB)
        worker = self.start_worker(f"drain-peer-{rep}")
        polls = 0
        pg = common.pg_connect(DB)
        cpu = common.CpuWindow(worker.pid, self.n, DB)
        try:

            def finished() -> bool:
                nonlocal polls
                if not worker.alive():
                    raise RuntimeError(f"peer worker exited:\n{worker.tail()}")
                polls += 1
                done = self.done(pg)
                cpu.poll(done)
                return done >= self.n

            common.wait_until(finished, timeout=180 + self.n / 10, interval=0.5, what="peer drain")
        finally:
            pg.close()
            worker.stop()
        time.sleep(0.5)
        xacts = common.xact_commits(DB) - x0 - polls
        with common.pg_connect(DB) as pg:
            first, last, done = pg.execute(
                "SELECT min(date_created), max(date_done), count(*) "
                "FROM django_celery_results_taskresult WHERE status = 'SUCCESS'"
            ).fetchone()
        if done != self.n:
            raise RuntimeError(f"peer ran {done} tasks, expected {self.n}")
        seconds = (last - first).total_seconds()
        return {
            "seconds": seconds,
            "rate": self.n / seconds,
            "xacts_per_task": xacts / self.n,
            "cpu_ms_per_task": cpu.per_task_ms(),
        }


# The claim and the finish of a task written as one statement each, for the breakdown below.
RAW_CLAIM = """
WITH t AS (
    UPDATE task_core_task SET status = 'running', updated_at = now(), attempts = attempts + 1,
        started_at = now(), heartbeat_at = now(), worker = 'bench', available_at = NULL,
        error_message = NULL
    WHERE id = %s AND status IN ('pending', 'queued') RETURNING *
), e AS (
    INSERT INTO task_core_taskevent (task_id, brand_id, kind, from_status, to_status, attempt,
        actor, message, data, created_at)
    SELECT id, brand_id, 'started', '', 'running', attempts, 'worker:bench', '', '{}', now()
    FROM t
)
SELECT * FROM t
"""
RAW_FINISH = """
WITH t AS (
    UPDATE task_core_task SET status = 'completed', updated_at = now(), completed_at = now(),
        result_data = '{}', progress_percentage = 100
    WHERE id = %s AND status = 'running' AND attempts = 1 RETURNING *
), e AS (
    INSERT INTO task_core_taskevent (task_id, brand_id, kind, from_status, to_status, attempt,
        actor, message, data, created_at)
    SELECT id, brand_id, 'completed', 'running', 'completed', attempts, 'worker:bench', '',
        '{}', now()
    FROM t
)
SELECT * FROM t
"""


def breakdown(brand, n: int = 300) -> dict:
    """Where a task's time goes, in this process (no Celery, one persistent connection).

    ``execution.task_execute`` per task, its database share, and the floor: the same claim
    and finish as one SQL statement + COMMIT each through psycopg.
    """
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from task_core import execution
    from task_core.models import Task

    def queued(count: int) -> list[int]:
        rows = Task.objects.bulk_create(
            Task(brand=brand, task_type="noop", status=Task.Status.QUEUED) for _ in range(count)
        )
        return [t.pk for t in rows]

    db_s = [0.0]

    def timed(execute, sql, params, many, context):
        t0 = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            db_s[0] += time.perf_counter() - t0

    ids = queued(n + 20)
    for pk in ids[:20]:  # warm: imports, connection, statement caches
        execution.task_execute(task_pk=pk, worker="bench")
    t0, c0 = time.perf_counter(), time.process_time()
    with connection.execute_wrapper(timed):
        for pk in ids[20:]:
            execution.task_execute(task_pk=pk, worker="bench")
    orm_ms = (time.perf_counter() - t0) / n * 1000
    # This process's own CPU (waits for the server left out): steadier than the wall time
    # on a shared machine, where every COMMIT's disk flush varies.
    cpu_ms = (time.process_time() - c0) / n * 1000
    # Transactions and statements of one task on a persistent connection.
    ids = queued(101)
    execution.task_execute(task_pk=ids[0], worker="bench")
    with CaptureQueriesContext(connection) as captured:
        execution.task_execute(task_pk=ids[1], worker="bench")
    connection.close()
    time.sleep(0.3)
    x0 = common.xact_commits(DB)
    for pk in ids[2:]:
        execution.task_execute(task_pk=pk, worker="bench")
    connection.close()
    time.sleep(0.5)
    # 99 tasks; the connection's own start-up and its first SET are 2 transactions.
    xacts = (common.xact_commits(DB) - x0 - 2) / 99
    ids = queued(n)
    connection.close()
    with common.pg_connect(DB, autocommit=False) as pg:
        t0 = time.perf_counter()
        for pk in ids:
            pg.execute(RAW_CLAIM, [pk]).fetchone()
            pg.commit()
            pg.execute(RAW_FINISH, [pk]).fetchone()
            pg.commit()
        raw_ms = (time.perf_counter() - t0) / n * 1000
    return {
        "task_execute_ms": orm_ms,
        "task_execute_cpu_ms": cpu_ms,
        # Statement time as Django sees it (COMMIT is not a statement: it is in the rest).
        "task_execute_db_ms": db_s[0] / n * 1000,
        "raw_two_statements_ms": raw_ms,
        "task_execute_xacts": xacts,
        "task_execute_statements": common.captured_statements(captured),
    }


def run_side(side: str, sides: dict, rep: int) -> tuple[dict, dict]:
    """One repetition of one side; redone (up to twice) if the broker or the database went
    away meanwhile - the test suite's chaos tests stop RabbitMQ on this shared machine."""
    runner = sides[side]
    queue = runner.bare.QUEUE if side == "bare" else runner.queue
    for attempt in range(3):
        try:
            common.wait_for_services(DB)
            if side == "project":
                runner.load()
            return runner.publish(), runner.drain(rep)
        except Exception as exc:
            if attempt == 2:
                raise
            print(f"drain rep {rep + 1} {side}: {exc!r:.300}; redoing it", flush=True)
            time.sleep(5)
            common.wait_for_services(DB)
            common.queue_purge(queue)  # stray messages of the failed attempt
    raise AssertionError("unreachable")


def cpu_median(runs: list[dict]) -> dict[str, float] | None:
    """Median CPU ms per task of each process group over the repetitions that measured it."""
    measured = [r["cpu_ms_per_task"] for r in runs if r.get("cpu_ms_per_task")]
    if not measured:
        return None
    return {
        group: common.percentile([m[group] for m in measured if group in m], 50)
        for group in measured[0]
    }


def run(n: int, k: int, reps: int, budget_s: float | None, worker_settings: str) -> dict:
    info = common.configure(DB)
    common.django_setup(DB)
    prefix = info["prefix"]
    project, bare, peer = ProjectDrain(n, k, worker_settings), BareDrain(n, k), PeerDrain(n, k)
    sides = {"project": project, "peer": peer, "bare": bare}
    per_task = breakdown(project.brand)
    print(
        f"drain: in-process task_execute {per_task['task_execute_ms']:.2f} ms/task "
        f"({per_task['task_execute_cpu_ms']:.2f} ms of it CPU in this process), same "
        f"two transitions in raw SQL {per_task['raw_two_statements_ms']:.2f} ms/task",
        flush=True,
    )
    results: dict[str, list[dict]] = {
        key: [] for side in sides for key in (side, f"{side}_publish")
    }
    started = time.monotonic()
    pair_s: list[float] = []
    try:
        for rep in range(reps):
            if budget_s and pair_s and time.monotonic() - started + max(pair_s) > budget_s:
                print(f"drain: time budget reached after {rep} repetitions", flush=True)
                break
            t_pair = time.monotonic()
            # Rotate which side runs first, so slow drift of the machine hits every side alike.
            order = list(sides)[rep % 3 :] + list(sides)[: rep % 3]
            for side in order:
                published, last = run_side(side, sides, rep)
                results[f"{side}_publish"].append(published)
                results[side].append(last)
                print(
                    f"drain rep {rep + 1}: {side:7s} {last['rate']:8.1f} tasks/s"
                    + (
                        f"  {last['xacts_per_task']:.2f} xacts/task"
                        if "xacts_per_task" in last
                        else ""
                    )
                    + (
                        "  CPU ms/task: "
                        + ", ".join(f"{g} {ms:.2f}" for g, ms in last["cpu_ms_per_task"].items())
                        if last.get("cpu_ms_per_task")
                        else ""
                    ),
                    flush=True,
                )
            pair_s.append(time.monotonic() - t_pair)
    finally:
        common.broker_cleanup(
            [f"{prefix}default", f"{prefix}long", f"{prefix}bare", peer.queue],
            [
                f"{prefix}megahub.tasks",
                f"{prefix}bare.tasks",
                f"{prefix}megahub.events",
                peer.peer.EXCHANGE,
            ],
        )
    p_rates = [r["rate"] for r in results["project"]]
    b_rates = [r["rate"] for r in results["bare"]]
    peer_rates = [r["rate"] for r in results["peer"]]
    xacts = [r["xacts_per_task"] for r in results["project"]]
    writes = [r["write_xacts_per_task"] for r in results["project"]]
    ratio = common.percentile(p_rates, 50) / common.percentile(b_rates, 50)
    ratio_peer = common.percentile(p_rates, 50) / common.percentile(peer_rates, 50)
    xacts_median = common.percentile(xacts, 50)
    writes_median = common.percentile(writes, 50)
    return {
        "benchmark": "drain",
        "params": {
            "tasks": n,
            "workers": k,
            "reps_requested": reps,
            "reps_done": len(p_rates),
            "worker_settings": worker_settings,
        },
        "project": {
            "rate": common.summary(p_rates),
            "runs": results["project"],
            "xacts_per_task": common.summary(xacts),
            "write_xacts_per_task": common.summary(writes),
            "events_per_task": results["project"][0]["events_per_task"],
            "cpu_ms_per_task": cpu_median(results["project"]),
            "publish": results["project_publish"],
            "publish_rate": common.summary([r["rate"] for r in results["project_publish"]]),
            "release_xacts_per_task": common.summary(
                [r["xacts_per_task"] for r in results["project_publish"]]
            ),
        },
        "bare": {
            "rate": common.summary(b_rates),
            "runs": results["bare"],
            "cpu_ms_per_task": cpu_median(results["bare"]),
            "publish_rate": common.summary([r["rate"] for r in results["bare_publish"]]),
        },
        "peer": {
            "rate": common.summary(peer_rates),
            "runs": results["peer"],
            "xacts_per_task": common.summary([r["xacts_per_task"] for r in results["peer"]]),
            "cpu_ms_per_task": cpu_median(results["peer"]),
            "publish_rate": common.summary([r["rate"] for r in results["peer_publish"]]),
        },
        "breakdown": per_task,
        "ratio_peer": ratio_peer,
        "target_ratio_peer": TARGET_RATIO_PEER,
        "ratio_peer_pass": ratio_peer >= TARGET_RATIO_PEER,
        "ratio": ratio,
        "target_ratio": TARGET_RATIO,
        "ratio_pass": ratio >= TARGET_RATIO,
        "xacts_median": xacts_median,
        "write_xacts_median": writes_median,
        "target_xacts": TARGET_XACTS,
        "xacts_pass": writes_median <= TARGET_XACTS,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tasks", type=int, default=5000, help="tasks per drain (N; SPEC says 20000)"
    )
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 2, help="worker processes (K)"
    )
    parser.add_argument("--reps", type=int, default=5, help="repetitions of each side")
    parser.add_argument(
        "--budget-s", type=float, default=None, help="start no new repetition past this"
    )
    parser.add_argument(
        "--worker-settings",
        default="megahub.settings",
        help="DJANGO_SETTINGS_MODULE of the project worker (to try a settings change)",
    )
    parser.add_argument("--result-name", default="drain", help="bench/results/<name>.json")
    parser.add_argument(
        "--db",
        default="megahub_bench",
        help="bench database (megahub_bench*): another name runs beside another drain",
    )
    args = parser.parse_args(argv)
    global DB
    DB = args.db
    result = run(args.tasks, args.workers, args.reps, args.budget_s, args.worker_settings)
    common.write_result(args.result_name, result)
    p, b, peer = result["project"], result["bare"], result["peer"]
    print(
        f"drain: project {p['rate']['median']:.1f}/s vs peer {peer['rate']['median']:.1f}/s "
        f"-> {result['ratio_peer']:.2f}x (target >= {TARGET_RATIO_PEER}), vs bare "
        f"{b['rate']['median']:.1f}/s -> {result['ratio']:.2f}x (target >= {TARGET_RATIO}); "
        f"{result['write_xacts_median']:.2f} durable commits/task (target <= {TARGET_XACTS:g}; "
        f"{result['xacts_median']:.2f} commits/task, read-only ones included)",
        flush=True,
    )
    return result


if __name__ == "__main__":
    main()

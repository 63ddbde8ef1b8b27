"""Fair share between brands: its cost on the drain, and what it buys another brand.

1. Drain, fair release on vs off, end to end: N `noop` tasks of one brand loaded as due
   `pending` rows (as in bench/drain.py) while megahub's default topology is already up and idle
   (K worker processes on the brand queues, and the system worker whose releaser thread refills
   windows). At t0 the release loop's tick runs here: off (TASK_FAIR_SHARE=0 in this process
   and the workers) it publishes the whole backlog, 500 per tick, back to back; on it publishes
   the brand's window (TASK_BRAND_WINDOW) and the releaser, woken by each finish, publishes the
   rest. Rate = N / (last completion - t0), both sides paying for their publishing. Also kept:
   the worker-only rate N / (last completion - first start). Target: on >= 0.9x off (end to
   end).
2. Starvation: brand A's backlog of N_A `noop` tasks draining on K worker processes (and the
   system worker); once `--head` of them have completed, brand B sends 20 tasks
   (`services.task_create`, published on commit). B's start delays (started_at - created_at),
   megahub with fair share on and off, and plain Celery on the same broker
   (bench/bare_fairness.py: N_A messages, then 20 marked ones; delay = task_prerun time - send
   time).
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
from bench.drain import ProjectDrain, cpu_median, worker_argv

DB = "megahub_bench_fair"  # its own: other benchmarks TRUNCATE megahub_bench
TARGET_RATIO = 0.9
B_TASKS = 20


def _worker(name: str, project: ProjectDrain, fair: bool) -> common.Proc:
    return common.Proc(
        name,
        worker_argv("megahub", project.queue, project.k, f"{name}-{os.getpid()}"),
        common.child_env(TASK_FAIR_SHARE="1" if fair else "0"),
    )


def _system_worker(name: str, project: ProjectDrain, fair: bool) -> common.Proc:
    """The system queue's worker (one pool process: no platform loop ticks here, no beat),
    which runs the releaser thread when fair share is on."""
    return common.Proc(
        name,
        worker_argv("megahub", f"{project.prefix}system", 1, f"{name}-{os.getpid()}"),
        common.child_env(TASK_FAIR_SHARE="1" if fair else "0"),
    )


def _topology(name: str, project: ProjectDrain, fair: bool) -> list[common.Proc]:
    """The brand worker and the system worker, started and ready (idle)."""
    procs = [_worker(name, project, fair), _system_worker(f"{name}-system", project, fair)]
    markers = [" ready.", "releaser listening" if fair else " ready."]

    def ready() -> bool:
        for proc, marker in zip(procs, markers, strict=True):
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
            if marker not in proc.log_path.read_text(errors="replace"):
                return False
        return True

    try:
        common.wait_until(ready, timeout=120, interval=0.2, what="workers ready")
    except BaseException:
        for proc in procs:
            proc.stop()
        raise
    time.sleep(1.0)  # start-up settled: idle
    return procs


def _release(fair: bool) -> int:
    from django.test import override_settings

    from task_core import publishing

    released = 0
    with override_settings(TASK_FAIR_SHARE=fair):
        while batch := publishing.tasks_release_due(limit=500):
            released += batch
    return released


def _completed(brand_ids: list[int]) -> int:
    with common.pg_connect(DB) as pg:
        (n,) = pg.execute(
            "SELECT count(*) FROM task_core_task WHERE brand_id = ANY(%s) AND status = 'completed'",
            [brand_ids],
        ).fetchone()
    return n


def drain(project: ProjectDrain, fair: bool, rep: int) -> dict:
    procs = _topology(f"fair-drain-{'on' if fair else 'off'}-{rep}", project, fair)
    try:
        project.load()  # due pending rows: nothing publishes them before the first tick
        project.connection.close()
        # CPU per task (bench.common.CpuWindow): the brand worker with the bench database's
        # backends, and the system worker (its main process runs the releaser thread).
        cpu_brand = common.CpuWindow(procs[0].pid, project.n, DB)
        cpu_system = common.CpuWindow(procs[1].pid, project.n)

        def finished() -> bool:
            done = _completed([project.brand.pk])
            cpu_brand.poll(done)
            cpu_system.poll(done)
            return all(p.alive() for p in procs) and done == project.n

        t0 = time.time()
        released = _release(fair)
        common.wait_until(finished, timeout=180 + project.n / 5, interval=0.2, what="completions")
    finally:
        for proc in procs:
            proc.stop()
    with common.pg_connect(DB) as pg:
        first, last = pg.execute(
            "SELECT min(started_at), max(completed_at) FROM task_core_task WHERE brand_id = %s",
            [project.brand.pk],
        ).fetchone()
        # Who published the backlog, in how many releases (a release stamps its queued_at).
        releases = {
            actor: {"releases": r, "tasks": n}
            for actor, r, n in pg.execute(
                "SELECT e.actor, count(DISTINCT t.queued_at), count(*) FROM task_core_taskevent e "
                "JOIN task_core_task t ON t.id = e.task_id "
                "WHERE e.brand_id = %s AND e.kind = 'queued' GROUP BY e.actor",
                [project.brand.pk],
            ).fetchall()
        }
    seconds = last.timestamp() - t0
    worker_seconds = (last - first).total_seconds()
    return {
        "released_by_first_tick": released,
        "releases": releases,
        "seconds": seconds,
        "rate": project.n / seconds,
        "worker_seconds": worker_seconds,
        "worker_rate": project.n / worker_seconds,
        "cpu_ms_per_task": cpu_brand.per_task_ms(),
        "system_cpu_ms_per_task": cpu_system.per_task_ms(),
    }


def starvation_project(project: ProjectDrain, other, fair: bool, head: int, rep: int) -> dict:
    from django.test import override_settings

    from task_core import services
    from task_core.models import Task

    procs = _topology(f"fair-starve-{'on' if fair else 'off'}-{rep}", project, fair)
    try:
        project.load()
        _release(fair)
        common.wait_until(
            lambda: _completed([project.brand.pk]) >= head, timeout=300, what="A's head"
        )
        with override_settings(TASK_FAIR_SHARE=fair):
            tasks = [services.task_create(brand=other, task_type="noop")[0] for _ in range(B_TASKS)]
        common.wait_until(
            lambda: _completed([other.pk]) == B_TASKS,
            timeout=180 + project.n / 5,
            interval=0.2,
            what="B's tasks",
        )
        a_done = _completed([project.brand.pk])
    finally:
        for proc in procs:
            proc.stop()
    rows = Task.objects.unscoped().filter(pk__in=[t.pk for t in tasks])
    delays = [(r.started_at - r.created_at).total_seconds() for r in rows]
    return {"delays_s": delays, "a_completed_when_b_done": a_done}


def starvation_bare(n: int, k: int, head: int, rep: int) -> dict:
    from bench import bare_celery

    stats_dir = tempfile.mkdtemp(prefix="megahub-bench-fair-")
    mark_file = os.path.join(stats_dir, "marks.txt")
    common.queue_purge(bare_celery.QUEUE)
    bare_celery.publish(n)
    worker = common.Proc(
        f"fair-starve-bare-{rep}",
        worker_argv("bench.bare_fairness", bare_celery.QUEUE, k, f"fair-bare-{os.getpid()}-{rep}"),
        common.child_env(
            BENCH_BARE_STATS_DIR=os.path.join(stats_dir, "stats"), BENCH_BARE_MARK_FILE=mark_file
        ),
    )
    os.makedirs(os.path.join(stats_dir, "stats"))
    sent: dict[int, float] = {}
    try:
        common.wait_until(
            lambda: bare_celery.read_stats(os.path.join(stats_dir, "stats"))[2] >= head,
            timeout=300,
            what="A's head (bare)",
        )
        with bare_celery.app.producer_or_acquire() as producer:
            for i in range(1, B_TASKS + 1):
                sent[i] = time.time()
                bare_celery.app.send_task(
                    bare_celery.TASK_NAME,
                    args=[-i],
                    queue=bare_celery.QUEUE,
                    routing_key="bare",
                    priority=4,
                    producer=producer,
                )

        def marks() -> dict[int, float]:
            if not os.path.exists(mark_file):
                return {}
            with open(mark_file) as f:
                return {int(a): float(t) for a, t in (line.split() for line in f if line.strip())}

        common.wait_until(lambda: len(marks()) == B_TASKS, timeout=300 + n / 20, what="B (bare)")
        started = marks()
    finally:
        worker.stop()
        shutil.rmtree(stats_dir, ignore_errors=True)
        common.queue_purge(bare_celery.QUEUE)
    return {"delays_s": [started[i] - sent[i] for i in sent]}


def _cpu_line(result: dict) -> str:
    brand, system = result["cpu_ms_per_task"] or {}, result["system_cpu_ms_per_task"] or {}
    parts = [f"{group} {ms:.2f}" for group, ms in brand.items()]
    parts.append(f"system worker main {system.get('worker main', float('nan')):.2f}")
    return ", ".join(parts)


def delay_summary(runs: list[dict]) -> dict:
    delays = [d for r in runs for d in r["delays_s"]]
    return {
        "p50": common.percentile(delays, 50),
        "p95": common.percentile(delays, 95),
        "max": max(delays),
        "n": len(delays),
    }


def run(n: int, k: int, reps: int, n_a: int, head: int) -> dict:
    info = common.configure(DB)
    common.django_setup(DB)
    from task_core.models import Brand

    prefix = info["prefix"]
    project = ProjectDrain(n, k, "megahub.settings")
    other, _ = Brand.objects.get_or_create(slug="bench-fair-b", defaults={"name": "Bench B"})
    load_before = os.getloadavg()[0]
    on, off = [], []
    starve: dict[str, list[dict]] = {"fair": [], "unfair": [], "bare": []}
    try:
        for rep in range(reps):
            for fair in (True, False) if rep % 2 == 0 else (False, True):
                result = drain(project, fair, rep)
                (on if fair else off).append(result)
                print(f"fairness drain rep {rep + 1}: fair {'on ' if fair else 'off'} "
                      f"{result['rate']:8.1f} tasks/s end to end, "
                      f"{result['worker_rate']:8.1f} worker-only; CPU ms/task "
                      f"{_cpu_line(result)}", flush=True)  # fmt: skip
        starving = ProjectDrain(n_a, k, "megahub.settings") if n_a else None
        for rep in range(reps if n_a else 0):
            for side in ("fair", "unfair", "bare"):
                if side == "bare":
                    result = starvation_bare(n_a, k, head, rep)
                else:
                    result = starvation_project(starving, other, side == "fair", head, rep)
                starve[side].append(result)
                s = delay_summary([result])
                print(f"fairness starvation rep {rep + 1}: {side:6s} B start delay p50 "
                      f"{s['p50']:.2f}s max {s['max']:.2f}s", flush=True)  # fmt: skip
    finally:
        common.broker_cleanup(
            [f"{prefix}default", f"{prefix}long", f"{prefix}system", f"{prefix}bare"],
            [f"{prefix}megahub.tasks", f"{prefix}bare.tasks", f"{prefix}megahub.events"],
        )
    on_rates = [r["rate"] for r in on]
    off_rates = [r["rate"] for r in off]
    ratio = common.percentile(on_rates, 50) / common.percentile(off_rates, 50)
    on_worker = [r["worker_rate"] for r in on]
    off_worker = [r["worker_rate"] for r in off]
    worker_ratio = common.percentile(on_worker, 50) / common.percentile(off_worker, 50)
    return {
        "benchmark": "fairness",
        "params": {
            "tasks": n,
            "workers": k,
            "reps": reps,
            "backlog": n_a,
            "head": head,
            "b_tasks": B_TASKS,
        },
        "drain": {
            "on": {
                "rate": common.summary(on_rates),
                "worker_rate": common.summary(on_worker),
                "cpu_ms_per_task": cpu_median(on),
                "system_cpu_ms_per_task": cpu_median(
                    [{"cpu_ms_per_task": r["system_cpu_ms_per_task"]} for r in on]
                ),
                "runs": on,
            },
            "off": {
                "rate": common.summary(off_rates),
                "worker_rate": common.summary(off_worker),
                "cpu_ms_per_task": cpu_median(off),
                "system_cpu_ms_per_task": cpu_median(
                    [{"cpu_ms_per_task": r["system_cpu_ms_per_task"]} for r in off]
                ),
                "runs": off,
            },
            "ratio": ratio,
            "worker_ratio": worker_ratio,
            "measure": "end_to_end",
            "target_ratio": TARGET_RATIO,
            "ratio_pass": ratio >= TARGET_RATIO,
        },
        "starvation": {side: delay_summary(runs) for side, runs in starve.items() if runs},
        # 1-minute load average at the start and the end: 2 CPUs are often shared.
        "loadavg": [load_before, os.getloadavg()[0]],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000, help="tasks per drain")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="K")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each side")
    parser.add_argument(
        "--backlog", type=int, default=5000, help="brand A's backlog (N_A); 0: no starvation runs"
    )
    parser.add_argument("--head", type=int, default=200, help="A's completions before B sends")
    args = parser.parse_args(argv)
    result = run(args.tasks, args.workers, args.reps, args.backlog, args.head)
    common.write_result("fairness", result)
    d, s = result["drain"], result["starvation"]
    print(
        f"fairness: drain end to end on {d['on']['rate']['median']:.1f}/s vs off "
        f"{d['off']['rate']['median']:.1f}/s -> {d['ratio']:.2f}x (target >= {TARGET_RATIO}); "
        f"worker-only on {d['on']['worker_rate']['median']:.1f}/s vs off "
        f"{d['off']['worker_rate']['median']:.1f}/s -> {d['worker_ratio']:.2f}x; "
        + "; ".join(
            f"B delay {side} p50 {v['p50']:.2f}s p95 {v['p95']:.2f}s max {v['max']:.2f}s"
            for side, v in s.items()
        ),
        flush=True,
    )
    return result


if __name__ == "__main__":
    main()

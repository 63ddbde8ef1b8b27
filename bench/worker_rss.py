"""Worker memory: RSS of the project's worker vs the peer's and a bare Celery worker.

Each side drains --tasks no-op tasks (project: `noop` rows released by
`publishing.tasks_release_due`, as bench/drain.py does; peer: Celery + django-celery-results,
bench/peer_celery.py; bare: bench/bare_celery.py messages) with the same worker command
(`celery worker -P prefork -c K`). The target (SPEC §5) is the project's RSS after the run
<= 1.2x the peer worker's; bare Celery is the floor. Every --interval seconds the
benchmark reads, from /proc, the RSS of the worker's main process, the RSS of its pool
children and the PSS of the whole tree (shared pages split between the processes that map
them), with the number of tasks done so far.

Reported per side: the RSS once warm (first sample past 2 % of the tasks), at the end (median
of the last 3 samples) and the maximum; the growth rate, the least-squares slope of total RSS
over tasks done from 25 % of the tasks on, in KB per 10k tasks, and that slope extrapolated to
100k tasks. SPEC's 100k tasks take ~20 min at the project's current drain rate on 2 CPUs, so
the project side stops at --budget-s seconds of draining: the result says how many it ran.
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
from bench.drain import DB, PeerDrain, ProjectDrain, worker_argv

TARGET_RATIO = 1.2  # <= 1.2x the django-celery-results peer's worker
TARGET_TASKS = 100_000
FLAT_GROWTH = 0.10  # at most +10 % over 100k tasks, extrapolated, counts as flat


def sample_loop(worker: common.Proc, done_fn, n: int, interval: float, budget_s: float) -> list:
    samples = []
    t0 = time.monotonic()
    while True:
        if not worker.alive():
            raise RuntimeError(f"{worker.name} exited:\n{worker.tail()}")
        done = done_fn()
        mem = common.memory_of_tree(worker.pid)
        samples.append({"t": round(time.monotonic() - t0, 2), "done": done, **mem})
        if done >= n or time.monotonic() - t0 > budget_s:
            return samples
        time.sleep(interval)


def analyse(samples: list[dict], n_target: int) -> dict:
    def total(s):
        return s["rss_parent_kb"] + s["rss_children_kb"]

    done = samples[-1]["done"]
    warm = next((s for s in samples if s["done"] >= max(50, 0.02 * done)), samples[0])
    tail = samples[-3:]
    end = common.percentile([total(s) for s in tail], 50)
    fit = [s for s in samples if s["done"] >= 0.25 * done]
    slope = common.linear_slope([s["done"] for s in fit], [total(s) for s in fit])  # KB/task
    return {
        "tasks_done": done,
        "tasks_target": n_target,
        "warm_rss_kb": total(warm),
        "end_rss_kb": end,
        "end_rss_parent_kb": common.percentile([s["rss_parent_kb"] for s in tail], 50),
        "end_rss_children_kb": common.percentile([s["rss_children_kb"] for s in tail], 50),
        "end_pss_kb": common.percentile([s["pss_kb"] for s in tail], 50),
        "max_rss_kb": max(total(s) for s in samples),
        "slope_kb_per_10k": slope * 10_000,
        "growth_100k_kb": slope * TARGET_TASKS,
        "growth_100k_pct": 100 * slope * TARGET_TASKS / end if end else float("nan"),
        "seconds": samples[-1]["t"],
        "samples": samples,
    }


def run_project(n: int, k: int, interval: float, budget_s: float) -> dict:
    project = ProjectDrain(n, k, "megahub.settings")
    project.load()
    project.publish()
    pg = common.pg_connect(DB)
    worker = common.Proc(
        "rss-project",
        worker_argv("megahub", project.queue, k, f"bench-rss-{os.getpid()}"),
        common.child_env(),
    )
    try:

        def done() -> int:
            return pg.execute(
                "SELECT count(*) FROM task_core_task WHERE brand_id = %s "
                "AND completed_at IS NOT NULL",
                [project.brand.pk],
            ).fetchone()[0]

        samples = sample_loop(worker, done, n, interval, budget_s)
    finally:
        worker.stop()
        pg.close()
        common.queue_purge(project.queue)  # what the budget left undrained
    return analyse(samples, n)


def run_bare(n: int, k: int, interval: float, budget_s: float) -> dict:
    from bench import bare_celery

    bare_celery.publish(n)
    stats_dir = tempfile.mkdtemp(prefix="megahub-bench-rss-")
    worker = common.Proc(
        "rss-bare",
        worker_argv("bench.bare_celery", bare_celery.QUEUE, k, f"bench-rss-bare-{os.getpid()}"),
        common.child_env(BENCH_BARE_STATS_DIR=stats_dir),
    )
    try:
        samples = sample_loop(
            worker, lambda: bare_celery.read_stats(stats_dir)[2], n, interval, budget_s
        )
    finally:
        worker.stop()
        shutil.rmtree(stats_dir, ignore_errors=True)
        common.queue_purge(bare_celery.QUEUE)
    return analyse(samples, n)


def run_peer(n: int, k: int, interval: float, budget_s: float) -> dict:
    peer = PeerDrain(n, k)
    peer.publish()
    pg = common.pg_connect(DB)
    worker = peer.start_worker("rss-peer")
    try:
        samples = sample_loop(worker, lambda: peer.done(pg), n, interval, budget_s)
    finally:
        worker.stop()
        pg.close()
        common.queue_purge(peer.queue)
    return analyse(samples, n)


def run(n: int, bare_n: int, k: int, interval: float, budget_s: float) -> dict:
    info = common.configure(DB)
    common.django_setup(DB)
    prefix = info["prefix"]
    try:
        bare = run_bare(bare_n, k, interval, budget_s)
        print(
            f"rss: bare    {bare['tasks_done']:>7,} tasks, end {bare['end_rss_kb'] / 1024:.1f} MB, "
            f"slope {bare['slope_kb_per_10k']:+.0f} KB/10k tasks",
            flush=True,
        )
        peer = run_peer(n, k, interval, budget_s)
        print(
            f"rss: peer    {peer['tasks_done']:>7,} tasks, end {peer['end_rss_kb'] / 1024:.1f} MB, "
            f"slope {peer['slope_kb_per_10k']:+.0f} KB/10k tasks",
            flush=True,
        )
        project = run_project(n, k, interval, budget_s)
        print(
            f"rss: project {project['tasks_done']:>7,} tasks, end "
            f"{project['end_rss_kb'] / 1024:.1f} MB, slope "
            f"{project['slope_kb_per_10k']:+.0f} KB/10k tasks",
            flush=True,
        )
    finally:
        common.broker_cleanup(
            [f"{prefix}default", f"{prefix}long", f"{prefix}bare", f"{prefix}peer"],
            [
                f"{prefix}megahub.tasks",
                f"{prefix}bare.tasks",
                f"{prefix}megahub.events",
                f"{prefix}peer.tasks",
            ],
        )
    ratio = project["end_rss_kb"] / peer["end_rss_kb"]
    flat = project["growth_100k_pct"] <= 100 * FLAT_GROWTH
    return {
        "benchmark": "rss",
        "params": {
            "tasks": n,
            "bare_tasks": bare_n,
            "workers": k,
            "interval_s": interval,
            "budget_s": budget_s,
        },
        "project": project,
        "peer": peer,
        "bare": bare,
        "ratio": ratio,  # project / peer
        "bare_ratio": project["end_rss_kb"] / bare["end_rss_kb"],
        "pss_ratio": project["end_pss_kb"] / peer["end_pss_kb"],
        "target_ratio": TARGET_RATIO,
        "ratio_pass": ratio <= TARGET_RATIO,
        "flat_growth_pct": 100 * FLAT_GROWTH,
        "flat_pass": flat,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000, help="project tasks (SPEC: 100k)")
    parser.add_argument("--bare-tasks", type=int, default=None, help="default: --tasks")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between samples")
    parser.add_argument(
        "--budget-s", type=float, default=240, help="stop a side's drain after this long"
    )
    args = parser.parse_args(argv)
    result = run(
        args.tasks, args.bare_tasks or args.tasks, args.workers, args.interval, args.budget_s
    )
    common.write_result("rss", result)
    print(
        f"rss: project {result['project']['end_rss_kb'] / 1024:.1f} MB vs peer "
        f"{result['peer']['end_rss_kb'] / 1024:.1f} MB -> {result['ratio']:.2f}x (target <= "
        f"{TARGET_RATIO}); project growth over 100k tasks (extrapolated) "
        f"{result['project']['growth_100k_pct']:+.1f} %",
        flush=True,
    )
    return result


if __name__ == "__main__":
    main()

"""Overhead of the lifecycle-events outbox on drain throughput: event relay on vs off.

Every transition writes its TaskEvent row in the same transaction whatever happens next (the
outbox); the relay (`task_core.events.events_relay`, the `megahub.events_relay`
Celery task) publishes the unpublished rows to the `megahub.events` topic exchange with
publisher confirms, then stamps `published_at`. In production beat sends that task every
EVENTS_RELAY_INTERVAL_SECONDS and a worker runs it.

Per repetition and side, as bench/drain.py's project side: N `noop` tasks loaded and released
(`tasks_release_due`), the events written so far (created, queued) stamped as published (the
relay is taken to have kept up with creation), then `celery -A megahub worker -c K -Q
<default>,<system>` drains them. The worker command is the same on both sides:

- relay off: nothing else runs; the started/completed events stay in the outbox.
- relay on: this process sends `megahub.events_relay` to the system queue every
  EVENTS_RELAY_INTERVAL_SECONDS, as beat does, and the same worker runs it between the
  tasks; a durable queue bound to the exchange with `#` stands for a subscriber, so the
  persistent event messages are routed and stored. After the last task completes, the relay
  runs until the outbox is empty (its lag is reported).

Rate = N / (last completed_at - first started_at); ratio = on / off (medians of --reps).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from bench.drain import DB, ProjectDrain, worker_argv


class Ticker:
    """Sends the relay task every interval, like beat's entry."""

    def __init__(self, interval: float):
        self.interval = interval
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        from task_core.tasks import events_relay

        while not self._stop.wait(self.interval):
            events_relay.apply_async()
            self.sent += 1

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def sink_declare(prefix: str) -> str:
    from kombu import Queue

    from task_core import events

    name = f"{prefix}bench-events-sink"
    with common.broker_connection() as conn:
        Queue(name, events.events_exchange(), routing_key="#", durable=True)(
            conn.default_channel
        ).declare()
    return name


def drain_once(project: ProjectDrain, relay: bool, rep: int, interval: float, pg) -> dict:
    from django.conf import settings

    project.load()
    project.publish()
    brand = project.brand.pk
    pg.execute("UPDATE task_core_taskevent SET published_at = now() WHERE published_at IS NULL")
    system = f"{project.prefix}{settings.MEGAHUB_SYSTEM_QUEUE}"
    worker = common.Proc(
        f"outbox-{'on' if relay else 'off'}-{rep}",
        worker_argv(
            "megahub", f"{project.queue},{system}", project.k, f"bench-outbox-{os.getpid()}-{rep}"
        ),
        common.child_env(),
    )

    def count(sql: str) -> int:
        return pg.execute(sql, [brand]).fetchone()[0]

    def finished() -> bool:
        if not worker.alive():
            raise RuntimeError(f"worker exited:\n{worker.tail()}")
        return (
            count(
                "SELECT count(*) FROM task_core_task WHERE brand_id = %s "
                "AND completed_at IS NOT NULL"
            )
            == project.n
        )

    def relayed() -> bool:
        if not worker.alive():
            raise RuntimeError(f"worker exited:\n{worker.tail()}")
        return not count(
            "SELECT count(*) FROM task_core_taskevent WHERE brand_id = %s AND published_at IS NULL"
        )

    try:
        if relay:
            with Ticker(interval) as ticker:
                common.wait_until(
                    finished, timeout=180 + project.n / 10, interval=0.5, what="completions"
                )
                common.wait_until(relayed, timeout=120, interval=0.2, what="the relay")
            ticks = ticker.sent
        else:
            common.wait_until(
                finished, timeout=180 + project.n / 10, interval=0.5, what="completions"
            )
            ticks = 0
    finally:
        worker.stop()
        common.queue_purge(system)
    first, last, last_published, unpublished, published_in_drain = pg.execute(
        "SELECT (SELECT min(started_at) FROM task_core_task WHERE brand_id = %(b)s), "
        "(SELECT max(completed_at) FROM task_core_task WHERE brand_id = %(b)s), "
        "(SELECT max(published_at) FROM task_core_taskevent WHERE brand_id = %(b)s), "
        "(SELECT count(*) FROM task_core_taskevent WHERE brand_id = %(b)s "
        " AND published_at IS NULL), "
        "(SELECT count(*) FROM task_core_taskevent WHERE brand_id = %(b)s "
        " AND kind IN ('started', 'completed') AND published_at IS NOT NULL)",
        {"b": brand},
    ).fetchone()
    seconds = (last - first).total_seconds()
    return {
        "seconds": seconds,
        "rate": project.n / seconds,
        "relay_ticks": ticks,
        "events_published": published_in_drain,
        "unpublished_after": unpublished,
        "relay_lag_after_last_completion_s": (last_published - last).total_seconds()
        if relay
        else None,
    }


def run(n: int, k: int, reps: int) -> dict:
    info = common.configure(DB)
    common.django_setup(DB)
    from django.conf import settings

    prefix = info["prefix"]
    interval = float(settings.EVENTS_RELAY_INTERVAL_SECONDS)
    project = ProjectDrain(n, k, "megahub.settings")
    sink = sink_declare(prefix)
    runs: dict[str, list[dict]] = {"on": [], "off": []}
    pg = common.pg_connect(DB)
    try:
        for rep in range(reps):
            order = ("off", "on") if rep % 2 == 0 else ("on", "off")
            for side in order:
                r = drain_once(project, side == "on", rep, interval, pg)
                runs[side].append(r)
                common.queue_purge(sink)
                print(
                    f"outbox rep {rep + 1}: relay {side:3s} {r['rate']:7.1f} tasks/s, "
                    f"{r['events_published']} events published during the drain",
                    flush=True,
                )
    finally:
        pg.close()
        common.broker_cleanup(
            [f"{prefix}default", f"{prefix}long", f"{prefix}system", sink],
            [f"{prefix}megahub.tasks", f"{prefix}megahub.events"],
        )
    out = {
        side: {
            "rate": common.summary([r["rate"] for r in rs]),
            "runs": rs,
        }
        for side, rs in runs.items()
    }
    lags = [r["relay_lag_after_last_completion_s"] for r in runs["on"]]
    return {
        "benchmark": "outbox",
        "params": {"tasks": n, "workers": k, "reps": reps, "relay_interval_s": interval},
        **out,
        "relay_lag_s": common.summary(lags),
        "ratio": out["on"]["rate"]["median"] / out["off"]["rate"]["median"],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000, help="tasks per drain")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    result = run(args.tasks, args.workers, args.reps)
    common.write_result("outbox", result)
    print(
        f"outbox: relay on {result['on']['rate']['median']:.1f} tasks/s vs off "
        f"{result['off']['rate']['median']:.1f} tasks/s -> {result['ratio']:.2f}x",
        flush=True,
    )
    return result


if __name__ == "__main__":
    main()

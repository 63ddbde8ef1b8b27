"""Scheduling: how soon an edited schedule is honoured by a running dispatcher.

A dispatcher process runs `task_scheduling.services.schedules_dispatch_due` every
SCHEDULE_DISPATCH_INTERVAL_SECONDS as beat's entry does, and records when each tick started and
ended. Beat's phase relative to the minute is arbitrary, so each repetition starts its own
dispatcher with a different phase (its first tick at or after the boundary comes 0.1, 0.9,
0.3, 0.7, 0.5 x the interval after it).

Each repetition uses one minute boundary B and four `noop` schedules created a minute ahead,
edited through `task_scheduling.services` at B - delta (delta cycles over --deltas):

- pause:    `* * * * *`, enabled     -> `schedule_pause`   (must not fire at B)
- resume:   `* * * * *`, disabled    -> `schedule_resume`  (must fire at B)
- cron on:  `0 0 1 1 *`              -> `* * * * *`        (must fire at B)
- cron off: `* * * * *`              -> `0 0 1 1 *`        (must not fire at B)

Cron fires fall on minute boundaries, so the first dispatch decision an edit can change is the
one for B. An edit is honoured when the ledger (ScheduleRun) at B is what the edited schedule
asks for. Its time to take effect is bounded, from the client's commit of the edit, by the end
of the first dispatcher tick that started at or after B (that tick fired, or did not fire, the
schedule as edited): delta + the dispatcher's phase + one tick. The target is 5 s.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import schedules

DB_NAME = "megahub_bench_schedule_edits"
TARGET_S = 5.0
FAR = "0 0 1 1 *"
EVERY = "* * * * *"
# The dispatcher's first tick at or after B comes PHASES[rep] x the interval after B.
PHASES = (0.1, 0.9, 0.3, 0.7, 0.5)
LEAD_S = 10.0  # the dispatcher starts this long (minus the phase) before B
# kind -> (initial fields, whether it must fire at B after the edit)
KINDS = {
    "pause": ({"cron_expression": EVERY, "enabled": True}, False),
    "resume": ({"cron_expression": EVERY, "enabled": False}, True),
    "cron_on": ({"cron_expression": FAR, "enabled": True}, True),
    "cron_off": ({"cron_expression": EVERY, "enabled": True}, False),
}


def _dispatcher(interval: float, ticks, stop, start_at: float) -> None:
    from django.db import connections

    connections.close_all()
    from task_scheduling.services import schedules_dispatch_due

    time.sleep(max(0.0, start_at - time.time()))

    while not stop.is_set():
        started = time.time()
        totals = schedules_dispatch_due()
        ticks.put((started, time.time(), sum(totals.values())))
        stop.wait(max(0.0, interval - (time.time() - started)))


def edit(schedule, kind: str):
    from task_scheduling import services

    if kind == "pause":
        return services.schedule_pause(schedule=schedule)
    if kind == "resume":
        return services.schedule_resume(schedule=schedule)
    if kind == "cron_on":
        return services.schedule_update(schedule=schedule, cron_expression=EVERY)
    return services.schedule_update(schedule=schedule, cron_expression=FAR)


def run(reps: int, deltas: list[float]) -> dict:
    schedules.configure(DB_NAME)
    from django.conf import settings
    from django.db import connections

    from task_scheduling import services
    from task_scheduling.models import ScheduleRun

    schedules.reset()
    brand = schedules.brands()[0]
    interval = float(settings.SCHEDULE_DISPATCH_INTERVAL_SECONDS)
    ctx = multiprocessing.get_context("fork")
    samples: list[dict] = []
    for rep in range(reps):
        delta = deltas[rep % len(deltas)]
        phase = PHASES[rep % len(PHASES)] * interval
        boundary = schedules.next_boundary(margin_s=LEAD_S + 3)
        made = {
            kind: services.schedule_create(
                brand=brand,
                name=f"edit-{rep}-{kind}",
                task_type="noop",
                overlap_policy="allow",
                **fields,
            )
            for kind, (fields, _) in KINDS.items()
        }
        # A dispatcher per repetition, started LEAD_S - phase before B (LEAD_S is a multiple
        # of the interval): its first tick at or after B comes `phase` after B, so the
        # repetitions cover the dispatcher phases beat may have.
        b = boundary.timestamp()
        connections.close_all()  # before fork: the child must not share our connection
        ticks_q, stop = ctx.Queue(), ctx.Event()
        dispatcher = ctx.Process(
            target=_dispatcher, args=(interval, ticks_q, stop, b - LEAD_S + phase), daemon=True
        )
        dispatcher.start()
        ticks: list[tuple[float, float, int]] = []
        try:
            schedules.sleep_until(boundary - timedelta(seconds=delta))
            committed = {}
            for kind, schedule in made.items():
                edit(schedule, kind)
                committed[kind] = time.time()
            # Ticks up to the first one that started at or after B.
            while not any(t[0] >= b for t in ticks):
                if not dispatcher.is_alive():
                    raise RuntimeError("the dispatcher process exited")
                ticks.append(ticks_q.get(timeout=60))
        finally:
            stop.set()
            dispatcher.join(10)
            if dispatcher.is_alive():
                dispatcher.kill()
        acting = next(t for t in ticks if t[0] >= b)
        fired = set(
            ScheduleRun.objects.unscoped()
            .filter(schedule__in=made.values(), fire_time=boundary)
            .values_list("schedule__name", flat=True)
        )
        for kind, (_, must_fire) in KINDS.items():
            did_fire = f"edit-{rep}-{kind}" in fired
            samples.append(
                {
                    "rep": rep,
                    "kind": kind,
                    "delta_s": delta,
                    "phase_s": phase,
                    "honoured": did_fire == must_fire,
                    "bound_s": acting[1] - committed[kind],
                    "tick_start_after_boundary_s": acting[0] - b,
                }
            )
        rep_samples = samples[-len(KINDS) :]
        print(
            f"edits rep {rep + 1}: edited {delta:.2f} s before "
            f"{boundary.strftime('%H:%M')}, dispatcher tick at +{acting[0] - b:.2f} s; "
            + ", ".join(
                f"{s['kind']} {'ok' if s['honoured'] else 'NOT honoured'} <= {s['bound_s']:.2f} s"
                for s in rep_samples
            ),
            flush=True,
        )
    schedules.delete_queues()
    bounds = [s["bound_s"] for s in samples]
    honoured = all(s["honoured"] for s in samples)
    return {
        "benchmark": "schedule_edits",
        "params": {
            "reps": reps,
            "deltas_s": deltas,
            "phases_s": [p * interval for p in PHASES],
            "dispatch_interval_s": interval,
        },
        "samples": samples,
        "bound_s": {
            "median": statistics.median(bounds),
            "min": min(bounds),
            "max": max(bounds),
            "n": len(bounds),
        },
        "honoured": honoured,
        "target_s": TARGET_S,
        "pass": honoured and max(bounds) <= TARGET_S,
        "measured_at": datetime.now(UTC).isoformat(),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="minute boundaries (one each)")
    parser.add_argument(
        "--deltas",
        default="0.5,1.0,1.5,2.0,2.5",
        help="seconds before the boundary at which the edits are made, cycled",
    )
    args = parser.parse_args(argv)
    result = run(args.reps, [float(x) for x in args.deltas.split(",")])
    sys.path.insert(0, str(schedules.REPO))
    from bench import common

    common.write_result("schedule_edits", result)
    print(
        f"edits: honoured {'all' if result['honoured'] else 'NOT all'}; time to take effect "
        f"<= {result['bound_s']['median']:.2f} s median, {result['bound_s']['max']:.2f} s max "
        f"(target {TARGET_S:g} s)",
        flush=True,
    )
    return result


if __name__ == "__main__":
    main()

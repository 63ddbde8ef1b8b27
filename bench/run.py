"""Run the benchmarks (each in its own process) and rewrite docs/benchmarks.md.

    .venv/bin/python bench/run.py                      # all, ~35-40 min on 2 cores
    .venv/bin/python bench/run.py --quick              # all, small sizes: a smoke run (~20 min)
    .venv/bin/python bench/run.py --only rest,list     # a subset (others keep their last result)
    .venv/bin/python bench/run.py --render-only        # rewrite the doc from bench/results/

Sizes come from the full or the --quick profile (`make bench BENCH_SIZE=small`); any
--<benchmark>-<param> option, or BENCH_<BENCHMARK>_<PARAM> in the environment (BENCH_LIST_ROWS,
BENCH_DRAIN_TASKS...), overrides one. The run prints an estimate of its wall time first.

Needs PostgreSQL and RabbitMQ on loopback (DATABASE_URL / CELERY_BROKER_URL, as `make bench`
sets them). Writes only to megahub_bench* databases and bench-<pid>.* queues.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common, notes

DOC = common.REPO / "docs" / "benchmarks.md"
SCRIPTS = {
    "drain": "bench/drain.py",
    "rest": "bench/rest_create.py",
    "list": "bench/list_pages.py",
    "checkpoints": "bench/checkpoints.py",
    "schedules": "bench/schedules.py",
    "schedule_edits": "bench/schedule_edits.py",
    "latency": "bench/idle_latency.py",
    "rss": "bench/worker_rss.py",
    "requests": "bench/task_requests.py",
    "outbox": "bench/events_outbox.py",
    "fairness": "bench/fairness.py",
}
# Sizes of a full run (`make bench`) and of a --quick smoke run: (option, full, quick).
PARAMS: dict[str, list[tuple[str, float, float]]] = {
    "drain": [("tasks", 20_000, 500), ("reps", 5, 2), ("budget-s", 1000, 300)],
    "rest": [("reps", 5, 2), ("seconds", 5, 2)],
    "list": [
        ("rows", 1_000_000, 100_000),
        ("reps", 5, 2),
        ("requests", 200, 50),
        ("deep-page", 200, 20),  # a page every brand has: rows / 50 brands / 50 per page
    ],
    "checkpoints": [("reps", 5, 2), ("writes", 300, 50), ("items", 5000, 1000)],
    "schedules": [
        ("schedules", 10_000, 1000),
        ("repeat", 5, 2),
        ("baseline-repeat", 1, 1),
        ("baseline-timeout", 120, 60),
    ],
    "schedule_edits": [("reps", 5, 2)],
    "latency": [("reps", 5, 2), ("samples", 40, 10)],
    "rss": [("tasks", 20_000, 1500), ("budget-s", 180, 60), ("interval", 2, 1)],
    "requests": [("tasks", 600, 200), ("reps", 5, 2)],
    "outbox": [("tasks", 800, 300), ("reps", 5, 2)],
    "fairness": [("tasks", 5000, 500), ("reps", 5, 2), ("backlog", 5000, 1000), ("head", 200, 100)],
}
# Rough project and baseline speeds on the 2-CPU benchmark machine, for the estimate only.
PROJECT_TASKS_S, BARE_TASKS_S, CREATES_S = 200.0, 1000.0, 100.0


def estimate_s(name: str, p: dict) -> float:
    """A rough wall-time estimate of one benchmark with these sizes (seconds)."""
    if name == "drain":
        rep = p["tasks"] / PROJECT_TASKS_S + 3 * p["tasks"] / BARE_TASKS_S + 40
        return 30 + min(p["reps"] * rep, p["budget-s"] + rep)
    if name == "rest":
        return 40 + 2 * p["reps"] * 3 * p["seconds"]
    if name == "list":
        return 40 + p["reps"] * p["requests"] * 7 * 0.01
    if name == "checkpoints":
        return 15 + p["reps"] * (p["writes"] * 6 * 0.006 + 2 * p["items"] / 2000)
    if name == "schedules":
        return p["repeat"] * 70 + p["baseline-repeat"] * (p["baseline-timeout"] + 45)
    if name == "schedule_edits":
        return 15 + p["reps"] * 60
    if name == "latency":
        return 40 + (2 * p["reps"] * p["samples"] + 20) * 0.12
    if name == "rss":
        bare = 2 * p["tasks"] / BARE_TASKS_S
        project = p["tasks"] / 600 + min(p["budget-s"], p["tasks"] / PROJECT_TASKS_S)
        return 40 + bare + 2 * project
    if name == "requests":
        return 40 + p["reps"] * 2 * p["tasks"] / CREATES_S
    if name == "fairness":
        drain = 2 * (p["tasks"] / PROJECT_TASKS_S + 30)  # two workers start per run
        starve = 2 * (p["backlog"] / PROJECT_TASKS_S + 20) + p["backlog"] / BARE_TASKS_S + 20
        return 30 + p["reps"] * (drain + starve)
    if name == "outbox":
        return 10 + p["reps"] * 2 * (p["tasks"] / PROJECT_TASKS_S + p["tasks"] / 400 + 20)
    return 60


def run_one(name: str, extra: list[str]) -> dict:
    argv = [common.PYTHON, SCRIPTS[name], *extra]
    print(f"\n=== {name}: {shlex.join(argv)}", flush=True)
    started = time.monotonic()
    stamp = datetime.now(UTC)
    load_before = os.getloadavg()
    proc = subprocess.run(argv, cwd=common.REPO, check=False)
    meta = {
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "name": name,
        "command": shlex.join([".venv/bin/python", SCRIPTS[name], *extra]),
        "started_at": stamp.strftime("%Y-%m-%d %H:%M UTC"),
        "wall_s": round(time.monotonic() - started, 1),
        "returncode": proc.returncode,
    }
    result = common.read_result(name)
    if proc.returncode == 0 and result is not None:
        result["meta"] = meta
        common.write_result(name, result)
    else:
        failed = {"benchmark": name, "failed": True, "meta": meta}
        common.write_result(f"{name}.failed", failed)
        print(f"=== {name} FAILED (exit {proc.returncode})", flush=True)
    return meta


# --- rendering ------------------------------------------------------------------------------
def ok(flag: bool) -> str:
    return "**pass**" if flag else "**miss**"


def ms(summary: dict, key: str = "median") -> str:
    return f"{summary[key]:.2f}"


def spread(summary: dict, digits: int = 2) -> str:
    return f"{summary['min']:.{digits}f}-{summary['max']:.{digits}f}"


def render_machine(machine: dict) -> list[str]:
    if "cpu" not in machine:
        return ["## Machine", "", "Not recorded (no bench/results/machine.json).", ""]
    return [
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        f"| CPU | {machine['cpu']} - {machine['nproc']} CPUs (nproc) |",
        f"| RAM | {machine['ram_gb']} GB |",
        f"| Kernel | Linux {machine['kernel']} |",
        f"| Python | {machine['python']} (Django {machine.get('django', '?')}, DRF "
        f"{machine.get('drf', '?')}, Celery {machine.get('celery', '?')}) |",
        f"| PostgreSQL | {machine['postgresql']} (same machine, loopback) |",
        f"| RabbitMQ | {machine['rabbitmq']} (same machine, loopback) |",
        f"| Storage probe | durable COMMIT of a one-row INSERT: "
        f"{machine.get('commit_ms', {}).get('sync_on', float('nan')):.2f} ms "
        f"(synchronous_commit=off: "
        f"{machine.get('commit_ms', {}).get('sync_off', float('nan')):.2f} ms); persistent "
        f"publish + confirm: {machine.get('publish_ms', float('nan')):.2f} ms |",
        f"| Code | git {machine.get('git_commit', '?')}"
        + (
            f" + uncommitted changes in {', '.join(machine['git_modified'])} (work in progress "
            "of other engineers, measured as found)"
            if machine.get("git_modified")
            else ""
        )
        + " |",
        "",
        "Everything (PostgreSQL, RabbitMQ, workers, gunicorn, the load client) shares the same "
        "CPUs, so every figure includes that contention - for the project and its baseline "
        "alike. The storage probe varies between runs on this VM (0.3-3.5 ms per durable "
        "commit has been seen), which is the main source of spread in the write benchmarks.",
        "",
    ]


def render_drain(r: dict) -> list[str]:
    p, b, params = r["project"], r["bare"], r["params"]
    fix_rows: list[str] = []
    bd = r.get("breakdown")
    if bd:
        fix_rows += [
            "",
            f"In-process, one persistent connection, no Celery: `execution.task_execute` takes "
            f"{bd['task_execute_ms']:.2f} ms per task ({bd['task_execute_db_ms']:.2f} ms in SQL "
            "statements, COMMITs not included); the same claim and finish written as one SQL "
            f"statement + COMMIT each through psycopg take {bd['raw_two_statements_ms']:.2f} ms."
            + (
                f" One task in-process: {bd['task_execute_xacts']:.2f} transactions; statements "
                f"{', '.join(bd['task_execute_statements'])}."
                if "task_execute_statements" in bd
                else ""
            ),
        ]
    reps = params["reps_done"]
    reps_note = (
        f"{reps} repetitions of each side"
        if reps >= params["reps_requested"]
        else f"{reps} of {params['reps_requested']} repetitions (time budget reached)"
    )
    pe = r["peer"]
    return [
        "## 1. End-to-end drain (`bench/drain.py`)",
        "",
        f"{params['tasks']:,} `noop` tasks drained by K={params['workers']} worker processes "
        f"(`celery -A megahub worker -P prefork -c {params['workers']}`), vs the peer "
        "(`bench/peer_celery.py`: Celery + django-celery-results, `django-db` result backend, "
        "`task_track_started`, `result_extended`, megahub's broker, database and worker "
        f"settings) and bare Celery (`bench/bare_celery.py`), each draining {params['tasks']:,} "
        "no-op messages with the same broker, queue arguments (x-max-priority 10), acks_late, "
        "prefetch multiplier 1 and worker command (bare Celery sends no task events, "
        "`worker_send_task_events=False`; the project and the peer send them, megahub's "
        f"`CELERY_SEND_EVENTS=1`). {reps_note}, in a rotating order; medians "
        f"and min-max. Project worker settings: "
        f"`{params.get('worker_settings', 'megahub.settings')}`.",
        "",
        "| | project | peer (django-celery-results) | bare Celery | target | result |",
        "|---|---|---|---|---|---|",
        f"| drain rate, tasks/s (median) | {p['rate']['median']:,.1f} | "
        f"{pe['rate']['median']:,.1f} | {b['rate']['median']:,.1f} | | |",
        f"| spread (min-max) | {spread(p['rate'], 1)} | {spread(pe['rate'], 1)} | "
        f"{spread(b['rate'], 1)} | | |",
        *(
            [
                "| CPU ms per task: worker main / pool processes / PostgreSQL backends | "
                + " | ".join(
                    " / ".join(
                        f"{cpu[g]:.2f}" if g in cpu else "-"
                        for g in ("worker main", "pool processes", "postgres backends")
                    )
                    if (cpu := side.get("cpu_ms_per_task"))
                    else "-"
                    for side in (p, pe, b)
                )
                + " | | |"
            ]
            if any(side.get("cpu_ms_per_task") for side in (p, pe, b))
            else []
        ),
        f"| project / peer | | {r['ratio_peer']:.2f}x | | >= {r['target_ratio_peer']:g}x | "
        f"{ok(r['ratio_peer_pass'])} |",
        f"| project / bare Celery | | | {r['ratio']:.2f}x | >= {r['target_ratio']:g}x | "
        f"{ok(r['ratio_pass'])} |",
        *(
            [
                f"| durable commits per task (write transactions) | "
                f"{p['write_xacts_per_task']['median']:.3f} "
                f"({spread(p['write_xacts_per_task'])}) | | | <= {r['target_xacts']:g} | "
                f"{ok(r['xacts_pass'])} |"
            ]
            if "write_xacts_per_task" in p
            else []
        ),
        f"| commits per task while draining, read-only ones included | "
        f"{p['xacts_per_task']['median']:.3f} ({spread(p['xacts_per_task'])}) | "
        f"{pe['xacts_per_task']['median']:.3f} | 0 | | |",
        f"| timeline events per task | {p['events_per_task']:.0f} | - | - | | |",
        f"| publish rate before the drain, tasks/s | {p['publish_rate']['median']:,.0f} "
        f"(`tasks_release_due`, {p['release_xacts_per_task']['median']:.3f} xacts/task) | "
        f"{pe['publish_rate']['median']:,.0f} (`apply_async` loop) | "
        f"{b['publish_rate']['median']:,.0f} (`send_task` loop) | | |",
        *fix_rows,
        "",
        "Rates are N / (last completion - first start): the project's from `started_at` / "
        "`completed_at` in the database, the peer's from django-celery-results' "
        "`date_created` (the row is written when the task starts) / `date_done`, bare "
        "Celery's from `task_prerun` / `task_postrun` timestamps its pool processes record. "
        "Durable commits per task are the write transactions the drain left behind: the "
        "distinct transaction ids (`xmin`) of the tasks' rows and their events past "
        "`created`/`queued`, divided by N (a read-only transaction gets no transaction id and "
        "flushes no WAL; the metrics row is inserted by the finish's own statement, so it "
        "shares the finish's `xmin`). Commits per "
        "task are the bench database's "
        "`pg_stat_database.xact_commit` delta while the worker ran (the benchmark's own "
        "polling subtracted), divided by N: every commit counts, read-only ones included (the "
        "connection health check's `SELECT 1` after `close_old_connections` around each task, "
        "`megahub/celery.py`), and the worker's start-up and heartbeat transactions.",
        "",
        "**What limits it.** " + notes.drain(r),
        "",
    ]


def render_rest(r: dict) -> list[str]:
    lat, thr, q, params = r["latency"], r["throughput"], r["queries"], r["params"]
    rows = [
        "## 2. REST create (`bench/rest_create.py`)",
        "",
        f'`POST /tasks/` (`{{"task_type": "noop"}}`) vs the peer `POST /bench/peer/tasks/` '
        "(`bench/peers.py`: a DRF ModelSerializer create, simplejwt authentication, the same "
        "brand-membership rule, publishing with Celery's `delay_on_commit`) and the floor "
        "`POST /bench/noop/` (a BrandScopedViewSet action returning `{}`: same JWT "
        "authentication, throttles and HasBrandRole permission with action_roles). gunicorn "
        "`megahub.wsgi`, "
        f"{params['gunicorn_workers']} sync workers, 127.0.0.1; closed-loop Python client, "
        f"{params['reps']} repetitions x {params['seconds']:g} s per endpoint and phase, "
        "endpoints in a rotating order; medians of the per-repetition figures, min-max in "
        "brackets. "
        "The latency phase uses 1 client thread, the throughput phase "
        f"{params['concurrency']}.",
        "",
        "| | POST /tasks/ | peer | POST /bench/noop/ (floor) | project / peer | target | result |",
        "|---|---|---|---|---|---|---|",
        f"| p50, 1 client (ms) | {ms(lat['create']['p50_ms'])} "
        f"({spread(lat['create']['p50_ms'])}) | {ms(lat['peer']['p50_ms'])} "
        f"({spread(lat['peer']['p50_ms'])}) | {ms(lat['noop']['p50_ms'])} "
        f"({spread(lat['noop']['p50_ms'])}) | {r['p50_ratio']:.2f}x | "
        f"<= {r['target_p50_ratio']:g}x | {ok(r['p50_pass'])} |",
        f"| p95, 1 client (ms) | {ms(lat['create']['p95_ms'])} | {ms(lat['peer']['p95_ms'])} "
        f"| {ms(lat['noop']['p95_ms'])} | | | |",
        f"| throughput, {params['concurrency']} clients (req/s) | "
        f"{thr['create']['throughput']['median']:.0f} "
        f"({spread(thr['create']['throughput'], 0)}) | "
        f"{thr['peer']['throughput']['median']:.0f} ({spread(thr['peer']['throughput'], 0)}) "
        f"| {thr['noop']['throughput']['median']:.0f} "
        f"({spread(thr['noop']['throughput'], 0)}) | {r['throughput_ratio']:.2f}x | "
        f">= {r['target_throughput_ratio']:g}x | {ok(r['throughput_pass'])} |",
        f"| p50 / p95 at {params['concurrency']} clients (ms) | "
        f"{ms(thr['create']['p50_ms'])} / {ms(thr['create']['p95_ms'])} | "
        f"{ms(thr['peer']['p50_ms'])} / {ms(thr['peer']['p95_ms'])} | "
        f"{ms(thr['noop']['p50_ms'])} / {ms(thr['noop']['p95_ms'])} | | | |",
        "",
        "Queries and transactions per request (in-process, Django test client; queries from "
        "CaptureQueriesContext without BEGIN/COMMIT, transactions from pg_stat_database over "
        "50 requests):",
        "",
        "| request | queries | transactions | statements |",
        "|---|---|---|---|",
    ]
    labels = {
        "create": "POST /tasks/",
        "peer": "POST /bench/peer/tasks/ (peer)",
        "noop": "POST /bench/noop/",
        "list_10": "GET /tasks/?page_size=10",
        "list_50": "GET /tasks/?page_size=50",
    }
    for key, label in labels.items():
        if key not in q:
            continue
        rows.append(
            f"| {label} | {q[key]['queries']} | {q[key]['xacts']:.1f} | "
            f"{', '.join(q[key]['kinds'])} |"
        )
    rows += [
        "",
        f"Constant queries per list page (10 vs 50 rows): {ok(r['list_queries_constant'])}.",
        *(
            [
                "",
                "`services.task_create` in-process (ms per create, 100 creates): "
                f"{cb['total_ms']:.2f} total = fair-share read + create statement (with the "
                "`queued` mark, its own transaction) "
                f"{cb['create_transaction_ms']:.2f} + send without confirm "
                f"{cb['publish_ms']:.2f}"
                + (
                    f" ({cb['sends_per_create']:.2f} sends per create: no worker runs, so "
                    "once the brand's window is full fair share holds the rest)"
                    if "sends_per_create" in cb
                    else ""
                )
                + ".",
            ]
            if (cb := r.get("create_breakdown"))
            else []
        ),
        "",
        "**What limits it.** " + notes.rest(r),
        "",
    ]
    return rows


def render_list(r: dict) -> list[str]:
    s, q, params = r["stats"], r["queries"], r["params"]

    def cell(key: str) -> str:
        return f"{ms(s[key]['p95_ms'])} ({spread(s[key]['p95_ms'])})"

    plan_lines, buffers = [], []
    plans = [(name, q[name]["plan"]) for name in ("page1", "deep")]
    plans += [(f"raw psycopg {name}", plan) for name, plan in r.get("raw_plans", {}).items()]
    for name, full_plan in plans:
        words = ("Limit", "Scan", "Index Cond", "Rows Removed", "Execution Time")
        plan = [line.rstrip() for line in full_plan if any(w in line for w in words)]
        plan_lines += [f"{name}:", "```", *plan, "```"]
        # The statement's whole buffer traffic: the first Buffers line is the top node's.
        top = next((line.strip() for line in full_plan if "Buffers:" in line), "")
        buffers.append(f"{name} {top.removeprefix('Buffers: ') or '(not reported)'}")
    load = r["load"]
    loaded = (
        f"loaded in {load['seconds']:.0f} s this run"
        if load.get("loaded")
        else "reused from an earlier run"
    )
    return [
        "## 3. Lists at 1M tasks (`bench/list_pages.py`)",
        "",
        f"{params['rows']:,} tasks over {params['brands']} brands ({loaded}; INSERT ... SELECT "
        "generate_series, then VACUUM ANALYZE). `GET /tasks/` through Django's test client "
        "in-process (JWT, membership check, throttle, filters, keyset pagination, rows built "
        "as JSON by PostgreSQL, JSON rendering) vs the peer `GET /bench/peer/tasks/` "
        "(`bench/peers.py`: a DRF ListAPIView, ModelSerializer with the brand and the creator "
        "nested, CursorPagination on `-id`, simplejwt authentication and the same membership "
        "rule; the same rows and document) and the floor `GET /bench/noop/`. For analysis, "
        "the same page's SQL through psycopg (same columns, brand and creator joined) plus "
        "`json.dumps` of the same document. Requests rotate over the 50 brands; "
        f"{params['requests_per_rep']} requests per repetition, {params['reps']} repetitions; "
        "within a repetition every side's request i (project, peer, raw, floor; page 1 and "
        "deep) goes to the same brand back to back, in an order shuffled at each request, so "
        "the sides share the machine's load alike. Deep page = page {params['deep_page']} "
        f"(~{(params['deep_page'] - 1) * 50:,} rows down), its cursor built as DRF encodes it "
        "and checked against the one reached by following `next`.",
        "",
        "| p95 (ms), median of repetitions (min-max) | GET /tasks/ | peer | raw psycopg + "
        "json | project / peer (target <= "
        f"{r['target_peer_ratio']:g}x) | over the floor (target <= "
        f"+{r['target_floor_extra_ms']:g} ms) |",
        "|---|---|---|---|---|---|",
        *(
            f"| {label} | {cell(f'project/{page}')} | {cell(f'peer/{page}')} | "
            f"{cell(f'raw/{page}')} | {r['peer_ratio'][page]:.2f}x "
            f"{ok(r['peer_pass'][page])} | +{r['floor_extra_ms'][page]:.2f} ms "
            f"{ok(r['floor_pass'][page])} |"
            for page, label in (("page1", "page 1"), ("deep", f"page {params['deep_page']}"))
        ),
        f"| p50 page 1 / deep | {ms(s['project/page1']['p50_ms'])} / "
        f"{ms(s['project/deep']['p50_ms'])} | {ms(s['peer/page1']['p50_ms'])} / "
        f"{ms(s['peer/deep']['p50_ms'])} | {ms(s['raw/page1']['p50_ms'])} / "
        f"{ms(s['raw/deep']['p50_ms'])} | | |",
        f"| GET /bench/noop/ (floor: JWT + membership + throttle + DRF, no task query) | "
        f"{cell('floor/noop')} | | | | |",
        "",
        f"- Deep page vs page 1 (project p95): {r['deep_vs_page1']:.2f}x - "
        f"{ok(r['deep_pass'])} (as fast as page 1 = within 25 %).",
        f"- Queries per page: page 1 {q['page1']['queries']}, deep {q['deep']['queries']} - "
        f"constant {ok(r['queries_constant'])}; no COUNT and no OFFSET: "
        f"{ok(r['no_count_no_offset'])}.",
        *(
            [
                f"- The list view's parts in isolation (median ms): fetch of the page's rows as "
                f"JSON text (`selectors.TaskListStatement`) {bd['orm_fetch_ms']:.2f}, JSON "
                "rendering "
                f"{bd['json_render_ms']:.2f}."
            ]
            if (bd := r.get("breakdown"))
            else []
        ),
        f"- Following `next` from page 1 to page {params['deep_page']}: median "
        f"{r['walk_next_ms']['median']:.2f} ms per page (max {r['walk_next_ms']['max']:.2f}).",
        "",
        "Plans of the task query (EXPLAIN (ANALYZE, BUFFERS), scan and timing lines), the "
        "project's and the raw baseline's; buffers of the whole statement (shared hit = "
        "already in PostgreSQL's cache, read = from the OS): " + "; ".join(buffers) + ".",
        "",
        *plan_lines,
        "",
        "**What limits it.** " + notes.lists(r),
        "",
    ]


def render_summary(results: dict) -> list[str]:
    rows = [
        "## Targets",
        "",
        "SPEC.md §5, each against its peer (what a Django team would build instead: "
        "`bench/peers.py`, `bench/peer_celery.py`) or its floor (bare Celery, the no-op "
        "endpoint), measured in the same run.",
        "",
        "| benchmark | target | measured | result |",
        "|---|---|---|---|",
    ]
    d = results.get("drain")
    if d:
        rows += [
            f"| drain | >= {d['target_ratio_peer']:g}x the Celery + django-celery-results peer "
            f"(completions/s) | {d['ratio_peer']:.2f}x ({d['project']['rate']['median']:,.0f} "
            f"vs {d['peer']['rate']['median']:,.0f} tasks/s) | {ok(d['ratio_peer_pass'])} |",
            f"| drain | >= {d['target_ratio']:g}x bare Celery (completions/s) | "
            f"{d['ratio']:.2f}x ({d['project']['rate']['median']:,.0f} vs "
            f"{d['bare']['rate']['median']:,.0f} tasks/s) | {ok(d['ratio_pass'])} |",
            f"| drain | <= {d['target_xacts']:g} durable commits per task | "
            f"{d.get('write_xacts_median', float('nan')):.3f} ({d['xacts_median']:.2f} commits "
            f"with read-only ones; peer {d['peer']['xacts_per_task']['median']:.2f}) | "
            f"{ok(d['xacts_pass'])} |",
        ]
    r = results.get("rest")
    if r:
        lat, thr = r["latency"], r["throughput"]
        rows += [
            f"| REST create | p50 <= the plain DRF peer's (`delay_on_commit`) | "
            f"{lat['create']['p50_ms']['median']:.2f} vs {lat['peer']['p50_ms']['median']:.2f} "
            f"ms ({r['p50_ratio']:.2f}x; no-op floor {lat['noop']['p50_ms']['median']:.2f} ms) "
            f"| {ok(r['p50_pass'])} |",
            f"| REST create | throughput ({r['params']['concurrency']} clients) >= "
            f"{r['target_throughput_ratio']:g}x the peer's | {r['throughput_ratio']:.2f}x "
            f"({thr['create']['throughput']['median']:.0f} vs "
            f"{thr['peer']['throughput']['median']:.0f} req/s) | {ok(r['throughput_pass'])} |",
            f"| REST | constant queries per request | create "
            f"{r['queries']['create']['queries']}, list {r['queries']['list_10']['queries']} "
            f"(10 rows) = {r['queries']['list_50']['queries']} (50 rows) | "
            f"{ok(r['list_queries_constant'])} |",
        ]
    li = results.get("list")
    if li:
        st = li["stats"]
        rows_label = f"lists at {li['params']['rows']:,}"
        for page, label in (("page1", "page 1"), ("deep", f"page {li['params']['deep_page']}")):
            project = st[f"project/{page}"]["p95_ms"]["median"]
            rows += [
                f"| {rows_label} | {label} p95 <= {li['target_peer_ratio']:g}x the DRF "
                f"ListAPIView peer | {li['peer_ratio'][page]:.2f}x ({project:.2f} vs "
                f"{st[f'peer/{page}']['p95_ms']['median']:.2f} ms) | "
                f"{ok(li['peer_pass'][page])} |",
                f"| {rows_label} | {label} p95 <= no-op + {li['target_floor_extra_ms']:g} ms | "
                f"+{li['floor_extra_ms'][page]:.2f} ms ({project:.2f} vs "
                f"{st['floor/noop']['p95_ms']['median']:.2f} ms) | "
                f"{ok(li['floor_pass'][page])} |",
            ]
        rows.append(
            f"| {rows_label} | constant queries, no COUNT/OFFSET | "
            f"{li['queries']['page1']['queries']} per page | "
            f"{ok(li['queries_constant'] and li['no_count_no_offset'])} |"
        )
    la = results.get("latency")
    if la:
        rows.append(
            f"| idle latency | POST -> running <= bare apply_async -> start + "
            f"{la['target_extra_ms']:g} ms | +{la['extra_ms']:.1f} ms "
            f"({la['project']['p50_ms']['median']:.1f} vs {la['bare']['p50_ms']['median']:.1f}"
            f" ms) | {ok(la['pass'])} |"
        )
    rs = results.get("rss")
    if rs:
        rows += [
            f"| worker RSS | after {rs['project']['tasks_done']:,} tasks <= "
            f"{rs['target_ratio']}x the django-celery-results peer's worker | "
            f"{rs['ratio']:.2f}x ({mb(rs['project']['end_rss_kb'])} vs "
            f"{mb(rs['peer']['end_rss_kb'])} MB; bare Celery "
            f"{mb(rs['bare']['end_rss_kb'])} MB) | {ok(rs['ratio_pass'])} |",
            f"| worker RSS | flat over 100k tasks | "
            f"{rs['project']['growth_100k_pct']:+.1f} % extrapolated from "
            f"{rs['project']['tasks_done']:,} tasks run | {ok(rs['flat_pass'])} |",
        ]
    c = results.get("checkpoints")
    if c:
        lat = c["latency"]
        rows += [
            f"| checkpoints | checkpoint and progress writes <= {c['target_ratio']:g}x raw "
            f"INSERT/UPDATE | 1 KB {lat['checkpoint_1kb']['ratio']:.2f}x, 10 KB "
            f"{lat['checkpoint_10kb']['ratio']:.2f}x, progress {lat['progress']['ratio']:.2f}x "
            f"| {ok(c['ratio_pass'])} |",
            "| checkpoints | no transaction held open across a task | longest open "
            f"{c['throughput']['longest_open_transaction_s'] * 1000:.0f} ms in a "
            f"{c['throughput']['shortest_task_s']:.1f} s job | "
            f"{ok(c['no_open_transaction_pass'])} |",
        ]
    sc = results.get("schedules")
    if sc:
        base = sc.get("baseline")
        rows.append(
            f"| scheduling | {sc['params']['schedules']:,} schedules due in the same minute: "
            f"p95 lag <= {sc['target_p95_s']:g} s | {sc['project']['p95_s']['median']:.1f} s"
            + (
                f" (django-celery-beat: {base['p95_s']['median']:.1f} s over "
                f"{base['sent']['median']:,.0f} sent"
                + (
                    f", gave up at {sc['params']['baseline_timeout_s']:g} s"
                    if base["timed_out"]
                    else ""
                )
                + ")"
                if base
                else ""
            )
            + f" | {ok(sc['p95_pass'])} |"
        )
    se = results.get("schedule_edits")
    if se:
        rows.append(
            f"| scheduling | an edit takes effect within {se['target_s']:g} s | "
            f"<= {se['bound_s']['max']:.1f} s (median {se['bound_s']['median']:.1f} s), "
            f"{'all' if se['honoured'] else 'NOT all'} {se['bound_s']['n']} edits honoured | "
            f"{ok(se['pass'])} |"
        )
    rq = results.get("requests")
    if rq:
        rows.append(
            f"| messaging (no target) | tasks created/s: queue consumer vs POST /tasks/ | "
            f"{rq['ratio']:.2f}x ({rq['queue']['rate']['median']:.0f} vs "
            f"{rq['rest']['rate']['median']:.0f}/s) | - |"
        )
    ob = results.get("outbox")
    if ob:
        rows.append(
            f"| messaging (no target) | drain with the event relay on / off | "
            f"{ob['ratio']:.2f}x ({ob['on']['rate']['median']:.0f} vs "
            f"{ob['off']['rate']['median']:.0f} tasks/s) | - |"
        )
    missing = [n for n in SCRIPTS if n not in results]
    if missing:
        rows.append(f"| {', '.join(missing)} | | not measured | - |")
    return [*rows, ""]


def mb(kb: float) -> str:
    return f"{kb / 1024:.1f}"


def not_measured(title: str, name: str) -> list[str]:
    return [
        title,
        "",
        f"Not measured: no result in bench/results/{name}.json (run `bench/run.py --only {name}`).",
        "",
    ]


def render_checkpoints(c: dict) -> list[str]:
    params, lat, thr = c["params"], c["latency"], c["throughput"]
    labels = {
        "checkpoint_1kb": "checkpoint, 1 KB state vs raw INSERT",
        "checkpoint_10kb": "checkpoint, 10 KB state vs raw INSERT",
        "progress": "progress write vs raw UPDATE",
    }
    rows = [
        "## 4. Checkpoints and progress (`bench/checkpoints.py`)",
        "",
        "`task_persistence.services.checkpoint_save` (task progress + heartbeat, the job's "
        "position and the checkpoint row: one statement, one transaction) vs a raw `INSERT` of "
        "the same JSON into a plain table; `TaskContext.progress` (progress percentage + "
        "heartbeat of the running attempt) vs a raw `UPDATE` of the same two columns of the "
        "same row (both one statement in autocommit). Each write in its own transaction "
        "through the same connection, in-process, "
        f"alternated; {params['writes']} writes of each per repetition, {params['reps']} "
        "repetitions; median of the per-repetition medians, min-max in brackets. Database "
        "`megahub_bench_persist`.",
        "",
        "| write (ms) | project | raw SQL | ratio | target | result |",
        "|---|---|---|---|---|---|",
    ]
    for key, label in labels.items():
        r = lat[key]
        rows.append(
            f"| {label} | {ms(r['project_ms'], 'median')} ({spread(r['project_ms'], 3)}) | "
            f"{ms(r['raw_ms'], 'median')} ({spread(r['raw_ms'], 3)}) | {r['ratio']:.2f}x | "
            f"<= {c['target_ratio']:g}x | {ok(r['ratio'] <= c['target_ratio'])} |"
        )
    rates = thr["rates"]
    rows += [
        "",
        f"Job throughput (`seo_keyword_audit`, {params['items']:,} items, no per-item delay, "
        "executed in-process by `execution.task_execute`): checkpoint every 100 items "
        f"{rates['every 100 items']['median']:,.0f} items/s "
        f"({spread(rates['every 100 items'], 0)}) vs no checkpoint during the run "
        f"{rates['none during the run']['median']:,.0f} items/s "
        f"({spread(rates['none during the run'], 0)}): {thr['ratio']:.2f}x.",
        "",
        "No transaction held open across a task: a second connection sampled "
        "`pg_stat_activity.xact_start` of the executing backend every 5 ms during every job "
        f"run; the longest open transaction seen was "
        f"{thr['longest_open_transaction_s'] * 1000:.1f} ms, against "
        f"{thr['shortest_task_s']:.2f} s for the shortest job - "
        f"{ok(c['no_open_transaction_pass'])} (required: under a quarter of the job and "
        "under 1 s).",
        "",
    ]
    return rows


def render_schedules(sc: dict | None, se: dict | None) -> list[str]:
    rows = ["## 5. Scheduling (`bench/schedules.py`, `bench/schedule_edits.py`)", ""]
    if sc:
        params, p, base = sc["params"], sc["project"], sc.get("baseline")
        rows += [
            f"{params['schedules']:,} `* * * * *` schedules over 10 brands, all due at the same "
            f"minute boundary; {params['dispatchers']} dispatcher processes run "
            "`schedules_dispatch_due` from the boundary on, every "
            f"{params['dispatch_interval_s']:g} s as beat's entry does. Lag of a fire = the "
            "task's `queued_at` - the fire time. Baseline: stock django-celery-beat, "
            f"{params['schedules']:,} PeriodicTask rows on one crontab, its DatabaseScheduler "
            "ticking in one process, lag = when it sent the entry - the fire time. "
            f"{params['reps']} repetitions of the project, {params['baseline_reps']} of the "
            f"baseline (given up after {params['baseline_timeout_s']:g} s: it needs minutes, "
            "which is the point of the comparison); medians, min-max in brackets.",
            "",
            "| | megahub | django-celery-beat | target | result |",
            "|---|---|---|---|---|",
            f"| p95 lag (s) | {p['p95_s']['median']:.2f} ({spread(p['p95_s'])}) | "
            + (f"{base['p95_s']['median']:.2f} ({spread(base['p95_s'])})" if base else "-")
            + f" | <= {sc['target_p95_s']:g} s | {ok(sc['p95_pass'])} |",
            f"| p50 / max lag (s) | {p['p50_s']['median']:.2f} / {p['max_s']['median']:.2f} | "
            + (f"{base['p50_s']['median']:.2f} / {base['max_s']['median']:.2f}" if base else "-")
            + " | | |",
            f"| fires published | {params['schedules']:,} of {params['schedules']:,} in every "
            f"run: {ok(p['complete'])}, duplicates {p['duplicates']} | "
            + (
                f"{base['sent']['median']:,.0f} of {params['schedules']:,}"
                + (" (timed out)" if base["timed_out"] else "")
                if base
                else "-"
            )
            + " | | |",
            f"| SQL queries per run | {p['queries']['median']:,.0f} | "
            + (f"{base['queries']['median']:,.0f}" if base else "-")
            + " | | |",
            f"| ledger rows recorded, p95 (s after the boundary) | "
            f"{p['recorded_p95_s']['median']:.2f} | | | |",
            "",
        ]
    else:
        rows += [
            "Schedules due in the same minute: not measured (no bench/results/"
            "schedules.json; run `bench/run.py --only schedules`).",
            "",
        ]
    if se:
        params = se["params"]
        kinds: dict[str, list[dict]] = {}
        for sample in se["samples"]:
            kinds.setdefault(sample["kind"], []).append(sample)
        rows += [
            "**An edit takes effect within 5 s.** A dispatcher process runs "
            f"`schedules_dispatch_due` every {params['dispatch_interval_s']:g} s like beat's "
            "entry; beat's phase relative to the minute is arbitrary, so each repetition starts "
            "a dispatcher whose first tick at or after the boundary comes "
            + (
                f"{', '.join(f'{x:g}' for x in params['phases_s'])} s"
                if "phases_s" in params
                else "at whatever phase it had"
            )
            + " after it. Per repetition (one minute boundary B each, "
            f"{params['reps']} repetitions), four fresh `noop` schedules are edited through "
            "`task_scheduling.services` at B - delta (delta cycling over "
            f"{', '.join(f'{d:g}' for d in params['deltas_s'])} s): pause a `* * * * *` one, "
            "resume a paused one, change `0 0 1 1 *` to `* * * * *`, change `* * * * *` to "
            "`0 0 1 1 *`. Cron fires fall on minute boundaries, so B is the first dispatch "
            "decision an edit can change: it is honoured when the ledger at B is what the "
            "edited schedule asks for (fired or not). Time to take effect is bounded by the "
            "end of the first dispatcher tick that started at or after B, minus the edit's "
            "commit (delta + the dispatcher's phase + one tick).",
            "",
            "| edit | honoured | time to take effect, median (min-max) s | target | result |",
            "|---|---|---|---|---|",
        ]
        for kind, samples in kinds.items():
            bounds = [x["bound_s"] for x in samples]
            good = all(x["honoured"] for x in samples)
            rows.append(
                f"| {kind.replace('_', ' ')} | {sum(x['honoured'] for x in samples)} of "
                f"{len(samples)} | <= {common.percentile(bounds, 50):.2f} "
                f"({min(bounds):.2f}-{max(bounds):.2f}) | <= {se['target_s']:g} s | "
                f"{ok(good and max(bounds) <= se['target_s'])} |"
            )
        rows.append("")
    else:
        rows += [
            "Edit latency: not measured (no bench/results/schedule_edits.json; run "
            "`bench/run.py --only schedule_edits`).",
            "",
        ]
    return rows


def render_latency(la: dict, *, rest: dict | None = None, machine: dict | None = None) -> list[str]:
    params, p, b = la["params"], la["project"], la["bare"]
    return [
        "## 6. Idle latency (`bench/idle_latency.py`)",
        "",
        "One task at a time on an idle system (the next sample starts after the previous task "
        f"finished and {params['pause_s'] * 1000:.0f} ms passed). Project: `POST /tasks/` "
        "(`noop`) through gunicorn (2 sync workers) to `celery -A megahub worker -c "
        f"{params['workers']}`; latency = the task's `started_at` (the worker's claim) - the "
        "client's clock before the request. Baseline: `send_task` (apply_async) of "
        "bench/bare_celery.py's no-op to the same worker command; latency = `task_prerun` in "
        "the pool process - the clock before the call. Same machine, same clock. "
        f"{params['reps']} repetitions x {params['samples']} samples per side, sides "
        "alternated; median of the per-repetition p50s, min-max in brackets.",
        "",
        "| (ms) | POST /tasks/ -> running | apply_async -> start | delta | target | result |",
        "|---|---|---|---|---|---|",
        f"| p50 | {ms(p['p50_ms'])} ({spread(p['p50_ms'])}) | {ms(b['p50_ms'])} "
        f"({spread(b['p50_ms'])}) | +{la['extra_ms']:.2f} | <= +{la['target_extra_ms']:g} | "
        f"{ok(la['pass'])} |",
        f"| p95 | {ms(p['p95_ms'])} | {ms(b['p95_ms'])} | | | |",
        "",
        "The project's figure contains the whole `POST /tasks/` request up to its send "
        "(section 2: JWT, membership, validation, the admission read, the create statement "
        "with the `queued` mark and its durable commit, then the send without confirm; the "
        "response follows, and the worker can start as soon as the message is on the broker) "
        "and then the worker's path to the claim; the baseline's only the publish and the "
        "same delivery and dispatch.",
        "",
        *_latency_parts(p),
        *_latency_floor(la, rest, machine or {}),
    ]


def _latency_floor(la: dict, rest: dict | None, machine: dict) -> list[str]:
    """What no create work can go below: an HTTP request through the same stack and one
    durable commit; the baseline's figure has neither."""
    commit = machine.get("commit_ms", {}).get("sync_on")
    if not rest or commit is None:
        return []
    noop = rest["latency"]["noop"]["p50_ms"]["median"]
    bare = la["bare"]["p50_ms"]["median"]
    delta = la["extra_ms"]
    heading = "Where the time goes" if la["pass"] else "What limits it"
    return [
        f"**{heading}.** Before any create work, the project's figure holds a request "
        f"through gunicorn, middleware, JWT, throttles and the permission (the no-op "
        f"endpoint's p50, section 2: {noop:.2f} ms) and one durable commit on this machine "
        f"({commit:.2f} ms, Machine section): {noop + commit:.2f} ms that bare Celery's "
        f"apply_async -> start ({bare:.2f} ms) does not pay. The rest of its {delta:+.2f} ms "
        "over bare Celery is the admission read's round trip, the send, and the worker's "
        "path from the delivery to the claim (the same delivery and dispatch bare Celery's "
        "figure holds, then the claim statement).",
        "",
    ]


def _latency_parts(p: dict) -> list[str]:
    """Where the project's time goes, split at the task's created_at (bench/idle_latency.py)."""
    parts = p.get("parts_p50_ms")
    if not parts:
        return []
    return [
        "| project, p50 per repetition, median (ms) | client -> `created_at` | "
        "`created_at` -> running | client -> response |",
        "|---|---|---|---|",
        f"| POST /tasks/ | {ms(parts['to_create_ms'])} | {ms(parts['create_to_running_ms'])} | "
        f"{ms(parts['response_ms'])} |",
        "",
        "`created_at` is taken by the create service once the request is authenticated, "
        "permitted and validated, before the admission read. Before it: the HTTP request "
        "through gunicorn, Django's middleware, JWT authentication, throttles, the permission "
        "and the body's validation (about what the no-op endpoint of section 2 costs). After "
        "it: the admission read (a prepared statement, which is also the connection's health "
        "check), the create statement and its durable commit, the send without confirm "
        "(a copy of the thread's previous message of the same shape, written straight to the "
        "channel), then RabbitMQ's delivery, the worker's main process handing the message "
        "to a pool process, and the claim (`started_at`). The task usually starts before the "
        "client has read its response (the 201 is rendered after the send).",
        "",
    ]


def render_rss(rs: dict) -> list[str]:
    params, p, b = rs["params"], rs["project"], rs["bare"]

    pe = rs["peer"]

    def row(label: str, key: str) -> str:
        return (
            f"| {label} | {mb(p[key])} | {mb(pe[key])} | {mb(b[key])} | {p[key] / pe[key]:.2f}x |"
        )

    return [
        "## 7. Worker memory (`bench/worker_rss.py`)",
        "",
        f"Three workers (`celery worker -P prefork -c {params['workers']}`: the project's on "
        "megahub, the peer's on bench/peer_celery.py with django-celery-results, bare Celery "
        "on bench/bare_celery.py) drain no-op tasks while the "
        f"benchmark reads /proc every {params['interval_s']:g} s: RSS of the main process + "
        "RSS of the pool children (SPEC's measure; shared pages count in every process), and "
        "the PSS of the tree (shared pages split). One long run per side; memory does not "
        "need repetitions the way rates do, and the slope over the run is the figure that "
        "matters.",
        "",
        f"**Tasks run: project {p['tasks_done']:,} of the {rs['params']['tasks']:,} "
        f"requested (drain stopped after {p['seconds']:.0f} s, budget "
        f"{params['budget_s']:g} s), peer {pe['tasks_done']:,}, bare Celery "
        f"{b['tasks_done']:,}; SPEC asks for flat "
        f"over 100,000 tasks.** 100k project tasks would take about "
        f"{100_000 / max(p['tasks_done'] / max(p['seconds'], 1), 1) / 60:.0f} min at the "
        "drain rate of this run, so flatness is judged on the slope, extrapolated to 100k tasks "
        f"(flat = at most +{rs['flat_growth_pct']:g} %).",
        "",
        "| MB | project | peer | bare Celery | project / peer |",
        "|---|---|---|---|---|",
        row("RSS once warm (main + children)", "warm_rss_kb"),
        row("RSS at the end (main + children)", "end_rss_kb"),
        row("  of which the main process", "end_rss_parent_kb"),
        row("  of which the pool children", "end_rss_children_kb"),
        row("PSS at the end (tree)", "end_pss_kb"),
        row("RSS max", "max_rss_kb"),
        "",
        "| | project | peer | bare Celery | target | result |",
        "|---|---|---|---|---|---|",
        f"| RSS at the end, project / peer | {rs['ratio']:.2f}x | 1 | | "
        f"<= {rs['target_ratio']}x | {ok(rs['ratio_pass'])} |",
        f"| growth, KB per 10k tasks (least squares from 25 % of the run) | "
        f"{p['slope_kb_per_10k']:+,.0f} | {pe['slope_kb_per_10k']:+,.0f} | "
        f"{b['slope_kb_per_10k']:+,.0f} | | |",
        f"| growth extrapolated to 100k tasks | {p['growth_100k_pct']:+.1f} % | "
        f"{pe['growth_100k_pct']:+.1f} % | {b['growth_100k_pct']:+.1f} % | "
        f"<= +{rs['flat_growth_pct']:g} % | {ok(rs['flat_pass'])} |",
        "",
    ]


def _fair_drain_rows(d: dict) -> list[str]:
    """The drain rows: end to end (the target's) and worker only (results from before the end
    to end measure have only a worker-only rate, under "rate")."""
    end_to_end = d.get("measure") == "end_to_end"
    worker = ("worker_rate", "worker_ratio") if end_to_end else ("rate", "ratio")
    rows = []
    if end_to_end:
        rows.append(
            f"| drain rate end to end, tasks/s | {d['on']['rate']['median']:.1f} "
            f"({spread(d['on']['rate'], 1)}) | {d['off']['rate']['median']:.1f} "
            f"({spread(d['off']['rate'], 1)}) | {d['ratio']:.2f}x | >= {d['target_ratio']}x | "
            f"{ok(d['ratio_pass'])} |"
        )
    key, ratio = worker
    rows.append(
        f"| drain rate worker only, tasks/s | {d['on'][key]['median']:.1f} "
        f"({spread(d['on'][key], 1)}) | {d['off'][key]['median']:.1f} "
        f"({spread(d['off'][key], 1)}) | {d[ratio]:.2f}x | "
        + ("| |" if end_to_end else f">= {d['target_ratio']}x | {ok(d['ratio_pass'])} |")
    )
    return rows


def _fair_cpu_lines(d: dict) -> list[str]:
    """CPU ms per task of each side (medians), when the results have them."""
    sides = {}
    for side in ("on", "off"):
        cpu = dict(d[side].get("cpu_ms_per_task") or {})
        system = d[side].get("system_cpu_ms_per_task") or {}
        if "worker main" in system:
            cpu["system worker main (releaser)"] = system["worker main"]
        sides[side] = cpu
    if not sides["on"]:
        return []
    groups = list(sides["on"])
    return [
        "",
        "CPU ms per task while draining (from 20% of the tasks to the end; RabbitMQ not "
        "counted): "
        + "; ".join(
            f"{group} {sides['on'][group]:.2f} on, {sides['off'].get(group, 0.0):.2f} off"
            for group in groups
        )
        + ". The releaser's own work, in process (`bench/release_cost.py`: one brand's "
        "backlog; each round marks 12 queued tasks completed, then times one "
        "`fairshare.refill`), gives its CPU, its PostgreSQL backend's CPU, wall time and "
        "statements per released task.",
        *_fair_limits(d, sides),
    ]


def _fair_limits(d: dict, sides: dict) -> list[str]:
    """On a miss: the CPU per task fair share adds, by process group, and where a release
    spends it (a profile of bench/release_cost.py)."""
    if d.get("ratio_pass", True):
        return []
    on, off = sides["on"], sides["off"]
    extra = {g: on[g] - off.get(g, 0.0) for g in on if on[g] - off.get(g, 0.0) > 0.05}
    return [
        "",
        "**What limits it.** Fair share adds "
        f"{sum(on.values()) - sum(off.values()):.2f} ms of CPU per task to the "
        f"{sum(off.values()):.2f} ms a drain costs without it ("
        + ", ".join(f"{g} +{ms:.2f}" for g, ms in extra.items())
        + "): the releaser's refills, and PostgreSQL's side of them and of the `pg_notify` "
        "each finish sends while the brand has waiting work. The cost per released task does "
        "not shrink with the rest of the drain, so the cheaper a task, the lower this ratio. "
        "In process (`python -m cProfile bench/release_cost.py --tasks 2000 --finish 10 "
        "--rounds 100`: 100 releases of 10 tasks), `broker.send_many` is about 60% of a "
        "release, most of it py-amqp writing each message's frames (`basic_publish`, one "
        "socket write per message), and the release's 5 statements about 25%.",
    ]


def render_fairness(r: dict) -> list[str]:
    d, s, params = r["drain"], r["starvation"], r["params"]
    rows = [
        f"| {label} | {s[side]['p50']:.2f} | {s[side]['p95']:.2f} | {s[side]['max']:.2f} |"
        for side, label in (
            ("fair", "megahub, fair share on (default)"),
            ("unfair", "megahub, `TASK_FAIR_SHARE=0`"),
            ("bare", "plain Celery, same broker and worker settings"),
        )
        if side in s  # a drain-only run (--backlog 0) has none
    ]
    return [
        "",
        "## 9. Fair share between brands (`bench/fairness.py`)",
        "",
        f"**Cost on the drain.** {params['tasks']:,} `noop` tasks of one brand, K="
        f"{params['workers']} worker processes, megahub's topology (the brand worker and the "
        "system worker with the releaser thread) up and idle before t0. At t0 the release "
        "loop's tick: on, it publishes the brand's window and the releaser, woken by each "
        "finish, publishes the rest; off (`TASK_FAIR_SHARE=0`), it publishes the whole backlog "
        "(500 per tick, back to back). End to end: N / (last completion - t0), each side "
        "paying for its publishing (the target's measure). Worker only: N / (last completion - "
        f"first start). {params['reps']} repetitions per side, alternated; medians, min-max in "
        "brackets."
        + (
            f" Load average {r['loadavg'][0]:.1f} at the start, {r['loadavg'][1]:.1f} at the end "
            "(2 CPUs): compare the two sides, run for run."
            if "loadavg" in r
            else ""
        ),
        "",
        "| | fair share on | off | ratio | target | result |",
        "|---|---|---|---|---|---|",
        *_fair_drain_rows(d),
        *_fair_cpu_lines(d),
        "",
        f"**Starvation.** Brand A's backlog of {params['backlog']:,} `noop` tasks drains on K="
        f"{params['workers']}; once {params['head']} have completed, brand B sends "
        f"{params['b_tasks']} (`services.task_create`). B's start delay (start - send), "
        f"seconds, over {params['reps']} repetitions:",
        "",
        "| | p50 | p95 | max |",
        "|---|---|---|---|",
        *rows,
        "",
        "With fair share B waits behind at most A's window (`TASK_BRAND_WINDOW`, 20) and what "
        "the workers prefetched; without it, and in plain Celery, behind all of A's remaining "
        "backlog (one FIFO per priority).",
        "",
    ]


def render_messaging(rq: dict | None, ob: dict | None) -> list[str]:
    rows = [
        "## 8. Messaging (`bench/task_requests.py`, `bench/events_outbox.py`)",
        "",
        "SPEC §3.6 sets no performance target; these figures size the two paths.",
        "",
    ]
    if rq:
        params = rq["params"]
        rows += [
            "**Task creation: `megahub.task_requests` queue vs `POST /tasks/`.** Queue: "
            f"{params['consumers']} `manage.py consume_task_requests` processes (as many as "
            "gunicorn's workers), ready before the repetition; the benchmark publishes "
            f"{params['tasks']:,} JSON requests (persistent) to the quorum queue and waits for "
            f"{params['tasks']:,} tasks. REST: {params['tasks']:,} `POST /tasks/` from a "
            f"closed-loop client with {params['concurrency']} threads, gunicorn with 2 sync "
            "workers. Both create through `services.task_create` (one create statement "
            "with the `queued` mark, then a send without confirm); no worker runs. "
            "Rate = N / (last - first "
            f"`created_at`); {params['reps']} repetitions per side, alternated; medians, "
            "min-max in brackets.",
            "",
            "| tasks created/s | queue consumer | POST /tasks/ | ratio |",
            "|---|---|---|---|",
            f"| rate (database timestamps) | {rq['queue']['rate']['median']:.1f} "
            f"({spread(rq['queue']['rate'], 1)}) | {rq['rest']['rate']['median']:.1f} "
            f"({spread(rq['rest']['rate'], 1)}) | {rq['ratio']:.2f}x |",
            f"| end to end (first publish or request to the last task) | "
            f"{rq['queue']['end_to_end_rate']['median']:.1f} | "
            f"{rq['rest']['end_to_end_rate']['median']:.1f} | |",
            "",
        ]
    else:
        rows += [
            "Task creation through the queue: not measured (no bench/results/"
            "requests.json; run `bench/run.py --only requests`).",
            "",
        ]
    if ob:
        params = ob["params"]
        rows += [
            "**Events outbox: drain with the event relay on vs off.** Every transition writes "
            "its TaskEvent row in the same transaction either way; the relay "
            "(`task_core.events.events_relay`, advisory-locked, publishing unpublished rows "
            "with confirms and stamping `published_at`) is what differs. Per repetition: "
            f"{params['tasks']:,} `noop` tasks loaded and released as in section 1, the "
            "events so far stamped as published, then `celery -A megahub worker -c "
            f"{params['workers']} -Q default,system` drains them. Relay on: "
            "`megahub.events_relay` sent to the system queue every "
            f"{params['relay_interval_s']:g} s as beat does, run by the same worker; a durable "
            "queue bound to `megahub.events` with `#` stands for a subscriber. Relay off: no "
            f"relay; the events stay in the outbox. {params['reps']} repetitions per side, "
            "alternated; medians, min-max in brackets.",
            "",
            "| | relay on | relay off | ratio |",
            "|---|---|---|---|",
            f"| drain rate, tasks/s | {ob['on']['rate']['median']:.1f} "
            f"({spread(ob['on']['rate'], 1)}) | {ob['off']['rate']['median']:.1f} "
            f"({spread(ob['off']['rate'], 1)}) | {ob['ratio']:.2f}x |",
            f"| events published per drain | "
            f"{common.percentile([r['events_published'] for r in ob['on']['runs']], 50):,.0f}"
            f" | 0 | |",
            f"| relay lag after the last completion (s) | {ob['relay_lag_s']['median']:.2f} "
            f"({spread(ob['relay_lag_s'])}) | - | |",
            "",
        ]
    else:
        rows += [
            "Events outbox overhead: not measured (no bench/results/outbox.json; run "
            "`bench/run.py --only outbox`).",
            "",
        ]
    return rows


# Side runs that measure one lever of the web path (each written by the command shown).
LEVERS = {
    "list": [
        ("list", "as is", "(the run above)"),
        (
            "list.auth-cache-off",
            "authentication cache off",
            "AUTH_CACHE_SECONDS=0 .venv/bin/python bench/list_pages.py --rows 100000 --reps 2 "
            "--requests 50 --deep-page 20 --result-name list.auth-cache-off",
        ),
        (
            "list.before",
            "before both levers (rows shaped in Python, no cache)",
            "the same bench/list_pages.py command in a git archive 0d44709 tree, its "
            "list.json copied to bench/results/list.before.json",
        ),
    ],
    "rest": [
        ("rest", "as is", "(the run above)"),
        (
            "rest.auth-cache-off",
            "authentication cache off",
            "AUTH_CACHE_SECONDS=0 .venv/bin/python bench/rest_create.py --reps 2 --seconds 2 "
            "--result-name rest.auth-cache-off",
        ),
    ],
}


def render_levers() -> list[str]:
    """The web-side levers (cached authentication, list rows as JSON from PostgreSQL), each
    side run beside the run with everything on, when their results exist."""

    def p95(r: dict, key: str, stat: str = "p95_ms") -> str:
        return f"{r['stats'][key][stat]['median']:.2f}" if key in r.get("stats", {}) else "-"

    rows: list[str] = []
    lists = [
        (label, cmd, r) for name, label, cmd in LEVERS["list"] if (r := common.read_result(name))
    ]
    if len(lists) > 1:
        rows += [
            "GET /tasks/ in-process (section 3's method), p95 ms, median of repetitions:",
            "",
            "| variant | page 1 | deep page | GET /bench/noop/ (floor) | peer page 1 | command |",
            "|---|---|---|---|---|---|",
            *(
                f"| {label} | {p95(r, 'project/page1')} | {p95(r, 'project/deep')} | "
                f"{p95(r, 'floor/noop')} | {p95(r, 'peer/page1')} | `{cmd}` |"
                for label, cmd, r in lists
            ),
            "",
        ]
    rests = [
        (label, cmd, r) for name, label, cmd in LEVERS["rest"] if (r := common.read_result(name))
    ]
    if len(rests) > 1:
        rows += [
            "POST /tasks/ through gunicorn (section 2's method), medians:",
            "",
            "| variant | create p50 ms | no-op p50 ms | peer p50 ms | create req/s (4 clients) "
            "| command |",
            "|---|---|---|---|---|---|",
            *(
                f"| {label} | {r['latency']['create']['p50_ms']['median']:.2f} | "
                f"{r['latency']['noop']['p50_ms']['median']:.2f} | "
                f"{r['latency']['peer']['p50_ms']['median']:.2f} | "
                f"{r['throughput']['create']['throughput']['median']:.0f} | `{cmd}` |"
                for label, cmd, r in rests
            ),
            "",
        ]
    if not rows:
        return []
    return [
        "## 10. Web-side levers (provisional)",
        "",
        "Each lever measured by turning it off in a side run of the same benchmark, small "
        "sizes, right after the run above (`make bench BENCH_SIZE=small`): the authentication "
        "cache (`AUTH_CACHE_SECONDS`, "
        "`megahub/auth.py`, `task_core/tenancy.py`) and the list rows built as JSON by "
        "PostgreSQL (`task_core/selectors.py` `task_list_rows`). The machine was loaded: "
        "compare the rows with each other, not with other sections.",
        "",
        *rows,
    ]


def render(results: dict, failures: dict, machine: dict, command: str) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Generated by `bench/run.py` - do not edit by hand; rerun `make bench` (see "
        "`bench/run.py --help`). Targets are SPEC.md §5. Every benchmark runs the project and "
        "its baseline in the same run, on the same machine.",
        "",
        f"- Date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        *(
            [
                "- **Provisional figures: a small-size run (`make bench BENCH_SIZE=small`, "
                "`--quick`) on a machine loaded by other work. They show that every benchmark "
                "runs; the figures that count come from a full `make bench` on a quiet "
                "machine.**"
            ]
            if machine.get("quick")
            else []
        ),
        f"- Last command: `{command}` (`make bench` runs them all; each benchmark's own "
        "command and time follow)",
    ]
    for name in SCRIPTS:
        meta = (results.get(name) or failures.get(name) or {}).get("meta")
        if meta:
            lines.append(
                f"- {name}: `{meta['command']}` - started {meta['started_at']}, "
                f"{meta['wall_s']:.0f} s"
                + (
                    f", load average {meta['loadavg_before'][0]:.1f} before / "
                    f"{meta['loadavg_after'][0]:.1f} after"
                    if "loadavg_before" in meta
                    else ""
                )
                + (" - **FAILED**, see bench/results/logs/" if name in failures else "")
            )
    lines += ["", *render_machine(machine), *render_summary(results)]
    sections = [
        ("drain", "## 1. End-to-end drain (`bench/drain.py`)", render_drain),
        ("rest", "## 2. REST create (`bench/rest_create.py`)", render_rest),
        ("list", "## 3. Lists at 1M tasks (`bench/list_pages.py`)", render_list),
        ("checkpoints", "## 4. Checkpoints and progress (`bench/checkpoints.py`)",
         render_checkpoints),
    ]  # fmt: skip
    for name, title, fn in sections:
        lines += fn(results[name]) if name in results else not_measured(title, name)
    lines += render_schedules(results.get("schedules"), results.get("schedule_edits"))
    lines += (
        render_latency(results["latency"], rest=results.get("rest"), machine=machine)
        if "latency" in results
        else not_measured("## 6. Idle latency (`bench/idle_latency.py`)", "latency")
    )
    lines += (
        render_rss(results["rss"])
        if "rss" in results
        else not_measured("## 7. Worker memory (`bench/worker_rss.py`)", "rss")
    )
    lines += render_messaging(results.get("requests"), results.get("outbox"))
    lines += (
        render_fairness(results["fairness"])
        if "fairness" in results
        else not_measured("## 9. Fair share between brands (`bench/fairness.py`)", "fairness")
    )
    lines += render_levers()
    lines += notes.METHOD
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default=",".join(SCRIPTS), help="comma-separated subset")
    parser.add_argument("--render-only", action="store_true", help="only rewrite the doc")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--drain-workers", type=int, default=None, help="K (default: nproc)")
    for name, options in PARAMS.items():
        for option, full, quick in options:
            parser.add_argument(
                f"--{name.replace('_', '-')}-{option}",
                type=type(full),
                default=None,
                help=f"{name} --{option} (full {full:g}, quick {quick:g})",
            )
    args = parser.parse_args(argv)
    only = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = set(only) - set(SCRIPTS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    sizes: dict[str, dict] = {}
    for name, options in PARAMS.items():
        sizes[name] = {}
        for option, full, quick in options:
            value = getattr(args, f"{name}_{option}".replace("-", "_"))
            env = os.environ.get(f"BENCH_{name}_{option}".upper().replace("-", "_"))
            if value is None and env:
                value = type(full)(env)  # e.g. BENCH_LIST_ROWS=200000
            sizes[name][option] = value if value is not None else (quick if args.quick else full)
    extras = {
        name: [
            item
            for option, value in sizes[name].items()
            for item in (f"--{option}", f"{value:g}" if isinstance(value, float) else str(value))
        ]
        for name in SCRIPTS
    }
    if args.drain_workers:
        extras["drain"] += ["--workers", str(args.drain_workers)]
    command = shlex.join([".venv/bin/python", "bench/run.py", *(argv or sys.argv[1:])])
    if not args.render_only:
        estimates = {name: estimate_s(name, sizes[name]) for name in only}
        print(
            "estimated wall time (2 CPUs, rough): "
            + ", ".join(f"{n} {s / 60:.0f} min" for n, s in estimates.items())
            + f"; total ~{sum(estimates.values()) / 60:.0f} min"
            + (" (+ loading the list rows once, ~3 min, if absent)" if "list" in only else ""),
            flush=True,
        )
        for name in only:
            (common.RESULTS / f"{name}.failed.json").unlink(missing_ok=True)
            run_one(name, extras[name])
        common.configure()
        common.ensure_database(common.BENCH_DB_PREFIX)
        machine = common.machine_info()
        machine["commit_ms"] = common.commit_latency_ms(common.BENCH_DB_PREFIX)
        machine["publish_ms"] = common.publish_latency_ms()
        machine["command"] = command
        machine["quick"] = args.quick
        common.write_result("machine", machine)
    machine = common.read_result("machine") or {}
    command = machine.get("command", command)
    results = {n: r for n in SCRIPTS if (r := common.read_result(n)) is not None}
    failures = {n: f for n in SCRIPTS if (f := common.read_result(f"{n}.failed")) is not None}
    for name in failures:
        results.pop(name, None)
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(render(results, failures, machine, command))
    print(f"\nwrote {DOC.relative_to(common.REPO)}", flush=True)
    summary = render_summary(results)
    print("\n".join(summary), flush=True)
    if failures:
        print(f"failed: {', '.join(failures)}", flush=True)
        sys.exit(1)
    if json.dumps(results) == "{}":
        sys.exit(1)


if __name__ == "__main__":
    main()

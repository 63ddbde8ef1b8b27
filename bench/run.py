"""Run the benchmarks (each in its own process) and rewrite docs/benchmarks.md.

    .venv/bin/python bench/run.py                      # all, ~22 min on 2 cores
    .venv/bin/python bench/run.py --only rest,list     # a subset (others keep their last result)
    .venv/bin/python bench/run.py --render-only        # rewrite the doc from bench/results/

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
    # Not a SPEC benchmark: the drain again with the worker-side fix the drain note proposes.
    "drain_db_reuse": "bench/drain.py",
}


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


def render_drain(r: dict, fix: dict | None) -> list[str]:
    p, b, params = r["project"], r["bare"], r["params"]
    fix_rows = []
    if fix:
        fix_rows = [
            "",
            "Experiment, same machine, separate repetitions: the project worker with "
            "`bench/settings_db_reuse.py` (the connection fix proposed below; "
            f"{fix['params']['tasks']:,} tasks, {fix['params']['reps_done']} repetitions):",
            "",
            "| | project + fix | bare Celery | ratio | transactions per task |",
            "|---|---|---|---|---|",
            f"| drain rate, tasks/s (median, min-max) | {fix['project']['rate']['median']:,.1f} "
            f"({spread(fix['project']['rate'], 1)}) | {fix['bare']['rate']['median']:,.1f} "
            f"({spread(fix['bare']['rate'], 1)}) | {fix['ratio']:.2f}x | "
            f"{fix['xacts_median']:.2f} |",
        ]
    bd = r.get("breakdown")
    if bd:
        fix_rows += [
            "",
            f"In-process, one persistent connection, no Celery: `services.task_execute` takes "
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
    return [
        "## 1. End-to-end drain (`bench/drain.py`)",
        "",
        f"{params['tasks']:,} `noop` tasks drained by K={params['workers']} worker processes "
        f"(`celery -A megahub worker -P prefork -c {params['workers']}`), vs bare Celery "
        f"(`bench/bare_celery.py`) draining {params['tasks']:,} no-op messages with the same "
        f"broker, queue arguments (x-max-priority 10), acks_late, prefetch multiplier 1 and "
        f"worker command. {reps_note}, interleaved; medians and min-max. Project worker "
        f"settings: `{params.get('worker_settings', 'megahub.settings')}`.",
        "",
        "| | project | bare Celery | ratio | target | result |",
        "|---|---|---|---|---|---|",
        f"| drain rate, tasks/s (median) | {p['rate']['median']:,.1f} | "
        f"{b['rate']['median']:,.1f} | {r['ratio']:.2f}x | >= {r['target_ratio']}x | "
        f"{ok(r['ratio_pass'])} |",
        f"| spread (min-max) | {spread(p['rate'], 1)} | {spread(b['rate'], 1)} | | | |",
        f"| DB transactions per task while draining | {p['xacts_per_task']['median']:.2f} "
        f"({spread(p['xacts_per_task'])}) | 0 | | <= {r['target_xacts']:g} | "
        f"{ok(r['xacts_pass'])} |",
        f"| timeline events per task | {p['events_per_task']:.0f} | - | | | |",
        f"| publish rate before the drain, tasks/s | {p['publish_rate']['median']:,.0f} "
        f"(`tasks_release_due`, {p['release_xacts_per_task']['median']:.3f} xacts/task) | "
        f"{b['publish_rate']['median']:,.0f} (`send_task` loop) | | | |",
        *fix_rows,
        "",
        "Rates are N / (last completion - first start): the project's from `started_at` / "
        "`completed_at` in the database, the baseline's from `task_prerun` / `task_postrun` "
        "timestamps its pool processes record. Transactions are the bench database's "
        "`pg_stat_database.xact_commit` delta while the worker ran (its own polling subtracted), "
        "divided by N; they include the worker's start-up and heartbeat transactions.",
        "",
        "**What limits it.** " + notes.drain(r, fix),
        "",
    ]


def render_rest(r: dict) -> list[str]:
    lat, thr, q, params = r["latency"], r["throughput"], r["queries"], r["params"]
    rows = [
        "## 2. REST create (`bench/rest_create.py`)",
        "",
        f'`POST /tasks/` (`{{"task_type": "noop"}}`) vs `POST /bench/noop/` (a '
        "BrandScopedViewSet action returning `{}`: same JWT authentication, throttles and "
        "HasBrandRole permission with action_roles). gunicorn `megahub.wsgi`, "
        f"{params['gunicorn_workers']} sync workers, 127.0.0.1; closed-loop Python client, "
        f"{params['reps']} repetitions x {params['seconds']:g} s per endpoint and phase, "
        "endpoints alternated; medians of the per-repetition figures, min-max in brackets. "
        "The latency phase uses 1 client thread, the throughput phase "
        f"{params['concurrency']}.",
        "",
        "| | POST /tasks/ | POST /bench/noop/ | delta / ratio | target | result |",
        "|---|---|---|---|---|---|",
        f"| p50, 1 client (ms) | {ms(lat['create']['p50_ms'])} "
        f"({spread(lat['create']['p50_ms'])}) | {ms(lat['noop']['p50_ms'])} "
        f"({spread(lat['noop']['p50_ms'])}) | +{r['p50_extra_ms']:.2f} ms | "
        f"<= +{r['target_p50_extra_ms']:g} ms | {ok(r['p50_pass'])} |",
        f"| p95, 1 client (ms) | {ms(lat['create']['p95_ms'])} | {ms(lat['noop']['p95_ms'])} "
        "| | | |",
        f"| throughput, {params['concurrency']} clients (req/s) | "
        f"{thr['create']['throughput']['median']:.0f} "
        f"({spread(thr['create']['throughput'], 0)}) | "
        f"{thr['noop']['throughput']['median']:.0f} ({spread(thr['noop']['throughput'], 0)}) "
        f"| {r['throughput_ratio']:.2f}x | >= {r['target_throughput_ratio']}x | "
        f"{ok(r['throughput_pass'])} |",
        f"| p50 / p95 at {params['concurrency']} clients (ms) | "
        f"{ms(thr['create']['p50_ms'])} / {ms(thr['create']['p95_ms'])} | "
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
        "noop": "POST /bench/noop/",
        "list_10": "GET /tasks/?page_size=10",
        "list_50": "GET /tasks/?page_size=50",
    }
    for key, label in labels.items():
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
                f"{cb['total_ms']:.2f} total = create transaction "
                f"{cb['create_transaction_ms']:.2f} + publish with confirm "
                f"{cb['publish_ms']:.2f} + transition to QUEUED "
                f"{cb['queued_transition_ms']:.2f}.",
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

    plan_lines = []
    for name in ("page1", "deep"):
        plan = [
            line.rstrip()
            for line in q[name]["plan"]
            if any(w in line for w in ("Limit", "Scan", "Index Cond", "Execution Time"))
        ]
        plan_lines += [f"{name}:", "```", *plan, "```"]
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
        "in-process (JWT, membership check, throttle, filters, keyset pagination, serializer, "
        "JSON) vs the same page's SQL through psycopg (same columns, brand and creator joined) "
        "plus `json.dumps` of the same document. Requests rotate over the 50 brands; "
        f"{params['requests_per_rep']} requests per repetition, {params['reps']} repetitions, "
        f"interleaved. Deep page = page {params['deep_page']} "
        f"(~{(params['deep_page'] - 1) * 50:,} rows down), its cursor built as DRF encodes it "
        "and checked against the one reached by following `next`.",
        "",
        "| p95 (ms), median of repetitions (min-max) | GET /tasks/ | raw psycopg + json | "
        "ratio | target | result |",
        "|---|---|---|---|---|---|",
        f"| page 1 | {cell('project/page1')} | {cell('raw/page1')} | "
        f"{r['ratio_page1']:.2f}x | <= {r['target_ratio']:g}x | {ok(r['ratio_pass'])} |",
        f"| page {params['deep_page']} | {cell('project/deep')} | {cell('raw/deep')} | "
        f"{r['ratio_deep']:.2f}x | | |",
        f"| p50 page 1 / deep | {ms(s['project/page1']['p50_ms'])} / "
        f"{ms(s['project/deep']['p50_ms'])} | {ms(s['raw/page1']['p50_ms'])} / "
        f"{ms(s['raw/deep']['p50_ms'])} | | | |",
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
                f"- The list view's parts in isolation (median ms): ORM fetch of the page "
                f"queryset {bd['orm_fetch_ms']:.2f}, TaskListSerializer "
                f"{bd['serializer_ms']:.2f}, JSON rendering {bd['json_render_ms']:.2f}."
            ]
            if (bd := r.get("breakdown"))
            else []
        ),
        f"- Following `next` from page 1 to page {params['deep_page']}: median "
        f"{r['walk_next_ms']['median']:.2f} ms per page (max {r['walk_next_ms']['max']:.2f}).",
        "",
        "Plans of the task query (EXPLAIN ANALYZE, scan and timing lines):",
        "",
        *plan_lines,
        "",
        "**What limits it.** " + notes.lists(r),
        "",
    ]


def render_summary(results: dict) -> list[str]:
    rows = [
        "## Summary",
        "",
        "| benchmark | target | measured | result |",
        "|---|---|---|---|",
    ]
    d = results.get("drain")
    if d:
        rows += [
            f"| drain | >= {d['target_ratio']}x bare Celery completions/s | "
            f"{d['ratio']:.2f}x ({d['project']['rate']['median']:,.0f} vs "
            f"{d['bare']['rate']['median']:,.0f} tasks/s) | {ok(d['ratio_pass'])} |",
            f"| drain | <= {d['target_xacts']:g} DB transactions per task | "
            f"{d['xacts_median']:.2f} | {ok(d['xacts_pass'])} |",
        ]
    fix = results.get("drain_db_reuse")
    if fix:
        rows.append(
            f"| (experiment) drain with the proposed worker fix | same targets | "
            f"{fix['ratio']:.2f}x, {fix['xacts_median']:.2f} transactions/task | "
            f"{ok(fix['ratio_pass'])} / {ok(fix['xacts_pass'])} |"
        )
    r = results.get("rest")
    if r:
        rows += [
            f"| REST create | p50 <= no-op + {r['target_p50_extra_ms']:g} ms | "
            f"+{r['p50_extra_ms']:.2f} ms ({r['latency']['create']['p50_ms']['median']:.2f} vs "
            f"{r['latency']['noop']['p50_ms']['median']:.2f} ms) | {ok(r['p50_pass'])} |",
            f"| REST create | throughput >= {r['target_throughput_ratio']}x no-op | "
            f"{r['throughput_ratio']:.2f}x | {ok(r['throughput_pass'])} |",
            f"| REST | constant queries per request | create "
            f"{r['queries']['create']['queries']}, list {r['queries']['list_10']['queries']} "
            f"(10 rows) = {r['queries']['list_50']['queries']} (50 rows) | "
            f"{ok(r['list_queries_constant'])} |",
        ]
    li = results.get("list")
    if li:
        rows += [
            f"| lists at 1M | page 1 p95 <= {li['target_ratio']:g}x raw SQL + json | "
            f"{li['ratio_page1']:.2f}x | {ok(li['ratio_pass'])} |",
            f"| lists at 1M | deep page as fast as page 1 | {li['deep_vs_page1']:.2f}x | "
            f"{ok(li['deep_pass'])} |",
            f"| lists at 1M | constant queries, no COUNT/OFFSET | "
            f"{li['queries']['page1']['queries']} per page | "
            f"{ok(li['queries_constant'] and li['no_count_no_offset'])} |",
        ]
    return [*rows, ""]


def render(results: dict, failures: dict, machine: dict, command: str) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Generated by `bench/run.py` - do not edit by hand; rerun `make bench` (see "
        "`bench/run.py --help`). Targets are SPEC.md §5. Every benchmark runs the project and "
        "its baseline in the same run, on the same machine.",
        "",
        f"- Date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
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
    if "drain" in results:
        lines += render_drain(results["drain"], results.get("drain_db_reuse"))
    if "rest" in results:
        lines += render_rest(results["rest"])
    if "list" in results:
        lines += render_list(results["list"])
    lines += notes.METHOD
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default=",".join(SCRIPTS), help="comma-separated subset")
    parser.add_argument("--render-only", action="store_true", help="only rewrite the doc")
    parser.add_argument("--drain-tasks", type=int, default=3000)
    parser.add_argument("--drain-workers", type=int, default=None)
    parser.add_argument("--drain-reps", type=int, default=5)
    parser.add_argument("--drain-budget-s", type=float, default=1000)
    parser.add_argument("--fix-reps", type=int, default=3, help="drain_db_reuse repetitions")
    parser.add_argument("--rest-reps", type=int, default=5)
    parser.add_argument("--rest-seconds", type=float, default=5)
    parser.add_argument("--list-rows", type=int, default=1_000_000)
    parser.add_argument("--list-reps", type=int, default=5)
    parser.add_argument("--list-requests", type=int, default=100)
    args = parser.parse_args(argv)
    only = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = set(only) - set(SCRIPTS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    extras = {
        "drain": [
            "--tasks",
            str(args.drain_tasks),
            "--reps",
            str(args.drain_reps),
            "--budget-s",
            str(args.drain_budget_s),
            *(["--workers", str(args.drain_workers)] if args.drain_workers else []),
        ],
        "drain_db_reuse": [
            "--tasks",
            str(args.drain_tasks),
            "--reps",
            str(args.fix_reps),
            "--budget-s",
            str(args.drain_budget_s / 2),
            "--worker-settings",
            "bench.settings_db_reuse",
            "--result-name",
            "drain_db_reuse",
            *(["--workers", str(args.drain_workers)] if args.drain_workers else []),
        ],
        "rest": ["--reps", str(args.rest_reps), "--seconds", str(args.rest_seconds)],
        "list": [
            "--rows",
            str(args.list_rows),
            "--reps",
            str(args.list_reps),
            "--requests",
            str(args.list_requests),
        ],
    }
    command = shlex.join([".venv/bin/python", "bench/run.py", *(argv or sys.argv[1:])])
    if not args.render_only:
        for name in only:
            (common.RESULTS / f"{name}.failed.json").unlink(missing_ok=True)
            run_one(name, extras[name])
        common.configure()
        common.ensure_database(common.BENCH_DB_PREFIX)
        machine = common.machine_info()
        machine["commit_ms"] = common.commit_latency_ms(common.BENCH_DB_PREFIX)
        machine["publish_ms"] = common.publish_latency_ms()
        machine["command"] = command
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

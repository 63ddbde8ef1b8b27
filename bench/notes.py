"""The analysis in docs/benchmarks.md: what limits each figure.

Written from profiling the project code (cProfile, per-statement timing, PostgreSQL statement
logs) on the benchmark machine. Figures quoted inline come from the current results; every
statement about the code is checked against the tree at render time (``_code_has``), so a
note about something already fixed is not printed.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NAN = float("nan")


def _code_has(path: str, *snippets: str) -> bool:
    try:
        text = (REPO / path).read_text()
    except OSError:
        return False
    return all(snippet in text for snippet in snippets)


def drain(r: dict) -> str:
    p, b, k = r["project"], r["bare"], r["params"]["workers"]
    bd = r.get("breakdown", {})
    xacts = p["xacts_per_task"]["median"]
    ms_project = 1000 * k / p["rate"]["median"]
    ms_bare = 1000 * k / b["rate"]["median"]
    ms_needed = ms_bare / r["target_ratio"]
    orm = bd.get("task_execute_ms", NAN)
    raw = bd.get("raw_two_statements_ms", NAN)
    items = []
    if xacts > 3.5 and not _code_has("megahub/settings.py", "CELERY_DB_REUSE_MAX"):
        items.append(
            "**A new PostgreSQL connection per task.** Celery's Django fixup "
            "(`celery/fixups/django.py`, `DjangoWorkerFixup.close_database`, Celery 5.7) calls "
            "`connection.close()` before and after every task unless `CELERY_DB_REUSE_MAX` is "
            "set, and `megahub/settings.py` does not set it, so `CONN_MAX_AGE` never applies "
            "in the worker. Each task pays a backend start, authentication and `SET TimeZone` "
            "(~4 ms here; the PostgreSQL statement log shows a new backend pid per task): "
            f"{xacts:.2f} transactions per task in the worker against "
            f"{bd.get('task_execute_xacts', NAN):.2f} for the same `execution.task_execute` on "
            "a persistent connection; the difference is the backend start and that `SET`. "
            "Fix: set `CELERY_DB_REUSE_MAX` in "
            "`megahub/settings.py` and connect `task_prerun`/`task_postrun` to "
            "`django.db.close_old_connections()` in `megahub/celery.py`, which keeps "
            "CONN_MAX_AGE and `conn_health_checks` semantics (a broken connection is still "
            "dropped)."
        )
    if not _code_has("task_core/state_machine.py", "RETURNING"):
        items.append(
            "**Four round trips per state change.** `task_core/state_machine.py` "
            "`transition()` runs `UPDATE ... WHERE status IN (...)`, a `SELECT` re-reading the "
            "whole row, an `INSERT` of the TaskEvent, then COMMIT; a task does it twice "
            "(`execution.task_claim`, `execution._finish`): 8 round trips and 2 WAL flushes, plus "
            "whatever `attempt_finished` receivers add (statements of one task, listed above). "
            f"In-process with a persistent connection that is {orm:.1f} ms per task, against "
            f"{raw:.1f} ms for the same two changes written as one statement each (`WITH t AS "
            "(UPDATE ... RETURNING *), e AS (INSERT INTO task_core_taskevent ... SELECT ... "
            "FROM t) SELECT * FROM t`). Fix: one `UPDATE ... RETURNING` per transition with "
            "the event INSERT in the same statement (a raw CTE: Django 5.2's `update()` "
            "returns no rows), building the returned Task from the RETURNING columns instead "
            "of re-reading it."
        )
    else:
        cpu = bd.get("task_execute_cpu_ms", NAN)
        gap = (
            "the gap between the two is more than that CPU: the rest is the server's side of "
            "the project's statements (the metrics row with its indexes; the task row's 12 "
            "indexes, none updated HOT since `status` is indexed) and the variance of each "
            "COMMIT's disk flush on a shared machine"
            if orm - raw > cpu
            else "the two are within that CPU of each other: the COMMITs' disk flushes dominate "
            "both"
        )
        items.append(
            f"**Per-task database work.** In-process `execution.task_execute` takes {orm:.1f} ms "
            f"per task ({cpu:.2f} ms of it CPU in the calling process; the rest waits for "
            f"PostgreSQL) against {raw:.1f} ms for the claim and the finish written as one SQL "
            "statement + COMMIT each. The two statements are already one prepared round trip "
            f"each (`state_machine.Statement`); {gap}. A pool process runs one task at a time "
            "and waits for both flushes, so K processes could drain at most "
            f"K / {orm:.1f} ms = {1000 * k / orm:,.0f} tasks/s with this run's flush times, "
            "if the CPU were theirs alone (it is not: item 3)."
        )
    statements = bd.get("task_execute_statements", [])
    if "INSERT task_monitoring_taskmetric" in statements and not _code_has(
        "task_core/signals.py", "OutcomeRow"
    ):
        items.append(
            "**The metrics row, in a transaction of its own.** `task_monitoring.services."
            "metric_record` (the `attempt_finished` receiver in `task_monitoring/apps.py`) "
            "writes its `INSERT ... ON CONFLICT DO NOTHING` in autocommit after the finish "
            "committed: one more durable commit per task. Fix: write it in the finish's "
            "transaction (e.g. `execution._finish` passes the metric to `transition()`, or the "
            "signal is sent inside its atomic block). The <= 3 target needs this *and* the "
            "connection fix: claim + finish + metric + the health check's SELECT 1 is 4."
        )
    if xacts <= 3.5:
        writes = p.get("write_xacts_per_task", {}).get("median", NAN)
        items.append(
            f"**Two durable commits per task.** The claim (`running` + `started` event) and "
            f"the finish (`completed` + event + metrics row, in one statement) are one "
            f"statement and one COMMIT each ({writes:.2f} write transactions per task; "
            f"{xacts:.2f} commits with the read-only ones: the worker's start-up and "
            "heartbeats; the fair-share wake-up is an index probe inside the finish's "
            "statement, its refill runs in the system worker's releaser). "
            "Each COMMIT waits for the WAL flush; the claim must, or a database crash could let "
            "the task run twice (docs/execution.md, *The worker's hot path*)."
        )
    items.append(_drain_cpu(r))
    listed = "\n".join(f"{i}. {item}" for i, item in enumerate(items, start=1))
    return (
        f"Wall time per task and worker process: {ms_project:.1f} ms for the project, "
        f"{ms_bare:.1f} ms for bare Celery; {r['target_ratio']}x would need "
        f"{ms_needed:.1f} ms all-in. Where the time goes, in order of size:\n\n{listed}\n\n"
        + _drain_budget(r)
    )


def _drain_budget(r: dict) -> str:
    """The CPU budget the bare-Celery target leaves, against the CPU the run measured."""
    cpu = r["project"].get("cpu_ms_per_task") or {}
    rate = r["target_ratio"] * r["bare"]["rate"]["median"]
    budget = 1000 * (os.cpu_count() or 2) / rate
    postgres = sum(ms for group, ms in cpu.items() if "postgres" in group)
    return (
        f"At {r['target_ratio']}x bare Celery ({rate:,.0f} tasks/s) the {os.cpu_count()} CPUs "
        f"leave {budget:.2f} ms of CPU per task for everything, RabbitMQ included; the "
        f"project spends {sum(cpu.values()):.2f} ms without RabbitMQ, {postgres:.2f} ms of it "
        "in PostgreSQL, which bare Celery does not use at all, and its pool processes also "
        "wait for two WAL flushes per task. The gap is "
        f"{max(sum(cpu.values()) - budget, 0):.2f} ms plus RabbitMQ's share (not measured "
        "here) and the flush waits; the "
        "claim and the finish are already one prepared statement each, so the lever left is "
        "several deliveries sharing their statements and flushes (a batched claim and finish). "
        "Tasks that do real work make this fixed cost a smaller share."
    )


def _cpu_line(label: str, cpu: dict | None) -> str:
    if not cpu:
        return ""
    parts = ", ".join(f"{group} {ms:.2f}" for group, ms in cpu.items())
    return f"{label}: {parts} ({sum(cpu.values()):.2f} ms in all)"


def _drain_cpu(r: dict) -> str:
    """What the profile of a drain (py-spy on the worker's processes, fair share off) found,
    with the CPU per task the benchmark measured for each process group."""
    measured = [
        line
        for line in (
            _cpu_line("project", r["project"].get("cpu_ms_per_task")),
            _cpu_line("peer", r.get("peer", {}).get("cpu_ms_per_task")),
            _cpu_line("bare Celery", r["bare"].get("cpu_ms_per_task")),
        )
        if line
    ]
    text = (
        "**CPU sharing.** The 2 vCPUs run the 2 pool processes, the worker's main process, "
        "PostgreSQL and RabbitMQ, so throughput follows the CPU all of them spend per task. "
    )
    if measured:
        text += (
            "CPU ms per task while draining (from /proc, between 20% of the tasks and the end; "
            "RabbitMQ not counted): " + "; ".join(measured) + ". "
        )
    batched = _code_has("megahub/celery.py", "class EventsBatched")
    text += (
        "A py-spy profile of the pool processes (2 x 10 s at 200 Hz, `TASK_FAIR_SHARE=0`) "
        "shows about half of their samples waiting on PostgreSQL (psycopg's `wait` and the "
        "send of the claim and outcome statements: two round trips, each a durable COMMIT); "
        "of the busy rest, Celery's trace around the task and the result sent back through "
        "the pool's pipe take about a quarter (its INFO `succeeded` log line alone 7%), the "
        "client side of the two statements (parameters, the returned row's conversion into "
        "the Task) about a fifth, building the metrics row about a tenth, and "
        "`close_old_connections` before and after each task a few percent; the task type's "
        "validation, the heartbeat registration and the TaskContext are each under 1%. "
    )
    if _code_has("task_core/sql_parts.py", "def db_prep", "def row_sources"):
        text += (
            "The statements' parameters now skip Django's per-field conversion chain for the "
            "values it leaves unchanged (`sql_parts.db_prep`), and the metrics row takes its "
            "task, brand, attempt, type, queue, start and times from the row the outcome "
            "statement moves (twelve parameters instead of twenty: building them took 59 µs, "
            "now 10 µs); with one `task_prerun` handler instead of two, Celery's traced "
            "task (in-process, `valgrind --tool=callgrind`) went from 3.3 M to "
            "2.95 M instructions per task, -10% (N=240 minus N=40 runs, / 200). "
        )
    if _code_has("task_monitoring/memory.py", "_own_fds"):
        text += (
            "Reading /proc for the attempt's peak memory was 11% of those busy samples "
            "(an `open` of `clear_refs` and two of `status` per attempt); the files now stay "
            "open (`task_monitoring/memory.py`), ~10 µs per attempt. "
        )
    text += (
        "In the worker's main process, publishing Celery's task events was 36% of the "
        "samples (about three publishes per task: Celery flushes its event buffer at every "
        "turn of the event loop) and the acknowledgement of each message 11%"
        + (
            "; events now leave in batches (`WORKER_EVENTS_FLUSH_MS`, `megahub.celery."
            "EventsBatched`, with Celery's 24-event cap raised to 256 so that the timer, not "
            "every eighth task, flushes), which brings the main process close to what it costs "
            "with events off (a drain with `CELERY_SEND_EVENTS=0` measured ~0.2 ms less). "
            if batched
            else ". "
        )
        + "Bare Celery (`bench/bare_celery.py`) sends no task events "
        "(`worker_send_task_events=False`) and runs no database work; the peer sends the same "
        "events as the project (it reads megahub's `CELERY_*` settings)."
    )
    return text


def rest(r: dict) -> str:
    q = r["queries"]
    kinds = q["create"]["kinds"]
    cb = r.get("create_breakdown") or {}
    re_read = len(kinds) > 1 and kinds[-1] == "SELECT task_core_task"
    items = [
        "`services.task_create`: the fair-share read (`fairshare._admission_facts`: the "
        "brand's queued counts and limits, one prepared statement, which is also the kept "
        "connection's health check, no `SELECT 1` before it), then one prepared "
        "statement, its own transaction (no BEGIN/COMMIT round trips): INSERT task, already "
        "`queued` when admitted (or with the waiting reason when fair share holds it), with "
        "its `created` and `queued` events, and one durable commit "
        f"({cb.get('create_transaction_ms', NAN):.1f} ms including validation).",
        "After the commit `publishing.task_send_queued` sends the persistent message on a "
        "connection without publisher confirms, copied from the thread's previous message of "
        "the same shape and written straight to the channel (`broker._send_copied`) "
        f"({cb.get('publish_ms', NAN):.1f} ms per create, "
        f"{cb.get('sends_per_create', NAN):.2f} sends per create): no confirm wait and no second "
        "transaction; a message the broker loses is republished by the sweeper "
        "(docs/execution.md, Publishing a task). No worker runs here, so once the brand's "
        "window (`TASK_BRAND_WINDOW`) is full fair share holds the following creates in the "
        "database: no send at all for those.",
    ]
    if re_read:
        items.append(
            "`TaskViewSet.create` (`task_core/api/views.py`) re-reads the task only to "
            "serialize it, although the task, `request.brand` and `request.user` are in memory."
        )
    sections = sorted({k for k in kinds[2:] if k.startswith("SELECT ") and "task_core" not in k})
    if sections:
        items.append(
            "`TaskDetailSerializer` runs the detail sections other apps registered "
            "(`register_detail_section`, e.g. `task_monitoring.selectors.metric_detail_section`)"
            f" on the response: {', '.join(f'`{k}`' for k in sections)} for a task created "
            "a millisecond ago, which cannot have any rows yet."
        )
    fixes = []
    if re_read:
        fixes.append("serialize the created task from memory in `TaskViewSet.create`")
    if sections:
        fixes.append("skip the detail sections on create (nothing to show yet)")
    listed = "\n".join(f"{i}. {item}" for i, item in enumerate(items, start=1))
    return (
        f"`POST /tasks/` runs {q['create']['queries']} queries in "
        f"{q['create']['xacts']:.0f} transactions where the no-op runs "
        f"{q['noop']['queries']} in {q['noop']['xacts']:.0f} (warm: the JWT user and the "
        "brand membership come from the cache, `AUTH_CACHE_SECONDS`; the peer reads both"
        + (f", {q['peer']['queries']} queries in all" if "peer" in q else "")
        + "). The rest happens inside the request "
        f"(`services.task_create` in-process: {cb.get('total_ms', NAN):.1f} ms):\n\n"
        f"{listed}\n\n"
        "Under load the fsync'd commit of every request queues up on 2 vCPUs shared with "
        "PostgreSQL, RabbitMQ and the client. "
        + (f"Fixes, by size: {'; '.join(fixes)}. " if fixes else "")
        + "megahub pays one durable commit and no confirm wait, with the fair-share read, the "
        "`queued` mark and its events inside that transaction; the peer pays one durable "
        "commit and its `delay_on_commit` publish through the app's producer pool, which "
        "confirms every publish (`confirm_publish`; the message and its `task-sent` event: "
        "two confirm waits)."
    )


def lists(r: dict) -> str:
    s = r["stats"]
    raw = s["raw/page1"]["p95_ms"]["median"]
    floor = s["floor/noop"]["p95_ms"]["median"] if "floor/noop" in s else NAN
    project = s["project/page1"]["p95_ms"]["median"]
    peer = s["peer/page1"]["p95_ms"]["median"] if "peer/page1" in s else NAN
    bd = r.get("breakdown", {})
    items = [
        f"**The fixed cost of any brand-scoped DRF request** (GET /bench/noop/: {floor:.1f} "
        "ms p95): JWT decoding, the throttle's cache read/write and DRF dispatch. The user row "
        "and the membership come from the cache (`AUTH_CACHE_SECONDS`, `megahub/auth.py`, "
        "`task_core/tenancy.py` `request_membership`) instead of two queries; the peer still "
        "pays both."
    ]
    if _code_has("task_core/selectors.py", "class _TaskListPage", "to_json("):
        items.append(
            "**Rows as JSON text from PostgreSQL, spliced into the response.** "
            "`selectors.task_list_rows` evaluates a page as a deferred join (the page's ids "
            "from an index alone, then the rows of those ids by primary key) with each row "
            "written by the database as compact JSON in DRF's format (concatenation, `to_json` "
            "for strings, `to_char` for datetimes); `megahub/renderers.py` writes those texts "
            "into the response bytes without decoding them: "
            f"{bd.get('orm_fetch_ms', NAN):.2f} ms for the page's query, "
            f"{bd.get('json_render_ms', NAN):.2f} ms to render the response; no model "
            "instances, no serializer. "
            + (
                "An unfiltered page by id (no filter, search or other ordering: the list as "
                "the benchmark asks it) skips the ORM too: `selectors.TaskListStatement` "
                "binds the brand, the cursor's id and the page size to a statement text kept "
                "per connection, where building, filtering, cloning and compiling the ORM "
                "query cost ~0.6 ms of CPU per request (thread CPU time, in-process A/B). "
                if _code_has("task_core/selectors.py", "class TaskListStatement")
                else ""
            )
            + "What is left above the floor is that query's round trip (one, prepared), the "
            "keyset paginator's cursors and links and DRF's response: "
            f"{project - floor:.1f} ms p95 over the floor for 50 rows (the peer's "
            "ModelSerializer with nested brand and creator: "
            f"{peer - floor:.1f} ms)."
        )
    listed = "\n".join(f"{i}. {item}" for i, item in enumerate(items, start=1))
    deep_plan = " ".join(r["queries"]["deep"]["plan"])
    raw_deep_plan = " ".join(r.get("raw_plans", {}).get("deep", []))
    if "Backward using task_core_task_pkey" in raw_deep_plan and "task_brand_id_idx" in deep_plan:
        deep = (
            "the deep page adds the keyset condition `id < cursor` to the same walk and "
            "touches as many buffers as page 1, none read from outside PostgreSQL's cache "
            "(buffers above: a page's 51 rows of 50 interleaved brands lie on ~100 heap pages, "
            "cached after the warm-up), so a deep page is not slower for heap reads. The raw "
            "baseline, one statement without the deferred join, is planned as a walk of the "
            "primary key backwards filtering on the brand for both pages (~50 rows read per "
            "row kept, `Rows Removed by Filter` above)"
        )
    elif "Backward using task_core_task_pkey" in deep_plan:
        deep = (
            "for the deep page the planner prefers walking the primary key backwards from the "
            "cursor and filtering on the brand (the 50 brands are interleaved evenly here, so "
            "it reads ~50 rows per row kept, in heap order), which is why the raw deep page is "
            "slower than the raw page 1"
        )
    else:
        deep = "the deep page adds the keyset condition `id < cursor` to the same walk"
    page1_plan = " ".join(r["queries"]["page1"]["plan"])
    if "Backward using task_core_task_pkey" in page1_plan:
        page1 = (
            "page 1 walks the primary key backwards and filters on the brand (on a table this "
            "small the planner prices it below `task_brand_id_idx`; at 1M rows it takes the "
            "index)"
        )
    elif "Index Only Scan using task_brand_id_idx" in page1_plan:
        page1 = (
            "page 1 reads its 51 ids from `task_brand_id_idx` (brand_id, id DESC) alone, then "
            "those rows by primary key"
        )
    else:
        page1 = "page 1 walks `task_brand_id_idx` (brand_id, id DESC) for 51 rows"
    return (
        f"The SQL is not the problem (plans above; no COUNT, no OFFSET): {page1}; {deep}. "
        "Both stay around a "
        f"millisecond of SQL ({raw:.1f} ms p95 raw with `json.dumps`). The project's "
        f"{project:.1f} ms p95 is:\n\n{listed}\n"
    )


METHOD: list[str] = [
    "## Method and caveats",
    "",
    "- Each benchmark is a separate process started by `bench/run.py`; results land in "
    "`bench/results/*.json` (not in git) and process logs in `bench/results/logs/`.",
    "- Databases: `megahub_bench` (drain, REST, idle latency, worker memory, messaging), "
    "`megahub_bench_list` (the 1M rows, kept between runs), `megahub_bench_persist` "
    "(checkpoints), `megahub_bench_schedules` and `megahub_bench_schedule_edits` "
    "(scheduling), created and migrated by the benchmarks; nothing else is touched. Queues: "
    "`bench-<pid>.*` and `bench-sched-<pid>.*`, deleted at the end of each benchmark. "
    "`bench/drain.py`, `bench/rest_create.py` and `bench/idle_latency.py` take "
    "`--db megahub_bench_<name>` (and `BENCH_QUEUE_PREFIX`) to run on a database of their own, "
    "beside another run.",
    "- CPU per task of the drain (`bench.common.CpuWindow`) is read from `/proc/<pid>/stat` "
    "of the worker's main process, its pool processes and the bench database's PostgreSQL "
    "backends (`pg_stat_activity`), between the poll that first sees 20% of the tasks done "
    "and the last one; RabbitMQ, shared with everything else, is not counted. On a shared "
    "machine it moves far less than the rates do.",
    "- The peers (`bench/peers.py`, `bench/peer_celery.py`) are what a Django team would write "
    "instead of megahub, plainly: DRF generics and ModelSerializers, simplejwt, Celery with "
    "django-celery-results. They run on the same database, broker, worker command and "
    "settings as megahub, in the same run, interleaved with it.",
    "- The drain runs SPEC's 20,000 tasks per repetition (`--quick`: 500). A time budget "
    "(`--drain-budget-s`, 1000 s) stops starting new repetitions; the table says how many "
    "ran.",
    "- No beat runs during the drain (section 1): the periodic release loop, sweeper and "
    "lifecycle-event relay are outside the measured window. Section 8 measures the drain "
    "again with the relay (`task_core/events.py`) publishing the started/completed "
    "timeline rows as they are written.",
    "- Sizes: `make bench` runs `bench/run.py` with the full profile (`bench/run.py --help` "
    "lists every size); `make bench BENCH_SIZE=small` (`--quick`) is a smoke run with small "
    'ones (the list on 100,000 rows, deep page 20), `BENCH_ARGS="--only list,rest"` a '
    "subset, and `BENCH_<BENCHMARK>_<PARAM>` in the environment (e.g. `BENCH_LIST_ROWS="
    "200000`) one size. Where a "
    "full run stops short of SPEC's size (drain N, worker memory over 100k tasks, the "
    "django-celery-beat baseline's time limit), the section says how much was run.",
    "- The processes under test log at the project's default level (INFO, JSON lines), as "
    "in production; the bare Celery worker logs at the same level. Project messages carry the "
    "`noop` type's soft/hard time limits (10/20 s), the bare ones none.",
    "- Throttling stays on for both REST endpoints, with a 1-second window "
    "(`THROTTLE_USER_RATE=1000000/second`) so that it costs its cache read/write but never "
    "answers 429.",
    "- The list comparison is in-process (Django test client vs psycopg in the same "
    "process), so neither side pays HTTP. psycopg's automatic prepared statements are on for "
    "the raw side (its default); Django's backend does not prepare.",
    "- The machine is shared: other engineers' test suites (pytest with real workers and "
    "beat) may run at the same time. Sides are interleaved repetition by repetition so that "
    "such load hits project and baseline alike, but absolute figures move between runs; the "
    "load average at the start and end of each benchmark is recorded in its results JSON.",
    "",
]

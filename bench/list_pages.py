"""Lists at 1M tasks over 50 brands: GET /tasks/ page 1 and a deep page vs raw psycopg.

Data: --rows task rows (default 1,000,000) spread round-robin over 50 brands, bulk-loaded with
INSERT ... SELECT generate_series into the megahub_bench_list database, then VACUUM ANALYZE.
Reused on the next run when the row count matches.

Project: GET /tasks/ through Django's test client in-process (full middleware, JWT, brand
membership check, throttle, filter backends, keyset pagination, the rows' JSON text from
PostgreSQL spliced into the response), rotating over the 50 brands. Deep page: the cursor of
page --deep-page (built as DRF encodes it; checked once against the cursor reached by following
`next` links).

Peer (bench/peers.py, GET /bench/peer/tasks/): what a Django team would write, a DRF
ListAPIView with a ModelSerializer (brand and creator nested) and CursorPagination ordered by
id, the same JWT authentication and brand-membership rule; same rows, same document.

Floor: GET /bench/noop/ (bench/urls.py), the fixed cost of any brand-scoped DRF request (JWT,
membership lookup, throttle) before the view body runs.

For analysis: the same page's SQL through psycopg (same columns, the brand and creator joined
in, WHERE brand_id = %s [AND id < %s] ORDER BY id DESC LIMIT 51) plus building the same JSON
document with json.dumps.

Targets (SPEC §5): page 1 and the deep page p95 <= 0.7x the peer's and <= the floor + 2 ms.
--rows defaults to SPEC's 1,000,000 (BENCH_LIST_ROWS overrides the default); a smaller run
needs a --deep-page that each brand still has (rows / 50 brands / 50 per page).

p50/p95 over --requests requests per repetition (>= 50), --reps repetitions; within a
repetition every side's request i goes to the same brand back to back, in a shuffled order
(``interleaved``, shuffled), so the sides and the floor share the machine's load alike.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common

DB = "megahub_bench_list"
BRANDS = 50
PAGE = 50
TARGET_PEER_RATIO = 0.7  # p95 <= 0.7x the plain DRF peer's
TARGET_FLOOR_EXTRA_MS = 2.0  # p95 <= the no-op endpoint's + 2 ms

RAW_SQL = """
SELECT t.id, t.task_id, t.task_type, t.status, t.priority, t.progress_percentage,
       t.description, t.brand_id, b.name, t.created_by_id, u.username, t.created_at,
       t.started_at, t.completed_at, t.attempts, t.max_retries, t.error_message, t.queue,
       t.scheduled_for, t.cancel_requested
FROM task_core_task t
JOIN task_core_brand b ON b.id = t.brand_id
LEFT JOIN auth_user u ON u.id = t.created_by_id
WHERE t.brand_id = %s {keyset}
ORDER BY t.id DESC
LIMIT 51
"""

# How the generated rows fill each column (g = 1..rows; a higher g is a newer task). These are
# str.format templates: literal braces are doubled.
COLUMN_SQL = {
    "task_id": "'bl' || g",
    "brand_id": "({brands})[1 + g % {n_brands}]",
    "created_by_id": "CASE WHEN g % 4 = 0 THEN NULL ELSE {user_id} END",
    "task_type": "(ARRAY['noop','seo_keyword_analysis','flaky_api_call','sleep'])[1 + g % 4]",
    "queue": "'default'",
    "status": (
        "CASE WHEN g % 100 = 0 THEN 'failed' WHEN g % 250 = 1 THEN 'cancelled' ELSE 'completed' END"
    ),
    "priority": "(ARRAY['low','normal','normal','high','critical'])[1 + g % 5]",
    "description": "'bench task ' || g",
    "context_data": '\'{{"keyword_ids": [1, 2, 3], "analysis_depth": "quick"}}\'::jsonb',
    "result_data": "CASE WHEN g % 100 = 0 THEN NULL ELSE '{{\"ok\": true}}'::jsonb END",
    "error_message": (
        "CASE WHEN g % 100 = 0 THEN 'UpstreamUnavailable: upstream returned 503' END"
    ),
    "progress_percentage": "CASE WHEN g % 100 = 0 THEN 40 ELSE 100 END",
    "attempts": "1",
    "max_retries": "3",
    "cancel_requested": "false",
    "worker": "'celery@bench'",
    "created_at": "{t0} + g * interval '1 second'",
    "updated_at": "{t0} + g * interval '1 second' + interval '3 seconds'",
    "queued_at": "{t0} + g * interval '1 second'",
    "started_at": "{t0} + g * interval '1 second' + interval '1 second'",
    "completed_at": "{t0} + g * interval '1 second' + interval '3 seconds'",
}


def setup_fixtures() -> dict:
    """50 brands and a viewer who belongs to all of them, with a long-lived JWT."""
    from django.contrib.auth import get_user_model
    from rest_framework_simplejwt.tokens import AccessToken

    from task_core import services
    from task_core.models import BrandMembership

    user, _ = get_user_model().objects.get_or_create(username="bench-viewer")
    brands = []
    for i in range(BRANDS):
        brand, _ = services.brand_create(name=f"Bench list {i:02d}", slug=f"bench-list-{i:02d}")
        granted = BrandMembership.objects.unscoped().filter(user=user, brand=brand, role="viewer")
        if not granted.exists():  # a reused database is only read
            services.membership_grant(user=user, brand=brand, role="viewer")
        brands.append(brand.pk)
    return {"brands": brands, "user_id": user.pk, "token": str(AccessToken.for_user(user))}


def insert_sql(fixtures: dict, lo: int, hi: int, t0_sql: str) -> tuple[str, list]:
    """INSERT ... SELECT generate_series for rows lo..hi, covering every column Task has."""
    from task_core.models import Task

    brands = "ARRAY[" + ",".join(str(b) for b in fixtures["brands"]) + "]::bigint[]"
    columns, exprs, params = [], [], []
    for field in Task._meta.concrete_fields:
        if field.primary_key:
            continue
        if field.column in COLUMN_SQL:
            expr = COLUMN_SQL[field.column].format(
                brands=brands, n_brands=len(fixtures["brands"]), user_id=fixtures["user_id"],
                t0=t0_sql,
            )  # fmt: skip
        elif field.null:
            continue  # a column added since this was written: NULL is a valid value
        elif field.has_default():
            from django.db import connection

            # A column another app added: its Python default, as Django would have saved it.
            value = field.get_db_prep_save(field.get_default(), connection)
            expr = "%s"
            params.append(value)
        else:
            raise SystemExit(f"list bench: don't know how to fill task column {field.column!r}")
        columns.append(f'"{field.column}"')
        exprs.append(expr.replace("%", "%%") if expr != "%s" else expr)
    sql = (
        f"INSERT INTO task_core_task ({', '.join(columns)}) "
        f"SELECT {', '.join(exprs)} FROM generate_series({lo}, {hi}) AS g"
    )
    return sql, params


def load_rows(fixtures: dict, rows: int) -> dict:
    """Bulk-load the rows unless the database already holds exactly that many."""
    with common.pg_connect(DB) as pg:
        (have,) = pg.execute("SELECT count(*) FROM task_core_task").fetchone()
    if have == rows:
        print(f"list: reusing {rows:,} loaded rows", flush=True)
        return {"loaded": False, "seconds": 0.0}
    print(f"list: loading {rows:,} rows (have {have:,})...", flush=True)
    t_start = time.perf_counter()
    with common.pg_connect(DB) as pg:
        pg.execute("TRUNCATE task_core_task, task_core_taskevent CASCADE")
        pg.execute("SET synchronous_commit = off")
        pg.execute("SET maintenance_work_mem = '256MB'")
        (t0_sql,) = pg.execute(
            "SELECT quote_literal(now() - %s * interval '1 second') || '::timestamptz'", [rows]
        ).fetchone()
        chunk = 100_000
        for lo in range(1, rows + 1, chunk):
            hi = min(rows, lo + chunk - 1)
            sql, params = insert_sql(fixtures, lo, hi, t0_sql)
            pg.execute(sql, params)
            print(f"list: {hi:,} rows", flush=True)
        pg.execute("VACUUM ANALYZE task_core_task")
    return {"loaded": True, "seconds": time.perf_counter() - t_start}


def drf_cursor(position: int) -> str:
    """The cursor DRF's CursorPagination emits for 'the rows after id ``position``'."""
    return base64.b64encode(urlencode({"p": str(position)}).encode("ascii")).decode("ascii")


def iso(value) -> str | None:
    if value is None:
        return None
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


class Raw:
    """The baseline: one psycopg query, the same JSON document."""

    def __init__(self):
        self.conn = common.pg_connect(DB)
        self.page1 = RAW_SQL.format(keyset="")
        self.deep = RAW_SQL.format(keyset="AND t.id < %s")

    def get(self, brand_id: int, position: int | None) -> bytes:
        if position is None:
            rows = self.conn.execute(self.page1, [brand_id]).fetchall()
        else:
            rows = self.conn.execute(self.deep, [brand_id, position]).fetchall()
        results = [
            {
                "id": r[0],
                "task_id": r[1],
                "task_type": r[2],
                "status": r[3],
                "priority": r[4],
                "progress_percentage": r[5],
                "description": r[6],
                "brand": {"id": r[7], "name": r[8]},
                "created_by": {"id": r[9], "username": r[10]} if r[9] is not None else None,
                "created_at": iso(r[11]),
                "started_at": iso(r[12]),
                "completed_at": iso(r[13]),
                "attempts": r[14],
                "max_retries": r[15],
                "error_message": r[16],
                "queue": r[17],
                "scheduled_for": iso(r[18]),
                "cancel_requested": r[19],
            }
            for r in rows[:PAGE]
        ]
        next_url = None
        if len(rows) > PAGE:
            next_url = f"http://testserver/tasks/?cursor={drf_cursor(rows[PAGE - 1][0])}"
        return json.dumps({"next": next_url, "previous": None, "results": results}).encode()


class Project:
    def __init__(self, token: str):
        from rest_framework.test import APIClient

        self.client = APIClient()
        self.client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")

    def peer(self, brand_id: int, cursor: str | None):
        """GET /bench/peer/tasks/: the plain DRF ListAPIView (bench/peers.py)."""
        return self.get(brand_id, cursor, "/bench/peer/tasks/")

    def floor(self, brand_id: int, _unused=None):
        """GET /bench/noop/: what any brand-scoped GET costs before the view body runs."""
        response = self.client.get("/bench/noop/", HTTP_X_BRAND_ID=str(brand_id))
        if response.status_code != 200:
            raise RuntimeError(f"GET /bench/noop/: HTTP {response.status_code}")
        return response

    def get(self, brand_id: int, cursor: str | None, path: str = "/tasks/"):
        url = path if cursor is None else f"{path}?cursor={cursor}"
        response = self.client.get(url, HTTP_X_BRAND_ID=str(brand_id))
        if response.status_code != 200:
            raise RuntimeError(f"GET {url}: HTTP {response.status_code} {response.content[:300]!r}")
        return response


def deep_positions(brands: list[int], deep_page: int) -> dict[int, int]:
    """Per brand, the id of the last row of page deep_page - 1 (the deep page starts after)."""
    out = {}
    with common.pg_connect(DB) as pg:
        for brand_id in brands:
            row = pg.execute(
                "SELECT id FROM task_core_task WHERE brand_id = %s ORDER BY id DESC "
                "OFFSET %s LIMIT 1",
                [brand_id, (deep_page - 1) * PAGE - 1],
            ).fetchone()
            if row is None:
                raise SystemExit(f"brand {brand_id} has fewer than {deep_page} pages; more --rows")
            out[brand_id] = row[0]
    return out


def walk_next(project: Project, brand_id: int, pages: int) -> tuple[str, list[float]]:
    """Follow `next` links from page 1 to page ``pages``; return its cursor and the timings."""
    cursor, timings = None, []
    for _ in range(pages - 1):
        t0 = time.perf_counter()
        data = project.get(brand_id, cursor).json()
        timings.append((time.perf_counter() - t0) * 1000)
        cursor = parse_qs(urlparse(data["next"]).query)["cursor"][0]
    return cursor, timings


def explain(sql: str) -> list[str]:
    with common.pg_connect(DB) as pg:
        rows = pg.execute(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}").fetchall()
    return [r[0] for r in rows]


def count_queries(project: Project, brand_id: int, cursor: str) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    out = {}
    for name, cur in (("page1", None), ("deep", cursor)):
        with CaptureQueriesContext(connection) as captured:
            project.get(brand_id, cur)
        sqls = [q["sql"] for q in captured.captured_queries]
        task_sql = [s for s in sqls if '"task_core_task"' in s.split(" FROM ", 1)[-1][:40]]
        plan = []
        if task_sql:
            try:
                plan = explain(task_sql[0])
            except Exception as exc:  # the logged SQL is not always re-executable
                plan = [f"(EXPLAIN failed: {exc.__class__.__name__})"]
        out[name] = {
            "queries": len(sqls),
            "has_count": any("COUNT(" in s.upper() for s in sqls),
            "has_offset": any(" OFFSET " in s.upper() for s in sqls),
            "task_sql": task_sql[0] if task_sql else "",
            "plan": plan,
        }
    return out


def list_breakdown(brand_id: int, n: int = 50) -> dict:
    """The list view's parts in isolation (median ms): the page's rows as JSON text from
    PostgreSQL, and the response's JSON rendering (the texts spliced in)."""
    from megahub.renderers import JSONRenderer, JSONRows
    from task_core import selectors

    def fetch():
        # The rows TaskViewSet.list reads for an unfiltered page (selectors.TaskListStatement,
        # the keyset LIMIT applied as the paginator applies it).
        return list(selectors.TaskListStatement(brand_id).order_by("-id")[: PAGE + 1])

    texts = [row["row"] for row in fetch()[:PAGE]]
    page = {"next": None, "previous": None}
    parts = {
        "orm_fetch_ms": fetch,
        "json_render_ms": lambda: JSONRenderer().render(
            {**page, "results": JSONRows(texts, verbatim=True)}
        ),
    }
    out = {}
    for name, fn in parts.items():
        timings = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            timings.append((time.perf_counter() - t0) * 1000)
        out[name] = common.percentile(timings, 50)
    return out


def measure(fn, brands: list[int], arg_for, n: int) -> list[float]:
    timings = []
    for i in range(n):
        brand_id = brands[i % len(brands)]
        t0 = time.perf_counter()
        fn(brand_id, arg_for(brand_id))
        timings.append((time.perf_counter() - t0) * 1000)
    return timings


def interleaved(combos: dict, brands: list[int], requests: int, rep: int) -> dict:
    """One repetition: request i of every side for the same brand back to back, in an order
    shuffled at each request (seeded), so every side meets the shared machine's load alike and
    follows each other side as often (in blocks per side, a burst lands on one side only: the
    floor's p95 ranged 2.2-7.8 ms in one run; in a fixed cycle, one side always follows the
    peer and pays for its garbage)."""
    keys, rng = list(combos), random.Random(rep)
    timings: dict = {key: [] for key in keys}
    for i in range(requests):
        brand_id = brands[i % len(brands)]
        rng.shuffle(keys)
        for key in keys:
            fn, arg_for = combos[key]
            arg = arg_for(brand_id)
            t0 = time.perf_counter()
            fn(brand_id, arg)
            timings[key].append((time.perf_counter() - t0) * 1000)
    return timings


def run(rows: int, reps: int, requests: int, deep_page: int) -> dict:
    common.configure(DB)
    common.django_setup(DB)
    fixtures = setup_fixtures()
    load = load_rows(fixtures, rows)
    brands = fixtures["brands"]
    project, raw = Project(fixtures["token"]), Raw()
    positions = deep_positions(brands, deep_page)
    cursors = {b: drf_cursor(p) for b, p in positions.items()}
    walked, walk_ms = walk_next(project, brands[0], deep_page)
    if walked != cursors[brands[0]]:
        raise RuntimeError(f"built cursor {cursors[brands[0]]} != followed cursor {walked}")
    # Same page, same content: the baseline really builds what the API returns.
    api_page = project.get(brands[0], cursors[brands[0]]).json()
    raw_page = json.loads(raw.get(brands[0], positions[brands[0]]))
    if [r["id"] for r in api_page["results"]] != [r["id"] for r in raw_page["results"]]:
        raise RuntimeError("the raw baseline and the API return different rows")
    peer_page = project.peer(brands[0], cursors[brands[0]]).json()
    if peer_page["results"] != api_page["results"]:
        raise RuntimeError("the peer and the API return different rows")
    queries = count_queries(project, brands[0], cursors[brands[0]])
    raw_plans = {
        "page1": explain(raw.page1.replace("%s", str(brands[0]))),
        "deep": explain(
            raw.deep.replace("%s", str(brands[0]), 1).replace("%s", str(positions[brands[0]]))
        ),
    }
    parts = list_breakdown(brands[0])

    combos = {
        ("project", "page1"): (project.get, lambda b: None),
        ("raw", "page1"): (raw.get, lambda b: None),
        ("peer", "page1"): (project.peer, lambda b: None),
        ("project", "deep"): (project.get, lambda b: cursors[b]),
        ("raw", "deep"): (raw.get, lambda b: positions[b]),
        ("peer", "deep"): (project.peer, lambda b: cursors[b]),
        ("floor", "noop"): (project.floor, lambda b: None),
    }
    for fn, arg in combos.values():  # warm caches and prepared statements
        measure(fn, brands, arg, 2 * len(brands))
    runs: dict = {f"{side}/{page}": [] for side, page in combos}
    for rep in range(reps):
        timings = interleaved(combos, brands, requests, rep)
        for (side, page), t in timings.items():
            runs[f"{side}/{page}"].append(
                {"p50_ms": common.percentile(t, 50), "p95_ms": common.percentile(t, 95)}
            )
        print(
            f"list rep {rep + 1}: "
            + "  ".join(f"{k} p95 {v[-1]['p95_ms']:.2f} ms" for k, v in runs.items()),
            flush=True,
        )
    raw.conn.close()
    stats = {
        key: {
            "p50_ms": common.summary([r["p50_ms"] for r in rs]),
            "p95_ms": common.summary([r["p95_ms"] for r in rs]),
            "runs": rs,
        }
        for key, rs in runs.items()
    }

    def p95(key: str) -> float:
        return stats[key]["p95_ms"]["median"]

    ratio_page1 = p95("project/page1") / p95("raw/page1")
    ratio_deep = p95("project/deep") / p95("raw/deep")
    deep_vs_page1 = p95("project/deep") / p95("project/page1")
    peer_ratio = {page: p95(f"project/{page}") / p95(f"peer/{page}") for page in ("page1", "deep")}
    floor_extra = {page: p95(f"project/{page}") - p95("floor/noop") for page in ("page1", "deep")}
    return {
        "benchmark": "list",
        "params": {
            "rows": rows,
            "brands": len(brands),
            "reps": reps,
            "requests_per_rep": requests,
            "deep_page": deep_page,
        },
        "load": load,
        "walk_next_ms": common.summary(walk_ms),
        "queries": queries,
        "raw_plans": raw_plans,
        "breakdown": parts,
        "stats": stats,
        "ratio_page1": ratio_page1,
        "ratio_deep": ratio_deep,
        "deep_vs_page1": deep_vs_page1,
        "peer_ratio": peer_ratio,
        "target_peer_ratio": TARGET_PEER_RATIO,
        "peer_pass": {page: r <= TARGET_PEER_RATIO for page, r in peer_ratio.items()},
        "floor_extra_ms": floor_extra,
        "target_floor_extra_ms": TARGET_FLOOR_EXTRA_MS,
        "floor_pass": {page: x <= TARGET_FLOOR_EXTRA_MS for page, x in floor_extra.items()},
        # "As fast as page 1": within the noise of the measurement (25%).
        "deep_pass": deep_vs_page1 <= 1.25,
        "queries_constant": queries["page1"]["queries"] == queries["deep"]["queries"],
        "no_count_no_offset": not any(q["has_count"] or q["has_offset"] for q in queries.values()),
    }


def main(argv: list[str] | None = None) -> dict:
    global DB
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", type=int, default=int(os.environ.get("BENCH_LIST_ROWS", 1_000_000))
    )
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--requests", type=int, default=100, help="per repetition (>= 50)")
    parser.add_argument("--deep-page", type=int, default=200)
    parser.add_argument("--result-name", default="list", help="bench/results/<name>.json")
    parser.add_argument(
        "--db", default=DB, help="bench database (megahub_bench*), reused when it holds --rows rows"
    )
    args = parser.parse_args(argv)
    DB = args.db
    if args.requests < 50:
        parser.error("--requests must be >= 50 for a p95")
    result = run(args.rows, args.reps, args.requests, args.deep_page)
    common.write_result(args.result_name, result)
    s = result["stats"]
    print(
        "list: p95 "
        + "; ".join(
            f"{page} {s[f'project/{page}']['p95_ms']['median']:.2f} ms vs peer "
            f"{s[f'peer/{page}']['p95_ms']['median']:.2f} ms -> "
            f"{result['peer_ratio'][page]:.2f}x (target <= {TARGET_PEER_RATIO:g}x), floor "
            f"+{result['floor_extra_ms'][page]:.2f} ms (target <= +{TARGET_FLOOR_EXTRA_MS:g})"
            for page in ("page1", "deep")
        )
        + f"; raw page1 {s['raw/page1']['p95_ms']['median']:.2f} ms; "
        f"queries/page {result['queries']['page1']['queries']} / "
        f"{result['queries']['deep']['queries']}",
        flush=True,
    )
    return result


if __name__ == "__main__":
    main()

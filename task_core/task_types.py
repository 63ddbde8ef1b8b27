"""Demo task types shipped with the hub (also used by tests and benchmarks)."""

import hashlib
import time

from celery.exceptions import SoftTimeLimitExceeded

from task_core.registry import PermanentError, RetryPolicy, task_type


class UpstreamUnavailable(Exception):
    """A transient upstream error: worth retrying."""


def keyword_ids_schema(max_items: int) -> dict:
    """The `keyword_ids` context field of the SEO demo types."""
    items = {"type": "integer", "minimum": 1}
    return {"type": "array", "items": items, "minItems": 1, "maxItems": max_items}


def keyword_digest(keyword_id: int, salt: str) -> bytes:
    """A keyword's deterministic pseudo-measure: the same input, the same result anywhere."""
    return hashlib.sha256(f"{keyword_id}:{salt}".encode()).digest()


def keyword_score(keyword_id: int, depth: str) -> int:
    """The SEO demo types' 0-100 score of a keyword (80 and above is an insight)."""
    return keyword_digest(keyword_id, depth)[0] * 100 // 255


@task_type(
    "seo_keyword_analysis",
    demo=True,
    description="Deterministic fake SEO analysis over keyword ids, reporting progress.",
    soft_time_limit_s=600,
    time_limit_s=660,
    retry=RetryPolicy(max_retries=3, backoff_base_s=2.0),
    cost_per_cpu_second_usd=0.0004,
    context_schema={
        "type": "object",
        "properties": {
            "keyword_ids": keyword_ids_schema(100000),
            "analysis_depth": {"enum": ["quick", "standard", "full"]},
            "delay_ms": {"type": "integer", "minimum": 0, "maximum": 10000},
        },
        "required": ["keyword_ids"],
    },
)
def seo_keyword_analysis(ctx):
    """Scores every keyword from a hash of its id: same input, same result, on any machine."""
    keyword_ids = ctx.data["keyword_ids"]
    depth = ctx.data.get("analysis_depth", "standard")
    delay = ctx.data.get("delay_ms", 5) / 1000
    insights = 0
    top = []
    for index, keyword_id in enumerate(keyword_ids, start=1):
        score = keyword_score(keyword_id, depth)
        insights += score >= 80
        top.append((score, keyword_id))
        if delay:
            time.sleep(delay)
        ctx.progress(index, len(keyword_ids))
    ctx.add_cost(0.0001 * len(keyword_ids), "keyword provider lookups")
    top.sort(reverse=True)
    return {
        "keywords_processed": len(keyword_ids),
        "insights_generated": insights,
        "top_keywords": [kid for _, kid in top[:10]],
        "analysis_depth": depth,
    }


@task_type(
    "daily_seo_report",
    demo=True,
    description="Deterministic fake daily SEO report (the seed's periodic-task example): "
    "positions of `keyword_ids` (default 1-20) for `report_date` (default: the run's date).",
    soft_time_limit_s=300,
    time_limit_s=330,
    retry=RetryPolicy(max_retries=2, backoff_base_s=5.0),
    cost_per_cpu_second_usd=0.0004,
    context_schema={
        "type": "object",
        "properties": {
            "keyword_ids": keyword_ids_schema(10000),
            "report_date": {"type": "string", "format": "date"},
        },
    },
)
def daily_seo_report(ctx):
    """Positions from a hash of (keyword, date): the same report for the same day, anywhere."""
    keyword_ids = ctx.data.get("keyword_ids") or list(range(1, 21))
    report_date = ctx.data.get("report_date") or ctx.task.created_at.date().isoformat()
    positions = {}
    for index, keyword_id in enumerate(keyword_ids, start=1):
        digest = keyword_digest(keyword_id, report_date)
        positions[str(keyword_id)] = 1 + digest[0] % 100
        ctx.progress(index, len(keyword_ids))
    ctx.add_cost(0.00005 * len(keyword_ids), "rank tracker lookups")
    return {
        "report_date": report_date,
        "keywords_tracked": len(keyword_ids),
        "top_10": sum(position <= 10 for position in positions.values()),
        "average_position": round(sum(positions.values()) / len(positions), 2),
    }


@task_type(
    "flaky_api_call",
    demo=True,
    description="Fails its first `fail_attempts` attempts (default: always) to try retries.",
    soft_time_limit_s=30,
    time_limit_s=40,
    retry=RetryPolicy(max_retries=3, backoff_base_s=1.0, backoff_max_s=30.0),
    context_schema={
        "type": "object",
        "properties": {
            "fail_attempts": {"type": "integer", "minimum": 0},
            "permanent": {"type": "boolean"},
        },
    },
)
def flaky_api_call(ctx):
    if ctx.data.get("permanent"):
        raise PermanentError("the upstream rejected the request (HTTP 422)")
    fail_attempts = ctx.data.get("fail_attempts", 1_000_000)
    if ctx.attempt <= fail_attempts:
        raise UpstreamUnavailable(f"upstream returned 503 on attempt {ctx.attempt}")
    ctx.add_cost(0.002, "upstream API call")
    return {"succeeded_on_attempt": ctx.attempt}


@task_type(
    "sleep",
    demo=True,
    description="Sleeps `seconds`, checking for cancellation; for trying cancel and time limits.",
    soft_time_limit_s=120,
    time_limit_s=130,
    retry=RetryPolicy(max_retries=0),
    context_schema={
        "type": "object",
        "properties": {"seconds": {"type": "number", "minimum": 0, "maximum": 3600}},
    },
)
def sleep(ctx):
    seconds = float(ctx.data.get("seconds", 1))
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(0.1, left))
        ctx.progress(seconds - left, seconds)
    return {"slept_s": seconds}


@task_type(
    "noop",
    demo=True,
    description="Does nothing; the baseline for throughput benchmarks.",
    soft_time_limit_s=10,
    time_limit_s=20,
    retry=RetryPolicy(max_retries=0),
)
def noop(ctx):
    return {}


@task_type(
    "stuck_call",
    demo=True,
    description="Blocks in one call for `seconds` (an upstream that hangs); limits 2 s soft, "
    "4 s hard. With `ignore_soft_limit` it outlives the soft limit and is killed by the hard one.",
    soft_time_limit_s=2,
    time_limit_s=4,
    retry=RetryPolicy(max_retries=1, backoff_base_s=0.5),
    context_schema={
        "type": "object",
        "properties": {
            "seconds": {"type": "number", "minimum": 0, "maximum": 60},
            "ignore_soft_limit": {"type": "boolean"},
        },
    },
)
def stuck_call(ctx):
    seconds = float(ctx.data.get("seconds", 10))
    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded:
        if not ctx.data.get("ignore_soft_limit"):
            raise
        time.sleep(seconds)  # a handler that swallows the soft limit meets the hard one
    return {"slept_s": seconds}

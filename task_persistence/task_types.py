"""Resumable demo task types (also used by the chaos tests and the benchmark)."""

import os
import signal
import time

from task_core.registry import RetryPolicy, task_type
from task_core.task_types import keyword_ids_schema, keyword_score
from task_persistence.models import ProcessedItem


@task_type(
    "seo_keyword_audit",
    demo=True,
    description="Resumable SEO audit over keyword ids: checkpoints every 100 keywords or 5 s, "
    "and records every keyword it processes in the item ledger (duplicates show).",
    queue="long",
    soft_time_limit_s=3600,
    time_limit_s=3660,
    retry=RetryPolicy(max_retries=3, backoff_base_s=2.0),
    resumable=True,
    cost_per_cpu_second_usd=0.0004,
    options={"checkpoint_every_items": 100, "checkpoint_every_seconds": 5.0, "auto_resume_max": 3},
    context_schema={
        "type": "object",
        "properties": {
            "keyword_ids": keyword_ids_schema(100000),
            "analysis_depth": {"enum": ["quick", "standard", "full"]},
            "delay_ms": {"type": "integer", "minimum": 0, "maximum": 10000},
            "record_items": {"type": "boolean"},
            "crash_after_items": {"type": "integer", "minimum": 1},
        },
        "required": ["keyword_ids"],
    },
)
def seo_keyword_audit(ctx):
    """Scores keywords from a hash of their id; the result depends only on ctx.state, so it is
    the same however often the job was interrupted. ``crash_after_items`` kills the worker
    process after that many keywords in each attempt (a poison input, for chaos tests)."""
    keyword_ids = ctx.data["keyword_ids"]
    depth = ctx.data.get("analysis_depth", "standard")
    delay = ctx.data.get("delay_ms", 2) / 1000
    record = ctx.data.get("record_items", True)
    crash_after = ctx.data.get("crash_after_items")
    items = ctx.items(keyword_ids, state={"insights": 0, "top": []})
    for done_here, keyword_id in enumerate(items, start=1):
        score = keyword_score(keyword_id, depth)
        ctx.state["insights"] += score >= 80
        top = [*ctx.state["top"], [score, keyword_id]]
        ctx.state["top"] = sorted(top, reverse=True)[:10]
        if delay:
            time.sleep(delay)
        if record:
            ProcessedItem.objects.create(
                brand_id=ctx.task.brand_id,
                task_id=ctx.task.pk,
                item_id=keyword_id,
                attempt=ctx.attempt,
            )
        if crash_after and done_here >= crash_after:
            os.kill(os.getpid(), signal.SIGKILL)
    ctx.add_cost(0.0001 * len(keyword_ids), "keyword provider lookups")
    return {
        "keywords_processed": len(keyword_ids),
        "insights_generated": ctx.state["insights"],
        "top_keywords": [kid for _, kid in ctx.state["top"]],
        "analysis_depth": depth,
    }

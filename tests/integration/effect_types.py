"""A task type with an external, countable side effect, for fault tests.

Workers load it with ``celery worker --include tests.integration.effect_types`` and the test
process imports it (task_create validates the type). Each run of the handler that reaches its
effect appends one line ``<task pk> <attempt>`` to the file named by MEGAHUB_EFFECT_LOG, with
O_APPEND, so the file counts effects across processes: an effect done twice shows twice.
"""

import os
import time

from task_core import services
from task_core.registry import RetryPolicy, task_type


@task_type(
    "effect_marker",
    description="Sleeps `seconds` reporting progress (or, with `poll` = check_cancelled, only "
    "checking for cancellation), then records its effect (fault tests).",
    soft_time_limit_s=60,
    time_limit_s=70,
    retry=RetryPolicy(max_retries=3, backoff_base_s=0.5, backoff_max_s=2.0),
)
def effect_marker(ctx):
    seconds = float(ctx.data.get("seconds", 1))
    poll_progress = ctx.data.get("poll", "progress") == "progress"
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(0.1, left))
        if poll_progress:
            ctx.progress(seconds - left, seconds)  # writes in a transaction
        else:
            ctx.check_cancelled()  # reads outside any transaction
    fd = os.open(os.environ["MEGAHUB_EFFECT_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{ctx.task.pk} {ctx.attempt}\n".encode())
    finally:
        os.close(fd)
    return {"slept_s": seconds}


def effects(path) -> dict[int, int]:
    """Task pk -> how many times its effect happened."""
    counts: dict[int, int] = {}
    if os.path.exists(path):
        with open(path) as log:
            for line in log:
                pk = int(line.split()[0])
                counts[pk] = counts.get(pk, 0) + 1
    return counts


def create_effect_tasks(brand, n, seconds, **context):
    return [
        services.task_create(brand=brand, task_type="effect_marker",
                             context_data={"seconds": seconds, **context})[0]
        for _ in range(n)
    ]  # fmt: skip

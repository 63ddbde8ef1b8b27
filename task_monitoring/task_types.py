"""Demo task type of task_monitoring: holds a given amount of memory for a while, so the
per-attempt peak memory measurement can be seen (and is tested) on a real worker."""

import time

from task_core.registry import PermanentError, RetryPolicy, task_type

MEMORY_PROBE_MAX_MB = 512  # the schema's cap, checked again by the handler


@task_type(
    "memory_probe",
    demo=True,
    description="Allocates `mb` megabytes, touches every page, holds them `hold_ms`, frees them.",
    soft_time_limit_s=60,
    time_limit_s=70,
    retry=RetryPolicy(max_retries=0),
    cost_per_cpu_second_usd=0.001,
    context_schema={
        "type": "object",
        "properties": {
            "mb": {"type": "integer", "minimum": 0, "maximum": MEMORY_PROBE_MAX_MB},
            "hold_ms": {"type": "integer", "minimum": 0, "maximum": 60000},
        },
        "additionalProperties": False,
    },
)
def memory_probe(ctx):
    mb = ctx.data.get("mb", 64)
    if not isinstance(mb, int) or not 0 <= mb <= MEMORY_PROBE_MAX_MB:
        raise PermanentError(f"mb must be an integer from 0 to {MEMORY_PROBE_MAX_MB}")
    size = mb * 1024 * 1024
    block = bytearray(size)
    for offset in range(0, size, 4096):  # make every page resident
        block[offset] = 1
    time.sleep(ctx.data.get("hold_ms", 0) / 1000)
    del block
    ctx.add_cost(0.0005, "probe")
    return {"allocated_mb": size // (1024 * 1024)}

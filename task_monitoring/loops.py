"""The platform loops' last runs, from Celery's own signals in the worker process that runs
them: after each tick of a platform loop (one of MEGAHUB_PLATFORM_LOOPS, settings.py) one row
per loop records when it last succeeded, how long it took, and its last failure.
/health/ready/ reads them (selectors.platform_loops)."""

from __future__ import annotations

import logging
import time

from celery import signals

from megahub.logging import is_platform_tick

logger = logging.getLogger("megahub.monitoring")
_started: dict[str, float] = {}


@signals.task_prerun.connect(weak=False, dispatch_uid="monitoring.loop_started")
def _loop_started(sender=None, task_id=None, **kwargs):
    if sender is not None and is_platform_tick(sender.name):
        _started[task_id] = time.monotonic()


@signals.task_postrun.connect(weak=False, dispatch_uid="monitoring.loop_finished")
def _loop_finished(sender=None, task_id=None, state=None, retval=None, **kwargs):
    if sender is None or not is_platform_tick(sender.name):
        return
    started = _started.pop(task_id, None)
    duration_ms = round((time.monotonic() - started) * 1000) if started is not None else None
    ok = state == "SUCCESS"
    try:
        from task_monitoring import services

        services.platform_loop_record(
            task_name=sender.name,
            ok=ok,
            duration_ms=duration_ms,
            error="" if ok else f"{type(retval).__name__}: {retval}",
        )
    except Exception:  # bookkeeping must never fail the loop it describes
        logger.warning("platform loop run not recorded", extra={"task": sender.name}, exc_info=True)

"""Worker health from Celery's own signals, in the worker's main process.

``worker_ready`` records the worker and starts a repeating entry on the consumer's timer (the
same timer Celery's event heartbeat uses, run by the worker's event loop), which writes a
heartbeat row every WORKER_HEARTBEAT_SECONDS: pid, queues, concurrency, pool pids, active
requests and processed count of brand tasks (``celery.worker.state``; the platform's periodic
ticks are not counted), RSS of the main and pool processes,
load average. ``worker_shutting_down`` marks the worker stopped. A worker that dies without
saying so is offline once its heartbeat is older than WORKER_OFFLINE_AFTER_SECONDS.
"""

from __future__ import annotations

import logging
import os

from celery import signals
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from task_monitoring import memory, services

logger = logging.getLogger("megahub.monitoring")
_state: dict = {}


def _snapshot(consumer) -> dict:
    from celery import __version__
    from celery.worker import state

    from megahub.logging import is_platform_tick

    pool = getattr(consumer, "pool", None)
    try:
        pool_pids = list(pool.info.get("processes", [])) if pool is not None else []
    except Exception:
        pool_pids = []
    try:
        queues = sorted(q.name for q in consumer.task_consumer.queues)
    except Exception:
        queues = sorted(q.name for q in consumer.app.amqp.queues.consume_from.values())
    rss = [memory.rss_mb(pid) for pid in [os.getpid(), *pool_pids]]
    return {
        "hostname": consumer.hostname,
        "pid": os.getpid(),
        "queues": queues,
        "concurrency": int(getattr(pool, "num_processes", 0) or getattr(pool, "limit", 0) or 0),
        "pool_pids": pool_pids,
        "active_tasks": len(state.active_requests),
        "processed": int(
            sum(n for name, n in state.total_count.items() if not is_platform_tick(name))
        ),
        "rss_mb": round(sum(r for r in rss if r is not None), 1) if any(rss) else None,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "software": f"celery {__version__}",
    }


def heartbeat_now() -> None:
    consumer = _state.get("consumer")
    if consumer is None or _state.get("stopping"):
        return  # after shutting_down, a late heartbeat must not bring the worker back online
    try:
        close_old_connections()
        services.worker_heartbeat_record(**_snapshot(consumer), started_at=_state["started_at"])
    except Exception:  # a database blip must not stop the worker or its timer
        logger.warning("worker heartbeat failed", exc_info=True)


@signals.worker_ready.connect
def _on_worker_ready(sender=None, **kwargs):
    _state.update(consumer=sender, started_at=timezone.now(), stopping=False)
    heartbeat_now()
    try:
        sender.timer.call_repeatedly(float(settings.WORKER_HEARTBEAT_SECONDS), heartbeat_now)
    except Exception:
        logger.warning("cannot schedule worker heartbeats", exc_info=True)


@signals.worker_shutting_down.connect
def _on_worker_shutting_down(sender=None, **kwargs):
    _state["stopping"] = True
    hostname = getattr(_state.get("consumer"), "hostname", None) or sender
    if not hostname:
        return
    try:
        close_old_connections()
        services.worker_stopped(hostname=str(hostname))
    except Exception:
        logger.warning("cannot record worker shutdown", exc_info=True)

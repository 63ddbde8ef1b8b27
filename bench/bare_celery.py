"""The Celery baseline: a bare Celery app (no Django, no database) with a no-op task.

Broker, queue arguments and worker settings mirror megahub/settings.py's CELERY_* section, so the
only difference from the project is what happens around the task: the project claims, runs
and finishes it in the database. Each pool process records its first task start, last task end
and task count in a tiny file (one pwrite per task), read by bench/drain.py. With
BENCH_BARE_START_FILE set (bench/idle_latency.py), the start time of every task is also written
there (one task at a time: the last start is the current task's).
"""

import os
import struct
import time

from celery import Celery, signals
from kombu import Exchange, Queue

PREFIX = os.environ.get("CELERY_QUEUE_PREFIX", "bench.")
QUEUE = f"{PREFIX}bare"
EXCHANGE = f"{PREFIX}bare.tasks"
TASK_NAME = "bench.bare_noop"
STATS_DIR = os.environ.get("BENCH_BARE_STATS_DIR", "")
START_FILE = os.environ.get("BENCH_BARE_START_FILE", "")
START = struct.Struct("d")
RECORD = struct.Struct("ddq")  # first start, last end (time.time()), tasks run

# fixups=[]: no Django. Celery installs its Django fix-up (django.setup() in the worker, the
# project's apps and settings loaded, database connections closed around every task) whenever
# DJANGO_SETTINGS_MODULE is in the environment, which the benchmarks' children inherit.
app = Celery("bench_bare", set_as_current=False, fixups=[])
app.conf.update(
    broker_url=os.environ.get("CELERY_BROKER_URL", "amqp://guest:guest@localhost:5672//"),
    broker_transport_options={"confirm_publish": True},
    broker_connection_retry_on_startup=True,
    task_default_queue=QUEUE,
    task_queues=[
        Queue(
            QUEUE,
            Exchange(EXCHANGE, type="direct"),
            routing_key="bare",
            queue_arguments={"x-max-priority": 10},
        )
    ],
    task_queue_max_priority=10,
    task_default_priority=4,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    result_backend=None,
    task_serializer="json",
    accept_content=["json"],
    worker_send_task_events=False,
    worker_hijack_root_logger=False,
    timezone="UTC",
)


@app.task(name=TASK_NAME, acks_late=True, ignore_result=True)
def bare_noop(task_pk):
    return None


_state = {"fd": None, "first": 0.0, "count": 0}


@signals.task_prerun.connect
def _started(**kwargs):
    if START_FILE:
        now = time.time()
        fd = os.open(START_FILE, os.O_CREAT | os.O_WRONLY, 0o644)
        try:
            os.pwrite(fd, START.pack(now), 0)
        finally:
            os.close(fd)
    if _state["fd"] is None and STATS_DIR:
        path = os.path.join(STATS_DIR, f"{os.getpid()}.bin")
        _state["fd"] = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    if not _state["first"]:
        _state["first"] = time.time()


@signals.task_postrun.connect
def _finished(**kwargs):
    _state["count"] += 1
    if _state["fd"] is not None:
        os.pwrite(_state["fd"], RECORD.pack(_state["first"], time.time(), _state["count"]), 0)


def read_stats(stats_dir: str) -> tuple[float, float, int]:
    """(first start, last end, tasks run) over every pool process that ran a task."""
    first, last, count = float("inf"), 0.0, 0
    for name in os.listdir(stats_dir):
        with open(os.path.join(stats_dir, name), "rb") as f:
            data = f.read(RECORD.size)
        if len(data) == RECORD.size:
            f0, l0, n = RECORD.unpack(data)
            first, last, count = min(first, f0), max(last, l0), count + n
    return first, last, count


def publish(n: int, *, start: int = 0) -> None:
    """Publish n no-op messages the way the project publishes one task (send_task, priority 4)."""
    with app.producer_or_acquire() as producer:
        for i in range(start, start + n):
            app.send_task(
                TASK_NAME,
                args=[i],
                queue=QUEUE,
                routing_key="bare",
                priority=4,
                producer=producer,
                retry=True,
                retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2},
            )


def read_start(path: str) -> float:
    """The start time (time.time()) of the last task a pool process began, 0.0 if none."""
    try:
        with open(path, "rb") as f:
            data = f.read(START.size)
    except FileNotFoundError:
        return 0.0
    return START.unpack(data)[0] if len(data) == START.size else 0.0

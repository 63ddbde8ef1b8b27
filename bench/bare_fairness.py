"""bench/bare_celery.py's app, plus the start time of each marked task (negative argument):
the plain Celery side of bench/fairness.py's starvation scenario (brand B's tasks are the
marked ones; one FIFO per priority, as a plain Celery deployment has)."""

import os
import time

from celery import signals

from bench.bare_celery import app  # noqa: F401 - the worker's app (celery -A bench.bare_fairness)

MARK_FILE = os.environ.get("BENCH_BARE_MARK_FILE", "")


@signals.task_prerun.connect
def _marked_start(args=None, **kwargs):
    if MARK_FILE and args and args[0] < 0:
        with open(MARK_FILE, "a") as f:
            f.write(f"{-args[0]} {time.time()}\n")

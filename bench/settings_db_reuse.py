"""Experiment, not a benchmark setting: the worker-side fix proposed in docs/benchmarks.md.

    .venv/bin/python bench/drain.py --worker-settings bench.settings_db_reuse

Celery's Django fixup closes every database connection before and after every task unless
CELERY_DB_REUSE_MAX is set, so each task opens a new PostgreSQL connection. This module sets
it and hands connection lifetime back to Django (CONN_MAX_AGE + health checks), the way a
request does, by calling close_old_connections() around each task.
"""

from celery import signals
from django.db import close_old_connections

from megahub.settings import *  # noqa: F403

CELERY_DB_REUSE_MAX = 1_000_000


def _close_old_connections(**kwargs):
    close_old_connections()


signals.task_prerun.connect(_close_old_connections, weak=False)
signals.task_postrun.connect(_close_old_connections, weak=False)

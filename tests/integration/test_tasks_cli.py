"""`manage.py tasks` exit status, as a shell script sees it: 0 completed/ok, 1 failed, 2 bad
input, 3 watch timed out."""

import subprocess
import sys
import threading
import time
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection

from task_core import producer
from task_core.models import Task
from tests.factories import BrandFactory, TaskFactory
from tests.integration.conftest import ROOT

pytestmark = [pytest.mark.integration]


def manage(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


def test_exit_status(process_env):
    brand = BrandFactory(slug="humari")
    completed = TaskFactory(brand=brand, status="completed", progress_percentage=100)
    failed = TaskFactory(brand=brand, status="failed", error_message="KeyError: 'x'")
    pending = TaskFactory(brand=brand, status="pending")
    cases = [
        (("tasks", "watch", "humari", completed.task_id), 0, f"{completed.task_id}  noop"),
        (("tasks", "watch", "humari", failed.task_id), 1, "KeyError: 'x'"),
        (("tasks", "watch", "humari", pending.task_id, "--timeout", "0.5"), 3, "still pending"),
        (("tasks", "show", "humari", completed.task_id), 0, "timeline:"),
        (("tasks", "list", str(brand.pk)), 0, failed.task_id),
        (("tasks", "retry", "humari", completed.task_id), 1, "TASK_NOT_RETRYABLE"),
        (("tasks", "show", "nobody", completed.task_id), 2, "No brand 'nobody'"),
        (("tasks", "submit", "humari", "rm_rf"), 2, "UNKNOWN_TASK_TYPE"),
        (("tasks", "submit", "humari", "noop", "--context", "[1]"), 2, "CONTEXT_INVALID"),
        (("tasks", "list", "humari", "--status", "done"), 2, "invalid choice"),
        (("tasks", "explode"), 2, "invalid choice"),
        (("task_enqueue", "nobody", "noop"), 2, "No brand 'nobody'"),
    ]
    for args, status, text in cases:
        result = manage(process_env, *args)
        assert result.returncode == status, (args, result.stdout, result.stderr)
        assert text in result.stdout + result.stderr, (args, result.stdout, result.stderr)
    submitted = manage(process_env, "tasks", "submit", "humari", "noop")
    assert submitted.returncode == 0 and submitted.stdout.startswith("submitted task_")
    task_id = submitted.stdout.split()[1]
    assert Task.objects.for_brand(brand).filter(task_id=task_id, task_type="noop").exists()


def test_watch_follows_progress_and_the_timeline_until_the_task_ends(transactional_db):
    brand = BrandFactory(slug="humari")
    task = producer.submit(
        "seo_keyword_analysis", brand=brand, context={"keyword_ids": list(range(1, 41)),
                                                       "delay_ms": 40},
    )  # fmt: skip

    def work():
        time.sleep(0.5)
        producer.run_inline(task)
        connection.close()

    thread = threading.Thread(target=work)
    thread.start()
    try:
        out = StringIO()
        call_command(
            "tasks",
            "watch",
            "humari",
            task.task_id,
            "--interval",
            "0.1",
            "--timeout",
            "30",
            stdout=out,
        )
    finally:
        thread.join()
    out = out.getvalue()
    lines = out.splitlines()
    kinds = [line.split()[1] for line in lines if line[:2].isdigit() and ":" in line[:3]]
    assert kinds[0] == "created" and "started" in kinds and kinds[-1] == "completed"
    assert kinds.count("progress") >= 2  # milestones printed as they happened
    assert f"{task.task_id}  seo_keyword_analysis  completed  100%" in out

"""manage.py tasks submit|list|show|watch|cancel|retry, and task_enqueue --count."""

import logging
import time
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from task_core import producer
from task_core.models import Task
from tests.factories import BrandFactory, TaskFactory


@pytest.fixture
def brand(db):
    return BrandFactory(slug="humari")


@pytest.fixture
def other(db):
    return BrandFactory(slug="acme")


def run(*args) -> str:
    out = StringIO()
    call_command("tasks", *args, stdout=out)
    return out.getvalue()


def refused(*args) -> CommandError:
    with pytest.raises(CommandError) as exc:
        run(*args)
    return exc.value


def test_submit_creates_a_task_through_the_producer(brand):
    out = run("submit", str(brand.pk), "seo_keyword_analysis", "--context",
              '{"keyword_ids": [1, 2]}', "--priority", "high", "--description", "d")  # fmt: skip
    task = Task.objects.for_brand(brand).get()
    assert f"submitted {task.task_id} id={task.pk} (queued)" in out
    assert (task.priority, task.description, task.context_data) == (
        "high", "d", {"keyword_ids": [1, 2]},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["humari", "rm_rf"], "UNKNOWN_TASK_TYPE"),
        (["humari", "noop", "--context", "{bad"], "not valid JSON"),
        (["humari", "seo_keyword_analysis"], "CONTEXT_INVALID"),
        (["humari", "noop", "--priority", "urgent"], "priority"),
        (["humari", "noop", "--scheduled-for", "tomorrow"], "ISO datetime"),
        (["humari", "noop", "--user", "ghost"], "No user"),
        (["nobody", "noop"], "No brand 'nobody'"),
    ],
)
def test_submit_bad_input_is_exit_status_2(brand, args, message):
    error = refused("submit", *args)
    assert message in str(error) and error.returncode == 2
    assert not Task.objects.for_brand(brand).exists()


def test_list_shows_the_brands_tasks_only(brand, other):
    mine = TaskFactory(brand=brand, status="failed", error_message="Boom: upstream")
    done = TaskFactory(brand=brand, status="completed")
    theirs = TaskFactory(brand=other)
    out = run("list", "humari")
    assert mine.task_id in out and done.task_id in out and theirs.task_id not in out
    assert "Boom: upstream" in out
    failed_only = run("list", "humari", "--status", "failed")
    assert mine.task_id in failed_only and done.task_id not in failed_only
    assert refused("list", "humari", "--limit", "0").returncode == 2


def test_show_prints_fields_and_timeline_and_hides_other_brands_tasks(brand, other):
    task = producer.submit("noop", brand=brand, description="nightly export")
    out = run("show", "humari", task.task_id)
    assert "nightly export" in out and "status         queued" in out
    assert "created" in out and "-> pending" in out and "-> queued" in out  # the timeline
    assert run("show", "humari", str(task.pk)) == out
    error = refused("show", "acme", task.task_id)
    assert error.returncode == 2 and f"No task {task.task_id!r} in brand acme" in str(error)


def test_watch_exit_status_follows_the_outcome(brand):
    completed = TaskFactory(brand=brand, status="completed", progress_percentage=100)
    assert f"{completed.task_id}  noop  completed  100%" in run(
        "watch", "humari", completed.task_id
    )
    failed = TaskFactory(brand=brand, status="failed", error_message="KeyError: 'x'")
    error = refused("watch", "humari", failed.task_id)
    assert error.returncode == 1 and "failed" in str(error) and "KeyError: 'x'" in str(error)
    cancelled = TaskFactory(brand=brand, status="cancelled")
    assert refused("watch", "humari", cancelled.task_id).returncode == 1
    pending = TaskFactory(brand=brand, status="pending")
    started = time.monotonic()
    error = refused("watch", "humari", pending.task_id, "--timeout", "0.4", "--interval", "0.1")
    assert error.returncode == 3 and "still pending after 0.4 s" in str(error)
    assert time.monotonic() - started < 3


def test_cancel_and_retry(brand):
    task = TaskFactory(brand=brand, status="pending")
    assert f"{task.task_id} cancelled" in run("cancel", "humari", task.task_id)
    error = refused("cancel", "humari", task.task_id)
    assert error.returncode == 1 and "TASK_NOT_CANCELLABLE" in str(error)
    out = run("retry", "humari", task.task_id)
    assert f"{task.task_id} pending" in out
    task.refresh_from_db()
    assert task.status == "pending"
    error = refused("retry", "humari", task.task_id)
    assert error.returncode == 1 and "TASK_NOT_RETRYABLE" in str(error)


def test_cancel_and_retry_do_not_reach_another_brands_task(brand, other):
    theirs = TaskFactory(brand=other, status="failed")
    assert refused("cancel", "humari", theirs.task_id).returncode == 2
    assert refused("retry", "humari", theirs.task_id).returncode == 2
    theirs.refresh_from_db()
    assert theirs.status == "failed"


def test_task_enqueue_count_draws_a_bar_and_ends_with_one_summary_line(brand, caplog):
    caplog.set_level(logging.INFO, logger="megahub.tasks")
    out = StringIO()
    call_command("task_enqueue", "humari", "noop", "--count", "50", stdout=out)
    assert not [r for r in caplog.records if r.name == "megahub.tasks" and r.levelno < 30]
    tasks = Task.objects.for_brand(brand).order_by("id")
    assert tasks.count() == 50
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    assert lines[-1] == (
        f"50 created, 0 existing: 50 noop tasks for brand humari (id={brand.pk}), "
        f"{tasks.first().task_id} .. {tasks.last().task_id}"
    )
    assert len(lines) <= 3  # not one line per task

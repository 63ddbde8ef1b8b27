"""TaskContext.progress: the usual write is one statement on the attempt's own row; a write
that missed says why (cancel asked, or the attempt lost its task)."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from task_core.context import TaskCancelled, TaskContext, TaskLost
from task_core.models import Task
from task_core.registry import get_task_type
from tests.factories import TaskFactory


@pytest.fixture
def ctx(brand):
    stale = timezone.now() - timedelta(minutes=5)
    task = TaskFactory(brand=brand, status="running", attempts=2, heartbeat_at=stale)
    return TaskContext(task, get_task_type("noop"), "w1")


def row(ctx):
    return Task.objects.unscoped().values("progress_percentage", "heartbeat_at").get(pk=ctx.task.pk)


def test_a_progress_write_is_one_statement_on_the_attempts_row(ctx):
    before = row(ctx)["heartbeat_at"]
    with CaptureQueriesContext(connection) as captured:
        ctx.progress(10)
    sqls = [q["sql"].upper() for q in captured.captured_queries]
    # No transaction of its own (here, inside the test's transaction: no SAVEPOINT/RELEASE).
    assert len(sqls) == 1 and sqls[0].startswith("UPDATE"), sqls
    after = row(ctx)
    assert after["progress_percentage"] == 10 and after["heartbeat_at"] > before
    assert not ctx.task.events.filter(kind="progress").exists()


def test_a_progress_write_outside_query_logging_is_prepared_and_lands(ctx):
    # Without CaptureQueriesContext the write goes through the server-binding cursor.
    for percent in (3, 4, 5):
        ctx.progress(percent)
    assert row(ctx)["progress_percentage"] == 5


def test_crossing_a_milestone_writes_its_event(ctx):
    ctx.progress(30)
    assert row(ctx)["progress_percentage"] == 30
    assert [e.data["milestone"] for e in ctx.task.events.filter(kind="progress")] == [25]


def test_progress_after_cancel_is_asked_raises_cancelled_and_writes_nothing(ctx):
    Task.objects.unscoped().filter(pk=ctx.task.pk).update(cancel_requested=True)
    with pytest.raises(TaskCancelled):
        ctx.progress(10)
    assert ctx.cancel_flag and row(ctx)["progress_percentage"] == 0


@pytest.mark.parametrize("change", [{"attempts": 3}, {"status": "pending"}])
def test_progress_of_an_attempt_that_lost_its_task_raises_lost(ctx, change):
    Task.objects.unscoped().filter(pk=ctx.task.pk).update(**change)
    with pytest.raises(TaskLost):
        ctx.progress(10)
    assert row(ctx)["progress_percentage"] == 0

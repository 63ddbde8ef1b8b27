"""The worker's per-task costs: its statements' parameters (task_core/sql_parts.py), its
connection handling around each task and its task events' batches (megahub/celery.py)."""

from datetime import datetime
from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.db import connection, models
from django.utils import timezone

from megahub import celery as megahub_celery
from task_core import broker, sql_parts
from task_core.models import Task
from task_monitoring.models import TaskMetric

AWARE = timezone.now()
SAMPLES = [
    None,
    "text",
    "",
    7,
    0,
    True,
    2.5,
    Decimal("1.250000"),
    Decimal("NaN"),
    AWARE,
    AWARE.replace(tzinfo=None),  # naive: Django warns and makes it aware
    {"a": 1},
    [],
    "12",  # a str for a number: Django converts
]


def _same(a, b) -> bool:
    unwrap = lambda v: getattr(v, "obj", v)  # noqa: E731 - psycopg's Jsonb wraps the object
    return (type(a) is type(b) and unwrap(a) == unwrap(b)) or (a != a and b != b)  # NaN


def _django(field, value):
    try:
        return "ok", field.get_db_prep_save(value, connection)
    except Exception as exc:
        return "error", type(exc)


def _fast(field, value):
    try:
        return "ok", sql_parts.db_prep(field, connection)(value)
    except Exception as exc:
        return "error", type(exc)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # naive datetimes
@pytest.mark.parametrize("model", [TaskMetric, Task])
def test_statement_parameters_are_what_django_would_send(model):
    """The shortcut of db_prep gives, for every column of the rows the worker writes and every
    kind of value, the very value (and type: Int4...) or error that Django's own
    get_db_prep_save gives."""
    for field in model._meta.concrete_fields:
        for value in SAMPLES:
            if isinstance(field, models.JSONField) and value is not None:
                continue  # through Django's method in both cases (adapters, not comparable)
            (k1, v1), (k2, v2) = _django(field, value), _fast(field, value)
            assert k1 == k2 and (_same(v1, v2) if k1 == "ok" else v1 == v2), (field, value)


def test_the_shortcut_skips_djangos_conversion_chain_on_postgresql(monkeypatch):
    """A str for a text column, an int for an integer one, an aware datetime... are passed on
    without Django's per-field chain (~3 µs a field; twenty fields in each metrics row)."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite keeps Django's method")

    def refused(self, value, connection):
        raise AssertionError(f"Django's chain ran for {self.name}")

    monkeypatch.setattr(sql_parts, "_preps", {})
    for cls in (models.CharField, models.IntegerField, models.DateTimeField, models.Field):
        monkeypatch.setattr(cls, "get_db_prep_save", refused)
    fields = {f.name: f for f in TaskMetric._meta.concrete_fields}
    assert sql_parts.db_prep(fields["task_type"], connection)("noop") == "noop"
    assert sql_parts.db_prep(fields["attempt"], connection)(3) == 3
    assert sql_parts.db_prep(fields["brand"], connection)(5) == 5
    assert sql_parts.db_prep(fields["finished_at"], connection)(AWARE) is AWARE
    assert sql_parts.db_prep(fields["memory_usage_mb"], connection)(1.5) == 1.5
    assert sql_parts.db_prep(fields["cost_usd"], connection)(Decimal(1)) == Decimal(1)
    assert sql_parts.db_prep(fields["queue_wait_ms"], connection)(None) is None
    with pytest.raises(AssertionError, match="Django's chain ran for started_at"):
        sql_parts.db_prep(fields["started_at"], connection)(datetime(2026, 1, 1))  # naive


class _Connection:
    def __init__(self):
        self.checked, self.health_check_done = 0, False

    def close_if_unusable_or_obsolete(self):
        self.checked += 1
        self.health_check_done = False


def _task(name, eager=False):
    return SimpleNamespace(name=name, request=SimpleNamespace(is_eager=eager))


def test_connections_are_checked_before_each_task_and_the_execution_skips_the_select_1(
    monkeypatch,
):
    """Before every task its connections are checked as before a request (Django's
    close_old_connections); for the execution entry point the kept one is not health-checked
    (its claim replaces a dead connection), for any other task it is; eager runs are left
    alone. After each task the same check runs once more."""
    kept = _Connection()
    monkeypatch.setattr(
        megahub_celery.django_db.connections, "all", lambda initialized_only=False: [kept]
    )
    megahub_celery._connections_before_task(sender=_task(broker.EXECUTE_TASK_NAME))
    assert (kept.checked, kept.health_check_done) == (1, True)
    megahub_celery._connections_after_task(sender=_task(broker.EXECUTE_TASK_NAME))
    assert (kept.checked, kept.health_check_done) == (2, False)
    megahub_celery._connections_before_task(sender=_task("megahub.tasks_sweep"))
    assert (kept.checked, kept.health_check_done) == (3, False)  # SELECT 1 on its next use
    megahub_celery._connections_before_task(sender=_task(broker.EXECUTE_TASK_NAME, eager=True))
    megahub_celery._connections_after_task(sender=_task(broker.EXECUTE_TASK_NAME, eager=True))
    assert kept.checked == 3


def _consumer(buffer_limit=24):
    dispatcher = SimpleNamespace(on_send_buffered=lambda: None, buffer_limit=buffer_limit)
    return SimpleNamespace(event_dispatcher=dispatcher, hub=SimpleNamespace())


@pytest.mark.parametrize(("flush_ms", "limit"), [(100, 256), (0, 24)])
def test_batched_events_flush_on_their_timer_rather_than_every_24_events(settings, flush_ms, limit):
    """With WORKER_EVENTS_FLUSH_MS the timer flushes a worker's task events, and Celery's
    24-event cap (a task.multi publish every 8 tasks) rises to EventsBatched.BUFFER_LIMIT;
    with 0, Celery's behaviour, cap included."""
    settings.WORKER_EVENTS_FLUSH_MS = flush_ms
    c = _consumer()
    megahub_celery.EventsBatched(c).start(c)
    assert c.event_dispatcher.buffer_limit == limit


def test_the_metrics_row_takes_the_task_columns_from_the_row_the_outcome_moves(brand):
    """The outcome statement fills the metrics row's task, brand, attempt, type, queue and
    start from the task row it updates, and its times from the statement's own clock: eight
    parameters fewer per attempt, the same values as the builder's."""
    from task_core import execution
    from tests.factories import TaskFactory

    task = TaskFactory(brand=brand, status="queued", task_type="noop", queue="default")
    assert execution.task_execute(task_pk=task.pk, worker="w@host") == "completed"
    task.refresh_from_db()
    metric = TaskMetric.objects.unscoped().get(task=task)
    assert (metric.brand_id, metric.attempt, metric.task_type, metric.queue) == (
        brand.pk,
        1,
        "noop",
        "default",
    )
    assert metric.started_at == task.started_at
    assert metric.finished_at == metric.created_at == task.updated_at  # the statement's now
    sent = sql_parts._row_params(TaskMetric(task=task, brand=brand), 0, connection)
    assert not {f"r0_{c}" for c in ("task_id", "brand_id", "attempt", "started_at")} & set(sent)
    assert "r0_status" in sent and "r0_costs" in sent


def test_a_row_source_that_is_not_a_task_column_is_refused_when_the_statement_is_built():
    """A misspelt OUTCOME_ROW_FROM_TASK fails loudly where the statement is built, rather than
    as a database error the outcome path would absorb (recording the outcome without the row)."""

    class Misspelt:
        OUTCOME_ROW_FROM_TASK = {"task_id": "idd"}
        _meta = TaskMetric._meta

    with pytest.raises(ValueError, match="idd"):
        sql_parts._row_insert(Misspelt, 0)

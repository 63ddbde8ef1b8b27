"""Metrics rows written by the execution path, the task detail block and the /tasks/ filters."""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from task_core import execution
from task_monitoring import services
from task_monitoring.models import TaskMetric
from task_monitoring.tests.factories import MetricFactory
from tests.factories import TaskFactory


def run(task):
    return execution.task_execute(task_pk=task.pk, worker="w-test@host")


def queued(brand, task_type, context=None, **kw):
    return TaskFactory(
        brand=brand,
        task_type=task_type,
        context_data=context or {},
        status="queued",
        queued_at=timezone.now() - timedelta(milliseconds=300),
        **kw,
    )


def test_an_attempt_writes_one_measured_metrics_row(brand):
    task = queued(brand, "seo_keyword_analysis", {"keyword_ids": list(range(1, 21)), "delay_ms": 1})
    assert run(task) == "completed"
    metric = TaskMetric.objects.unscoped().get(task=task)
    assert metric.attempt == 1 and metric.status == "completed"
    assert metric.brand_id == brand.pk and metric.task_type == "seo_keyword_analysis"
    assert metric.worker_hostname == "w-test@host"
    assert metric.execution_time_ms >= 20  # 20 keywords x 1 ms sleep
    assert 0 <= metric.cpu_time_ms <= metric.execution_time_ms + 50
    assert metric.queue_wait_ms >= 300
    assert metric.memory_usage_mb > 10 and metric.memory_method in ("vmhwm", "ru_maxrss")
    # cost = measured CPU x the type's rate + what the handler reported (0.0001 per keyword)
    cpu_cost = round(metric.cpu_time_ms / 1000 * 0.0004, 6)
    assert float(metric.reported_cost_usd) == pytest.approx(0.002)
    assert float(metric.cpu_cost_usd) == pytest.approx(cpu_cost, abs=2e-6)
    assert float(metric.cost_usd) == pytest.approx(float(metric.cpu_cost_usd) + 0.002)


def test_peak_memory_is_the_attempts_own_not_the_process_lifetime(brand):
    big = queued(brand, "memory_probe", {"mb": 150})
    small = queued(brand, "memory_probe", {"mb": 0})
    run(big)
    run(small)
    big_m, small_m = (
        TaskMetric.objects.unscoped().get(task=big),
        TaskMetric.objects.unscoped().get(task=small),
    )
    if big_m.memory_method != "vmhwm":
        pytest.skip("needs Linux /proc/self/clear_refs (the fallback cannot reset the peak)")
    assert big_m.memory_growth_mb >= 140, big_m.memory_growth_mb
    assert small_m.memory_growth_mb < 20, small_m.memory_growth_mb  # the peak was reset
    assert big_m.memory_usage_mb - small_m.memory_usage_mb >= 120


def test_each_attempt_has_its_own_row_and_the_detail_shows_the_latest(api, owner, brand):
    task = queued(brand, "flaky_api_call", {"fail_attempts": 1}, max_retries=3)
    assert run(task) == "retrying"
    task.refresh_from_db()
    task.available_at = timezone.now()
    task.save(update_fields=["available_at"])
    assert run(task) == "completed"
    rows = list(TaskMetric.objects.unscoped().filter(task=task).order_by("attempt"))
    assert [(m.attempt, m.status) for m in rows] == [(1, "retrying"), (2, "completed")]
    metrics = api(owner, brand).get(f"/tasks/{task.pk}/").json()["metrics"]
    assert metrics["attempt"] == 2 and metrics["status"] == "completed"
    assert {"execution_time_ms", "memory_usage_mb", "cost_usd"} <= set(metrics)
    assert metrics["execution_time_ms"] == rows[1].execution_time_ms
    assert isinstance(metrics["cost_usd"], float)


def test_detail_metrics_is_null_before_any_attempt(api, owner, brand):
    task = TaskFactory(brand=brand)
    assert api(owner, brand).get(f"/tasks/{task.pk}/").json()["metrics"] is None


def test_a_failing_metrics_write_never_fails_the_task(brand, monkeypatch):
    def boom(**kwargs):
        raise RuntimeError("metrics hiccup")

    monkeypatch.setattr(services, "metric_build", boom)
    task = queued(brand, "noop")
    assert run(task) == "completed"
    task.refresh_from_db()
    assert (
        task.status == "completed" and not TaskMetric.objects.unscoped().filter(task=task).exists()
    )


def test_a_metrics_insert_the_database_refuses_never_fails_the_task(brand, monkeypatch):
    build = services.metric_build

    def refused(**kwargs):
        metric = build(**kwargs)
        metric.execution_time_ms = -1  # a positive integer column: its CHECK refuses the row
        return metric

    monkeypatch.setattr(services, "metric_build", refused)
    task = queued(brand, "noop")
    assert run(task) == "completed"
    task.refresh_from_db()
    assert (
        task.status == "completed" and not TaskMetric.objects.unscoped().filter(task=task).exists()
    )


@pytest.mark.django_db(transaction=True)
def test_metrics_row_is_written_in_the_transaction_that_records_the_outcome(brand):
    if connection.vendor != "postgresql":
        pytest.skip("reads PostgreSQL's xmin (runs in make test, not on SQLite)")
    task = queued(brand, "noop")
    assert run(task) == "completed"
    # The row that made the task completed and the metrics row share their transaction id.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT t.xmin::text, m.xmin::text, m.status FROM task_core_task t "
            "JOIN task_monitoring_taskmetric m ON m.task_id = t.id WHERE t.id = %s",
            [task.pk],
        )
        task_xid, metric_xid, status = cursor.fetchone()
    assert task_xid == metric_xid and status == "completed"


def test_metric_record_is_idempotent_per_attempt(brand):
    task = queued(brand, "noop")
    run(task)
    task.refresh_from_db()

    class Ctx:
        attempt, worker, costs, reported_cost_usd, spec = 1, "x", [], 0.0, None

    services.metric_record(task=task, ctx=Ctx(), outcome="completed", cpu_time_s=1, wall_time_s=1)
    assert TaskMetric.objects.unscoped().filter(task=task).count() == 1


# --- /tasks/ filters ----------------------------------------------------------------------------
def test_tasks_filter_has_metrics_and_execution_time(api, owner, brand):
    fast = MetricFactory(task__brand=brand, execution_time_ms=500).task
    slow = MetricFactory(task__brand=brand, execution_time_ms=4500).task
    bare = TaskFactory(brand=brand)
    client = api(owner, brand)

    def ids(query):
        response = client.get(f"/tasks/?{query}")
        assert response.status_code == 200, response.json()
        return {row["id"] for row in response.json()["results"]}

    assert ids("has_metrics=true") == {fast.pk, slow.pk}
    assert ids("has_metrics=false") == {bare.pk}
    assert ids("has_metrics=true&execution_time__gte=2000") == {slow.pk}
    assert ids("execution_time__lte=2000") == {fast.pk}
    assert ids("execution_time__gte=500&execution_time__lte=4500") == {fast.pk, slow.pk}


def test_execution_time_filter_reads_the_latest_attempt(api, owner, brand):
    task = TaskFactory(brand=brand, status="completed", attempts=2)
    MetricFactory(task=task, attempt=1, execution_time_ms=9000, status="retrying")
    MetricFactory(task=task, attempt=2, execution_time_ms=100)
    response = api(owner, brand).get("/tasks/?execution_time__gte=5000")
    assert response.json()["results"] == []


def test_task_filters_reject_bad_values(api, owner, brand):
    response = api(owner, brand).get("/tasks/?execution_time__gte=fast")
    assert response.status_code == 400
    body = response.json()
    assert body["error_code"] == "VALIDATION_ERROR"
    assert "execution_time__gte" in body["field_errors"]
    response = api(owner, brand).get("/tasks/?has_metrics=maybe")
    assert response.status_code == 400 and "has_metrics" in response.json()["field_errors"]


def test_task_filters_never_show_foreign_tasks(api, owner, brand, other_brand):
    MetricFactory(task__brand=other_brand, execution_time_ms=9000)
    response = api(owner, brand).get("/tasks/?has_metrics=true&execution_time__gte=1")
    assert response.json()["results"] == []

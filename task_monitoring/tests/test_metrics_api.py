"""GET /tasks/monitoring/metrics/ and metrics/dashboard/."""

from datetime import timedelta

import pytest
from django.utils import timezone

from task_monitoring import selectors
from task_monitoring.models import TaskMetric
from task_monitoring.tests.factories import MetricFactory
from tests.factories import TaskFactory

URL = "/tasks/monitoring/metrics/"


def ids(response):
    assert response.status_code == 200, response.json()
    return [row["id"] for row in response.json()["results"]]


def test_list_shows_only_the_brands_rows(api, owner, brand, other_brand):
    mine = MetricFactory(task__brand=brand)
    MetricFactory(task__brand=other_brand)
    response = api(owner, brand).get(URL)
    assert ids(response) == [mine.pk]
    row = response.json()["results"][0]
    assert row["task"] == mine.task.pk and row["task_id"] == mine.task.task_id
    assert {"execution_time_ms", "cpu_time_ms", "memory_usage_mb", "cost_usd",
            "worker_hostname", "queue_wait_ms"} <= set(row)  # fmt: skip


def test_foreign_metric_is_404_with_error_code(api, owner, brand, other_brand):
    foreign = MetricFactory(task__brand=other_brand)
    response = api(owner, brand).get(f"{URL}{foreign.pk}/")
    assert response.status_code == 404
    assert response.json()["error_code"] == "METRIC_NOT_FOUND"
    assert api(owner, brand).get(f"{URL}999999/").json()["error_code"] == "METRIC_NOT_FOUND"


def test_metrics_need_the_brand_header_and_membership(api, owner, outsider, brand):
    assert api(owner).get(URL).json()["error_code"] == "BRAND_REQUIRED"
    assert api(owner, brand_header="abc").get(URL).status_code == 400
    assert api(outsider, brand).get(URL).json()["error_code"] == "BRAND_FORBIDDEN"
    assert api(None, brand).get(URL).status_code == 401


def test_filters_search_and_ordering(api, owner, brand):
    a = MetricFactory(task__brand=brand, task__task_type="noop", execution_time_ms=100,
                      worker_hostname="alpha@h", memory_usage_mb=10)  # fmt: skip
    b = MetricFactory(task__brand=brand, task__task_type="sleep", execution_time_ms=3000,
                      worker_hostname="beta@h", memory_usage_mb=300, status="failed")  # fmt: skip
    client = api(owner, brand)
    assert ids(client.get(f"{URL}?task_type=sleep")) == [b.pk]
    assert ids(client.get(f"{URL}?status=failed")) == [b.pk]
    assert ids(client.get(f"{URL}?execution_time__gte=1000")) == [b.pk]
    assert ids(client.get(f"{URL}?execution_time__lte=1000")) == [a.pk]
    assert ids(client.get(f"{URL}?memory_usage__gte=200")) == [b.pk]
    assert ids(client.get(f"{URL}?search=alpha")) == [a.pk]
    assert ids(client.get(f"{URL}?search={b.task.task_id}")) == [b.pk]
    assert ids(client.get(f"{URL}?ordering=execution_time_ms")) == [a.pk, b.pk]
    assert ids(client.get(f"{URL}?ordering=-execution_time_ms")) == [b.pk, a.pk]
    future = (timezone.now() + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert ids(client.get(f"{URL}?created_after={future}")) == []


def test_bad_filter_values_are_400_with_field_errors(api, owner, brand):
    response = api(owner, brand).get(f"{URL}?execution_time__gte=-5")
    assert response.status_code == 400
    body = response.json()
    assert body["error_code"] == "VALIDATION_ERROR"
    assert "execution_time__gte" in body["field_errors"]
    response = api(owner, brand).get(f"{URL}?created_after=yesterday")
    assert response.status_code == 400 and "created_after" in response.json()["field_errors"]


def test_metrics_are_read_only(api, owner, brand):
    metric = MetricFactory(task__brand=brand)
    assert api(owner, brand).post(URL, {}, format="json").status_code == 405
    response = api(owner, brand).delete(f"{URL}{metric.pk}/")
    assert response.status_code == 405
    assert response.json()["error_code"] == "METHOD_NOT_ALLOWED"


# --- dashboard -----------------------------------------------------------------------------------
def test_percentiles_follow_the_continuous_definition(brand):
    for ms in range(100, 1100, 100):  # 100, 200, ..., 1000
        MetricFactory(task__brand=brand, execution_time_ms=ms)
    values = selectors.percentiles(
        TaskMetric.objects.for_brand(brand),
        "execution_time_ms",
        {"p50": 0.5, "p95": 0.95, "p99": 0.99},
    )
    # percentile_cont: rank = f * (n - 1), linear interpolation between neighbours
    assert values == {"p50": 550.0, "p95": 955.0, "p99": 991.0}
    assert selectors.percentiles(TaskMetric.objects.none(), "execution_time_ms", {"p50": 0.5}) == {
        "p50": None
    }


def test_dashboard_aggregates_the_brands_window(api, owner, brand, other_brand):
    now = timezone.now()
    for ms, cost, mem in [(100, "0.01", 50), (200, "0.02", 80), (300, "0.03", 120)]:
        MetricFactory(task__brand=brand, task__task_type="noop", task__completed_at=now,
                      execution_time_ms=ms, cost_usd=cost, memory_usage_mb=mem)  # fmt: skip
    MetricFactory(task__brand=brand, task__task_type="sleep", task__status="failed",
                  task__completed_at=now, status="failed", execution_time_ms=5000,
                  cost_usd="0.5", queue_wait_ms=900)  # fmt: skip
    MetricFactory(task__brand=other_brand, execution_time_ms=99999, cost_usd="99")
    old = MetricFactory(task__brand=brand, execution_time_ms=77777)
    TaskMetric.objects.unscoped().filter(pk=old.pk).update(created_at=now - timedelta(days=2))

    response = api(owner, brand).get(f"{URL}dashboard/?window=24h")
    assert response.status_code == 200, response.json()
    data = response.json()
    assert data["window"] == "24h" and data["attempts"] == 4
    assert data["finished"] == {"completed": 3, "failed": 1, "cancelled": 0}
    assert data["success_rate"] == 75.0
    assert data["execution_time_ms"]["p50"] == 250.0
    assert data["execution_time_ms"]["max"] == 5000
    assert data["memory_mb"]["peak"] == 120.0
    assert data["cost_usd"]["total"] == pytest.approx(0.56)
    assert data["cost_usd"]["by_task_type"] == {"noop": 0.06, "sleep": 0.5}
    assert data["slowest_task_types"][0]["task_type"] == "sleep"
    assert data["costliest_task_types"][0]["task_type"] == "sleep"
    assert data["queue_wait_ms"]["max"] == 900
    assert len(data["throughput"]) == 24 and data["bucket_seconds"] == 3600
    assert sum(b["completed"] for b in data["throughput"]) == 3
    assert sum(b["failed"] for b in data["throughput"]) == 1
    assert data["totals_by_status"] == {"completed": 4, "failed": 1}
    week = api(owner, brand).get(f"{URL}dashboard/?window=7d").json()
    assert week["attempts"] == 5 and len(week["throughput"]) == 28


@pytest.mark.parametrize("window", ["2h", "", "24H", "-1h"])
def test_dashboard_rejects_unknown_windows(api, owner, brand, window):
    response = api(owner, brand).get(f"{URL}dashboard/?window={window}")
    assert response.status_code == 400
    body = response.json()
    assert body["error_code"] == "VALIDATION_ERROR" and "window" in body["field_errors"]


def test_dashboard_of_an_empty_brand_has_nulls_not_errors(api, owner, brand):
    data = api(owner, brand).get(f"{URL}dashboard/?window=1h").json()
    assert data["attempts"] == 0 and data["success_rate"] is None
    assert data["execution_time_ms"]["p95"] is None and len(data["throughput"]) == 12


def test_dashboard_percentiles_by_type_on_postgresql(api, owner, brand):
    if not selectors.db_has_percentiles():
        pytest.skip("per-type percentiles need PostgreSQL percentile_cont (make test runs them)")
    for ms in (100, 200, 300, 400):
        MetricFactory(task__brand=brand, task__task_type="noop", execution_time_ms=ms)
    data = api(owner, brand).get(f"{URL}dashboard/").json()
    assert data["by_task_type"][0]["p95_execution_time_ms"] == 385.0


def test_viewer_reads_metrics(api, user_with_role, brand):
    TaskFactory(brand=brand)
    viewer = user_with_role("viewer")
    assert api(viewer, brand).get(URL).status_code == 200
    assert api(viewer, brand).get(f"{URL}dashboard/").status_code == 200

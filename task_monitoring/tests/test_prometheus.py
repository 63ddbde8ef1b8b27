"""GET /metrics: protection and exposition."""

import re

import pytest
from django.test import Client

from task_monitoring.tests.factories import AlertRuleFactory, MetricFactory, WorkerFactory
from tests.factories import TaskFactory


@pytest.fixture
def token(settings):
    settings.METRICS_TOKEN = "s3cret-scrape-token"
    return settings.METRICS_TOKEN


def scrape(token=None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return Client().get("/metrics", **headers)


def test_metrics_disabled_without_a_token(db, settings):
    settings.METRICS_TOKEN = ""
    response = scrape()
    assert response.status_code == 403 and response.json()["error_code"] == "METRICS_DISABLED"


def test_metrics_open_when_allowed_anonymous(db, settings):
    settings.METRICS_TOKEN, settings.METRICS_ALLOW_ANONYMOUS = "", True
    assert scrape().status_code == 200


def test_metrics_refuse_a_wrong_token(token):
    for given in (None, "nope"):
        response = scrape(given)
        assert response.status_code == 401
        assert response.json()["error_code"] == "METRICS_TOKEN_INVALID"


def sample(text, name, **labels):
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = (
        rf"^{re.escape(name)}\{{{re.escape(wanted)}\}} (\S+)$" if labels else rf"^{name} (\S+)$"
    )
    found = re.search(pattern, text, re.MULTILINE)
    assert found, f"{name}{labels} not in:\n{text}"
    return float(found.group(1))


def test_exposition_counts_tasks_histogram_workers_alerts(token, brand, other_brand):
    TaskFactory(brand=brand, status="queued", task_type="noop")
    TaskFactory(brand=brand, status="queued", task_type="noop")
    TaskFactory(brand=other_brand, status="failed", task_type="sleep")
    for ms in (3, 40, 700, 20000):
        MetricFactory(task__brand=brand, task__task_type="noop", execution_time_ms=ms)
    WorkerFactory()
    rule = AlertRuleFactory(brand=brand, threshold=0, severity="critical")
    from task_monitoring import services

    services.alert_rule_evaluate(rule=rule)
    response = scrape(token)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    text = response.content.decode()
    assert sample(text, "megahub_tasks", brand="humari", task_type="noop", status="queued") == 2
    assert sample(text, "megahub_tasks", brand="acme", task_type="sleep", status="failed") == 1
    h = "megahub_task_execution_seconds"
    assert sample(text, f"{h}_bucket", task_type="noop", le="0.005") == 1
    assert sample(text, f"{h}_bucket", task_type="noop", le="0.05") == 2
    assert sample(text, f"{h}_bucket", task_type="noop", le="1") == 3
    assert sample(text, f"{h}_bucket", task_type="noop", le="+Inf") == 4
    assert sample(text, f"{h}_count", task_type="noop") == 4
    assert sample(text, f"{h}_sum", task_type="noop") == pytest.approx(20.743)
    assert sample(text, "megahub_tasks_queued", queue="default") == 2
    assert sample(text, "megahub_oldest_queued_age_seconds", queue="default") >= 0
    assert sample(text, "megahub_workers_online") == 1
    assert sample(text, "megahub_alerts_firing", brand="humari", severity="critical",
                  status="firing") == 1  # fmt: skip
    assert "# TYPE megahub_task_execution_seconds histogram" in text


def test_label_values_are_escaped(token, brand):
    TaskFactory(brand=brand, task_type='we"ird\\type')
    text = scrape(token).content.decode()
    assert 'task_type="we\\"ird\\\\type"' in text

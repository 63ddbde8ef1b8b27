"""Alert rules (admin), evaluation episodes, acknowledge/resolve, signed webhooks, e-mail."""

import base64
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from standardwebhooks import Webhook

from task_core import delivery
from task_monitoring import services
from task_monitoring.models import Alert, AlertEvaluation, AlertNotification, AlertRule
from task_monitoring.tests.factories import AlertRuleFactory, MetricFactory
from tests.factories import TaskFactory

RULES = "/tasks/monitoring/alert-rules/"
ALERTS = "/tasks/monitoring/alerts/"
VALID = {"name": "Backlog", "metric": "queue_depth", "comparison": "gt", "threshold": 5,
         "window_minutes": 10}  # fmt: skip


def fill_queue(brand, n):
    for _ in range(n):
        TaskFactory(brand=brand, status="queued")


def evaluate(rule):
    return services.alert_rule_evaluate(rule=AlertRule.objects.unscoped().get(pk=rule.pk))


# --- rules API --------------------------------------------------------------------------------
def test_admin_creates_lists_updates_and_deletes_a_rule(api, owner, brand, receiver):
    client = api(owner, brand)
    response = client.post(
        RULES, {**VALID, "webhook_url": receiver.url, "email_to": ["ops@example.com"]},
        format="json",
    )  # fmt: skip
    assert response.status_code == 201, response.json()
    rule = response.json()
    assert rule["metric"] == "queue_depth" and rule["webhook_secret"].startswith("whsec_")
    assert len(base64.b64decode(rule["webhook_secret"].removeprefix("whsec_"))) == 32
    assert AlertRule.objects.unscoped().get(pk=rule["id"]).brand == brand
    assert [r["id"] for r in client.get(RULES).json()["results"]] == [rule["id"]]
    response = client.patch(f"{RULES}{rule['id']}/", {"threshold": 7.5}, format="json")
    assert response.status_code == 200 and response.json()["threshold"] == 7.5
    given = "whsec_" + base64.b64encode(b"k" * 24).decode()
    response = client.patch(f"{RULES}{rule['id']}/", {"webhook_secret": given}, format="json")
    assert response.status_code == 200 and response.json()["webhook_secret"] == given
    assert client.delete(f"{RULES}{rule['id']}/").status_code == 204


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({**VALID, "metric": "cpu_temperature"}, "metric"),
        ({**VALID, "window_minutes": -5}, "window_minutes"),
        ({**VALID, "window_minutes": 0}, "window_minutes"),
        ({**VALID, "threshold": "high"}, "threshold"),
        ({**VALID, "threshold": "5"}, "threshold"),
        ({**VALID, "threshold": True}, "threshold"),
        ({**VALID, "comparison": "=="}, "comparison"),
        ({**VALID, "webhook_url": "ftp://example.com/hook"}, "webhook_url"),
        ({**VALID, "webhook_url": "not a url"}, "webhook_url"),
        ({**VALID, "webhook_url": "http://169.254.169.254/latest/meta-data"}, "webhook_url"),
        ({**VALID, "webhook_url": "http://[fe80::1]/hook"}, "webhook_url"),
        ({**VALID, "email_to": ["not-an-email"]}, "email_to"),
        ({**VALID, "webhook_secret": "a-plain-secret-of-32-characters!"}, "webhook_secret"),
        ({**VALID, "webhook_secret": "whsec_" + "A" * 12}, "webhook_secret"),  # 9 bytes
        ({**VALID, "webhook_secret": "whsec_not base64!!"}, "webhook_secret"),
        ({**VALID, "task_type": "no_such_type"}, "task_type"),
        ({**VALID, "cooldown_minutes": -1}, "cooldown_minutes"),
        ({**VALID, "brand": 99}, "brand"),
        ({**VALID, "last_value": 3}, "last_value"),
        ({k: v for k, v in VALID.items() if k != "metric"}, "metric"),
    ],
)
def test_bad_rules_are_400_with_field_errors(api, owner, brand, payload, field):
    response = api(owner, brand).post(RULES, payload, format="json")
    assert response.status_code == 400, response.json()
    body = response.json()
    assert body["error_code"] == "VALIDATION_ERROR"
    assert field in body["field_errors"], body
    assert not AlertRule.objects.unscoped().exists()


def test_rules_need_the_admin_role(api, user_with_role, brand):
    for role in ("viewer", "operator"):
        client = api(user_with_role(role), brand)
        assert client.get(RULES).json()["error_code"] == "ROLE_FORBIDDEN"
        assert client.post(RULES, VALID, format="json").status_code == 403


def test_foreign_rules_are_invisible(api, owner, brand, other_brand):
    foreign = AlertRuleFactory(brand=other_brand)
    client = api(owner, brand)
    assert client.get(RULES).json()["results"] == []
    for method in ("get", "patch", "delete"):
        response = getattr(client, method)(f"{RULES}{foreign.pk}/", {}, format="json")
        assert response.status_code == 404
        assert response.json()["error_code"] == "ALERT_RULE_NOT_FOUND"
    response = client.get(f"{RULES}{foreign.pk}/evaluations/")
    assert response.json()["error_code"] == "ALERT_RULE_NOT_FOUND"


# --- evaluation -------------------------------------------------------------------------------
def test_a_rule_fires_once_per_episode_and_resolves_when_clear(brand, receiver):
    rule = AlertRuleFactory(brand=brand, threshold=2, webhook_url=receiver.url)
    assert evaluate(rule) == "ok"
    fill_queue(brand, 3)
    assert evaluate(rule) == "fired"
    assert evaluate(rule) == "breached"
    assert evaluate(rule) == "breached"
    alert = Alert.objects.unscoped().get()
    assert alert.status == "firing" and alert.value == 3.0 and alert.severity == rule.severity
    assert AlertNotification.objects.unscoped().filter(event="fired").count() == 1  # no storm
    TaskFactory._meta.model.objects.filter(brand=brand).update(status="completed")
    assert evaluate(rule) == "resolved"
    alert.refresh_from_db()
    assert alert.status == "resolved" and alert.resolution == "cleared"
    events = AlertNotification.objects.unscoped().order_by("id").values_list("event", flat=True)
    assert list(events) == ["fired", "resolved"]
    outcomes = list(
        AlertEvaluation.objects.unscoped()
        .filter(rule=rule)
        .order_by("id")
        .values_list("outcome", flat=True)
    )
    assert outcomes == ["ok", "fired", "breached", "breached", "resolved"]


def test_cooldown_holds_a_new_episode_back(brand):
    rule = AlertRuleFactory(brand=brand, threshold=0, cooldown_minutes=30)
    fill_queue(brand, 1)
    assert evaluate(rule) == "fired"
    services.alert_resolve(alert=Alert.objects.unscoped().get(), user=None)
    assert evaluate(rule) == "cooldown"
    Alert.objects.unscoped().update(resolved_at=timezone.now() - timedelta(minutes=31))
    assert evaluate(rule) == "fired"
    assert Alert.objects.unscoped().count() == 2


@pytest.mark.parametrize(
    ("metric", "setup", "expected"),
    [
        ("failure_rate", "failures", 25.0),
        ("execution_time_p95", "metrics", 955.0),
        ("memory_peak_mb", "metrics", 1000.0),
        ("cost_usd_sum", "metrics", 0.1),
        ("queue_depth", "queue", 4.0),
        ("workers_online", None, 0.0),
    ],
)
def test_rule_values(brand, other_brand, metric, setup, expected):
    now = timezone.now()
    if setup == "failures":
        for status in ("completed", "completed", "completed", "failed"):
            TaskFactory(brand=brand, status=status, completed_at=now)
        TaskFactory(brand=other_brand, status="failed", completed_at=now)
    elif setup == "metrics":
        for ms in range(100, 1100, 100):
            MetricFactory(task__brand=brand, execution_time_ms=ms, memory_usage_mb=ms,
                          cost_usd="0.01")  # fmt: skip
        MetricFactory(task__brand=other_brand, execution_time_ms=10**6, memory_usage_mb=10**6)
    elif setup == "queue":
        fill_queue(brand, 4)
        fill_queue(other_brand, 9)
    rule = AlertRuleFactory(brand=brand, metric=metric)
    assert services.selectors.rule_value(rule) == pytest.approx(expected)


def test_one_broken_rule_never_stops_the_others(brand, monkeypatch):
    good = AlertRuleFactory(brand=brand, threshold=0)
    bad = AlertRuleFactory(brand=brand, metric="queue_depth")
    AlertRule.objects.unscoped().filter(pk=bad.pk).update(comparison="??")
    fill_queue(brand, 1)
    outcomes = services.alert_rules_evaluate()
    assert outcomes == {"fired": 1, "error": 1}
    assert Alert.objects.unscoped().get().rule_id == good.pk
    assert AlertEvaluation.objects.unscoped().get(rule=bad).outcome == "error"


def test_evaluation_beat_entry_is_routed_to_the_system_queue():
    entry = settings.CELERY_BEAT_SCHEDULE["megahub.alert_rules_evaluate"]
    assert entry["task"] == "megahub.alert_rules_evaluate"
    assert entry["schedule"] == settings.ALERT_EVALUATION_INTERVAL_SECONDS
    assert "megahub.alert_notifications_deliver" in settings.CELERY_BEAT_SCHEDULE


# --- alerts API -------------------------------------------------------------------------------
@pytest.fixture
def firing(brand):
    rule = AlertRuleFactory(brand=brand, threshold=0, name="Backlog")
    fill_queue(brand, 1)
    evaluate(rule)
    return Alert.objects.unscoped().get(rule=rule)


def test_alerts_list_and_acknowledge_then_resolve(api, user_with_role, brand, firing):
    viewer = api(user_with_role("viewer"), brand)
    rows = viewer.get(f"{ALERTS}?status=firing").json()["results"]
    assert [r["id"] for r in rows] == [firing.pk] and rows[0]["rule"]["name"] == "Backlog"
    assert viewer.post(f"{ALERTS}{firing.pk}/acknowledge/").json()["error_code"] == (
        "ROLE_FORBIDDEN"
    )
    operator = api(user_with_role("operator"), brand)
    response = operator.post(f"{ALERTS}{firing.pk}/acknowledge/")
    assert response.status_code == 200 and response.json()["status"] == "acknowledged"
    assert response.json()["acknowledged_by"] == "operator-user"
    response = operator.post(f"{ALERTS}{firing.pk}/acknowledge/")
    assert response.status_code == 409
    assert response.json()["error_code"] == "ALERT_NOT_ACKNOWLEDGEABLE"
    response = operator.post(f"{ALERTS}{firing.pk}/resolve/")
    assert response.status_code == 200 and response.json()["status"] == "resolved"
    assert response.json()["resolution"] == "manual"
    response = operator.post(f"{ALERTS}{firing.pk}/resolve/")
    assert response.status_code == 409 and response.json()["error_code"] == "ALERT_NOT_RESOLVABLE"
    assert viewer.get(f"{ALERTS}?status=firing").json()["results"] == []


def test_foreign_alerts_are_404(api, outsider, other_brand, firing):
    client = api(outsider, other_brand)
    assert client.get(ALERTS).json()["results"] == []
    for path in ("", "acknowledge/", "resolve/", "notifications/"):
        method = client.get if path in ("", "notifications/") else client.post
        response = method(f"{ALERTS}{firing.pk}/{path}")
        assert response.status_code == 404, path
        assert response.json()["error_code"] == "ALERT_NOT_FOUND"
    firing.refresh_from_db()
    assert firing.status == "firing"


# --- notifications ----------------------------------------------------------------------------
def test_webhook_is_signed_and_verifiable(brand, receiver):
    rule = AlertRuleFactory(brand=brand, threshold=0, webhook_url=receiver.url)
    fill_queue(brand, 1)
    evaluate(rule)
    assert receiver.requests == []  # evaluation only queues the notification
    assert services.alert_notifications_deliver() == 1
    (request,) = receiver.requests
    headers = request["headers"]
    # What a receiver does: the standardwebhooks library over the raw body and the headers.
    assert Webhook(rule.webhook_secret).verify(request["body"], headers) == request["json"]
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    assert headers["X-Megahub-Event"] == "alert.fired"
    assert request["json"]["rule"]["id"] == rule.pk and request["json"]["alert"]["value"] == 1.0
    notification = AlertNotification.objects.unscoped().get()
    assert headers["webhook-id"] == f"alert-notification-{notification.pk}"
    assert notification.status == "delivered" and notification.attempts == 1


def test_failing_webhook_is_retried_with_backoff_and_every_attempt_recorded(
    api, owner, brand, receiver, settings
):
    settings.ALERT_NOTIFICATION_MAX_ATTEMPTS = 3
    receiver.statuses = [500, 500, 500]
    rule = AlertRuleFactory(brand=brand, threshold=0, webhook_url=receiver.url)
    fill_queue(brand, 1)
    evaluate(rule)
    delays = []
    for _ in range(3):
        before = timezone.now()
        services.alert_notifications_deliver()
        notification = AlertNotification.objects.unscoped().get()
        if notification.next_attempt_at:
            delays.append((notification.next_attempt_at - before).total_seconds())
            assert services.alert_notifications_deliver() == 0  # not due yet
            AlertNotification.objects.unscoped().update(next_attempt_at=timezone.now())
    notification.refresh_from_db()
    assert notification.status == "failed" and notification.attempts == 3
    assert notification.last_error == "HTTP 500"
    base = settings.ALERT_NOTIFICATION_BACKOFF_SECONDS
    # base x 2^(n-1) with equal jitter: between half the step and the step
    assert base / 2 - 1 <= delays[0] <= base + 1 and base - 1 <= delays[1] <= 2 * base + 1
    log = api(owner, brand).get(f"{ALERTS}{notification.alert_id}/notifications/").json()
    assert [a["status_code"] for a in log[0]["attempt_log"]] == [500, 500, 500]
    assert len(receiver.requests) == 3


def test_due_notifications_are_leased_in_batches_and_not_sent_twice(brand, mailoutbox):
    rule = AlertRuleFactory(brand=brand, threshold=0, email_to=["ops@example.com"])
    fill_queue(brand, 1)
    evaluate(rule)  # fired
    Alert.objects.unscoped().update(status="resolved")
    for _ in range(2):
        services._notify(Alert.objects.unscoped().get(), "resolved")
    channel = services.AlertNotificationChannel()
    first = delivery.lease_due(channel, limit=2)
    assert len(first) == 2 and len(delivery.lease_due(channel, limit=2)) == 1
    assert delivery.lease_due(channel, limit=2) == []  # every row is leased
    leased_until = AlertNotification.objects.unscoped().values_list("next_attempt_at", flat=True)
    assert all(t > timezone.now() + timedelta(seconds=30) for t in leased_until)
    assert services.alert_notifications_deliver() == 0 and mailoutbox == []


def test_a_slow_webhook_times_out_and_is_recorded_without_blocking(brand, receiver, settings):
    settings.ALERT_WEBHOOK_TIMEOUT_SECONDS = 1
    receiver.delay_s = 3
    rule = AlertRuleFactory(brand=brand, threshold=0, webhook_url=receiver.url)
    fill_queue(brand, 1)
    started = time.monotonic()
    assert evaluate(rule) == "fired"
    assert time.monotonic() - started < 1  # evaluation never calls the endpoint
    started = time.monotonic()
    services.alert_notifications_deliver()
    assert time.monotonic() - started < 2.5
    notification = AlertNotification.objects.unscoped().get()
    assert notification.status == "pending" and notification.attempts == 1
    assert "timed out" in notification.last_error.lower()
    assert notification.attempt_log.get().ok is False


def test_a_webhook_to_a_link_local_address_is_refused_at_delivery(brand):
    rule = AlertRuleFactory(brand=brand, threshold=0, webhook_url="http://example.invalid/x")
    AlertRule.objects.unscoped().filter(pk=rule.pk).update(
        webhook_url="http://169.254.169.254/latest"
    )
    fill_queue(brand, 1)
    evaluate(rule)
    services.alert_notifications_deliver()
    notification = AlertNotification.objects.unscoped().get()
    assert "metadata" in notification.last_error.lower()
    assert notification.status == "failed" and notification.attempts == 1  # never retried


def test_email_goes_through_djangos_mail_backend(brand, mailoutbox):
    rule = AlertRuleFactory(brand=brand, threshold=0, email_to=["ops@example.com", "b@example.com"])
    fill_queue(brand, 1)
    evaluate(rule)
    services.alert_notifications_deliver()
    (message,) = mailoutbox
    assert message.to == ["ops@example.com", "b@example.com"]
    assert rule.name in message.subject and "fired" in message.subject
    assert AlertNotification.objects.unscoped().get().status == "delivered"


def test_prune_drops_old_evaluations_and_forgotten_workers(brand, settings):
    from task_monitoring.models import Worker
    from task_monitoring.tests.factories import WorkerFactory, stale

    rule = AlertRuleFactory(brand=brand)
    evaluate(rule)
    evaluate(rule)
    AlertEvaluation.objects.unscoped().filter(
        pk=AlertEvaluation.objects.unscoped().first().pk
    ).update(
        evaluated_at=timezone.now() - timedelta(days=settings.ALERT_EVALUATION_RETENTION_DAYS + 1)
    )
    WorkerFactory(hostname="gone@h", last_heartbeat_at=stale(8 * 86400))
    WorkerFactory(hostname="here@h")
    assert services.monitoring_prune() == {"evaluations": 1, "workers": 1}
    assert list(Worker.objects.values_list("hostname", flat=True)) == ["here@h"]


def test_evaluate_command(brand):
    from io import StringIO

    from django.core.management import CommandError, call_command

    rule = AlertRuleFactory(brand=brand, threshold=0, name="Backlog")
    fill_queue(brand, 1)
    out = StringIO()
    call_command("alert_rules_evaluate", str(rule.pk), stdout=out)
    assert f"rule {rule.pk} (Backlog): fired" in out.getvalue()
    with pytest.raises(CommandError, match="no alert rule with id 999"):
        call_command("alert_rules_evaluate", "999")
    out = StringIO()
    call_command("alert_rules_evaluate", stdout=out)
    assert "breached" in out.getvalue()

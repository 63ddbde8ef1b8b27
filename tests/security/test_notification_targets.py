"""Alert notification targets (webhook URLs, e-mail addresses) are for the brand's admins,
as on the alert-rule endpoint: other roles never read them, not even inside error messages."""

import pytest

from task_monitoring import services as monitoring
from task_monitoring.models import Alert, AlertNotification, NotificationAttempt
from task_monitoring.tests.factories import AlertRuleFactory
from tests.factories import TaskFactory

HOOK = "https://hooks.secret-target.example/endpoint/x1"
MAIL = "oncall@secret-target.example,cto@secret-target.example"


@pytest.fixture
def alert(brand):
    TaskFactory(brand=brand, status="queued")
    rule = AlertRuleFactory(brand=brand, threshold=0)
    monitoring.alert_rule_evaluate(rule=rule)
    alert = Alert.objects.unscoped().get(rule=rule)
    hook = AlertNotification.objects.create(
        brand=brand, alert=alert, channel="webhook", event="fired", target=HOOK,
        last_error="ConnectionError: hooks.secret-target.example:443 refused",
    )  # fmt: skip
    NotificationAttempt.objects.create(
        notification=hook, number=1, ok=False, error=f"URLError: cannot reach {HOOK}"
    )
    mail = AlertNotification.objects.create(
        brand=brand, alert=alert, channel="email", event="fired", target=MAIL,
        last_error="SMTPRecipientsRefused: {'cto@secret-target.example': (550, b'no')}",
    )  # fmt: skip
    NotificationAttempt.objects.create(notification=mail, number=1, ok=False, error="550")
    return alert


def notifications(api, user, brand, alert):
    response = api(user, brand).get(f"/tasks/monitoring/alerts/{alert.pk}/notifications/")
    assert response.status_code == 200, response.content
    return response


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_below_admin_notification_targets_are_hidden(api, user_with_role, brand, alert, role):
    response = notifications(api, user_with_role(role), brand, alert)
    assert "secret-target" not in response.content.decode()
    body = response.json()
    assert [n["target"] for n in body] == [None, None]
    assert body[0]["last_error"] == "ConnectionError: [hidden]:443 refused"
    assert body[0]["attempt_log"][0]["error"] == "URLError: cannot reach [hidden]"
    assert [n["channel"] for n in body] == ["webhook", "email"]  # the rest stays readable


def test_admins_read_notification_targets(api, owner, brand, alert):
    body = notifications(api, owner, brand, alert).json()
    assert [n["target"] for n in body] == [HOOK, MAIL]
    assert "secret-target" in body[0]["attempt_log"][0]["error"]

"""Admin pages of task_monitoring: lists render, staff see their brands, alert actions."""

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from task_monitoring import services
from task_monitoring.models import Alert
from task_monitoring.tests.factories import AlertRuleFactory, MetricFactory, WorkerFactory
from tests.factories import MembershipFactory, TaskFactory, UserFactory

MODELS = ["taskmetric", "worker", "alertrule", "alert", "alertnotification", "alertevaluation"]


def firing_alert(brand, name):
    rule = AlertRuleFactory(brand=brand, name=name, threshold=0, email_to=["ops@example.com"])
    TaskFactory(brand=brand, status="queued")
    services.alert_rule_evaluate(rule=rule)
    return Alert.objects.unscoped().get(rule=rule)


@pytest.fixture
def superuser_client(db):
    client = Client()
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    return client


@pytest.mark.parametrize("model", MODELS)
def test_every_monitoring_admin_list_renders(superuser_client, brand, model):
    MetricFactory(task__brand=brand)
    WorkerFactory()
    alert = firing_alert(brand, "Backlog")
    response = superuser_client.get(f"/admin/task_monitoring/{model}/")
    assert response.status_code == 200
    assert (
        superuser_client.get(f"/admin/task_monitoring/alert/{alert.pk}/change/").status_code == 200
    )


def test_acknowledge_and_resolve_actions_call_the_services(superuser_client, brand):
    alert = firing_alert(brand, "Backlog")
    url = "/admin/task_monitoring/alert/"
    superuser_client.post(url, {"action": "acknowledge_alerts", "_selected_action": [alert.pk]})
    alert.refresh_from_db()
    assert alert.status == "acknowledged"
    superuser_client.post(url, {"action": "resolve_alerts", "_selected_action": [alert.pk]})
    alert.refresh_from_db()
    assert alert.status == "resolved" and alert.resolution == "manual"
    assert alert.notifications.filter(event="resolved").exists()


def test_staff_see_only_their_brands_alerts(brand, other_brand):
    staff = UserFactory(username="ops", is_staff=True)
    staff.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="task_monitoring")
    )
    MembershipFactory(user=staff, brand=brand)
    firing_alert(brand, "Mine")
    firing_alert(other_brand, "Theirs")
    client = Client()
    client.force_login(staff)
    html = client.get("/admin/task_monitoring/alert/").content.decode()
    assert "Mine" in html and "Theirs" not in html

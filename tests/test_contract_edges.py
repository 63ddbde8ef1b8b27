"""The seed contract's edges: one error shape for every status, the app roots, active alerts by
default, URL edges (slashes, probes), docs pages without outside resources, the browsable API's
brand fallback and switcher."""

import pytest
from django.core.cache import cache

from task_monitoring import services as monitoring
from task_monitoring.models import Alert
from task_monitoring.tests.factories import AlertRuleFactory
from task_scheduling.models import PeriodicSchedule
from tests.factories import MembershipFactory, TaskFactory, UserFactory

pytestmark = pytest.mark.django_db


def assert_error_shape(response, status, code):
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"detail", "error_code", "field_errors"}, body
    assert body["error_code"] == code and body["detail"]
    return body


# --- every error body has detail, error_code and field_errors ------------------------------
def test_errors_without_a_field_at_fault_carry_empty_field_errors(
    api, owner, member, outsider, brand, user_with_role
):
    foreign = TaskFactory(brand=brand)
    for response, status, code in [
        (api().get("/tasks/", HTTP_X_BRAND_ID=str(brand.pk)), 401, "NOT_AUTHENTICATED"),
        (api(outsider, brand).get("/tasks/"), 403, "BRAND_FORBIDDEN"),
        (api(user_with_role("viewer"), brand).post("/tasks/", {}), 403, "ROLE_FORBIDDEN"),
        (
            api(outsider, foreign.brand, brand_header="999999").get("/tasks/"),
            403,
            "BRAND_FORBIDDEN",
        ),
        (api(owner).get("/tasks/"), 400, "BRAND_REQUIRED"),
        (api(owner, brand).get("/tasks/999999/"), 404, "TASK_NOT_FOUND"),
        (api(owner, brand).get("/no/such/path/"), 404, "NOT_FOUND"),
        (api(owner, brand).delete("/tasks/"), 405, "METHOD_NOT_ALLOWED"),
    ]:
        body = assert_error_shape(response, status, code)
        assert body["field_errors"] == {}
    completed = TaskFactory(brand=brand, status="completed")
    conflict = api(owner, brand).post(f"/tasks/{completed.pk}/retry/")
    assert assert_error_shape(conflict, 409, "TASK_NOT_RETRYABLE")["field_errors"] == {}
    invalid = api(owner, brand).post("/tasks/", {"task_type": "noop", "priority": "urgent"})
    assert "priority" in assert_error_shape(invalid, 400, "VALIDATION_ERROR")["field_errors"]


def test_throttled_answer_has_the_three_keys(api, owner, brand, settings):
    cache.clear()
    settings.THROTTLE_USER_RATE = "1/minute"
    client = api(owner, brand)
    client.get("/tasks/")
    body = assert_error_shape(client.get("/tasks/"), 429, "THROTTLED")
    assert body["field_errors"] == {}
    cache.clear()


def test_brand_query_beside_the_header_must_be_well_formed_and_agree(
    api, member, brand, other_brand
):
    client = api(member, brand)
    assert client.get("/tasks/", {"brand": brand.pk}).status_code == 200
    for value in ("abc", "0", "1.5", "\u0663", str(other_brand.pk)):
        body = assert_error_shape(client.get("/tasks/", {"brand": value}), 400, "BRAND_REQUIRED")
        assert "brand" in body["detail"]
    assert api(member).get("/tasks/", {"brand": other_brand.pk}).status_code == 200
    assert_error_shape(api(member, brand_header="\u0663").get("/tasks/"), 400, "BRAND_REQUIRED")


# --- app roots --------------------------------------------------------------------------------
def test_app_roots_list_their_resources(api, owner, brand):
    client = api(owner, brand)
    roots = {
        "/tasks/persistent-jobs/": {"persistent-jobs", "checkpoints"},
        "/tasks/monitoring/": {"metrics", "workers", "alert-rules", "alerts"},
        "/tasks/scheduled/": {"periodic-tasks", "cron-jobs", "calendars"},
    }
    for path, names in roots.items():
        response = client.get(path)
        assert response.status_code == 200, path
        body = response.json()
        assert set(body) == names
        for url in body.values():
            assert url.startswith(f"http://testserver{path}")
            assert client.get(url).status_code == 200, url
    assert api().get("/tasks/monitoring/").status_code == 401


# --- alerts: active by default ----------------------------------------------------------------
def test_alert_list_shows_active_alerts_unless_a_status_is_named(api, owner, brand):
    alerts = {}
    for status in ("firing", "acknowledged", "resolved"):
        TaskFactory(brand=brand, status="queued")
        rule = AlertRuleFactory(brand=brand, threshold=0, name=f"rule {status}")
        monitoring.alert_rule_evaluate(rule=rule)
        alerts[status] = Alert.objects.unscoped().get(rule=rule)
    Alert.objects.unscoped().filter(pk=alerts["acknowledged"].pk).update(status="acknowledged")
    Alert.objects.unscoped().filter(pk=alerts["resolved"].pk).update(status="resolved")
    client = api(owner, brand)

    def ids(query=""):
        return {a["id"] for a in client.get(f"/tasks/monitoring/alerts/{query}").json()["results"]}

    assert ids() == {alerts["firing"].pk}
    assert ids("?status=resolved") == {alerts["resolved"].pk}
    assert ids("?status=acknowledged&status=resolved") == {
        alerts["acknowledged"].pk,
        alerts["resolved"].pk,
    }
    # A resolved alert is still readable by id.
    assert client.get(f"/tasks/monitoring/alerts/{alerts['resolved'].pk}/").status_code == 200


# --- URL edges ----------------------------------------------------------------------------------
def test_health_answers_with_and_without_the_slash(client, settings):
    settings.SECURE_SSL_REDIRECT = True  # as in production: probes are still not redirected
    for path in ("/health", "/health/"):
        response = client.get(path)
        assert response.status_code == 200, (path, response.status_code)
        assert response.json() == {"status": "ok"}
    for path in ("/health/ready", "/health/ready/"):
        assert client.get(path).status_code in (200, 503)


@pytest.mark.parametrize("debug", [False, True])
def test_post_without_the_slash_is_the_slashed_post(api, owner, brand, settings, debug):
    settings.DEBUG = debug
    client = api(owner, brand)
    response = client.post(
        "/tasks", {"task_type": "noop", "description": "no slash"}, format="json"
    )
    assert response.status_code == 201, response.content[:300]
    assert response.json()["description"] == "no slash"
    schedule = client.post(
        "/tasks/scheduled/periodic-tasks",
        {"task_type": "noop", "cron_expression": "0 3 * * *"},
        format="json",
    )
    assert schedule.status_code == 201
    # Reads keep Django's redirect to the slashed URL.
    assert client.get("/tasks").status_code == 301
    # A path that is not an API path either way stays a 404 (Django's debug page under DEBUG).
    assert client.post("/nowhere", {}, format="json").status_code == 404


def test_docs_pages_name_no_outside_resource(client):
    for url in ("/docs/", "/redoc/"):
        html = client.get(url).content.decode()
        assert "fonts.googleapis" not in html and "fonts.gstatic" not in html
        assert "https://" not in html, url


# --- the browsable API ----------------------------------------------------------------------
def test_browsable_api_names_the_brand_query_and_offers_the_users_brands(
    client, member, brand, other_brand
):
    client.force_login(member)
    page = client.get("/tasks/", HTTP_ACCEPT="text/html")
    assert page.status_code == 400
    html = page.content.decode()
    assert "?brand=" in html and "X-Brand-ID" in html
    assert f'href="/tasks/?brand={brand.pk}"' in html
    assert f'href="/tasks/?brand={other_brand.pk}"' in html
    chosen = client.get(f"/tasks/?brand={other_brand.pk}", HTTP_ACCEPT="text/html")
    assert chosen.status_code == 200
    assert 'id="brand-switcher"' in chosen.content.decode()


def test_brand_switcher_lists_only_the_users_active_brands(client, brand, other_brand):
    user = UserFactory(username="single")
    MembershipFactory(user=user, brand=brand, role="viewer")
    client.force_login(user)
    html = client.get(f"/tasks/?brand={brand.pk}", HTTP_ACCEPT="text/html").content.decode()
    assert f"?brand={brand.pk}" in html and f"?brand={other_brand.pk}" not in html


# --- periodic tasks: the seed's example --------------------------------------------------------
def test_periodic_task_name_defaults_to_type_and_expression(api, owner, brand):
    response = api(owner, brand).post(
        "/tasks/scheduled/periodic-tasks/",
        {"cron_expression": "0 9 * * 1-5", "task_type": "daily_seo_report"},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["name"] == "daily_seo_report 0 9 * * 1-5"
    assert PeriodicSchedule.objects.unscoped().get(pk=response.json()["id"]).brand == brand

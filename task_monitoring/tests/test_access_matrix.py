"""Every monitoring endpoint x {no credentials, no brand header, bad header, foreign brand},
the role matrix, and the endpoints' presence in the OpenAPI schema."""

import pytest

from task_monitoring.tests.factories import AlertRuleFactory, MetricFactory, WorkerFactory
from tests.factories import TaskFactory

BASE = "/tasks/monitoring/"
# (method, path template, minimum role)
ENDPOINTS = [
    ("get", "metrics/", "viewer"),
    ("get", "metrics/{metric}/", "viewer"),
    ("get", "metrics/dashboard/", "viewer"),
    ("get", "workers/", "viewer"),
    ("get", "workers/{worker}/", "viewer"),
    ("get", "workers/overview/", "viewer"),
    ("get", "alert-rules/", "admin"),
    ("post", "alert-rules/", "admin"),
    ("get", "alert-rules/{rule}/", "admin"),
    ("patch", "alert-rules/{rule}/", "admin"),
    ("get", "alert-rules/{rule}/evaluations/", "admin"),
    ("post", "alert-rules/{rule}/evaluate/", "admin"),
    ("delete", "alert-rules/{rule}/", "admin"),
    ("get", "alerts/", "viewer"),
    ("get", "alerts/{alert}/", "viewer"),
    ("get", "alerts/{alert}/notifications/", "viewer"),
    ("post", "alerts/{alert}/acknowledge/", "operator"),
    ("post", "alerts/{alert}/resolve/", "operator"),
]
RANK = {"viewer": 1, "operator": 2, "admin": 3}


@pytest.fixture
def ids(brand):
    from task_monitoring import services
    from task_monitoring.models import Alert

    rule = AlertRuleFactory(brand=brand, threshold=0)
    TaskFactory(brand=brand, status="queued")
    services.alert_rule_evaluate(rule=rule)
    return {
        "metric": MetricFactory(task__brand=brand).pk,
        "worker": WorkerFactory().pk,
        "rule": rule.pk,
        "alert": Alert.objects.get(rule=rule).pk,
    }


def call(client, method, path):
    return getattr(client, method)(BASE + path, {}, format="json")


@pytest.mark.parametrize(("method", "path", "role"), ENDPOINTS)
def test_access_is_refused_without_a_valid_brand(api, owner, outsider, brand, ids, method, path,
                                                 role):  # fmt: skip
    path = path.format(**ids)
    assert call(api(None, brand), method, path).status_code == 401
    response = call(api(owner), method, path)
    assert (response.status_code, response.json()["error_code"]) == (400, "BRAND_REQUIRED")
    response = call(api(owner, brand_header="0"), method, path)
    assert (response.status_code, response.json()["error_code"]) == (400, "BRAND_REQUIRED")
    response = call(api(outsider, brand), method, path)
    assert (response.status_code, response.json()["error_code"]) == (403, "BRAND_FORBIDDEN")


@pytest.mark.parametrize(("method", "path", "role"), ENDPOINTS)
@pytest.mark.parametrize("user_role", ["viewer", "operator", "admin"])
def test_role_matrix(api, user_with_role, brand, ids, method, path, role, user_role):
    response = call(api(user_with_role(user_role), brand), method, path.format(**ids))
    if RANK[user_role] >= RANK[role]:
        assert response.status_code != 403, response.json()
    else:
        assert (response.status_code, response.json()["error_code"]) == (403, "ROLE_FORBIDDEN")


# Workers are the shared fleet, not brand objects: they have no foreign ids to probe.
@pytest.mark.parametrize(
    ("method", "path", "role"),
    [e for e in ENDPOINTS if "{" in e[1] and not e[1].startswith("workers/")],
)
def test_foreign_ids_are_404_with_an_error_code(api, outsider, other_brand, ids, method, path,
                                                role):  # fmt: skip
    response = call(api(outsider, other_brand), method, path.format(**ids))
    assert response.status_code == 404
    assert response.json()["error_code"].endswith("_NOT_FOUND")
    assert response.json()["error_code"] != "NOT_FOUND"


def test_schema_lists_the_monitoring_endpoints(client, db):
    paths = client.get("/openapi.json").json()["paths"]
    for _, path, _ in ENDPOINTS:
        templated = (
            path.replace("{metric}", "{id}").replace("{worker}", "{id}")
            .replace("{rule}", "{id}").replace("{alert}", "{id}")
        )  # fmt: skip
        assert BASE + templated in paths, templated

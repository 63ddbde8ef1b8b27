"""JWT auth, health probes, OpenAPI docs."""

import json

from rest_framework.test import APIClient


def test_wrong_password_is_401(owner):
    response = APIClient().post("/auth/token/", {"username": "owner", "password": "nope"})
    assert response.status_code == 401
    assert response.json()["error_code"] == "AUTHENTICATION_FAILED"


def test_liveness(client):
    assert client.get("/health/").json() == {"status": "ok"}


def test_readiness_reports_every_check(client, db):
    response = client.get("/health/ready/")
    body = response.json()
    assert set(body["checks"]) == {
        "database", "migrations", "broker", "beat", "workers", "events_outbox", "loops",
    }  # fmt: skip
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["migrations"]["status"] == "ok"
    assert response.status_code == (200 if body["checks"]["broker"]["status"] == "ok" else 503)


def test_readiness_is_503_when_the_database_is_down(client, db, monkeypatch):
    from task_monitoring import health

    def down():
        raise ConnectionError("db down")

    monkeypatch.setitem(health.CHECKS, "database", (down, True))
    response = client.get("/health/ready/")
    assert response.status_code == 503 and response.json()["checks"]["database"]["status"] == "fail"


def test_openapi_schema_lists_the_task_endpoints(client, db):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    paths = json.loads(response.content)["paths"]
    for path in [
        "/tasks/",
        "/tasks/{id}/",
        "/tasks/{id}/retry/",
        "/tasks/{id}/cancel/",
        "/tasks/{id}/events/",
        "/tasks/queue-stats/",
        "/tasks/types/",
    ]:
        assert path in paths, path


def test_swagger_and_redoc_are_served_without_a_cdn(client, db):
    for url in ["/docs/", "/redoc/"]:
        html = client.get(url).content.decode()
        assert "cdn.jsdelivr" not in html and "unpkg.com" not in html
        assert "/static/drf_spectacular_sidecar/" in html

"""What /openapi.json tells a client: the brand header on every brand-scoped operation, the
brand in the security requirement (Swagger's Authorize), tags by app, typed detail sections."""

import pytest
from django.urls import Resolver404, get_resolver
from django.urls import resolve as resolve_url

from task_core import registry
from task_core.api.tenancy import BrandScopedViewSet
from tests.security.operations import (
    COMPONENTS,
    OPERATIONS,
    SCHEMA,
    SCHEMA_TASK_TYPES,
    resolve,
)

APP_TAGS = {"tasks", "monitoring", "persistent jobs", "scheduling", "webhooks", "events", "auth"}


def brand_scoped_paths() -> set[str]:
    """Schema paths whose view is a BrandScopedViewSet, found from the URL conf itself."""
    paths = set()
    for path in SCHEMA["paths"]:
        try:
            match = resolve_url(path.replace("{id}", "1"))
        except Resolver404:
            continue
        view = getattr(match.func, "cls", None)
        if view and issubclass(view, BrandScopedViewSet):
            paths.add(path)
    return paths


@pytest.mark.parametrize("op", OPERATIONS, ids=[op.id for op in OPERATIONS])
def test_brand_scoped_operations_declare_the_brand_header(op):
    parameters = {(p["in"], p["name"]): p for p in op.operation.get("parameters", [])}
    if op.path not in brand_scoped_paths():
        assert ("header", "X-Brand-ID") not in parameters, op.id
        return
    header = parameters[("header", "X-Brand-ID")]
    assert header["required"] is True
    assert header["schema"]["type"] == "integer" and header["schema"]["minimum"] == 1
    query = parameters[("query", "brand")]
    assert query["required"] is False and query["schema"]["type"] == "integer"
    # Authorize in Swagger UI (and generated clients' auth) send the brand with the token.
    assert op.operation["security"], op.id
    assert all("brandHeader" in requirement for requirement in op.operation["security"])


def test_every_operation_outside_auth_is_brand_scoped():
    scoped = brand_scoped_paths()
    assert scoped and scoped == {op.path for op in OPERATIONS if not op.path.startswith("/auth/")}
    assert get_resolver()  # the URL conf loaded


def test_operations_are_tagged_by_app():
    tags = {op.id: op.operation["tags"] for op in OPERATIONS}
    assert {tag for tag_list in tags.values() for tag in tag_list} == APP_TAGS
    assert tags["GET /tasks/"] == ["tasks"]
    assert tags["GET /tasks/monitoring/alerts/"] == ["monitoring"]
    assert tags["POST /tasks/persistent-jobs/persistent-jobs/{id}/resume/"] == ["persistent jobs"]
    assert tags["GET /tasks/scheduled/cron-jobs/"] == ["scheduling"]
    assert tags["GET /tasks/webhooks/"] == ["webhooks"]
    assert tags["POST /auth/token/"] == ["auth"]
    assert tags["GET /events/"] == ["events"]


def test_task_detail_declares_metrics_and_persistent_job():
    detail = COMPONENTS["TaskDetail"]["properties"]
    metrics = resolve(detail["metrics"]["allOf"][0])
    assert detail["metrics"]["nullable"] is True
    for name, kind in [("execution_time_ms", "integer"), ("memory_usage_mb", "number"),
                       ("cost_usd", "number")]:  # fmt: skip
        assert metrics["properties"][name]["type"] == kind
    job = resolve(detail["persistent_job"]["allOf"][0])
    assert {"id", "processed_items", "total_items"} <= set(job["properties"])


def test_page_size_is_a_positive_integer_and_errors_have_three_keys():
    for op in OPERATIONS:
        for parameter in op.operation.get("parameters", []):
            if parameter["name"] == "page_size":
                assert parameter["schema"] == {"type": "integer", "minimum": 1}, op.id
    assert set(COMPONENTS["Error"]["required"]) == {"detail", "error_code", "field_errors"}


def test_request_bodies_are_json():
    for op in OPERATIONS:
        if "requestBody" in op.operation:
            assert set(op.operation["requestBody"]["content"]) == {"application/json"}, op.id


def test_the_tested_schema_is_the_served_schema(client, db, monkeypatch):
    """The schema the contract and schemathesis tests read is the one /openapi.json serves."""
    monkeypatch.setattr(registry, "_REGISTRY", SCHEMA_TASK_TYPES)
    assert client.get("/openapi.json").json() == SCHEMA

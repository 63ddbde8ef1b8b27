"""The input rules /openapi.json states are the server's: what the schema's enums and patterns
take is what the server accepts, and what they refuse the server refuses (400)."""

import re

import pytest

from megahub.auth import JWT_PATTERN
from megahub.schema import DATETIME_PATTERN, NON_BLANK_PATTERN, TEXT_PATTERN
from task_core.registry import all_task_types
from tests.security.operations import COMPONENTS, SCHEMA


def _parameter(path: str, name: str) -> dict:
    return next(p for p in SCHEMA["paths"][path]["get"]["parameters"] if p["name"] == name)


def test_task_type_enums_are_the_types_served_when_the_schema_is(client, db):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    types = all_task_types()
    assert schemas["TaskTypeEnum"]["enum"] == [t.name for t in types]
    assert schemas["ResumableTaskTypeEnum"]["enum"] == [t.name for t in types if t.resumable]
    task_type = schemas["TaskCreateRequest"]["properties"]["task_type"]
    assert task_type["allOf"] == [{"$ref": "#/components/schemas/TaskTypeEnum"}]


@pytest.mark.parametrize(
    "value",
    ["queued", "queued, failed", " active ,completed", "active", "queued,,failed", "bogus",
     "queued,", ",", "Queued", "queued failed", ""],
)  # fmt: skip
@pytest.mark.parametrize("path", ["/tasks/", "/tasks/persistent-jobs/persistent-jobs/"])
def test_a_status_list_is_accepted_exactly_when_it_matches_the_schema(
    api, owner, brand, path, value
):
    pattern = _parameter(path, "status")["schema"]["pattern"]
    response = api(owner, brand).get(path, {"status": value})
    assert response.status_code == (200 if re.search(pattern, value) else 400), response.json()


def test_metrics_filters_take_only_the_values_the_schema_lists(api, owner, brand):
    client = api(owner, brand)
    assert _parameter("/tasks/monitoring/metrics/", "status")["schema"]["enum"][0] == "cancelled"
    ok = client.get("/tasks/monitoring/metrics/", {"task_type": "noop", "status": "lost"})
    assert ok.status_code == 200
    for query in ({"task_type": "no_such_type"}, {"status": "done"}):
        response = client.get("/tasks/monitoring/metrics/", query)
        assert response.status_code == 400
        assert list(response.json()["field_errors"]) == list(query)


def test_text_datetime_and_token_inputs_state_the_input_rules():
    assert _parameter("/tasks/", "search")["schema"]["pattern"] == TEXT_PATTERN
    assert _parameter("/tasks/", "created_after")["schema"]["pattern"] == DATETIME_PATTERN
    task = COMPONENTS["TaskCreateRequest"]
    assert task["additionalProperties"] is False  # unknown fields are refused
    assert task["properties"]["description"]["pattern"] == TEXT_PATTERN
    assert task["properties"]["context_data"]["propertyNames"] == {"pattern": TEXT_PATTERN}
    assert COMPONENTS["CalendarInputRequest"]["properties"]["name"]["pattern"] == NON_BLANK_PATTERN
    assert COMPONENTS["TokenRefreshRequest"]["properties"]["refresh"]["pattern"] == JWT_PATTERN
    timezone = COMPONENTS["ScheduleInputRequest"]["properties"]["timezone"]["pattern"]
    assert re.search(timezone, "Europe/Paris") and not re.search(timezone, "Mars/Olympus")
    assert not re.search(TEXT_PATTERN, "a\x00b") and re.search(TEXT_PATTERN, "a b")
    assert not re.search(NON_BLANK_PATTERN, " \t") and re.search(NON_BLANK_PATTERN, " a ")
    assert re.search(DATETIME_PATTERN, "2026-01-01T00:00:00+15:59")
    assert not re.search(DATETIME_PATTERN, "2026-01-01T00:00:00+16:00")


def test_a_datetime_offset_beyond_the_pattern_is_refused(api, owner, brand):
    client = api(owner, brand)
    assert client.get("/tasks/", {"created_after": "2026-01-01T00:00:00+15:59"}).status_code == 200
    assert client.get("/tasks/", {"created_after": "2026-01-01T00:00:00+16:00"}).status_code == 400

"""Every typed query parameter of every operation, given a value of the wrong type, is a 400
naming the parameter: a filter is never silently ignored (``?is_periodic=maybe`` must not list
every task)."""

import pytest
from rest_framework_simplejwt.tokens import AccessToken

from tests.security.conftest import client_for, own_pk
from tests.security.operations import BRAND_OPERATIONS, call_for, resolve

FREE_TEXT = {"cursor", "search"}  # any string is a valid search; cursors have their own test
# ?brand= is the X-Brand-ID fallback, not a filter: a bad one is BRAND_REQUIRED
# (tests/test_contract_edges.py).
NOT_FILTERS = {"brand"}


def bad_value(parameter) -> str | None:
    if parameter["name"] == "ordering":
        return "no_such_field"
    schema = resolve(parameter.get("schema", {}))
    if schema.get("type") == "array":
        schema = resolve(schema.get("items", {}))
    if "enum" in schema:
        return "no-such-choice"
    if schema.get("type") == "boolean":
        return "maybe"
    if schema.get("type") in ("integer", "number"):
        return "abc"
    if schema.get("format") in ("date-time", "date"):
        return "not-a-date"
    return None


CASES = [
    (op, parameter["name"], value)
    for op in BRAND_OPERATIONS
    if op.method == "GET"
    for parameter in op.operation.get("parameters", [])
    if parameter["in"] == "query"
    and parameter["name"] not in FREE_TEXT | NOT_FILTERS
    and (value := bad_value(parameter)) is not None
]


def test_the_known_gap_is_among_the_cases():
    assert ("GET /tasks/", "is_periodic", "maybe") in {(op.id, n, v) for op, n, v in CASES}


@pytest.mark.parametrize(
    "op,name,value", CASES, ids=[f"{op.id}?{name}={value}" for op, name, value in CASES]
)
def test_a_bad_query_value_is_a_400_naming_the_parameter(op, name, value, world):
    client = client_for(str(AccessToken.for_user(world.owner)), str(world.brand.pk))
    response = client.get(op.url(own_pk(op, world)), {**call_for(op).query, name: value})
    assert response.status_code == 400, response.content[:500]
    body = response.json()
    assert body["error_code"] == "VALIDATION_ERROR" and name in body["field_errors"], body


def test_a_bad_cursor_is_a_400(world):
    client = client_for(str(AccessToken.for_user(world.owner)), str(world.brand.pk))
    response = client.get("/tasks/", {"cursor": "not-a-cursor"})
    assert response.status_code == 400
    assert response.json()["field_errors"] == {
        "cursor": ["Invalid cursor: follow next/previous as given."]
    }

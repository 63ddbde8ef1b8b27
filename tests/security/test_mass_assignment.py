"""Mass assignment: every writable operation, sent each server-owned field (read-only in the
schema, or only ever in responses, plus the usual suspects), must reject it with a 400 or ignore
it; the database never takes the value."""

import pytest
from rest_framework_simplejwt.tokens import AccessToken

from tests.security.conftest import client_for, own_pk, send
from tests.security.operations import BRAND_OPERATIONS, body_for, call_for

ALWAYS_SERVER_OWNED = {
    "id", "brand", "brand_id", "status", "created_at", "updated_at", "started_at",
    "completed_at", "result", "result_data", "attempts", "owner", "created_by",
    "created_by_id", "task_id", "progress_percentage", "error_message", "secret",
}  # fmt: skip
INJECTED_DATETIME = "2001-02-03T04:05:06Z"


def server_owned_fields(op) -> list[str]:
    request = op.request_schema() or {}
    writable = {
        name for name, prop in request.get("properties", {}).items() if not prop.get("readOnly")
    }
    in_responses = set()
    for schema in op.response_schemas():
        in_responses |= set(schema.get("properties", {}))
    return sorted((in_responses | ALWAYS_SERVER_OWNED) - writable)


def injected_value(field, world):
    if field in ("brand", "brand_id"):
        return world.other_brand.pk
    if field.endswith("_at"):
        return INJECTED_DATETIME
    if field in ("id", "attempts", "progress_percentage") or field.endswith("_id"):
        return 987654
    if field == "status":
        return "completed"
    if field in ("owner", "created_by"):
        return world.users["viewer"].pk
    return "injected-by-client"


def _stored(obj, field):
    for name in (field, f"{field}_id"):
        if hasattr(obj, name):
            value = getattr(obj, name)
            return value.isoformat() if hasattr(value, "isoformat") else value
    return None


def _applied(value, injected) -> bool:
    if isinstance(value, str) and injected == INJECTED_DATETIME:
        return value.startswith("2001-02-03")
    return value == injected


WRITES = [op for op in BRAND_OPERATIONS if op.writes]


@pytest.mark.parametrize("op", WRITES, ids=[op.id for op in WRITES])
def test_server_owned_fields_are_rejected_or_ignored(op, world):
    """All of the operation's server-owned fields in one request: a 400 must name every one of
    them (each was refused on its own), a success must have applied none of them."""
    fields = server_owned_fields(op)
    assert fields, op.id
    kind = call_for(op).kind
    model = type(world.own[kind]) if kind else None
    count_before = model._base_manager.count() if model else None
    injected = {field: injected_value(field, world) for field in fields}
    client = client_for(str(AccessToken.for_user(world.owner)), str(world.brand.pk))
    body = {**(body_for(op, world) or {}), **injected}
    response = send(client, op, world, own_pk(op, world), body=body)

    if response.status_code == 400:
        errors = response.json()
        assert errors["error_code"] == "VALIDATION_ERROR", errors
        assert set(fields) <= set(errors["field_errors"]), errors
        if model and not op.has_id:
            assert model._base_manager.count() == count_before  # nothing created
        return
    assert response.status_code in op.success_codes, response.content[:500]
    payload = response.json()
    for field, value in injected.items():
        if isinstance(payload, dict) and field in payload:
            assert not _applied(payload[field], value), (field, payload[field])
    if model is None:
        return
    if op.has_id:
        lookup = {"pk": own_pk(op, world)}
    elif "id" in payload:
        lookup = {"pk": payload["id"]}
    else:  # a brand event answers the seed's {event_uid, event_timestamp, event_data}
        lookup = {"event_uid": payload["event_uid"]}
    row = model._base_manager.filter(**lookup).first()
    if row is None:  # deleted by the operation itself: nothing to apply a value to
        return
    assert row.brand_id == world.brand.pk
    for field, value in injected.items():
        assert not _applied(_stored(row, field), value), (field, _stored(row, field))

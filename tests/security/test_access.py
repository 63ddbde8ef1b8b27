"""Every operation of the OpenAPI schema x every way of asking for it: the caller's own brand,
another brand's objects, a brand the caller is not a member of, no or a malformed X-Brand-ID,
and missing, expired, tampered or ``alg=none`` tokens. Foreign objects are 404, never 403, and
no answer ever carries another brand's data."""

import pytest
from rest_framework_simplejwt.tokens import AccessToken

from tests.security.conftest import (
    alg_none_token,
    client_for,
    expired_token,
    foreign_pk,
    own_pk,
    send,
    tampered_token,
)
from tests.security.operations import (
    BRAND_OPERATIONS,
    CALLS,
    OPERATIONS,
    SHARED_KINDS,
    call_for,
)

WITH_FOREIGN_IDS = [
    op for op in BRAND_OPERATIONS if op.has_id and call_for(op).kind not in SHARED_KINDS
]


def ids(ops):
    return [op.id for op in ops]


def assert_no_leak(response, world):
    text = response.content.decode()
    for marker in world.leak_markers():
        assert marker not in text, f"another brand's data ({marker!r}) in {text[:500]}"


def assert_error(response, status, code):
    assert response.status_code == status, response.content[:500]
    body = response.json()
    assert body["error_code"] == code, body
    assert isinstance(body["detail"], str) and body["detail"]


def test_every_operation_is_covered():
    """A new endpoint fails here until CALLS says how to call it and which role it needs."""
    in_schema = {op.id for op in OPERATIONS}
    assert in_schema - set(CALLS) == set(), "operations with no entry in operations.CALLS"
    assert set(CALLS) - in_schema == set(), "entries in operations.CALLS that left the schema"
    for op in BRAND_OPERATIONS:
        call = call_for(op)
        assert call.role in ("viewer", "operator", "admin"), op.id
        if op.has_id or op.is_list:
            assert call.kind, f"{op.id}: which object kind does it name or list?"
        if op.writes:
            assert call.body is not None, f"{op.id}: no request body"


@pytest.mark.parametrize("op", BRAND_OPERATIONS, ids=ids(BRAND_OPERATIONS))
def test_own_brand_succeeds_without_foreign_data(op, world):
    client = client_for(str(AccessToken.for_user(world.owner)), str(world.brand.pk))
    response = send(client, op, world, own_pk(op, world))
    assert response.status_code in op.success_codes, response.content[:500]
    assert_no_leak(response, world)
    kind = call_for(op).kind
    if op.is_list and not op.has_id and kind not in SHARED_KINDS:
        listed = {row["id"] for row in response.json()["results"]}
        assert listed, f"{op.id}: the caller's own {kind} is not listed"
        assert not listed & world.foreign_ids(kind)


@pytest.mark.parametrize("op", WITH_FOREIGN_IDS, ids=ids(WITH_FOREIGN_IDS))
def test_foreign_object_is_404_and_untouched(op, world):
    foreign = world.foreign[call_for(op).kind]
    before = type(foreign)._base_manager.filter(pk=foreign.pk).values().first()
    client = client_for(str(AccessToken.for_user(world.owner)), str(world.brand.pk))
    response = send(client, op, world, foreign_pk(op, world))
    assert response.status_code == 404, response.content[:500]
    code = response.json()["error_code"]
    assert code.endswith("_NOT_FOUND") and code != "NOT_FOUND", code
    assert_no_leak(response, world)
    assert type(foreign)._base_manager.filter(pk=foreign.pk).values().first() == before


# (scenario, token maker, brand header maker, status, error_code)
SCENARIOS = {
    "foreign-brand": ("valid", "other", 403, "BRAND_FORBIDDEN"),
    "no-brand-header": ("valid", None, 400, "BRAND_REQUIRED"),
    "malformed-brand-header": ("valid", "abc", 400, "BRAND_REQUIRED"),
    "zero-brand-header": ("valid", "0", 400, "BRAND_REQUIRED"),
    "no-token": (None, "own", 401, "NOT_AUTHENTICATED"),
    "expired-token": ("expired", "own", 401, "TOKEN_INVALID"),
    "tampered-token": ("tampered", "own", 401, "TOKEN_INVALID"),
    "alg-none-token": ("none", "own", 401, "TOKEN_INVALID"),
}
TOKENS = {
    "valid": lambda user: str(AccessToken.for_user(user)),
    "expired": expired_token,
    "tampered": tampered_token,
    "none": alg_none_token,
    None: lambda user: None,
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("op", BRAND_OPERATIONS, ids=ids(BRAND_OPERATIONS))
def test_refused_before_any_object_is_touched(op, scenario, world):
    token_kind, header, status, code = SCENARIOS[scenario]
    brand_header = {"own": str(world.brand.pk), "other": str(world.other_brand.pk)}.get(
        header, header
    )
    client = client_for(TOKENS[token_kind](world.owner), brand_header)
    # The path names the other brand's object where there is one: refused all the same.
    pk = foreign_pk(op, world) if call_for(op).kind not in SHARED_KINDS else own_pk(op, world)
    response = send(client, op, world, pk)
    assert_error(response, status, code)
    assert_no_leak(response, world)
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")

"""JWT lifecycle at the token endpoints, the page-size cap of every list, and throttling of
every operation (429 + Retry-After + the JSON error body)."""

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from tests.factories import MembershipFactory, UserFactory
from tests.security.conftest import (
    alg_none_token,
    client_for,
    expired_token,
    own_pk,
    send,
    tampered_token,
)
from tests.security.operations import BRAND_OPERATIONS, call_for


def assert_error(response, status, code):
    assert response.status_code == status, response.content[:500]
    assert response.json()["error_code"] == code, response.json()


def test_refresh_rotation_blacklists_the_used_refresh_token(world):
    client = APIClient()
    # A user of its own: the world's shared owner object must keep the password hash its
    # tokens are bound to.
    user = UserFactory(username="rotation", password="pw-123456")
    MembershipFactory(user=user, brand=world.brand, role="viewer")
    tokens = client.post("/auth/token/", {"username": "rotation", "password": "pw-123456"}).json()
    rotated = client.post("/auth/token/refresh/", {"refresh": tokens["refresh"]})
    assert rotated.status_code == 200 and rotated.json()["refresh"] != tokens["refresh"]
    assert_error(
        client.post("/auth/token/refresh/", {"refresh": tokens["refresh"]}), 401, "TOKEN_INVALID"
    )
    # The rotated pair works; so does its own refresh, once.
    api = client_for(rotated.json()["access"], str(world.brand.pk))
    assert api.get("/tasks/").status_code == 200
    again = client.post("/auth/token/refresh/", {"refresh": rotated.json()["refresh"]})
    assert again.status_code == 200


def _forged_refresh(user, how):
    token = RefreshToken.for_user(user)
    header, payload, signature = str(token).split(".")
    if how == "tampered":
        return f"{header}.{payload}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"
    if how == "expired":
        token.set_exp(lifetime=-RefreshToken.lifetime)
        return str(token)
    import base64
    import json

    def b64(data):
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(dict(token.payload))}."


@pytest.mark.parametrize("how", ["tampered", "expired", "alg-none"])
def test_forged_refresh_tokens_are_401(world, how):
    response = APIClient().post(
        "/auth/token/refresh/", {"refresh": _forged_refresh(world.owner, how)}
    )
    assert_error(response, 401, "TOKEN_INVALID")


@pytest.mark.parametrize("make", [expired_token, tampered_token, alg_none_token])
def test_verify_refuses_forged_access_tokens(world, make):
    assert_error(
        APIClient().post("/auth/token/verify/", {"token": make(world.owner)}), 401, "TOKEN_INVALID"
    )
    valid = str(AccessToken.for_user(world.owner))
    assert APIClient().post("/auth/token/verify/", {"token": valid}).status_code == 200


def test_wrong_password_is_401(world):
    response = APIClient().post(
        "/auth/token/", {"username": world.owner.username, "password": "wrong"}
    )
    assert_error(response, 401, "AUTHENTICATION_FAILED")


# --- page-size caps -----------------------------------------------------------------------------
LISTS = [op for op in BRAND_OPERATIONS if op.is_list]
# Lists of which the world holds several rows: there the cap must show as a next page.
MULTI_ROW_LISTS = {
    "/tasks/",
    "/tasks/persistent-jobs/persistent-jobs/",
    "/tasks/scheduled/periodic-tasks/",
}


@pytest.mark.parametrize("op", LISTS, ids=[op.id for op in LISTS])
def test_page_size_over_the_cap_is_capped(op, world, settings):
    client = client_for(str(AccessToken.for_user(world.owner)), str(world.brand.pk))
    uncapped = send(client, op, world, own_pk(op, world)).json()["results"]
    if op.path in MULTI_ROW_LISTS:
        assert len(uncapped) > 1
    settings.API_MAX_PAGE_SIZE = 1
    url = op.url(own_pk(op, world))
    for huge in ("2", "501", "1000000", str(10**40)):
        response = client.get(url, {**call_for(op).query, "page_size": huge})
        assert response.status_code == 200, response.content[:500]
        body = response.json()
        assert len(body["results"]) <= 1
        if len(uncapped) > 1:  # there is more than one row: the cap shows as a next page
            assert len(body["results"]) == 1 and body["next"]
    for bad in ("0", "-5", "abc", "1.5"):
        response = client.get(url, {**call_for(op).query, "page_size": bad})
        assert response.status_code == 400, response.content[:500]
        assert "page_size" in response.json()["field_errors"]


# --- throttling ---------------------------------------------------------------------------------
@pytest.fixture
def fresh_throttles():
    cache.clear()
    yield
    cache.clear()


@pytest.mark.parametrize("op", BRAND_OPERATIONS, ids=[op.id for op in BRAND_OPERATIONS])
def test_every_operation_is_throttled_with_retry_after(op, world, settings, fresh_throttles):
    settings.THROTTLE_USER_RATE = "1/minute"
    client = client_for(str(AccessToken.for_user(world.owner)), str(world.brand.pk))
    send(client, op, world, own_pk(op, world))
    response = send(client, op, world, own_pk(op, world))
    assert_error(response, 429, "THROTTLED")
    assert int(response["Retry-After"]) > 0 and response.json()["detail"]


def test_anonymous_token_requests_are_throttled(world, settings, fresh_throttles):
    settings.THROTTLE_ANON_RATE = "2/minute"
    client = APIClient()
    for _ in range(2):
        client.post("/auth/token/", {"username": "nobody", "password": "x"})
    response = client.post("/auth/token/", {"username": "nobody", "password": "x"})
    assert_error(response, 429, "THROTTLED")
    assert int(response["Retry-After"]) > 0


def test_an_unreachable_throttle_cache_never_fails_a_request(world, settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens there
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
    settings.THROTTLE_USER_RATE = "1/minute"
    client = client_for(str(AccessToken.for_user(world.owner)), str(world.brand.pk))
    for _ in range(2):
        assert client.get("/tasks/").status_code == 200

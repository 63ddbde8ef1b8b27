"""Token lifecycle (SPEC §2): a password change, a deactivation or a deletion revokes the user's
tokens at once; a refresh chain has an absolute end that rotation never extends."""

import time
from datetime import timedelta

import jwt
import pytest
from rest_framework.test import APIClient

from tests.factories import MembershipFactory, UserFactory

PASSWORD = "pw-123456"


@pytest.fixture
def person(brand):
    user = UserFactory(username="lifecycle", password=PASSWORD)
    MembershipFactory(user=user, brand=brand, role="viewer")
    return user


def login(user) -> dict:
    response = APIClient().post("/auth/token/", {"username": user.username, "password": PASSWORD})
    assert response.status_code == 200, response.content
    return response.json()


def claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def use(access: str, brand):
    return APIClient().get(
        "/tasks/", HTTP_AUTHORIZATION=f"Bearer {access}", HTTP_X_BRAND_ID=str(brand.pk)
    )


def refresh(token: str):
    return APIClient().post("/auth/token/refresh/", {"refresh": token})


def verify(token: str):
    return APIClient().post("/auth/token/verify/", {"token": token})


def assert_401(response):
    assert response.status_code == 401, response.content
    assert response.json()["error_code"] in ("AUTHENTICATION_FAILED", "TOKEN_INVALID")


def test_password_change_revokes_access_and_refresh_tokens(person, brand):
    tokens = login(person)
    assert use(tokens["access"], brand).status_code == 200
    person.set_password("a-new-password-42")
    person.save()
    assert_401(use(tokens["access"], brand))
    assert_401(refresh(tokens["refresh"]))
    assert_401(verify(tokens["access"]))
    assert_401(verify(tokens["refresh"]))
    # A new login works with the new password.
    fresh = (
        APIClient()
        .post("/auth/token/", {"username": person.username, "password": "a-new-password-42"})
        .json()
    )
    assert use(fresh["access"], brand).status_code == 200


def test_a_password_change_also_revokes_rotated_tokens(person, brand):
    rotated = refresh(login(person)["refresh"]).json()
    person.set_password("a-new-password-42")
    person.save()
    assert_401(use(rotated["access"], brand))
    assert_401(refresh(rotated["refresh"]))


def test_deactivation_revokes_tokens_everywhere(person, brand):
    tokens = login(person)
    person.is_active = False
    person.save()
    assert_401(use(tokens["access"], brand))
    assert_401(refresh(tokens["refresh"]))
    assert_401(verify(tokens["access"]))
    assert_401(verify(tokens["refresh"]))


def test_refresh_and_verify_of_a_deleted_users_token_are_401(person):
    tokens = login(person)
    person.delete()
    assert_401(refresh(tokens["refresh"]))
    assert_401(verify(tokens["access"]))


def test_other_users_tokens_survive_a_password_change(person, owner, brand):
    owner.set_password(PASSWORD)
    owner.save()
    theirs = login(owner)
    person.set_password("a-new-password-42")
    person.save()
    assert use(theirs["access"], brand).status_code == 200
    assert refresh(theirs["refresh"]).status_code == 200


def test_rotation_keeps_the_chains_absolute_end(person, settings):
    settings.JWT_REFRESH_ABSOLUTE_LIFETIME = timedelta(hours=2)
    first = login(person)
    chain_end = claims(first["refresh"])["chain_exp"]
    assert chain_end - claims(first["refresh"])["iat"] == 2 * 3600
    # The refresh lifetime (1 day) is longer than the chain: the chain's end wins.
    assert claims(first["refresh"])["exp"] == chain_end
    time.sleep(1.1)  # a later rotation would get a later fresh lifetime
    token = first["refresh"]
    for _ in range(3):
        rotated = refresh(token)
        assert rotated.status_code == 200, rotated.content
        token = rotated.json()["refresh"]
        assert claims(token)["chain_exp"] == chain_end
        assert claims(token)["exp"] <= chain_end
        assert claims(rotated.json()["access"])["exp"] <= chain_end


def test_a_refresh_chain_ends_at_its_absolute_lifetime(person, brand, settings):
    settings.JWT_REFRESH_ABSOLUTE_LIFETIME = timedelta(seconds=2)
    token = login(person)["refresh"]
    rotated = refresh(token)
    assert rotated.status_code == 200
    time.sleep(2.2)
    assert_401(refresh(rotated.json()["refresh"]))
    assert_401(use(rotated.json()["access"], brand))


def test_a_refresh_token_past_its_chain_end_is_refused_even_if_not_expired(person):
    from megahub.auth import RefreshToken

    token = RefreshToken.for_user(person)
    token["chain_exp"] = token["iat"] - 1  # signed by the server, chain already over
    response = refresh(str(token))
    assert response.status_code == 401 and response.json()["error_code"] == "TOKEN_INVALID"

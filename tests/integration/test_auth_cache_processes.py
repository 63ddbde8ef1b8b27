"""The authentication cache across processes (real HTTP, real Redis): two gunicorn workers with
warm entries in Redis refuse a revoked token, a deactivated user and a removed membership at
once when the change is saved in another process (this one, on the same Redis), and a change
written past the models' signals within AUTH_CACHE_SECONDS."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.contrib.auth import get_user_model
from rest_framework_simplejwt.tokens import AccessToken

from task_core.models import BrandMembership
from tests.factories import MembershipFactory, UserFactory
from tests.integration.conftest import free_port
from tests.integration.test_shared_throttles import REDIS_URL, redis_prefix  # noqa: F401

pytestmark = pytest.mark.integration
TTL = 3


@pytest.fixture
def web(start_process, redis_prefix, settings):  # noqa: F811
    # This process shares the web workers' cache: its saves drop their entries.
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": redis_prefix,
        }
    }
    port = free_port()
    start_process(
        "web",
        concurrency=2,
        env={
            "PORT": str(port),
            "REDIS_URL": REDIS_URL,
            "CACHE_KEY_PREFIX": redis_prefix,
            "AUTH_CACHE_SECONDS": str(TTL),
            "SECURE_SSL_REDIRECT": "0",
        },
    )
    return port


def statuses(port: int, user, brand, n: int = 8) -> set[int]:
    """n concurrent GET /tasks/ (both workers answer some)."""
    headers = {"Authorization": f"Bearer {AccessToken.for_user(user)}", "X-Brand-ID": str(brand.pk)}

    def get(_):
        return requests.get(f"http://127.0.0.1:{port}/tasks/", headers=headers, timeout=10)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return {r.status_code for r in pool.map(get, range(n))}


def test_saved_changes_are_refused_at_once_by_every_worker(web, brand):
    users = [UserFactory(username=f"cached-{i}") for i in range(3)]
    for user in users:
        MembershipFactory(user=user, brand=brand, role="viewer")
    tokens = {user.pk: AccessToken.for_user(user) for user in users}  # before any change
    for user in users:
        assert statuses(web, user, brand) == {200}  # every worker's entries are warm
    revoked, deactivated, removed = users
    revoked.set_password("changed-password-42")
    revoked.save()
    deactivated.is_active = False
    deactivated.save()
    BrandMembership.objects.for_brand(brand).get(user=removed).delete()

    def with_token(user) -> set[int]:
        headers = {"Authorization": f"Bearer {tokens[user.pk]}", "X-Brand-ID": str(brand.pk)}
        return {
            requests.get(f"http://127.0.0.1:{web}/tasks/", headers=headers, timeout=10).status_code
            for _ in range(6)
        }

    assert with_token(revoked) == {401}
    assert with_token(deactivated) == {401}
    assert with_token(removed) == {403}


def test_an_unsignalled_change_is_refused_within_the_ttl(web, brand):
    user = UserFactory(username="cached-quiet")
    MembershipFactory(user=user, brand=brand, role="viewer")
    assert statuses(web, user, brand) == {200}
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)  # no signal
    changed = time.monotonic()
    while statuses(web, user, brand, n=4) != {401}:
        assert time.monotonic() - changed < TTL + 2, "still served past the TTL"
        time.sleep(0.2)

"""The authentication cache (AUTH_CACHE_SECONDS, docs/configuration.md): a request reads the
user and the (user, brand) membership from Django's cache, yet a revoked token, a deactivated or
deleted user and a removed or demoted membership are refused at once when the change goes
through the models (their signals drop the entries), and within the TTL when it does not (a
``QuerySet.update()``, or another process on its own per-process cache). The same across two
web processes sharing Redis: tests/integration/test_auth_cache_processes.py."""

import time

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from megahub.auth import user_cache_key
from task_core.models import BrandMembership
from task_core.tenancy import membership_cache_key
from tests.factories import MembershipFactory, UserFactory

TTL = 1


@pytest.fixture
def viewer(brand):
    user = UserFactory(username="cached-viewer")
    MembershipFactory(user=user, brand=brand, role="viewer")
    return user


@pytest.fixture
def client(api, viewer, brand):
    client = api(viewer, brand)
    assert client.get("/tasks/").status_code == 200  # the entries are in the cache now
    return client


def assert_refused(response, status, codes):
    assert response.status_code == status, response.content
    assert response.json()["error_code"] in codes


def test_a_warm_request_reads_neither_the_user_nor_the_membership(client, viewer, brand):
    assert cache.get(user_cache_key(viewer.pk)) is not None
    assert cache.get(membership_cache_key(viewer.pk, brand.pk)) is not None
    with CaptureQueriesContext(connection) as captured:
        assert client.get("/tasks/").status_code == 200
    reads = " ".join(q["sql"] for q in captured.captured_queries)
    assert 'FROM "auth_user"' not in reads and "task_core_brandmembership" not in reads
    assert 'FROM "task_core_task"' in reads  # the page itself is still read


def test_the_cache_keeps_no_password_hash(client, viewer):
    cached = cache.get(user_cache_key(viewer.pk))
    assert "password" not in cached["fields"]
    assert viewer.password not in repr(cached)


def test_a_password_change_revokes_the_token_at_once(client, viewer):
    viewer.set_password("a-brand-new-one-42")
    viewer.save()
    assert_refused(client.get("/tasks/"), 401, {"AUTHENTICATION_FAILED"})


def test_a_deactivated_user_is_refused_at_once(client, viewer):
    viewer.is_active = False
    viewer.save()
    assert_refused(client.get("/tasks/"), 401, {"AUTHENTICATION_FAILED"})


def test_a_deleted_user_is_refused_at_once(client, viewer):
    viewer.delete()
    assert_refused(client.get("/tasks/"), 401, {"AUTHENTICATION_FAILED"})


def test_a_removed_membership_is_refused_at_once(client, viewer, brand):
    BrandMembership.objects.for_brand(brand).get(user=viewer).delete()
    assert_refused(client.get("/tasks/"), 403, {"BRAND_FORBIDDEN"})


def test_a_demoted_member_loses_the_role_at_once(api, brand):
    operator = UserFactory(username="cached-operator")
    membership = MembershipFactory(user=operator, brand=brand, role="operator")
    client = api(operator, brand)
    assert client.post("/tasks/", {"task_type": "noop"}, format="json").status_code == 201
    membership.role = "viewer"
    membership.save()
    assert_refused(
        client.post("/tasks/", {"task_type": "noop"}, format="json"), 403, {"ROLE_FORBIDDEN"}
    )


def test_a_deactivated_brand_is_refused_at_once(client, brand):
    brand.is_active = False
    brand.save()
    assert_refused(client.get("/tasks/"), 403, {"BRAND_FORBIDDEN"})


# Changes written in SQL, past the models' signals.
UNSIGNALLED = {
    "deactivate": ("UPDATE auth_user SET is_active = false WHERE id = %s", 401, "get"),
    "password": ("UPDATE auth_user SET password = 'md5$x$0' WHERE id = %s", 401, "get"),
    "membership": ("DELETE FROM task_core_brandmembership WHERE user_id = %s", 403, "get"),
    "demote": (
        "UPDATE task_core_brandmembership SET role = 'viewer' WHERE user_id = %s",
        403,
        "post",
    ),
}


@pytest.mark.parametrize("change", list(UNSIGNALLED))
def test_a_change_the_signals_miss_applies_within_the_ttl(settings, api, brand, change):
    """The entries stay until they expire, as they would in another process's per-process
    cache; then the request is refused."""
    settings.AUTH_CACHE_SECONDS = TTL
    operator = UserFactory(username="cached-operator")
    MembershipFactory(user=operator, brand=brand, role="operator")
    client = api(operator, brand)
    sql, status, method = UNSIGNALLED[change]

    def call():
        if method == "post":
            return client.post("/tasks/", {"task_type": "noop"}, format="json")
        return client.get("/tasks/")

    assert call().status_code in (200, 201)
    changed_at = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute(sql, [operator.pk])
    served = call().status_code
    if time.monotonic() - changed_at < TTL:
        assert served in (200, 201)  # from the cache: the change is not seen yet
    time.sleep(TTL + 0.1)
    codes = {401: {"AUTHENTICATION_FAILED"}, 403: {"BRAND_FORBIDDEN", "ROLE_FORBIDDEN"}}
    assert_refused(call(), status, codes[status])


def test_ttl_zero_reads_the_database_every_time(settings, client, viewer):
    settings.AUTH_CACHE_SECONDS = 0
    get_user_model().objects.filter(pk=viewer.pk).update(is_active=False)
    assert_refused(client.get("/tasks/"), 401, {"AUTHENTICATION_FAILED"})

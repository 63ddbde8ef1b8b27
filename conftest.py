"""Root fixtures: two brands and the people around them (owner, member of both, outsider)."""

import pytest
from django.core.cache import caches
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from tests.factories import BrandFactory, MembershipFactory, UserFactory

pytest_plugins = ["tests.browser"]  # the headless Chromium fixture of the browser tests


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    """Real-process tests first, the one in its own xdist group (three real minutes) before
    them: pytest-django puts every transactional test after the ~2,000 others, so under
    pytest-xdist the longest tests started last and the run waited for them at its end. Started
    first, they run while the short tests fill the other processes. The rest keeps
    pytest-django's order. No test reads rows that only migrations create (a transactional
    test's flush would have removed them)."""

    def rank(item) -> int:
        if item.get_closest_marker("integration") is None:
            return 2
        return 0 if item.get_closest_marker("xdist_group") is not None else 1

    items.sort(key=rank)


@pytest.fixture(autouse=True)
def _fresh_caches():
    """Every test starts with empty caches: throttle counters (and anything else cached) of
    one test never count against another in the same process."""
    for cache in caches.all():
        cache.clear()
    yield


@pytest.fixture
def brand(db):
    return BrandFactory(name="Humari", slug="humari")


@pytest.fixture
def other_brand(db):
    return BrandFactory(name="Acme", slug="acme")


@pytest.fixture
def owner(brand):
    """Admin of `brand` only."""
    user = UserFactory(username="owner")
    MembershipFactory(user=user, brand=brand, role="admin")
    return user


@pytest.fixture
def member(brand, other_brand):
    """Operator in both brands."""
    user = UserFactory(username="member")
    MembershipFactory(user=user, brand=brand, role="operator")
    MembershipFactory(user=user, brand=other_brand, role="operator")
    return user


@pytest.fixture
def outsider(other_brand):
    """Admin of `other_brand`, nothing in `brand`."""
    user = UserFactory(username="outsider")
    MembershipFactory(user=user, brand=other_brand, role="admin")
    return user


@pytest.fixture
def user_with_role(brand):
    def make(role):
        user = UserFactory(username=f"{role}-user")
        MembershipFactory(user=user, brand=brand, role=role)
        return user

    return make


@pytest.fixture
def api():
    """api(user, brand) -> APIClient with a real JWT and the X-Brand-ID header."""

    def make(user=None, brand=None, *, brand_header=None):
        client = APIClient()
        headers = {}
        if user is not None:
            headers["HTTP_AUTHORIZATION"] = f"Bearer {AccessToken.for_user(user)}"
        if brand_header is not None:
            headers["HTTP_X_BRAND_ID"] = brand_header
        elif brand is not None:
            headers["HTTP_X_BRAND_ID"] = str(brand.pk)
        client.credentials(**headers)
        return client

    return make

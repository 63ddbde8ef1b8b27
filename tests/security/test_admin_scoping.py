"""The Django admin as a staff user of one brand sees it: users, groups and token tables are
for superusers only, no page shows a token's value, and brand filters and brand choices list
only the staff user's own brands."""

import re

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from task_core.admin import BrandScopedAdmin
from task_core.models import Webhook
from tests.factories import BrandFactory, MembershipFactory, UserFactory

FOREIGN = "Zeta-Foreign-Brand"
TOKEN_VALUE = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+")  # an encoded JWT


@pytest.fixture
def brands(db):
    return BrandFactory(name="Own-One"), BrandFactory(name="Own-Two"), BrandFactory(name=FOREIGN)


@pytest.fixture
def staff(brands):
    """Staff member of two brands with every model permission (view, add, change, delete)."""
    user = UserFactory(username="staff-b", is_staff=True)
    user.user_permissions.set(Permission.objects.all())
    for brand in brands[:2]:
        MembershipFactory(user=user, brand=brand, role="admin")
    return user


@pytest.fixture
def foreign_admin_tokens(brands):
    """Brand A's admin logged in and rotated once: outstanding and blacklisted tokens exist."""
    user = UserFactory(username="foreign-admin", password="pw-123456", is_staff=True)
    MembershipFactory(user=user, brand=brands[2], role="admin")
    client = APIClient()
    tokens = client.post("/auth/token/", {"username": user.username, "password": "pw-123456"})
    client.post("/auth/token/refresh/", {"refresh": tokens.json()["refresh"]})
    return OutstandingToken.objects.filter(user=user)


TOKEN_PAGES = [
    "/admin/token_blacklist/outstandingtoken/",
    "/admin/token_blacklist/blacklistedtoken/",
    "/admin/auth/user/",
    "/admin/auth/group/",
]


def test_staff_cannot_open_token_tables_or_users(client, staff, foreign_admin_tokens):
    client.force_login(staff)
    for url in TOKEN_PAGES:
        assert client.get(url).status_code == 403, url
    for token in foreign_admin_tokens:
        page = client.get(f"/admin/token_blacklist/outstandingtoken/{token.pk}/change/")
        assert page.status_code in (302, 403, 404)
        assert token.token not in page.content.decode()
    blacklisted = BlacklistedToken.objects.get()
    url = f"/admin/token_blacklist/blacklistedtoken/{blacklisted.pk}/change/"
    assert client.get(url).status_code in (302, 403, 404)
    user_pk = foreign_admin_tokens[0].user_id
    assert client.get(f"/admin/auth/user/{user_pk}/change/").status_code in (302, 403, 404)
    index = client.get("/admin/").content.decode()
    assert "Outstanding tokens" not in index and "/admin/auth/user/" not in index


def test_no_admin_page_shows_a_token_value(admin_client, foreign_admin_tokens):
    blacklisted = BlacklistedToken.objects.get()
    pages = [*TOKEN_PAGES[:2], f"/admin/token_blacklist/blacklistedtoken/{blacklisted.pk}/change/"]
    pages += [
        f"/admin/token_blacklist/outstandingtoken/{t.pk}/change/" for t in foreign_admin_tokens
    ]
    for url in pages:
        page = admin_client.get(url)
        assert page.status_code == 200, url
        content = page.content.decode()
        assert not TOKEN_VALUE.search(content), url
        assert all(t.token not in content for t in foreign_admin_tokens), url
    # Searching by a token's value finds nothing either (it is not an oracle).
    value = foreign_admin_tokens[0].token
    listing = admin_client.get(TOKEN_PAGES[0], {"q": value}).content.decode()
    assert foreign_admin_tokens[0].jti not in listing


def test_superusers_still_manage_users(admin_client, staff):
    assert admin_client.get("/admin/auth/user/").status_code == 200
    assert admin_client.get(f"/admin/auth/user/{staff.pk}/change/").status_code == 200


def _brand_filtered_admins():
    for model, model_admin in admin.site._registry.items():
        if isinstance(model_admin, BrandScopedAdmin) and "brand" in model_admin.list_filter:
            yield model


def test_every_brand_filter_lists_only_the_staff_users_brands(client, staff, brands):
    models = list(_brand_filtered_admins())
    assert len(models) >= 10  # tasks, events, webhooks, metrics, alerts, jobs, schedules...
    client.force_login(staff)
    for model in models:
        url = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        page = client.get(url)
        assert page.status_code == 200, url
        content = page.content.decode()
        assert "Own-One" in content and "Own-Two" in content, url  # the filter is shown
        assert FOREIGN not in content, url


def test_superusers_brand_filter_lists_every_brand(admin_client, brands):
    content = admin_client.get("/admin/task_core/task/").content.decode()
    assert all(b.name in content for b in brands)


def test_brand_choices_in_forms_are_the_staff_users_brands(client, staff, brands):
    client.force_login(staff)
    form = client.get("/admin/task_core/webhook/add/").content.decode()
    assert "Own-One" in form and FOREIGN not in form

    def add_webhook(brand):
        return client.post(
            "/admin/task_core/webhook/add/",
            {"brand": brand.pk, "url": "https://hooks.example.com/x", "event_types": '["*"]',
             "is_active": "on", "description": "", "deliveries-TOTAL_FORMS": "0",
             "deliveries-INITIAL_FORMS": "0"},
        )  # fmt: skip

    assert add_webhook(brands[0]).status_code == 302  # saved in an own brand
    assert Webhook.objects.filter(brand=brands[0]).exists()
    refused = add_webhook(brands[2])
    assert refused.status_code == 200 and "Select a valid choice" in refused.content.decode()
    assert not Webhook.objects.filter(brand=brands[2]).exists()

"""Role x operation matrix, deny by default: viewer reads; operator also runs and steers tasks,
jobs, alerts and one-off jobs; admin also manages rules, schedules, calendars and webhooks."""

import pytest
from django.urls import get_resolver
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory, force_authenticate
from rest_framework_simplejwt.tokens import AccessToken

from task_core.api.tenancy import BrandScopedViewSet
from task_core.tenancy import Role
from tests.security.conftest import client_for, own_pk, send
from tests.security.operations import BRAND_OPERATIONS, call_for

ROLES = ["viewer", "operator", "admin"]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("op", BRAND_OPERATIONS, ids=[op.id for op in BRAND_OPERATIONS])
def test_role_matrix(op, role, world):
    user = world.users[role]
    client = client_for(str(AccessToken.for_user(user)), str(world.brand.pk))
    response = send(client, op, world, own_pk(op, world))
    if Role.allows(role, call_for(op).role):
        assert response.status_code in op.success_codes, response.content[:500]
    else:
        assert response.status_code == 403, response.content[:500]
        assert response.json()["error_code"] == "ROLE_FORBIDDEN"


def _routed_actions():
    """(viewset class, action) of every brand-scoped route in the URLconf."""

    def walk(patterns):
        for pattern in patterns:
            if hasattr(pattern, "url_patterns"):
                yield from walk(pattern.url_patterns)
                continue
            cls = getattr(pattern.callback, "cls", None)
            if cls and issubclass(cls, BrandScopedViewSet):
                for method, name in pattern.callback.actions.items():
                    if method in cls.http_method_names:  # the router maps PUT even when off
                        yield cls, name

    return sorted(set(walk(get_resolver().url_patterns)), key=lambda x: (x[0].__name__, x[1]))


@pytest.mark.parametrize(
    "cls,name", _routed_actions(), ids=[f"{c.__name__}.{n}" for c, n in _routed_actions()]
)
def test_every_routed_action_declares_its_role(cls, name):
    """An action missing from action_roles is refused to everyone (deny by default); a routed
    action nobody may call is a mistake, so each one must be declared."""
    assert cls.action_roles.get(name) in Role.values, f"{cls.__name__}.{name}"


class Undeclared(BrandScopedViewSet):
    action_roles = {"declared": "viewer"}

    @action(detail=False, methods=["get"])
    def declared(self, request):
        return Response({"ok": True})

    @action(detail=False, methods=["get"])
    def forgotten(self, request):
        return Response({"ok": True})


@pytest.mark.parametrize("role", ROLES)
def test_an_action_with_no_declared_role_is_denied_to_every_role(role, world):
    factory = APIRequestFactory()
    user = world.users[role]
    for name, expected in [("declared", 200), ("forgotten", 403)]:
        view = Undeclared.as_view({"get": name})
        request = factory.get(f"/{name}/", HTTP_X_BRAND_ID=str(world.brand.pk))
        force_authenticate(request, user=user)
        response = view(request)
        assert response.status_code == expected, (name, response.data)
        if expected == 403:
            assert response.data["error_code"] == "ROLE_FORBIDDEN"

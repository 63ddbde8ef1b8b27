"""Brand (tenant) resolution and the one base viewset every brand-scoped API must use.

The brand comes from the ``X-Brand-ID`` header (or ``?brand=`` for the browsable API), is
resolved once per request, and the user's active membership is checked before any view code
runs. ``BrandScopedViewSet`` filters every queryset by that brand and forbids subclasses from
overriding ``get_queryset``, so scoping cannot be forgotten.
"""

from __future__ import annotations

from django.db import models
from rest_framework import permissions, viewsets

from megahub.errors import BrandForbidden, BrandRequired, RoleForbidden
from megahub.inputs import BIGINT_MAX, InputRejected, parse_int

ROLE_RANK = {"viewer": 1, "operator": 2, "admin": 3}


class BrandScopedQuerySet(models.QuerySet):
    def for_brand(self, brand) -> BrandScopedQuerySet:
        return self.filter(brand=brand)

    def unscoped(self) -> BrandScopedQuerySet:
        """All brands' rows. Only system code (sweepers, superuser admin) may use this."""
        return self.all()


def parse_brand_id(raw: str | None) -> int:
    """A brand id: a positive integer written with the digits 0-9 (not ``²``, ``①``, U+FF11),
    within the id column's range."""
    if raw is None:
        raise BrandRequired()
    try:
        return parse_int(raw, low=1, high=BIGINT_MAX)
    except InputRejected:
        raise BrandRequired()


def resolve_brand(request):
    """Return (brand, membership) for the request's user, or raise BRAND_REQUIRED/FORBIDDEN.

    The brand is the X-Brand-ID header, or ``?brand=`` where a header cannot be set. A
    ``?brand=`` given beside the header must be well-formed and name the same brand: an
    ambiguous request is refused rather than guessed.
    """
    from task_core.models import BrandMembership  # the models live in task_core

    cached = getattr(request, "_megahub_brand", None)
    if cached is not None:
        return cached
    header = request.headers.get("X-Brand-ID")
    query = request.query_params.get("brand") if hasattr(request, "query_params") else None
    brand_id = parse_brand_id(header if header is not None else query)
    if header is not None and query is not None and parse_brand_id(query) != brand_id:
        raise BrandRequired("X-Brand-ID and ?brand= name different brands; send one of them.")
    membership = (
        BrandMembership.objects.select_related("brand")
        .filter(user=request.user, brand_id=brand_id, brand__is_active=True)
        .first()
    )
    if membership is None:
        raise BrandForbidden()
    request._megahub_brand = (membership.brand, membership)
    return request._megahub_brand


class HasBrandRole(permissions.BasePermission):
    """Authenticated, active member of the named brand, with the role the action requires."""

    def has_permission(self, request, view) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False  # DRF answers 401 NOT_AUTHENTICATED
        brand, membership = resolve_brand(request)
        request.brand, request.membership = brand, membership
        required = view.required_role()
        if required is None or ROLE_RANK[membership.role] < ROLE_RANK[required]:
            raise RoleForbidden()
        return True


class BrandScopedViewSet(viewsets.GenericViewSet):
    """Base of every brand-scoped viewset.

    Subclasses set ``model``/``queryset``, ``action_roles`` (action -> minimum role; an action
    not listed is denied), and customise the queryset through ``scope_queryset(qs)``.
    """

    permission_classes = [HasBrandRole]
    # Ids are integers written with ASCII digits ("\\d" would also match U+FF11 and "²"):
    # "/tasks/monitoring/" and the like never match a detail route.
    lookup_value_regex = r"[0-9]+"
    action_roles: dict[str, str] = {}
    not_found_code = "NOT_FOUND"
    not_found_detail = "Not found or access denied."

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "get_queryset" in cls.__dict__:
            raise TypeError(
                f"{cls.__name__} must not override get_queryset; use scope_queryset() instead."
            )

    def required_role(self) -> str | None:
        if self.action in (None, "metadata"):  # OPTIONS, or a method the view lacks (-> 405)
            return "viewer"
        return self.action_roles.get(self.action)

    def scope_queryset(self, queryset):
        """Hook for subclasses: select_related, annotations, per-action narrowing."""
        return queryset

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation has no brand
            return self.queryset.none()
        return self.scope_queryset(self.queryset.all().for_brand(self.request.brand))

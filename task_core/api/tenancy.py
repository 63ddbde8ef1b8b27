"""The API face of tenancy: the permission that resolves the brand, and the one base viewset
every brand-scoped API derives from (the data side is ``task_core.tenancy``)."""

from __future__ import annotations

from rest_framework import permissions, viewsets

from megahub.errors import RoleForbidden
from task_core.tenancy import Role, resolve_brand


class HasBrandRole(permissions.BasePermission):
    """Authenticated, active member of the named brand, with the role the action requires."""

    def has_permission(self, request, view) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False  # DRF answers 401 NOT_AUTHENTICATED
        brand, membership = resolve_brand(request)
        request.brand, request.membership = brand, membership
        required = view.required_role()
        if required is None or not Role.allows(membership.role, required):
            raise RoleForbidden()
        return True


class BrandScopedViewSet(viewsets.GenericViewSet):
    """Base of every brand-scoped viewset.

    Subclasses set ``queryset``, ``action_roles`` (action -> minimum role; an action not listed
    is denied), and customise the queryset through ``scope_queryset(qs)``. The scoping points
    (``get_queryset``, ``get_object``, ``get_permissions``) cannot be overridden, so no subclass
    can read another brand's rows or skip the membership check.
    """

    permission_classes = [HasBrandRole]
    brand_scoped = True  # read by megahub.schema (every operation names its brand)
    # Ids are integers: "/tasks/monitoring/" and the like never match a detail route.
    lookup_value_regex = r"[0-9]+"  # ASCII digits only (not ², ①, U+FF11)
    action_roles: dict[str, str] = {}
    not_found_code = "NOT_FOUND"
    not_found_detail = "Not found or access denied."
    # False only for shared infrastructure that carries no brand data (the worker fleet): its
    # rows are read whole, still behind the membership check.
    brand_owned = True

    GUARDED = ("get_queryset", "get_object", "get_permissions")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        overridden = [name for name in cls.GUARDED if name in cls.__dict__]
        if overridden:
            raise TypeError(
                f"{cls.__name__} must not override {', '.join(overridden)}; "
                "use scope_queryset() and action_roles instead."
            )

    def required_role(self) -> str | None:
        if self.action in (None, "metadata"):  # OPTIONS, or a method the view lacks (-> 405)
            return Role.VIEWER
        return self.action_roles.get(self.action)

    def scope_queryset(self, queryset):
        """Hook for subclasses: select_related, annotations, per-action narrowing."""
        return queryset

    def get_permissions(self):
        if not any(isinstance(p, HasBrandRole) for p in (c() for c in self.permission_classes)):
            raise TypeError(f"{type(self).__name__}.permission_classes must include HasBrandRole")
        return super().get_permissions()

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation has no brand
            return self.queryset.none()
        brand = getattr(self.request, "brand", None)
        if brand is None:  # the permission did not run: refuse rather than read every brand
            raise RuntimeError("BrandScopedViewSet queried before the brand was resolved")
        queryset = self.queryset.all()
        queryset = queryset.for_brand(brand) if self.brand_owned else queryset
        return self.scope_queryset(queryset)

    def get_object(self):
        obj = super().get_object()  # looked up in get_queryset(): the brand's rows only
        if self.brand_owned and obj.brand_id != self.request.brand.pk:
            raise RuntimeError("BrandScopedViewSet.get_object returned another brand's row")
        return obj

"""Tenancy, in one place: brands, memberships, roles, brand resolution, and the queryset every
brand-owned model uses, which fails closed.

A query on a brand-owned model must say whose rows it reads: ``.for_brand(brand)`` for brand
code, or the loud, greppable ``.unscoped()`` for system code (sweepers, the release loop,
superuser admin). ``Task.objects.filter(...)`` alone raises ``UnscopedQuery`` when evaluated,
so a forgotten scope is a crash in the tests, never a leak in production. Rows reached through
an object already read (``task.events.all()``) are scoped by that object.

The API face of tenancy (the permission and the base viewset) is ``task_core.api.tenancy``.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models.signals import post_delete, post_save

from megahub.auth import cache_delete, cache_get, cache_set
from megahub.errors import BrandForbidden, BrandRequired, NotFound
from megahub.inputs import BIGINT_MAX, InputRejected, is_ascii_int, parse_int


class Role(models.TextChoices):
    """A member's role in a brand; each role can do everything the roles before it can."""

    VIEWER = "viewer", "Viewer"
    OPERATOR = "operator", "Operator"
    ADMIN = "admin", "Admin"

    @classmethod
    def allows(cls, role: str | None, required: str) -> bool:
        """True when ``role`` is at least ``required`` (the one role check of every door)."""
        order = cls.values
        return role in order and order.index(role) >= order.index(required)


class UnscopedQuery(RuntimeError):
    """A brand-owned model was queried without .for_brand(brand) or .unscoped()."""


# Keyword lookups that name the brand(s) a query reads (Django's own uniqueness checks spell
# them this way too).
BRAND_LOOKUPS = frozenset({"brand", "brand_id", "brand__in", "brand_id__in", "brand__pk"})


class BrandScopedQuerySet(models.QuerySet):
    """Evaluating a query that has not been scoped raises ``UnscopedQuery``."""

    _brand_scoped = False

    def for_brand(self, brand) -> BrandScopedQuerySet:
        return self.filter(brand=brand)._scoped()

    def unscoped(self) -> BrandScopedQuerySet:
        """All brands' rows. Only system code (sweepers, superuser admin) may use this."""
        return self._scoped()

    def filter(self, *args, **kwargs) -> BrandScopedQuerySet:
        clone = super().filter(*args, **kwargs)
        if not clone._brand_scoped and BRAND_LOOKUPS.intersection(kwargs):
            clone._brand_scoped = True  # filtered by brand: scoped, whoever spelled it
        return clone

    def none(self) -> BrandScopedQuerySet:
        return super().none()._scoped()  # no rows at all: nothing to leak

    def _scoped(self) -> BrandScopedQuerySet:
        clone = self._chain()
        clone._brand_scoped = True
        return clone

    def _clone(self):
        clone = super()._clone()
        clone._brand_scoped = self._brand_scoped
        return clone

    def _require_scope(self) -> None:
        if not self._brand_scoped:
            raise UnscopedQuery(
                f"{self.model.__name__} queried without .for_brand(brand) or .unscoped()"
            )

    # Every way a QuerySet reaches the database goes through one of these.
    def _fetch_all(self):
        if self._result_cache is None:
            self._require_scope()
        super()._fetch_all()

    def iterator(self, *args, **kwargs):
        self._require_scope()
        return super().iterator(*args, **kwargs)

    def count(self) -> int:
        self._require_scope()
        return super().count()

    def exists(self) -> bool:
        self._require_scope()
        return super().exists()

    def aggregate(self, *args, **kwargs):
        self._require_scope()
        return super().aggregate(*args, **kwargs)

    def update(self, **kwargs) -> int:
        self._require_scope()
        return super().update(**kwargs)

    def delete(self):
        self._require_scope()
        return super().delete()

    def in_bulk(self, *args, **kwargs):
        self._require_scope()
        return super().in_bulk(*args, **kwargs)


class BrandScopedManager(models.Manager.from_queryset(BrandScopedQuerySet)):
    def get_queryset(self) -> BrandScopedQuerySet:
        queryset = super().get_queryset()
        # A related manager (``task.events``, ``job.checkpoints``) is filtered by an object
        # that was itself read through a scoped query.
        return queryset._scoped() if hasattr(self, "instance") else queryset


class Brand(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        app_label = "task_core"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class BrandMembership(models.Model):
    Role = Role

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = BrandScopedManager()

    class Meta:
        app_label = "task_core"
        constraints = [
            models.UniqueConstraint(fields=["user", "brand"], name="membership_unique_user_brand")
        ]

    def __str__(self) -> str:
        return f"{self.user} @ {self.brand} ({self.role})"


def parse_brand_id(raw: str | None) -> int:
    """A brand id: a positive integer written with the digits 0-9 (not ``²``, ``①``, U+FF11),
    within the id column's range."""
    if raw is None:
        raise BrandRequired()
    try:
        return parse_int(raw, low=1, high=BIGINT_MAX)
    except InputRejected:
        raise BrandRequired()


class UnknownBrand(NotFound):
    error_code = "UNKNOWN_BRAND"
    default_detail = "No such brand (give its id or slug)."


def brand_get(ref) -> Brand:
    """The one lookup of a brand named by a caller who is not an HTTP request (commands, the
    producer API): a ``Brand`` instance, its id (int, or a string of ASCII digits) or its slug.
    Raises ``UnknownBrand`` when there is no such brand."""
    if isinstance(ref, Brand):
        return ref
    if isinstance(ref, bool) or not isinstance(ref, int | str) or ref == "":
        raise UnknownBrand(f"No brand {ref!r} (give its id or slug).")
    if isinstance(ref, int) or is_ascii_int(ref):
        try:
            lookup = {"pk": parse_int(str(ref), low=1, high=BIGINT_MAX)}
        except InputRejected:
            raise UnknownBrand(f"No brand {ref!r} (give its id or slug).")
    else:
        lookup = {"slug": ref}
    brand = Brand.objects.filter(**lookup).first()
    if brand is None:
        raise UnknownBrand(f"No brand {ref!r} (give its id or slug).")
    return brand


def brand_membership(*, user, brand_id: int) -> BrandMembership | None:
    """The user's membership of an active brand, or None."""
    return (
        BrandMembership.objects.unscoped()
        .select_related("brand")
        .filter(user=user, brand_id=brand_id, brand__is_active=True)
        .first()
    )


def membership_cache_key(user_id, brand_id) -> str:
    return f"auth:membership:{user_id}:{brand_id}"


def _field_values(obj: models.Model) -> dict:
    return {f.attname: getattr(obj, f.attname) for f in obj._meta.concrete_fields}


def _from_values(model: type[models.Model], values: dict) -> models.Model:
    return model.from_db("default", list(values), list(values.values()))


def request_membership(*, user, brand_id: int) -> BrandMembership | None:
    """``brand_membership`` for a request, read from Django's cache for
    ``AUTH_CACHE_SECONDS``. Saving or deleting the membership or its brand drops the entry at
    once; a change that bypasses the model's signals takes effect within the TTL."""
    if settings.AUTH_CACHE_SECONDS <= 0:
        return brand_membership(user=user, brand_id=brand_id)
    key = membership_cache_key(user.pk, brand_id)
    cached = cache_get(key)
    if cached is None:
        membership = brand_membership(user=user, brand_id=brand_id)
        if membership is not None:
            cache_set(
                key,
                {"membership": _field_values(membership), "brand": _field_values(membership.brand)},
            )
        return membership
    membership = _from_values(BrandMembership, cached["membership"])
    membership.brand = _from_values(Brand, cached["brand"])
    membership.user = user
    return membership


def _drop_cached_membership(sender, instance, **kwargs) -> None:
    cache_delete(membership_cache_key(instance.user_id, instance.brand_id))


def _drop_cached_brand_memberships(sender, instance, **kwargs) -> None:
    """A brand renamed or deactivated: every member's entry goes (a deleted brand's memberships
    are deleted with it, each dropping its own)."""
    members = BrandMembership.objects.unscoped().filter(brand_id=instance.pk)
    keys = [membership_cache_key(u, instance.pk) for u in members.values_list("user_id", flat=True)]
    if keys:
        cache_delete(*keys)


post_save.connect(_drop_cached_membership, sender=BrandMembership, dispatch_uid="membership-cache")
post_delete.connect(
    _drop_cached_membership, sender=BrandMembership, dispatch_uid="membership-cache-delete"
)
post_save.connect(_drop_cached_brand_memberships, sender=Brand, dispatch_uid="brand-cache")


def member_with_role(*, user, brand_id: int, required: str) -> BrandMembership | None:
    """The membership when the user may act with ``required`` in the brand, else None (every
    door that is not a REST request: queue intake, commands)."""
    membership = brand_membership(user=user, brand_id=brand_id)
    if membership is None or not Role.allows(membership.role, required):
        return None
    return membership


def resolve_brand(request):
    """Return (brand, membership) for the request's user, or raise BRAND_REQUIRED/FORBIDDEN.

    The brand is the X-Brand-ID header, or ``?brand=`` where a header cannot be set. A
    ``?brand=`` given beside the header must be well-formed and name the same brand: an
    ambiguous request is refused rather than guessed.
    """
    cached = getattr(request, "_megahub_brand", None)
    if cached is not None:
        return cached
    header = request.headers.get("X-Brand-ID")
    query = request.query_params.get("brand") if hasattr(request, "query_params") else None
    brand_id = parse_brand_id(header if header is not None else query)
    if header is not None and query is not None and parse_brand_id(query) != brand_id:
        raise BrandRequired("X-Brand-ID and ?brand= name different brands; send one of them.")
    membership = request_membership(user=request.user, brand_id=brand_id)
    if membership is None:
        raise BrandForbidden()
    request._megahub_brand = (membership.brand, membership)
    return request._megahub_brand

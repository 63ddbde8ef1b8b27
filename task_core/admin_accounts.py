"""Admin of accounts and tokens: superusers only, and a token's value is never displayed.

Users, groups and simplejwt's token tables are not brand-scoped: a staff user of one brand
who could read them would see every brand's people, grant themselves permissions, or copy
another user's refresh token. Django model permissions alone (``view_outstandingtoken``...)
are therefore not enough here; only superusers get these pages.
"""

from django.contrib import admin
from django.contrib.auth import admin as auth_admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from rest_framework_simplejwt.token_blacklist import admin as token_admin
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken


class SuperuserOnlyMixin:
    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request, obj=None):
        return self.has_module_permission(request)

    def has_add_permission(self, request, *args, **kwargs):
        return self.has_module_permission(request) and super().has_add_permission(request, *args)

    def has_change_permission(self, request, obj=None):
        return self.has_module_permission(request) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return self.has_module_permission(request) and super().has_delete_permission(request, obj)


class OutstandingTokenAdmin(SuperuserOnlyMixin, token_admin.OutstandingTokenAdmin):
    """Which tokens exist (jti, user, dates); the encoded token itself is never shown."""

    exclude = ["token"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields if f.name != "token"]


class BlacklistedTokenAdmin(SuperuserOnlyMixin, token_admin.BlacklistedTokenAdmin):
    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request, *args, **kwargs):
        return False

    def has_change_permission(self, request, obj=None):
        return self.has_module_permission(request) and request.method in ("GET", "HEAD")


class UserAdmin(SuperuserOnlyMixin, auth_admin.UserAdmin):
    pass


class GroupAdmin(SuperuserOnlyMixin, auth_admin.GroupAdmin):
    pass


for model, model_admin in [
    (OutstandingToken, OutstandingTokenAdmin),
    (BlacklistedToken, BlacklistedTokenAdmin),
    (get_user_model(), UserAdmin),
    (Group, GroupAdmin),
]:
    if admin.site.is_registered(model):
        admin.site.unregister(model)
    admin.site.register(model, model_admin)

"""JWT lifecycle rules on top of simplejwt (docs/auth-and-tenancy.md, "Security rules").

- Every token carries simplejwt's revoke claim (a digest of the user's password hash,
  ``CHECK_REVOKE_TOKEN``): a password change makes every earlier access and refresh token
  fail at the next request, refresh or verify. The check costs nothing extra per request: the
  user row that authentication loads anyway is compared with the claim.
- A deactivated or deleted user's tokens fail everywhere (requests, refresh, verify).
- A refresh chain has an absolute end (``chain_exp``, set at login): rotation gives the new
  refresh token the chain's end, never a fresh lifetime, and no token of the chain outlives it.
- ``JWTAuthentication`` keeps what a request needs of the user (the row without its password
  hash, and the hash's digest the revoke claim is compared with) in Django's cache for
  ``AUTH_CACHE_SECONDS`` (shared by every process when ``REDIS_URL`` is set). Saving or
  deleting the user drops the entry at once (a password change, a deactivation); a change that
  bypasses the model's signals (``QuerySet.update()``, another process on the per-process
  cache) takes effect within the TTL.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db.models.signals import post_delete, post_save
from drf_spectacular.utils import extend_schema_field
from rest_framework import exceptions, serializers
from rest_framework_simplejwt import authentication, tokens
from rest_framework_simplejwt import serializers as jwt_serializers
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.utils import datetime_to_epoch, get_md5_hash_password

CHAIN_EXP_CLAIM = "chain_exp"
logger = logging.getLogger("megahub.auth")
# A JWT in compact form: three base64url segments (header, payload, signature). The schema says
# so; whether it is signed by this server and still live only the server can tell (a 401).
JWT_PATTERN = r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$"


@extend_schema_field({"type": "string", "pattern": JWT_PATTERN})
class JWTField(serializers.CharField):
    """A token sent back to the server (refresh, verify)."""


def _absolute_lifetime_seconds() -> int:
    return int(settings.JWT_REFRESH_ABSOLUTE_LIFETIME.total_seconds())


class RefreshToken(tokens.RefreshToken):
    """A refresh token that remembers when its chain (login) must end."""

    no_copy_claims = (*tokens.RefreshToken.no_copy_claims, CHAIN_EXP_CLAIM)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.token is None:  # a new chain (login): it ends an absolute lifetime from now
            self.payload[CHAIN_EXP_CLAIM] = self.payload["iat"] + _absolute_lifetime_seconds()
            self.payload["exp"] = min(self.payload["exp"], self.payload[CHAIN_EXP_CLAIM])

    @property
    def chain_exp(self) -> int:
        # Tokens minted before the claim existed: their chain ends a lifetime after their iat.
        return int(
            self.payload.get(CHAIN_EXP_CLAIM, self.payload["iat"] + _absolute_lifetime_seconds())
        )

    @property
    def access_token(self) -> tokens.AccessToken:
        access = super().access_token
        access["exp"] = min(access["exp"], self.chain_exp)
        return access


def token_user_check(payload) -> None:
    """Refuse a token whose user is gone, inactive, or changed password since it was issued."""
    user_id = payload.get(api_settings.USER_ID_CLAIM)
    if user_id is None:
        raise exceptions.AuthenticationFailed("Token contained no recognizable user identification")
    user = get_user_model().objects.filter(**{api_settings.USER_ID_FIELD: user_id}).first()
    if user is None or not api_settings.USER_AUTHENTICATION_RULE(user):
        raise exceptions.AuthenticationFailed("No active account found for the given token.")
    revoke = payload.get(api_settings.REVOKE_TOKEN_CLAIM)
    if api_settings.CHECK_REVOKE_TOKEN and revoke != get_md5_hash_password(user.password):
        raise exceptions.AuthenticationFailed("The user's password has been changed.")


class TokenObtainPairSerializer(jwt_serializers.TokenObtainPairSerializer):
    token_class = RefreshToken


class TokenRefreshSerializer(jwt_serializers.TokenRefreshSerializer):
    """Rotation with blacklisting, the user checks, and the chain's absolute end kept."""

    token_class = RefreshToken
    refresh = JWTField()

    def validate(self, attrs):
        refresh = self.token_class(attrs["refresh"])
        token_user_check(refresh.payload)
        chain_exp = refresh.chain_exp
        if chain_exp <= datetime_to_epoch(refresh.current_time):
            raise TokenError("The session has reached its absolute lifetime; log in again.")
        data = {"access": str(refresh.access_token)}
        if api_settings.ROTATE_REFRESH_TOKENS:
            if api_settings.BLACKLIST_AFTER_ROTATION:
                refresh.blacklist()
            refresh.set_jti()
            refresh.set_exp()
            refresh.set_iat()
            refresh[CHAIN_EXP_CLAIM] = chain_exp
            refresh["exp"] = min(refresh["exp"], chain_exp)
            refresh.outstand()
            data["refresh"] = str(refresh)
        return data


class TokenVerifySerializer(jwt_serializers.TokenVerifySerializer):
    """Signature, expiry and blacklist (simplejwt), then the user checks."""

    token = JWTField(write_only=True)

    def validate(self, attrs):
        super().validate(attrs)
        token_user_check(tokens.UntypedToken(attrs["token"]).payload)
        return {}


# --- the authenticated user, cached for a few seconds ---------------------------------------
def user_cache_key(user_id) -> str:
    return f"auth:user:{user_id}"


def cache_get(key: str):
    """A cache read that never fails a request (an unreachable cache server reads as a miss)."""
    try:
        return cache.get(key)
    except Exception:
        logger.warning("auth cache unavailable; reading the database", exc_info=True)
        return None


def cache_set(key: str, value) -> None:
    try:
        cache.set(key, value, settings.AUTH_CACHE_SECONDS)
    except Exception:
        logger.warning("auth cache unavailable; entry not stored", exc_info=True)


def cache_delete(*keys: str) -> None:
    try:
        cache.delete_many(list(keys))
    except Exception:  # the entry expires within AUTH_CACHE_SECONDS anyway
        logger.warning("auth cache unavailable; entries not dropped", exc_info=True)


class JWTAuthentication(authentication.JWTAuthentication):
    """simplejwt's JWT authentication (the same checks: user exists, is active, the token's
    revoke claim matches the password), reading the user row at most once per
    ``AUTH_CACHE_SECONDS`` (0: every request)."""

    def get_user(self, validated_token):
        if settings.AUTH_CACHE_SECONDS <= 0:
            return super().get_user(validated_token)
        user_id = validated_token.get(api_settings.USER_ID_CLAIM)
        key = user_cache_key(user_id)
        cached = cache_get(key) if user_id is not None else None
        if cached is None:
            user = super().get_user(validated_token)  # every check, against the database
            fields = {
                f.attname: getattr(user, f.attname)
                for f in user._meta.concrete_fields
                if f.attname != "password"  # never in the cache: loaded on access if needed
            }
            cache_set(key, {"fields": fields, "revoke": get_md5_hash_password(user.password)})
            return user
        if api_settings.CHECK_USER_IS_ACTIVE and not cached["fields"].get("is_active", True):
            raise exceptions.AuthenticationFailed("User is inactive", code="user_inactive")
        if (
            api_settings.CHECK_REVOKE_TOKEN
            and validated_token.get(api_settings.REVOKE_TOKEN_CLAIM) != cached["revoke"]
        ):
            raise exceptions.AuthenticationFailed(
                "The user's password has been changed.", code="password_changed"
            )
        names = list(cached["fields"])
        return self.user_model.from_db("default", names, list(cached["fields"].values()))


def _drop_cached_user(sender, instance, **kwargs) -> None:
    cache_delete(user_cache_key(instance.pk))


post_save.connect(
    _drop_cached_user, sender=settings.AUTH_USER_MODEL, dispatch_uid="auth-user-cache"
)
post_delete.connect(
    _drop_cached_user, sender=settings.AUTH_USER_MODEL, dispatch_uid="auth-user-cache-delete"
)

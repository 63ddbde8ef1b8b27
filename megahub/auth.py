"""JWT lifecycle rules on top of simplejwt (docs/auth-and-tenancy.md, "Security rules").

- Every token carries simplejwt's revoke claim (a digest of the user's password hash,
  ``CHECK_REVOKE_TOKEN``): a password change makes every earlier access and refresh token
  fail at the next request, refresh or verify. The check costs nothing extra per request: the
  user row that authentication loads anyway is compared with the claim.
- A deactivated or deleted user's tokens fail everywhere (requests, refresh, verify).
- A refresh chain has an absolute end (``chain_exp``, set at login): rotation gives the new
  refresh token the chain's end, never a fresh lifetime, and no token of the chain outlives it.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema_field
from rest_framework import exceptions, serializers
from rest_framework_simplejwt import serializers as jwt_serializers
from rest_framework_simplejwt import tokens
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.utils import datetime_to_epoch, get_md5_hash_password

CHAIN_EXP_CLAIM = "chain_exp"
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

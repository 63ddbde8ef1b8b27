"""POST /auth/token/refresh/ (SIMPLE_JWT["TOKEN_REFRESH_SERIALIZER"]): simplejwt's refresh,
except that a token whose user no longer exists is a 401 TOKEN_INVALID (simplejwt's own
lookup raises DoesNotExist, a 500)."""

from django.contrib.auth import get_user_model
from rest_framework_simplejwt.exceptions import InvalidToken
from rest_framework_simplejwt.serializers import TokenRefreshSerializer as BaseRefreshSerializer


class TokenRefreshSerializer(BaseRefreshSerializer):
    def validate(self, attrs):
        try:
            return super().validate(attrs)
        except get_user_model().DoesNotExist:
            raise InvalidToken("The token's user no longer exists.")

"""OpenAPI generation: every operation documents the errors it can answer, in megahub's error
shape, so clients (and the schema-driven tests) know every status code to expect."""

from drf_spectacular.openapi import AutoSchema
from rest_framework import permissions, serializers
from rest_framework_simplejwt.views import TokenViewBase


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    error_code = serializers.CharField(help_text="UPPER_SNAKE code, listed in docs/errors.md.")
    field_errors = serializers.DictField(
        required=False,
        child=serializers.JSONField(),
        help_text="Field name -> messages (nested for nested fields); on 400s of bad input.",
    )

    class Meta:
        ref_name = "Error"


class MegahubAutoSchema(AutoSchema):
    def _error_codes(self) -> dict[str, str]:
        view = self.view
        codes = {"429": "THROTTLED (with Retry-After)"}
        if self.method in ("POST", "PUT", "PATCH") or self._has_query_parameters():
            codes["400"] = "VALIDATION_ERROR, MALFORMED_REQUEST, or another bad-input code"
        public = all(isinstance(p, permissions.AllowAny) for p in view.get_permissions())
        # The token views check credentials themselves: a wrong password or token is a 401.
        if not public or view.get_authenticators() or isinstance(view, TokenViewBase):
            codes["401"] = "NOT_AUTHENTICATED, AUTHENTICATION_FAILED or TOKEN_INVALID"
        if getattr(view, "brand_scoped", False):  # task_core.api.tenancy.BrandScopedViewSet
            codes["400"] = "BRAND_REQUIRED, VALIDATION_ERROR or another bad-input code"
            codes["403"] = "BRAND_FORBIDDEN or ROLE_FORBIDDEN"
            if self.method in ("POST", "PUT", "PATCH", "DELETE"):
                codes["409"] = "The object's state or a uniqueness rule refuses the operation"
        if "{" in self.path:
            codes["404"] = "Not found in this brand, or it belongs to another brand"
        if self.method in ("POST", "PUT", "PATCH"):
            codes["415"] = "UNSUPPORTED_MEDIA_TYPE"
        return codes

    def _has_query_parameters(self) -> bool:
        return bool(self._get_filter_parameters() or self._get_pagination_parameters())

    def _get_response_bodies(self, direction="response"):
        bodies = super()._get_response_bodies(direction)
        if direction != "response":
            return bodies
        for code, description in sorted(self._error_codes().items()):
            if code not in bodies:
                body = self._get_response_for_code(ErrorSerializer, code, direction=direction)
                bodies[code] = {**body, "description": description}
        return bodies

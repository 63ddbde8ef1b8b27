"""OpenAPI generation, in one place for every view:

- every operation documents the errors it can answer, in megahub's error shape, so clients
  (and the schema-driven tests) know every status code to expect;
- every brand-scoped operation declares ``X-Brand-ID`` (a required header) and its ``?brand=``
  fallback, and asks for the brand beside the token in its security requirement, so that a
  generated client and Swagger UI's "Authorize" send it;
- operations are tagged by app (the first segments of their path), and list pages declare
  ``page_size`` as what it is, a positive integer;
- megahub's input rules (megahub.inputs) are in the schema of every input, so that a client
  (and the schema-driven tests) know what the server refuses: text (query parameters, string
  fields, JSON object keys) holds no NUL character, a datetime's UTC offset is at most ±15:59,
  and a list the server refuses empty has at least one item.
"""

from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import force_instance
from rest_framework import permissions, serializers
from rest_framework_simplejwt.views import TokenViewBase

from megahub.inputs import BIGINT_MAX

# Text without a NUL character (megahub.inputs.check_text, the parser, the filter backend).
# Lone surrogates are refused too, but they are not Unicode text: a pattern cannot name them
# portably (an ECMAScript regex sees the two halves of every non-BMP character as surrogates).
TEXT_PATTERN = "^[^\\u0000]*$"
# The same, with a character other than whitespace: what a text field that may not be blank
# takes (DRF trims the value before that check).
NON_BLANK_PATTERN = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"
# An RFC 3339 date-time ends with Z or an offset; PostgreSQL stores offsets up to ±15:59.
DATETIME_PATTERN = "(?:[Zz]|[+-](?:0[0-9]|1[0-5]):[0-5][0-9])$"


def constrain_input(schema: dict) -> dict:
    """Add megahub's input rules to the schema of an input value, in place (nested lists and
    objects included; a $ref is left alone: its component gets them where it is built)."""
    if not isinstance(schema, dict) or "$ref" in schema:
        return schema
    if schema.get("type") == "string" and "enum" not in schema and "pattern" not in schema:
        if schema.get("format") == "date-time":
            schema["pattern"] = DATETIME_PATTERN
        elif "format" not in schema:
            schema["pattern"] = TEXT_PATTERN
    if schema.get("type") == "object" and schema.get("additionalProperties") is not False:
        schema.setdefault("propertyNames", {"pattern": TEXT_PATTERN})
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            constrain_input(schema[key])
    for key in ("oneOf", "anyOf", "allOf"):
        for sub in schema.get(key, []):
            constrain_input(sub)
    for sub in schema.get("properties", {}).values():
        constrain_input(sub)
    return schema


class JWTScheme(SimpleJWTScheme):
    """megahub.auth.JWTAuthentication (simplejwt's, with its user cached) is ``jwtAuth``."""

    target_class = "megahub.auth.JWTAuthentication"


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    error_code = serializers.CharField(help_text="UPPER_SNAKE code, listed in docs/errors.md.")
    field_errors = serializers.DictField(
        child=serializers.JSONField(),
        help_text="Field name -> messages (nested for nested fields); {} when no field is at "
        "fault.",
    )

    class Meta:
        ref_name = "Error"


BRAND_ID_SCHEMA = {"type": "integer", "minimum": 1, "maximum": BIGINT_MAX}
BRAND_HEADER = {
    "in": "header",
    "name": "X-Brand-ID",
    "required": True,
    "schema": BRAND_ID_SCHEMA,
    "description": "The brand (tenant) the request acts in; the user must be an active member. "
    "Missing or malformed: 400 BRAND_REQUIRED; not a member: 403 BRAND_FORBIDDEN.",
    "example": 1,
}
BRAND_QUERY = {
    "in": "query",
    "name": "brand",
    "required": False,
    "schema": BRAND_ID_SCHEMA,
    "description": "Fallback for a client that cannot set headers (a browser on the browsable "
    "API): the brand id, read only when X-Brand-ID is absent.",
}

# Path prefix -> tag; the first match wins (so the longer prefixes come first).
TAGS = [
    ("/tasks/monitoring/", "monitoring"),
    ("/tasks/persistent-jobs/", "persistent jobs"),
    ("/tasks/scheduled/", "scheduling"),
    ("/tasks/webhooks/", "webhooks"),
    ("/tasks/", "tasks"),
    ("/auth/", "auth"),
]


class MegahubAutoSchema(AutoSchema):
    @property
    def brand_scoped(self) -> bool:
        return getattr(self.view, "brand_scoped", False)  # task_core's BrandScopedViewSet

    def map_parsers(self) -> list[str]:
        # The API speaks JSON. The form and multipart parsers serve the browsable API's HTML
        # forms; documenting them would make generated clients send forms.
        return ["application/json"]

    def get_tags(self) -> list[str]:
        path = self.path if self.path.startswith("/") else f"/{self.path}"
        for prefix, tag in TAGS:
            if path.startswith(prefix):
                return [tag]
        return super().get_tags()

    def _get_parameters(self):
        parameters = super()._get_parameters()
        ordering_fields = getattr(self.view, "ordering_fields", None)
        for parameter in parameters:
            if parameter["in"] == "query" and parameter["name"] == "ordering" and ordering_fields:
                # What the view offers (StrictOrderingFilter refuses anything else).
                names = [name for field in ordering_fields for name in (field, f"-{field}")]
                parameter["schema"] = {"type": "string", "enum": names}
                parameter["description"] = "Order of the rows: a field, `-` for descending."
            if parameter["in"] == "query" and parameter["name"] == "page_size":
                parameter["schema"] = {"type": "integer", "minimum": 1}
                parameter["description"] = (
                    "Rows per page (default 50); above the maximum (500) it is capped."
                )
            if parameter["in"] == "query":
                constrain_input(parameter["schema"])
        if self.brand_scoped:
            parameters = [dict(BRAND_HEADER), dict(BRAND_QUERY), *parameters]
        return parameters

    def _map_basic_serializer(self, serializer, direction):
        schema = super()._map_basic_serializer(serializer, direction)
        if direction != "request":
            return schema
        serializer = force_instance(serializer)
        if getattr(serializer, "refuse_unknown_fields", False):  # StrictInputSerializer
            schema["additionalProperties"] = False
        for field in serializer.fields.values():
            prop = schema["properties"].get(field.field_name)
            if prop is None:
                continue
            if isinstance(field, serializers.ListField) and not field.allow_empty:
                prop.setdefault("minItems", 1)
            if (
                isinstance(field, serializers.CharField)
                and not field.allow_blank
                and field.trim_whitespace
                and prop.get("type") == "string"
                and not {"enum", "pattern", "format"} & prop.keys()
            ):
                prop["pattern"] = NON_BLANK_PATTERN
        return constrain_input(schema)

    def _get_request_for_media_type(self, serializer, direction="request"):
        schema, required = super()._get_request_for_media_type(serializer, direction)
        return constrain_input(schema) if schema is not None else None, required

    def get_auth(self):
        auths = super().get_auth()
        if not self.brand_scoped:
            return auths
        # The brand goes with the credentials: Swagger's Authorize sends both.
        return [{**auth, "brandHeader": []} for auth in auths if auth]

    def _error_codes(self) -> dict[str, str]:
        view = self.view
        codes = {"429": "THROTTLED (with Retry-After)"}
        if self.method in ("POST", "PUT", "PATCH") or self._has_query_parameters():
            codes["400"] = "VALIDATION_ERROR, MALFORMED_REQUEST, or another bad-input code"
        public = all(isinstance(p, permissions.AllowAny) for p in view.get_permissions())
        # The token views check credentials themselves: a wrong password or token is a 401.
        if not public or view.get_authenticators() or isinstance(view, TokenViewBase):
            codes["401"] = "NOT_AUTHENTICATED, AUTHENTICATION_FAILED or TOKEN_INVALID"
        if self.brand_scoped:
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


# The docs pages are served from the sidecar's static files and must load nothing from another
# origin (a closed network, a privacy policy). The policy also stops what the bundles would
# fetch by themselves (Redoc's "powered by" logo from its CDN).
DOCS_CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline'",  # drf-spectacular inlines the Swagger UI set-up
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "worker-src 'self' blob:",  # Redoc's search index runs in a blob: worker
        "connect-src 'self'",
    ]
)


def self_contained(view):
    """Wrap a docs page view: the answer carries DOCS_CSP."""

    def wrapped(request, *args, **kwargs):
        response = view(request, *args, **kwargs)
        response["Content-Security-Policy"] = DOCS_CSP
        return response

    return wrapped

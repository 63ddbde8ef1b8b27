"""Domain errors and the one place that turns any error into megahub's JSON error format.

Every error response has the shape ``{"detail": str, "error_code": "UPPER_SNAKE",
"field_errors": {...}}``: all three keys always, ``field_errors`` empty when no field is at
fault (401, 403, 404, 405, 409, 429, 5xx), so a client reads one shape whatever the status.
No stack trace or SQL ever reaches a client: unexpected exceptions are logged and answered
with ``INTERNAL_ERROR``.
"""

import logging

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError

logger = logging.getLogger("megahub.errors")


class DomainError(Exception):
    """A business rule refused the operation. Raised by services, rendered by the handler."""

    status_code = status.HTTP_400_BAD_REQUEST
    error_code = "BAD_REQUEST"
    default_detail = "The request was refused."

    def __init__(self, detail: str | None = None, *, field_errors: dict | None = None):
        self.detail = detail or self.default_detail
        self.field_errors = field_errors
        super().__init__(self.detail)


class DomainValidationError(DomainError):
    error_code = "VALIDATION_ERROR"
    default_detail = "Invalid input."

    def __init__(self, detail=None, *, field_errors=None, error_code=None):
        super().__init__(detail, field_errors=field_errors or {})
        if error_code:
            self.error_code = error_code


class RequestTooLarge(DomainError):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    error_code = "REQUEST_TOO_LARGE"
    default_detail = "The request body is over the size limit."


class NotFound(DomainError):
    status_code = status.HTTP_404_NOT_FOUND
    error_code = "NOT_FOUND"
    default_detail = "Not found or access denied."


class Conflict(DomainError):
    status_code = status.HTTP_409_CONFLICT
    error_code = "CONFLICT"


class AccessError(exceptions.APIException):
    """Refusals raised while checking access (permission classes). DRF exceptions, so that
    DRF's own machinery (e.g. the browsable API probing which forms to show) handles them."""

    error_code = "PERMISSION_DENIED"


class BrandRequired(AccessError):
    status_code = status.HTTP_400_BAD_REQUEST
    error_code = "BRAND_REQUIRED"
    default_detail = (
        "Name the brand with the X-Brand-ID header, or with ?brand=<id> in the URL where a "
        "header cannot be set (a browser): a positive integer."
    )


class BrandForbidden(AccessError):
    status_code = status.HTTP_403_FORBIDDEN
    error_code = "BRAND_FORBIDDEN"
    default_detail = "You are not an active member of this brand, or it is inactive."


class RoleForbidden(AccessError):
    status_code = status.HTTP_403_FORBIDDEN
    error_code = "ROLE_FORBIDDEN"
    default_detail = "Your role in this brand does not allow this operation."


class ServiceUnavailable(DomainError):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    error_code = "SERVICE_UNAVAILABLE"
    default_detail = "A backing service is unavailable; retry shortly."


# DRF exception class -> error_code. Subclasses are matched through the MRO.
_DRF_CODES: dict[type, str] = {
    exceptions.ParseError: "MALFORMED_REQUEST",
    exceptions.NotAuthenticated: "NOT_AUTHENTICATED",
    exceptions.AuthenticationFailed: "AUTHENTICATION_FAILED",
    exceptions.PermissionDenied: "PERMISSION_DENIED",
    exceptions.NotFound: "NOT_FOUND",
    exceptions.MethodNotAllowed: "METHOD_NOT_ALLOWED",
    exceptions.NotAcceptable: "NOT_ACCEPTABLE",
    exceptions.UnsupportedMediaType: "UNSUPPORTED_MEDIA_TYPE",
    exceptions.Throttled: "THROTTLED",
    exceptions.ValidationError: "VALIDATION_ERROR",
}


def error_body(detail: str, error_code: str, field_errors: dict | None = None) -> dict:
    return {"detail": detail, "error_code": error_code, "field_errors": field_errors or {}}


def _flatten(detail) -> str:
    if isinstance(detail, dict):
        detail = detail.get("detail", next(iter(detail.values()), ""))
    if isinstance(detail, list):
        detail = detail[0] if detail else ""
    return str(detail)


def _field_errors(detail) -> dict:
    if isinstance(detail, dict):
        return {key: _field_messages(value) for key, value in detail.items()}
    return {
        "non_field_errors": [str(v) for v in (detail if isinstance(detail, list) else [detail])]
    }


def _field_messages(value):
    """Messages of one field; nested objects stay nested, list items are keyed by index."""
    if isinstance(value, dict):
        return _field_errors(value)
    if isinstance(value, list) and any(isinstance(v, dict) for v in value):
        return {str(i): _field_errors(v) for i, v in enumerate(value) if v}
    return [str(v) for v in (value if isinstance(value, list) else [value])]


def _code_for(exc: exceptions.APIException) -> str:
    if isinstance(exc, AccessError):
        return exc.error_code
    for klass in type(exc).__mro__:
        if klass in _DRF_CODES:
            return _DRF_CODES[klass]
    return str(exc.default_code).upper()


def _too_large_body() -> dict:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return error_body(
        f"The request body is larger than the limit of {limit} bytes.", "REQUEST_TOO_LARGE", {}
    )


def api_exception_handler(exc, context):
    """DRF EXCEPTION_HANDLER: render every error as megahub's JSON error format."""
    view = context.get("view")
    if isinstance(exc, RequestDataTooBig):
        return Response(_too_large_body(), status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, SuspiciousOperation):  # e.g. too many form fields: bad input
        return Response(
            error_body("The request was refused as malformed.", "MALFORMED_REQUEST", {}),
            status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, DomainError):
        response = Response(
            error_body(exc.detail, exc.error_code, exc.field_errors), exc.status_code
        )
        if exc.status_code == 503:
            response["Retry-After"] = "5"
        return response
    if isinstance(exc, Http404 | exceptions.NotFound):
        code = getattr(view, "not_found_code", "NOT_FOUND")
        detail = getattr(view, "not_found_detail", "Not found or access denied.")
        return Response(error_body(detail, code), status.HTTP_404_NOT_FOUND)
    if isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    if isinstance(exc, InvalidToken | TokenError):
        detail = exc.args[0] if isinstance(exc, TokenError) else exc.detail
        return Response(
            error_body(_flatten(detail), "TOKEN_INVALID"),
            status.HTTP_401_UNAUTHORIZED,
            headers={"WWW-Authenticate": 'Bearer realm="api"'},
        )
    if isinstance(exc, exceptions.APIException):
        headers = {}
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
            headers["Retry-After"] = str(int(exc.wait) + 1)
        if isinstance(exc, exceptions.ValidationError):
            errors = _field_errors(exc.detail)
            first = next(iter(errors.items()), ("", [""]))
            detail = f"Invalid input: {first[0]}: {_flatten(first[1])}" if errors else "Invalid."
            body = error_body(detail, "VALIDATION_ERROR", errors)
        elif isinstance(exc, exceptions.ParseError):
            body = error_body(_flatten(exc.detail), "MALFORMED_REQUEST", {})
        else:
            body = error_body(_flatten(exc.detail), _code_for(exc))
        return Response(body, exc.status_code, headers=headers)
    if isinstance(exc, OperationalError | InterfaceError):
        logger.exception("database unavailable", extra={"view": type(view).__name__})
        return Response(
            error_body("The database is unavailable; retry shortly.", "DATABASE_UNAVAILABLE"),
            status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "5"},
        )
    if isinstance(exc, DatabaseError):
        logger.exception("database error", extra={"view": type(view).__name__})
    else:
        logger.exception("unhandled error", extra={"view": type(view).__name__})
    return Response(
        error_body("Internal server error.", "INTERNAL_ERROR"),
        status.HTTP_500_INTERNAL_SERVER_ERROR,
    )


# Django-level handlers (URLs no view matched, errors outside DRF views).
def handler404(request, exception=None):
    return JsonResponse(error_body("Not found.", "NOT_FOUND"), status=404)


def handler500(request):
    return JsonResponse(error_body("Internal server error.", "INTERNAL_ERROR"), status=500)


def handler403(request, exception=None):
    return JsonResponse(error_body("Permission denied.", "PERMISSION_DENIED"), status=403)


def handler400(request, exception=None):
    if isinstance(exception, RequestDataTooBig):
        return JsonResponse(_too_large_body(), status=413)
    return JsonResponse(error_body("Bad request.", "BAD_REQUEST"), status=400)

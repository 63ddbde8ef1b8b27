"""Keyset (cursor) pagination: page 1 and page 10,000 cost the same, no COUNT, no OFFSET.

Lists of millions of rows walk an index on the ordering field from an opaque cursor. The
response is ``{"next": url|null, "previous": url|null, "results": [...]}``.

A cursor is only ever one this server wrote: a forged or damaged one (``p=abc``, ``p=``, an
offset in other digits than 0-9, a position the ordering field cannot hold) is a 400 naming
``cursor``, never a query the database refuses.
"""

from base64 import b64decode
from binascii import Error as Base64Error
from urllib import parse

from django.conf import settings
from django.core.exceptions import FieldDoesNotExist
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import Cursor, CursorPagination

from megahub.inputs import InputRejected, check_utc_offset, integer_range, parse_int

INVALID_CURSOR = "Invalid cursor: follow next/previous as given."


class KeysetPagination(CursorPagination):
    ordering = "-id"
    page_size_query_param = "page_size"

    def __init__(self):
        # Read per request, so env/test settings apply without re-importing this module.
        self.page_size = settings.API_PAGE_SIZE
        self.max_page_size = settings.API_MAX_PAGE_SIZE

    def get_page_size(self, request):
        """``page_size`` above the maximum is capped; one that is not a positive integer written
        with the digits 0-9 (empty included) is a 400 (DRF would silently use the default)."""
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        try:
            value = parse_int(raw, low=1, high=None)
        except InputRejected:
            raise ValidationError(
                {
                    self.page_size_query_param: [
                        f"A positive integer (at most {self.max_page_size})."
                    ]
                }
            )
        return min(value, self.max_page_size)

    def paginate_queryset(self, queryset, request, view=None):
        self._model = getattr(queryset, "model", None)
        return super().paginate_queryset(queryset, request, view)

    def decode_cursor(self, request):
        # DRF answers a bad cursor with 404, as if the list did not exist, and passes any
        # position on to the database: both are bad input.
        encoded = request.query_params.get(self.cursor_query_param)
        if encoded is None:
            return None
        try:
            querystring = b64decode(encoded.encode("ascii"), validate=True).decode("ascii")
            tokens = parse.parse_qs(querystring, keep_blank_values=True, strict_parsing=True)
            if not set(tokens) <= {"o", "r", "p"} or any(len(v) > 1 for v in tokens.values()):
                raise ValueError("not a cursor this server wrote")
            offset = parse_int(tokens.get("o", ["0"])[0], low=0, high=self.offset_cutoff)
            reverse = parse_int(tokens.get("r", ["0"])[0], low=0, high=1)
            position = tokens.get("p", [None])[0]
            if position is not None:
                self._check_position(position)
        except (UnicodeError, Base64Error, ValueError, TypeError):  # InputRejected included
            raise ValidationError({self.cursor_query_param: [INVALID_CURSOR]})
        return Cursor(offset=offset, reverse=bool(reverse), position=position)

    def _check_position(self, position: str) -> None:
        """The position must be a value of the ordering field (as _get_position_from_instance
        writes it)."""
        model = getattr(self, "_model", None)
        name = self.ordering[0].lstrip("-") if self.ordering else ""
        if model is None or "__" in name:
            return
        try:
            field = model._meta.get_field("id" if name == "pk" else name)
        except FieldDoesNotExist:
            return
        bounds = integer_range(field)
        if bounds is not None:
            parse_int(position, low=bounds[0], high=bounds[1])
            return
        if "\x00" in position:
            raise ValueError("NUL in cursor")
        try:
            value = field.to_python(position)
        except DjangoValidationError:
            raise ValueError("not a value of the ordering field")
        check_utc_offset(value)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"]["minimum"] = 1
                parameter["description"] = (
                    f"Results per page (default {self.page_size}; above {self.max_page_size} "
                    "is capped)."
                )
        return parameters

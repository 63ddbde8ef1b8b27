"""Keyset (cursor) pagination: page 1 and page 10,000 cost the same, no COUNT, no OFFSET.

Lists of millions of rows walk an index on the ordering field from an opaque cursor. The
response is ``{"next": url|null, "previous": url|null, "results": [...]}``.
"""

from django.conf import settings
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination


class KeysetPagination(CursorPagination):
    ordering = "-id"
    page_size_query_param = "page_size"

    def __init__(self):
        # Read per request, so env/test settings apply without re-importing this module.
        self.page_size = settings.API_PAGE_SIZE
        self.max_page_size = settings.API_MAX_PAGE_SIZE

    def get_page_size(self, request):
        """``page_size`` above the maximum is capped; one that is not a positive integer is a
        400 (DRF would silently use the default)."""
        raw = request.query_params.get(self.page_size_query_param, "").strip()
        if not raw:
            return self.page_size
        if not raw.isdigit() or int(raw) < 1:
            raise ValidationError(
                {
                    self.page_size_query_param: [
                        f"A positive integer (at most {self.max_page_size})."
                    ]
                }
            )
        return min(int(raw), self.max_page_size)

    def decode_cursor(self, request):
        # DRF answers a bad cursor with 404, as if the list did not exist: it is bad input.
        try:
            return super().decode_cursor(request)
        except NotFound:
            raise ValidationError(
                {self.cursor_query_param: ["Invalid cursor: follow next/previous as given."]}
            )

"""Keyset (cursor) pagination: page 1 and page 10,000 cost the same, no COUNT, no OFFSET.

Lists of millions of rows walk an index on the ordering field from an opaque cursor. The
response is ``{"next": url|null, "previous": url|null, "results": [...]}``.

A cursor is only ever one this server wrote: a forged or damaged one (``p=abc``, ``p=``, an
offset in other digits than 0-9, a position the ordering field cannot hold) is a 400 naming
``cursor``, never a query the database refuses.

An ordering field that can be NULL (a schedule's ``next_run_at``) sorts its NULLs as greater
than every value, on every database (PostgreSQL's own default: last ascending, first
descending), and a NULL position is written as the id alone, without the ``value|`` part
every other position of such an ordering has.
"""

from base64 import b64decode
from binascii import Error as Base64Error
from urllib import parse

from django.conf import settings
from django.core.exceptions import FieldDoesNotExist
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import F, Q
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import Cursor, CursorPagination

from megahub.inputs import InputRejected, check_utc_offset, integer_range, parse_int

INVALID_CURSOR = "Invalid cursor: follow next/previous as given."
PAIR = "|"  # between the value and the id in a position of an ordering with a tiebreaker


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

    def get_ordering(self, request, queryset, view):
        """The requested ordering, then the primary key in the same direction when the
        ordering's field is not unique (``created_at``): such a page's position is the pair
        (value, id), so rows that share the value are neither skipped nor repeated (DRF's
        cursor keeps the value alone and counts the rows sharing it, which breaks when the
        database returns them in no set order, and going back across them)."""
        ordering = tuple(super().get_ordering(request, queryset, view))
        if ordering and not any(term.lstrip("-") in ("id", "pk") for term in ordering):
            ordering += (("-" if ordering[0].startswith("-") else "") + "id",)
        return ordering

    def paginate_queryset(self, queryset, request, view=None):
        self._model = getattr(queryset, "model", None)
        return super().paginate_queryset(_KeysetQuerySet(queryset, self), request, view)

    def _get_position_from_instance(self, instance, ordering):
        position = super()._get_position_from_instance(instance, ordering)
        if len(ordering) == 1:
            return position
        if isinstance(instance, dict):
            pk, value = instance["id"], instance[ordering[0].lstrip("-")]
        else:
            pk, value = instance.pk, getattr(instance, ordering[0].lstrip("-"))
        if value is None:  # str(None) would be the text "None": a NULL is the id alone
            return str(pk)
        return f"{position}{PAIR}{pk}"

    def _ordering_field(self):
        """The model field the ordering's first term names, or None (a relation's field, an
        unknown name: left to the ORM)."""
        model = getattr(self, "_model", None)
        name = self.ordering[0].lstrip("-") if self.ordering else ""
        if model is None or "__" in name:
            return None
        try:
            return model._meta.get_field("id" if name == "pk" else name)
        except FieldDoesNotExist:
            return None

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
        """The position must be a value of the ordering field, or the pair (value, id) of an
        ordering with a tiebreaker (as _get_position_from_instance writes it)."""
        field = self._ordering_field()
        if len(self.ordering) > 1:
            position, separator, pk = position.rpartition(PAIR)
            parse_int(pk, low=1, high=2**63 - 1)
            if not separator:  # the id alone: a NULL, which only a nullable field holds
                if field is None or not field.null:
                    raise ValueError("not a position of this ordering")
                return
        if field is None:
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


class _KeysetQuerySet:
    """The queryset DRF's CursorPagination pages, with its one position filter
    (``field__lt``/``__gt`` the position) turned into the pair comparison when the ordering
    has a tiebreaker: (field, id) after (value, id) in the ordering's direction."""

    def __init__(self, queryset, paginator):
        self._queryset, self._paginator = queryset, paginator

    def order_by(self, *fields):
        """The ordering, with a nullable field's NULLs placed as greater than every value (as
        the position filter below counts them; PostgreSQL's default, not SQLite's)."""
        terms = [self._nulls_greatest(term) for term in fields]
        return _KeysetQuerySet(self._queryset.order_by(*terms), self._paginator)

    def _nulls_greatest(self, term):
        field = self._paginator._ordering_field()
        if not (isinstance(term, str) and field is not None and field.null):
            return term
        if term.lstrip("-") != self._paginator.ordering[0].lstrip("-"):
            return term
        name = term.lstrip("-")
        return (
            F(name).desc(nulls_first=True) if term.startswith("-") else F(name).asc(nulls_last=True)
        )

    def filter(self, **kwargs):
        ordering = self._paginator.ordering
        if len(ordering) == 1 or len(kwargs) != 1:
            return self._queryset.filter(**kwargs)
        ((lookup, position),) = kwargs.items()
        name, _, op = lookup.rpartition("__")
        value, separator, pk = position.rpartition(PAIR)
        pk = int(pk)
        # (field, id) after the position ("gt") or before it ("lt"), a NULL greater than
        # every value: SQL's comparisons with NULL are never true, so NULLs are named.
        if not separator:  # the position is a NULL
            null_and_id = Q(**{f"{name}__isnull": True, f"id__{op}": pk})
            if op == "gt":
                return self._queryset.filter(null_and_id)
            return self._queryset.filter(Q(**{f"{name}__isnull": False}) | null_and_id)
        after = Q(**{f"{name}__{op}": value}) | Q(**{name: value, f"id__{op}": pk})
        field = self._paginator._ordering_field()
        if op == "gt" and field is not None and field.null:
            after |= Q(**{f"{name}__isnull": True})
        return self._queryset.filter(after)

    def __getitem__(self, item):  # the page, when no cursor position applies
        return self._queryset[item]

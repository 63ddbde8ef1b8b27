"""Filter pieces shared by every list: a bad filter value is a 400, never silently ignored
(an ignored filter answers a question the client did not ask), and a request that names no
filter pays nothing for the filter set.

``StrictFilterSet`` is the base of every filter set. It applies megahub's input rules
(megahub.inputs) to each filter by kind, so no filter has to repeat them:

- a number filter takes ASCII digits only, and the range of the model field it compares with
  (an integer field's integer range, so ``?task=1.5`` and ``?rule=1e136`` are 400);
- a datetime filter's UTC offset is at most ±15:59;
- a typed filter (number, choice, boolean, datetime) named with an empty value is a 400;
- no query parameter of a list holds a NUL character (DjangoFilterBackendIfAsked).

``ChoiceListFilter`` takes a comma-separated list of choices; its schema is the regular
expression the server matches, so the two cannot disagree.
"""

import re
from decimal import Decimal, InvalidOperation

import django_filters
from django import forms
from django_filters.fields import IsoDateTimeField
from django_filters.rest_framework import DjangoFilterBackend
from django_filters.utils import get_model_field
from drf_spectacular.drainage import set_override
from rest_framework.exceptions import ValidationError
from rest_framework.filters import OrderingFilter

from megahub.inputs import (
    BIGINT_MAX,
    BIGINT_MIN,
    InputRejected,
    check_finite,
    check_utc_offset,
    integer_range,
    is_ascii_int,
    is_ascii_number,
    number_range,
)

TRUE_VALUES = {"true", "1", "yes", "on"}
FALSE_VALUES = {"false", "0", "no", "off"}


class StrictBooleanField(forms.Field):
    def to_python(self, value):
        if value in (None, ""):
            return None
        text = str(value).strip().lower()
        if text in TRUE_VALUES:
            return True
        if text in FALSE_VALUES:
            return False
        raise forms.ValidationError(f'"{value}" is not a boolean; use true or false.')


class StrictBooleanFilter(django_filters.BooleanFilter):
    """``?flag=true|false`` (also 1/0, yes/no, on/off); anything else is a 400."""

    field_class = StrictBooleanField


class AsciiIntegerField(forms.IntegerField):
    """An integer written with ASCII digits (Django's takes U+FF11, fullwidth one, and 1.0)."""

    def to_python(self, value):
        if value in self.empty_values:
            return None
        text = str(value).strip()
        if not is_ascii_int(text):
            raise forms.ValidationError("Enter a whole number (digits 0-9).", code="invalid")
        return int(text)


class AsciiDecimalField(forms.DecimalField):
    """A finite number written with ASCII digits."""

    def to_python(self, value):
        if value in self.empty_values:
            return None
        text = str(value).strip()
        if not is_ascii_number(text):
            raise forms.ValidationError("Enter a number (digits 0-9).", code="invalid")
        try:
            number = Decimal(text)
            check_finite(number)
        except (InvalidOperation, InputRejected):
            raise forms.ValidationError("Enter a finite number.", code="invalid")
        return number


class StrictIsoDateTimeField(IsoDateTimeField):
    """An ISO 8601 datetime whose UTC offset PostgreSQL can store."""

    def to_python(self, value):
        parsed = super().to_python(value)
        try:
            return check_utc_offset(parsed)
        except InputRejected as exc:
            raise forms.ValidationError(exc.args[0], code="invalid")


def choice_list_pattern(choices) -> str:
    """The regular expression of a comma-separated list of ``choices`` (spaces allowed around
    each item, no empty item)."""
    item = "(?:" + "|".join(re.escape(c) for c in sorted(choices, key=len, reverse=True)) + ")"
    return f"^ *{item} *(?:, *{item} *)*$"


class ChoiceListField(forms.CharField):
    def __init__(self, *, values, **kwargs):
        self.choices = list(values)
        self.pattern = re.compile(choice_list_pattern(self.choices))
        super().__init__(strip=False, **kwargs)

    def to_python(self, value):
        text = super().to_python(value)
        if text == "":  # not named (a filter named empty is refused as typed and empty)
            return []
        # re.search, as a JSON Schema validator applies the schema's pattern.
        if not self.pattern.search(text):
            raise forms.ValidationError(
                f"Expected one of {', '.join(self.choices)}, or several separated by commas.",
                code="invalid",
            )
        return [item.strip() for item in text.split(",") if item.strip()]


class ChoiceListFilter(django_filters.Filter):
    """``?name=a,b``: one or several of ``choices`` (the filter receives the list); anything
    else is a 400. Its schema is a string with the pattern the server matches."""

    field_class = ChoiceListField

    def __init__(self, *, choices, **kwargs):
        super().__init__(values=list(choices), **kwargs)
        set_override(self, "field", {"type": "string", "pattern": choice_list_pattern(choices)})


NUMBER_FILTER_MAX = 10**50


def _harden(filter_, model) -> None:
    """Give one filter the input rules of its kind (idempotent: declared filters are shared)."""
    if isinstance(filter_, django_filters.NumberFilter):
        model_field = get_model_field(model, filter_.field_name) if model else None
        bounds = integer_range(model_field)
        if bounds is not None:
            filter_.field_class = AsciiIntegerField
        else:
            filter_.field_class = AsciiDecimalField
            bounds = number_range(model_field) if model_field else (BIGINT_MIN, BIGINT_MAX)
            # django-filter's NumberFilter refuses magnitudes above 1e50 in any case.
            bounds = (max(bounds[0], -NUMBER_FILTER_MAX), min(bounds[1], NUMBER_FILTER_MAX))
        low, high = bounds
        declared_low = filter_.extra.get("min_value")
        declared_high = filter_.extra.get("max_value")
        filter_.extra["min_value"] = low if declared_low is None else max(low, declared_low)
        filter_.extra["max_value"] = high if declared_high is None else min(high, declared_high)
        # The schema says what the filter takes: an integer where the column holds integers
        # (foreign keys included), and the range either way.
        integral = filter_.field_class is AsciiIntegerField
        set_override(
            filter_,
            "field",
            {
                "type": "integer" if integral else "number",
                **({"format": _int_format(filter_.extra["max_value"])} if integral else {}),
                "minimum": _json_number(filter_.extra["min_value"]),
                "maximum": _json_number(filter_.extra["max_value"]),
            },
        )
    elif isinstance(filter_, django_filters.IsoDateTimeFilter):
        filter_.field_class = StrictIsoDateTimeField
    if hasattr(filter_, "_field"):
        del filter_._field


def _json_number(value):
    if isinstance(value, float) or value != int(value):
        return float(value)
    return int(value)


def _int_format(high) -> str:
    return "int32" if high <= 2**31 - 1 else "int64"


def _is_typed(filter_) -> bool:
    """Filters whose schema type excludes the empty string (free text is not typed)."""
    return not isinstance(filter_, django_filters.CharFilter)


class StrictFilterSet(django_filters.FilterSet):
    @classmethod
    def get_filters(cls):
        filters = super().get_filters()
        for filter_ in filters.values():
            _harden(filter_, cls._meta.model)
        return filters

    def is_valid(self):
        valid = super().is_valid()
        for name, filter_ in self.filters.items():
            values = self.data.getlist(name) if hasattr(self.data, "getlist") else []
            if _is_typed(filter_) and values and all(v.strip() == "" for v in values):
                if name not in self.form.errors:
                    self.form.add_error(name, "This value may not be empty.")
                valid = False
        return valid


class StrictOrderingFilter(OrderingFilter):
    """``?ordering=`` naming a field the view does not offer, or empty, is a 400, not the
    default order; so is more than one field (``a,b``): a keyset page's position is one field's
    value and the id (megahub.pagination), which cannot place a row in an order by two fields,
    and ties are already ordered by the id."""

    def get_ordering(self, request, queryset, view):
        raw = request.query_params.get(self.ordering_param)
        if raw is not None and not raw.strip():
            raise ValidationError({self.ordering_param: ["May not be empty."]})
        return super().get_ordering(request, queryset, view)

    def remove_invalid_fields(self, queryset, fields, view, request):
        valid = super().remove_invalid_fields(queryset, fields, view, request)
        invalid = [f for f in fields if f not in valid]
        if invalid:
            offered = sorted(
                {item[0] for item in self.get_valid_fields(queryset, view, {"request": request})}
            )
            raise ValidationError(
                {self.ordering_param: [f'"{invalid[0]}" is not one of {", ".join(offered)}.']}
            )
        if len(valid) > 1:
            raise ValidationError(
                {self.ordering_param: ["One field at a time; ties are ordered by id."]}
            )
        return valid


class DjangoFilterBackendIfAsked(DjangoFilterBackend):
    """DjangoFilterBackend that does nothing when the request names none of the view's filters.

    Without any of its parameters a FilterSet leaves the queryset as it is (every filter skips
    an empty value), but building its form and fields still costs about a millisecond per
    request; on a list page that is a large share of the time.
    """

    def filter_queryset(self, request, queryset, view):
        for name, values in request.query_params.lists():
            if any("\x00" in value for value in values):
                raise ValidationError({name: ["Text may not contain NUL characters."]})
        filterset_class = self.get_filterset_class(view, queryset)
        if filterset_class is None or request.query_params.keys().isdisjoint(
            filterset_class.base_filters
        ):
            return queryset
        return super().filter_queryset(request, queryset, view)

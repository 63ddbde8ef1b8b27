"""The base of every input serializer: megahub's input rules (megahub.inputs) applied to each
field by kind, so that no field has to repeat them.

- unknown or read-only fields are refused (typos, server-owned fields), except by query
  serializers (``refuse_unknown_fields = False``);
- an integer field holds a JSON integer or a string of ASCII digits, within the field's declared
  bounds, else the signed 64-bit range (``²``, U+FF11, ``1.5``, ``2**64`` are 400);
- a float or decimal field holds a finite number written with ASCII digits;
- a datetime's UTC offset is at most ±15:59;
- in a JSON body, a text field holds a JSON string and a boolean field a JSON boolean (DRF
  would turn ``0`` into ``"0"`` and ``0``/``"true"`` into a boolean); a query string, where
  every value is text, is read as DRF reads it.
"""

from django.core.validators import MaxValueValidator, MinValueValidator
from django.http import QueryDict
from django.utils.dateparse import parse_datetime
from rest_framework import serializers

from megahub.inputs import (
    BIGINT_MAX,
    BIGINT_MIN,
    FLOAT_MAX,
    InputRejected,
    check_finite,
    check_utc_offset,
    is_ascii_int,
    is_ascii_number,
    parse_int,
)


def _finite(value):
    try:
        check_finite(value)
    except InputRejected as exc:
        raise serializers.ValidationError(exc.args[0])


class StrictInputSerializer(serializers.Serializer):
    # Query serializers read a request's query string, which carries other parameters too.
    refuse_unknown_fields = True

    def get_fields(self):
        fields = super().get_fields()
        for field in fields.values():
            if isinstance(field, serializers.IntegerField):
                _bound(field, BIGINT_MIN, BIGINT_MAX)
            elif isinstance(field, serializers.FloatField | serializers.DecimalField):
                _bound(field, -FLOAT_MAX, FLOAT_MAX)
                field.validators.append(_finite)
        return fields

    def to_internal_value(self, data):
        if isinstance(data, dict):
            writable = {name for name, f in self.fields.items() if not f.read_only}
            unknown = sorted(set(data) - writable)
            if unknown and self.refuse_unknown_fields:
                raise serializers.ValidationError(
                    {name: ["Unknown or read-only field."] for name in unknown}
                )
            errors = {}
            json_body = not isinstance(data, QueryDict)
            for name, raw in data.items():
                if name not in writable:
                    continue
                problem = _raw_problem(self.fields[name], raw) or (
                    json_body and _json_type_problem(self.fields[name], raw)
                )
                if problem:
                    errors[name] = [problem]
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)


def _bound(field, low, high):
    """Give a number field without declared bounds the range the database can hold."""
    if field.max_value is None:
        field.max_value = high
        field.validators.append(MaxValueValidator(high))
    if field.min_value is None:
        field.min_value = low
        field.validators.append(MinValueValidator(low))


def _json_type_problem(field, raw) -> str | None:
    """A JSON value of the wrong type for a text or boolean field; None if nothing (null is
    the field's own business: allow_null)."""
    if raw is None:
        return None
    if isinstance(field, serializers.CharField) and not isinstance(raw, str):
        return "Not a valid string."
    if isinstance(field, serializers.BooleanField) and not isinstance(raw, bool):
        return "Must be a valid boolean (true or false)."
    return None


def _raw_problem(field, raw) -> str | None:
    """What is wrong with a raw value DRF's own parsing would accept; None if nothing."""
    if isinstance(field, serializers.IntegerField):
        if isinstance(raw, bool) or (isinstance(raw, str) and not is_ascii_int(raw.strip())):
            return "A valid integer is required (digits 0-9)."
    elif isinstance(field, serializers.FloatField | serializers.DecimalField):
        if isinstance(raw, bool) or (isinstance(raw, str) and not is_ascii_number(raw.strip())):
            return "A valid number is required (digits 0-9)."
    elif isinstance(field, serializers.PrimaryKeyRelatedField) and raw is not None:
        # An id: a JSON integer or ASCII digits, within the id column's range.
        try:
            if isinstance(raw, bool | float):
                raise InputRejected("not an integer")
            parse_int(raw, low=BIGINT_MIN, high=BIGINT_MAX)
        except InputRejected:
            return "An id is required: a whole number written with the digits 0-9."
    elif isinstance(field, serializers.DateTimeField) and isinstance(raw, str):
        try:
            check_utc_offset(parse_datetime(raw.strip()))
        except ValueError as exc:  # InputRejected, or an impossible date or offset
            return exc.args[0] if isinstance(exc, InputRejected) else None
    return None

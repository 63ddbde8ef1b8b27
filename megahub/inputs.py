"""The rules every piece of client input obeys, whatever the database backend (docs/api.md,
"Input rules"). The filter base class (megahub.filters), the input serializer base
(megahub.serializers), the JSON parser (megahub.parsers), the cursor pagination and the brand
header all use these helpers, so a rule holds in one place:

- only ASCII digits are numbers (``²``, ``①``, U+FF11 fullwidth one are not);
- a number is within the range of the model field it is compared with or stored in, using the
  PostgreSQL ranges on every backend (SQLite would take larger integers, or fail on them);
- a datetime's UTC offset is at most ±15:59 (PostgreSQL's limit);
- JSON text holds no NUL character and no lone surrogate, and nests at most
  ``MAX_JSON_DEPTH`` levels.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

from django.db import models

BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1
FLOAT_MAX = 1e308
MAX_UTC_OFFSET = timedelta(hours=15, minutes=59)
MAX_JSON_DEPTH = 64

_ASCII_INT = re.compile(r"[+-]?[0-9]+")
_ASCII_NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
_FORBIDDEN_CHARS = re.compile("[\x00\ud800-\udfff]")

# The integer columns' ranges (PostgreSQL's, the strictest backend), by internal type.
_INTEGER_RANGES = {
    "SmallIntegerField": (-32768, 32767),
    "IntegerField": (-2147483648, 2147483647),
    "BigIntegerField": (BIGINT_MIN, BIGINT_MAX),
    "PositiveBigIntegerField": (0, BIGINT_MAX),
    "PositiveSmallIntegerField": (0, 32767),
    "PositiveIntegerField": (0, 2147483647),
    "SmallAutoField": (-32768, 32767),
    "AutoField": (-2147483648, 2147483647),
    "BigAutoField": (BIGINT_MIN, BIGINT_MAX),
}


class InputRejected(ValueError):
    """A value breaks one of the input rules; the message says which."""


def is_ascii_int(text: str) -> bool:
    return bool(_ASCII_INT.fullmatch(text))


def is_ascii_number(text: str) -> bool:
    return bool(_ASCII_NUMBER.fullmatch(text))


def parse_int(text, *, low: int = BIGINT_MIN, high: int = BIGINT_MAX) -> int:
    """An integer written with ASCII digits, within [low, high]."""
    text = str(text).strip()
    if not is_ascii_int(text):
        raise InputRejected("Must be an integer written with the digits 0-9.")
    value = int(text)
    check_range(value, low, high)
    return value


def check_range(value, low, high) -> None:
    if low is not None and value < low:
        raise InputRejected(f"Must be at least {low}.")
    if high is not None and value > high:
        raise InputRejected(f"Must be at most {high}.")


def integer_range(field: models.Field | None) -> tuple[int, int] | None:
    """The range an integer model field (or the key a relation stores) can hold; None if the
    field does not hold integers."""
    if field is None:
        return None
    target = field.target_field if isinstance(field, models.ForeignKey) else field
    return _INTEGER_RANGES.get(target.get_internal_type())


def number_range(field: models.Field | None) -> tuple[float, float]:
    """The range of a non-integer number field (decimal digits, or a finite double)."""
    if isinstance(field, models.DecimalField) and field.max_digits is not None:
        bound = Decimal(10) ** (field.max_digits - field.decimal_places)
        return (-bound, bound)
    return (-FLOAT_MAX, FLOAT_MAX)


def check_utc_offset(value: datetime) -> datetime:
    """A datetime whose UTC offset PostgreSQL can store (at most ±15:59)."""
    offset = value.utcoffset() if isinstance(value, datetime) else None
    if offset is not None and abs(offset) > MAX_UTC_OFFSET:
        raise InputRejected("The UTC offset must be between -15:59 and +15:59.")
    return value


def check_finite(value: float | Decimal) -> None:
    try:
        finite = math.isfinite(value)
    except (TypeError, ValueError, InvalidOperation):
        finite = False
    if not finite:
        raise InputRejected("Must be a finite number.")


def check_text(text: str) -> None:
    match = _FORBIDDEN_CHARS.search(text)
    if match:
        char = match.group()
        what = "NUL characters" if char == "\x00" else f"lone surrogates (U+{ord(char):04X})"
        raise InputRejected(f"Text may not contain {what}.")


def check_json(data) -> None:
    """Walk parsed JSON (iteratively: no recursion to exhaust) and refuse nesting deeper than
    MAX_JSON_DEPTH, NUL characters and lone surrogates in keys or strings. The message names
    the path of the offending value (``context_data.a.0``)."""
    stack = [(data, 1, "")]
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise InputRejected(f"JSON nests deeper than {MAX_JSON_DEPTH} levels.", path)
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                sub = f"{path}.{key}" if path else str(key)
                if isinstance(key, str):
                    _check_text_at(key, sub)
                stack.append((item, depth + 1, sub))
        elif isinstance(value, str):
            _check_text_at(value, path)


def _check_text_at(text: str, path: str) -> None:
    try:
        check_text(text)
    except InputRejected as exc:
        raise InputRejected(exc.args[0], path)

"""Cron expressions evaluated in a schedule's own time zone, and the DST policy.

Cron fields match local wall-clock time: croniter walks naive local datetimes, and each
matching wall time is then mapped to exactly one instant:

- a wall time that exists once -> that instant;
- a wall time skipped by spring-forward (a DST gap) -> the first valid instant after it (the
  transition itself), or nothing when the schedule's ``dst_gap_policy`` is ``skip``;
- a wall time repeated by fall-back (a DST overlap) -> its first occurrence only.

Several wall times that map to the same instant (``*/15`` inside a gap) fire once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from importlib import resources
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from megahub.errors import DomainValidationError

GAP_SHIFT = "shift"  # run at the first valid instant after the skipped wall time
GAP_SKIP = "skip"  # do not run at all

MONTH_NAMES = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAY_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
# (name, lowest, highest, names mapped to lowest, lowest+1, ...)
FIELDS = [
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day of month", 1, 31, None),
    ("month", 1, 12, MONTH_NAMES),
    ("day of week", 0, 7, DAY_NAMES),
]
ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# An expression must fire within this many years of now (29 February recurs within 8); beyond
# it the schedule is refused (CRON_INVALID) and a stored one is treated as never firing.
CRON_HORIZON_YEARS = 10
_PART = re.compile(r"^(?P<range>\*|[0-9a-z]+(?:-[0-9a-z]+)?)(?:/(?P<step>[0-9]+))?$")


def _any_case(word: str) -> str:
    return "".join(f"[{c}{c.upper()}]" if c.isalpha() else re.escape(c) for c in word)


def _numbers(lo: int, hi: int) -> str:
    return "0*(?:" + "|".join(str(n) for n in range(hi, lo - 1, -1)) + ")"


def _field_pattern(lo: int, hi: int, names: list[str] | None) -> str:
    value = "(?:" + "|".join([_numbers(lo, hi), *(_any_case(n) for n in names or [])]) + ")"
    item = rf"(?:\*|{value}(?:-{value})?)(?:/{_numbers(1, hi)})?"
    return f"{item}(?:,{item})*"


def cron_pattern() -> str:
    """The regular expression of what cron_normalize accepts, as far as one can say it: five
    fields (or an @alias), values in range, names in any case. Beyond it, a range's ends must
    be in order and the expression must fire within CRON_HORIZON_YEARS (the API schema says so
    in words)."""
    fields = r"\s+".join(_field_pattern(lo, hi, names) for _, lo, hi, names in FIELDS)
    aliases = "|".join(_any_case(alias) for alias in ALIASES)
    return rf"^\s*(?:{aliases}|{fields})\s*$"


class CronInvalid(DomainValidationError):
    error_code = "CRON_INVALID"

    def __init__(self, message: str, *, field: str = "cron_expression"):
        super().__init__(f"Invalid cron expression: {message}", field_errors={field: [message]})


class CronNeverFires(CronInvalid):
    """A syntactically valid expression with no fire time within CRON_HORIZON_YEARS."""

    def __init__(self, *, field: str = "cron_expression"):
        super().__init__(
            f"the expression never matches a real date (no run in the next "
            f"{CRON_HORIZON_YEARS} years)",
            field=field,
        )


class TimezoneInvalid(DomainValidationError):
    error_code = "TIMEZONE_INVALID"

    def __init__(self, name: str, *, field: str = "timezone"):
        message = f'"{name}" is not a known IANA time zone (e.g. "Europe/Paris", "UTC").'
        super().__init__(message, field_errors={field: [message]})


def _value(token: str, field: str, lo: int, hi: int, names: list[str] | None) -> int:
    if token.isdigit():
        value = int(token)
    elif names and token[:3] in names and len(token) == 3:
        value = names.index(token) + lo
    else:
        raise CronInvalid(f"{field}: {token!r} is not a number" + (" or a name" if names else ""))
    if not lo <= value <= hi:
        raise CronInvalid(f"{field}: {value} is out of range {lo}-{hi}")
    return value


def cron_normalize(expression: str, *, field: str = "cron_expression") -> str:
    """Validate a 5-field cron expression (or an @alias) and return its canonical spelling.

    The one validation of an expression, shared by every write path (REST create, PATCH and
    resume, the admin form, validate-cron and the commands). Raises CronInvalid naming the
    offending cron field (6-field expressions with seconds, out-of-range values, garbage) or
    CronNeverFires for an expression with no fire time in the next CRON_HORIZON_YEARS years
    (``0 0 31 2 *``).
    """
    if not isinstance(expression, str) or not expression.strip():
        raise CronInvalid("an expression is required", field=field)
    text = " ".join(expression.lower().split())
    text = ALIASES.get(text, text)
    parts = text.split(" ")
    if len(parts) != 5:
        raise CronInvalid(
            f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(parts)}",
            field=field,
        )
    try:
        for part, (name, lo, hi, names) in zip(parts, FIELDS, strict=True):
            for item in part.split(","):
                match = _PART.match(item)
                if not match:
                    raise CronInvalid(f"{name}: {item!r} is not valid cron syntax")
                bounds = match["range"]
                if bounds != "*":
                    ends = [_value(t, name, lo, hi, names) for t in bounds.split("-")]
                    if len(ends) == 2 and ends[0] > ends[1]:
                        raise CronInvalid(f"{name}: range {bounds!r} goes backwards")
                if match["step"] is not None and not 1 <= int(match["step"]) <= hi:
                    raise CronInvalid(f"{name}: step {match['step']} is out of range 1-{hi}")
    except CronInvalid as exc:
        raise CronInvalid(exc.field_errors["cron_expression"][0], field=field)
    if not croniter.is_valid(text):
        raise CronInvalid("not a valid cron expression", field=field)
    if not _fires_within_horizon(text):
        raise CronNeverFires(field=field)
    return text


def _fires_within_horizon(text: str) -> bool:
    """Whether the expression's wall-clock fields match any date in the next
    CRON_HORIZON_YEARS years (the time zone cannot change that: every zone has every date)."""
    start = datetime.now(UTC).replace(tzinfo=None, second=0, microsecond=0)
    try:
        croniter(text, start, max_years_between_matches=CRON_HORIZON_YEARS).get_next(datetime)
    except CroniterError:
        return False
    return True


@lru_cache(maxsize=1)
def iana_zone_names() -> frozenset[str]:
    """The IANA time zone database's names (zones and their links, e.g. "Europe/Kiev"), as the
    tzdata package lists them: the same on every host. Files of a host's zoneinfo directory
    that are not zone names (``localtime``, ``posixrules``, ``right/*``, ``posix/*``) are not
    in it; ``Factory`` (a placeholder meaning "zone not set") is left out."""
    names = resources.files("tzdata").joinpath("zones").read_text().split()
    return frozenset(names) - {"Factory"}


def timezone_validate(name: str, *, field: str = "timezone") -> ZoneInfo:
    """The ZoneInfo of a time zone a client names (every write and preview): an IANA name
    only, else TimezoneInvalid."""
    if not isinstance(name, str) or name not in iana_zone_names():
        raise TimezoneInvalid(str(name)[:64], field=field)
    return timezone_get(name, field=field)


def timezone_get(name: str, *, field: str = "timezone") -> ZoneInfo:
    """The ZoneInfo of a stored name, or TimezoneInvalid (writes use timezone_validate)."""
    if not isinstance(name, str) or not name or len(name) > 64:
        raise TimezoneInvalid(str(name)[:64], field=field)
    try:
        return _zone(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise TimezoneInvalid(name, field=field)


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def cron_describe(expression: str) -> str:
    """A human description ("At 09:30, Monday through Friday")."""
    from cron_descriptor import ExpressionDescriptor, Options

    options = Options()
    options.use_24hour_time_format = True
    try:
        return ExpressionDescriptor(expression, options).get_description()
    except Exception:  # the library refuses a few valid spellings; the runs still explain it
        return expression


@dataclass(frozen=True)
class Fire:
    """One planned run: the instant (UTC), the local wall time the cron matched, and whether
    that wall time fell in a DST gap (shifted) or overlap (first occurrence taken)."""

    at: datetime
    wall: datetime
    dst: str | None = None  # None, "gap" or "overlap"


def _transition_after(tz: ZoneInfo, start: datetime, end: datetime) -> datetime:
    """The instant in (start, end] where tz's UTC offset changes (binary search, 1 s)."""
    before = start.astimezone(tz).utcoffset()
    lo, hi = start, end
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(tz).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return hi.replace(microsecond=0)


def wall_to_instant(wall: datetime, tz: ZoneInfo) -> tuple[datetime, str | None]:
    """Map a naive local wall time to (UTC instant, dst flag) under the DST policy."""
    first, second = wall.replace(tzinfo=tz, fold=0), wall.replace(tzinfo=tz, fold=1)
    if first.utcoffset() == second.utcoffset():
        return first.astimezone(UTC), None
    at_first, at_second = first.astimezone(UTC), second.astimezone(UTC)
    if at_first < at_second:  # repeated wall time: take its first occurrence
        return at_first, "overlap"
    # Skipped wall time: fold=1 reads it with the offset after the jump (too early), fold=0
    # with the offset before (too late); the jump itself lies between.
    return _transition_after(tz, at_second, at_first), "gap"


@lru_cache(maxsize=4096)
def _fires_after(expression: str, tz_name: str, gap_policy: str, after: datetime, count: int):
    tz = timezone_get(tz_name)
    start = after.astimezone(tz).replace(tzinfo=None, fold=0)
    horizon = start + timedelta(days=366 * CRON_HORIZON_YEARS)
    try:
        it = croniter(expression, start, max_years_between_matches=CRON_HORIZON_YEARS)
    except CroniterError:  # a stored row never validated by cron_normalize
        raise CronInvalid("not a valid cron expression") from None
    fires: list[Fire] = []
    last: datetime | None = None
    while len(fires) < count:
        try:
            wall = it.get_next(datetime)
        except CroniterError:
            wall = None
        if wall is None or wall > horizon:  # also: only DST-skipped wall times, policy "skip"
            if fires:
                break  # the rest lies beyond the horizon: the caller asks again from there
            raise CronNeverFires()
        at, dst = wall_to_instant(wall, tz)
        if dst == "gap" and gap_policy == GAP_SKIP:
            continue
        if at <= after or (last is not None and at <= last):
            continue  # second pass of an overlap, or a wall time that collapsed into the last
        fires.append(Fire(at=at, wall=wall, dst=dst))
        last = at
    return tuple(fires)


def fires_after(
    expression: str, tz_name: str, after: datetime, *, count: int = 1, gap_policy=GAP_SHIFT
) -> list[Fire]:
    """The next ``count`` runs strictly after ``after`` (aware), in increasing order; fewer
    when the rest lie more than CRON_HORIZON_YEARS ahead.

    Raises CronNeverFires when there is none within CRON_HORIZON_YEARS, and CronInvalid or
    TimezoneInvalid for a stored expression or zone that is not valid."""
    after = after.astimezone(UTC)
    return list(_fires_after(expression, tz_name, gap_policy, after, count))


def next_fire(expression: str, tz_name: str, after: datetime, *, gap_policy=GAP_SHIFT) -> Fire:
    return fires_after(expression, tz_name, after, count=1, gap_policy=gap_policy)[0]


def fires_between(
    expression: str,
    tz_name: str,
    start: datetime,
    end: datetime,
    *,
    limit: int,
    gap_policy=GAP_SHIFT,
    inclusive_start: bool = True,
) -> list[Fire]:
    """Runs in [start, end] (or (start, end]), at most ``limit`` of them."""
    cursor = start - timedelta(microseconds=1) if inclusive_start else start
    out: list[Fire] = []
    while len(out) < limit:
        batch = fires_after(
            expression, tz_name, cursor, count=min(64, limit - len(out)), gap_policy=gap_policy
        )
        for fire in batch:
            if fire.at > end:
                return out
            out.append(fire)
        cursor = batch[-1].at
    return out

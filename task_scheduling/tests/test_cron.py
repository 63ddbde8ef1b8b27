"""Cron parsing and next-run computation: croniter as the oracle, and the DST policy."""

import itertools
import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from task_scheduling import cron
from task_scheduling.cron import CronInvalid, TimezoneInvalid

ZONES = [
    "UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe",
    "America/Sao_Paulo", "Pacific/Chatham", "Asia/Tokyo", "Europe/London", "Africa/Casablanca",
]  # fmt: skip


def utc(*args):
    return datetime(*args, tzinfo=UTC)


# --- validation ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "expression,message",
    [
        ("* * * * * *", "expected 5 fields"),
        ("0 0 * *", "expected 5 fields"),
        ("61 * * * *", "minute: 61 is out of range 0-59"),
        ("0 24 * * *", "hour: 24 is out of range 0-23"),
        ("0 0 0 * *", "day of month: 0 is out of range 1-31"),
        ("0 0 1 13 *", "month: 13 is out of range 1-12"),
        ("0 0 * * 8", "day of week: 8 is out of range 0-7"),
        ("*/0 * * * *", "minute: step 0 is out of range"),
        ("30-10 * * * *", "minute: range '30-10' goes backwards"),
        ("garbage", "expected 5 fields"),
        ("a b c d e", "minute: 'a' is not a number"),
        ("0 0 * foo *", "month: 'foo' is not a number or a name"),
        ("", "an expression is required"),
        ("1,,2 * * * *", "minute: '' is not valid cron syntax"),
    ],
)
def test_invalid_expressions_name_the_cron_field(expression, message):
    with pytest.raises(CronInvalid) as info:
        cron.cron_normalize(expression)
    assert info.value.error_code == "CRON_INVALID"
    assert message in info.value.field_errors["cron_expression"][0]


@pytest.mark.parametrize(
    "expression,normalized",
    [
        ("*/15  9-17 * * 1-5", "*/15 9-17 * * 1-5"),
        ("0 0 1 JAN MON", "0 0 1 jan mon"),
        ("@daily", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        ("0 0 * * 7", "0 0 * * 7"),
    ],
)
def test_valid_expressions_are_normalized(expression, normalized):
    assert cron.cron_normalize(expression) == normalized


@pytest.mark.parametrize(
    "expression",
    [
        "* * * * * *", "0 0 * *", "61 * * * *", "0 24 * * *", "0 0 0 * *", "0 0 1 13 *",
        "0 0 * * 8", "*/0 * * * *", "garbage", "a b c d e", "0 0 * foo *", "", "1,,2 * * * *",
        "*/15  9-17 * * 1-5", "0 0 1 JAN MON", "@daily", "@Hourly", "0 0 * * 7", "007 01 * * *",
        "5/10 * * * *", "0 0 * jan/2 sun-sat", "0 0 1-31/31 * *", "*/60 * * * *", " 0 0 * * * ",
    ],
)  # fmt: skip
def test_the_schemas_cron_pattern_is_what_cron_normalize_accepts(expression):
    """Where the two may differ is stated in the pattern's description: a range's ends in
    order, a fire time within CRON_HORIZON_YEARS (neither is among these expressions)."""
    try:
        cron.cron_normalize(expression)
        accepted = True
    except CronInvalid:
        accepted = False
    assert bool(re.search(cron.cron_pattern(), expression)) == accepted


@pytest.mark.parametrize("name", ["Mars/Olympus", "", "../etc/passwd", "Europe/Paris "])
def test_unknown_time_zones_are_refused(name):
    with pytest.raises(TimezoneInvalid) as info:
        cron.timezone_get(name)
    assert info.value.error_code == "TIMEZONE_INVALID"
    assert "timezone" in info.value.field_errors


def test_description_is_human():
    assert cron.cron_describe("30 9 * * 1-5") == "At 09:30, Monday through Friday"


# --- properties against croniter ------------------------------------------------------------
def _field(lo, hi):
    single = st.integers(lo, hi).map(str)
    step = st.tuples(st.sampled_from(["*", str(lo)]), st.integers(1, max(1, (hi - lo) // 2))).map(
        lambda t: f"{t[0]}/{t[1]}"
    )
    rng = st.tuples(st.integers(lo, hi), st.integers(lo, hi)).map(lambda t: f"{min(t)}-{max(t)}")
    listed = st.lists(st.integers(lo, hi), min_size=2, max_size=4, unique=True).map(
        lambda v: ",".join(map(str, sorted(v)))
    )
    return st.one_of(st.just("*"), single, step, rng, listed)


# At least one run a week, so a window between two runs never spans two DST transitions.
frequent = st.tuples(_field(0, 59), _field(0, 23), st.just("*"), st.just("*"), _field(0, 6)).map(
    " ".join
)
anything = st.tuples(_field(0, 59), _field(0, 23), _field(1, 28), _field(1, 12), _field(0, 6)).map(
    " ".join
)
instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)
)


@settings(max_examples=300, deadline=None)
@given(expression=anything, after=instants)
def test_in_utc_the_next_run_is_croniters(expression, after):
    expected = croniter(expression, after).get_next(datetime)
    assert cron.next_fire(expression, "UTC", after).at == expected


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(expression=frequent, zone=st.sampled_from(ZONES), after=instants)
def test_away_from_dst_the_next_run_is_croniters_in_every_zone(expression, zone, after):
    tz = ZoneInfo(zone)
    expected = croniter(expression, after.astimezone(tz)).get_next(datetime)
    ours = cron.next_fire(expression, zone, after)
    # Same UTC offset from just before `after` to just after both answers: no transition.
    offsets = {
        (t + d).astimezone(tz).utcoffset()
        for t in (after, expected, ours.at)
        for d in (timedelta(hours=-3), timedelta(hours=3))
    }
    assume(len(offsets) == 1)
    assert ours.at == expected
    assert ours.dst is None


@settings(max_examples=200, deadline=None)
@given(expression=frequent, zone=st.sampled_from(ZONES), after=instants)
def test_runs_match_the_expression_and_strictly_increase(expression, zone, after):
    tz = ZoneInfo(zone)
    fires = cron.fires_after(expression, zone, after, count=5)
    assert fires[0].at > after
    assert all(a.at < b.at for a, b in itertools.pairwise(fires))
    for fire in fires:
        assert croniter.match(expression, fire.wall)  # the wall time is a cron match
        if fire.dst is None:  # not shifted: it happens at exactly that wall time
            assert fire.at.astimezone(tz).replace(tzinfo=None) == fire.wall
        elif fire.dst == "overlap":  # repeated wall time: its first occurrence
            assert fire.at == fire.wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    # Chaining from a run gives the runs that follow it.
    assert cron.fires_after(expression, zone, fires[0].at, count=4) == fires[1:]


# --- the DST policy ------------------------------------------------------------------------
PARIS_SPRING = utc(2026, 3, 29, 1)  # 02:00 CET -> 03:00 CEST
PARIS_FALL = utc(2026, 10, 25, 1)  # 03:00 CEST -> 02:00 CET


def runs(expression, zone, start, days=3, **kw):
    return [
        (f.at, f.dst)
        for f in cron.fires_between(
            expression, zone, start, start + timedelta(days=days), limit=500, **kw
        )
    ]


def test_paris_spring_forward_shifts_the_skipped_time_to_the_first_valid_instant():
    assert runs("30 2 * * *", "Europe/Paris", utc(2026, 3, 28)) == [
        (utc(2026, 3, 28, 1, 30), None),  # 02:30 CET
        (utc(2026, 3, 29, 1, 0), "gap"),  # 02:30 does not exist: 03:00 CEST
        (utc(2026, 3, 30, 0, 30), None),  # 02:30 CEST
    ]


def test_paris_spring_forward_skip_policy_drops_the_run():
    assert runs("30 2 * * *", "Europe/Paris", utc(2026, 3, 28), gap_policy="skip") == [
        (utc(2026, 3, 28, 1, 30), None),
        (utc(2026, 3, 30, 0, 30), None),
    ]


def test_paris_spring_forward_runs_once_for_every_skipped_time():
    fires = runs("*/15 2,3 * * *", "Europe/Paris", utc(2026, 3, 29), days=1)
    # 02:00, 02:15, 02:30, 02:45 and 03:00 all mean 03:00 CEST: one run, then 03:15...
    assert fires[:3] == [
        (utc(2026, 3, 29, 1, 0), "gap"),
        (utc(2026, 3, 29, 1, 15), None),
        (utc(2026, 3, 29, 1, 30), None),
    ]


def test_paris_fall_back_runs_a_repeated_time_once():
    assert runs("30 2 * * *", "Europe/Paris", utc(2026, 10, 24)) == [
        (utc(2026, 10, 24, 0, 30), None),
        (utc(2026, 10, 25, 0, 30), "overlap"),  # 02:30 CEST; not again at 02:30 CET
        (utc(2026, 10, 26, 1, 30), None),
    ]


def test_paris_fall_back_minute_schedule_does_not_repeat_the_hour():
    fires = runs("* * * * *", "Europe/Paris", PARIS_FALL - timedelta(hours=1), days=1 / 12)
    local_walls = [f[0].astimezone(ZoneInfo("Europe/Paris")).replace(tzinfo=None) for f in fires]
    assert len(local_walls) == len(set(local_walls))  # no wall minute twice
    assert (PARIS_FALL, None) not in fires  # 02:00 CET is the second pass of 02:00
    assert fires[59] == (PARIS_FALL - timedelta(minutes=1), "overlap")  # 02:59 CEST
    assert fires[60] == (PARIS_FALL + timedelta(hours=1), None)  # 03:00 CET


def test_new_york_spring_forward_and_fall_back():
    assert runs("30 2 * * *", "America/New_York", utc(2026, 3, 7, 12), days=2) == [
        (utc(2026, 3, 8, 7, 0), "gap"),  # 02:30 EST does not exist: 03:00 EDT
        (utc(2026, 3, 9, 6, 30), None),
    ]
    assert runs("30 1 * * *", "America/New_York", utc(2026, 10, 31, 12), days=2) == [
        (utc(2026, 11, 1, 5, 30), "overlap"),  # 01:30 EDT, not 01:30 EST
        (utc(2026, 11, 2, 6, 30), None),
    ]


def test_wall_to_instant_flags():
    paris = ZoneInfo("Europe/Paris")
    assert cron.wall_to_instant(datetime(2026, 3, 29, 2, 30), paris) == (PARIS_SPRING, "gap")
    assert cron.wall_to_instant(datetime(2026, 10, 25, 2, 30), paris) == (
        utc(2026, 10, 25, 0, 30),
        "overlap",
    )
    assert cron.wall_to_instant(datetime(2026, 7, 1, 12), paris) == (utc(2026, 7, 1, 10), None)

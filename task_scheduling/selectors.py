"""Non-trivial reads of task_scheduling."""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet
from django.utils import timezone

from megahub.errors import DomainValidationError
from task_core.models import Brand
from task_scheduling import cron
from task_scheduling.models import BlackoutWindow, PeriodicSchedule, ScheduleRun


def schedules_ready(*, queryset: QuerySet, now: datetime | None = None) -> QuerySet:
    """Enabled schedules whose next fire time has come (the dispatcher's next work)."""
    return queryset.filter(enabled=True, next_run_at__lte=now or timezone.now()).order_by(
        "next_run_at"
    )


def schedule_runs(*, schedule: PeriodicSchedule) -> QuerySet:
    return ScheduleRun.objects.unscoped().filter(schedule=schedule).select_related("task")


def cron_preview(
    *, expression: str, tz_name: str, count: int, after: datetime | None = None, gap_policy="shift"
) -> dict:
    """validate-cron: a description and the next runs in the zone and in UTC, DST flagged."""
    expression = cron.cron_normalize(expression)
    tz = cron.timezone_validate(tz_name)
    after = after or timezone.now()
    fires = cron.fires_after(expression, tz_name, after, count=count, gap_policy=gap_policy)
    return {
        "valid": True,
        "cron_expression": expression,
        "timezone": tz_name,
        "description": cron.cron_describe(expression),
        "next_runs": [_fire_row(f, tz) for f in fires],
    }


def _fire_row(fire: cron.Fire, tz) -> dict:
    return {
        "local": fire.at.astimezone(tz).isoformat(),
        "utc": fire.at.isoformat().replace("+00:00", "Z"),
        "scheduled_local": fire.wall.isoformat(),
        "dst": fire.dst,
    }


def upcoming_runs(
    *,
    brand: Brand,
    start: datetime,
    end: datetime,
    calendar_id: int | None = None,
    limit: int = 2000,
) -> dict:
    """Every planned run of the brand's enabled schedules in [start, end], for a calendar
    view; runs inside a blackout of the schedule's calendar are flagged."""
    schedules = PeriodicSchedule.objects.for_brand(brand).filter(enabled=True)
    if calendar_id is not None:
        schedules = schedules.filter(calendar_id=calendar_id)
    schedules = list(schedules.order_by("id"))
    windows: dict[int, list[BlackoutWindow]] = {}
    calendar_ids = {s.calendar_id for s in schedules if s.calendar_id}
    for window in BlackoutWindow.objects.filter(
        calendar_id__in=calendar_ids, ends_at__gt=start, starts_at__lte=end
    ):
        windows.setdefault(window.calendar_id, []).append(window)
    runs, truncated = [], False
    for schedule in schedules:
        lo = max(start, schedule.start_at) if schedule.start_at else start
        hi = min(end, schedule.end_at) if schedule.end_at else end
        if hi < lo:
            continue
        try:
            fires = cron.fires_between(
                schedule.cron_expression,
                schedule.timezone,
                lo,
                hi,
                limit=limit + 1,
                gap_policy=schedule.dst_gap_policy,
            )
            tz = cron.timezone_get(schedule.timezone)
        except DomainValidationError:  # a stored row that cannot fire: no runs to show
            continue
        for fire in fires:
            blackout = any(w.covers(fire.at) for w in windows.get(schedule.calendar_id, ()))
            runs.append(
                {
                    "schedule_id": schedule.pk,
                    "schedule_name": schedule.name,
                    "task_type": schedule.task_type,
                    "timezone": schedule.timezone,
                    **_fire_row(fire, tz),
                    "blackout": blackout,
                }
            )
    runs.sort(key=lambda r: (r["utc"], r["schedule_id"]))
    if len(runs) > limit:
        runs, truncated = runs[:limit], True
    return {"from": start, "to": end, "truncated": truncated, "runs": runs}

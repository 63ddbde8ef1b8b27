"""Every write of task_scheduling: schedules, the dispatcher, run-now, calendars, one-off jobs."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from megahub.errors import Conflict, DomainError, DomainValidationError
from task_core import publishing
from task_core import services as core
from task_core.models import Brand, Task
from task_scheduling import cron
from task_scheduling.models import (
    BlackoutWindow,
    Calendar,
    OneOffJob,
    PeriodicSchedule,
    ScheduleRun,
)

logger = logging.getLogger("megahub.scheduling")
Outcome = ScheduleRun.Outcome
ACTIVE_STATUSES = [s for s in Task.Status.values if s not in Task.TERMINAL]
# Active but not started yet: what "queue one" allows a single one of.
WAITING_STATUSES = [Task.Status.PENDING, Task.Status.QUEUED, Task.Status.RETRYING]
# Fields whose change moves the next fire time.
TIMING_FIELDS = {"cron_expression", "timezone", "start_at", "end_at", "dst_gap_policy", "enabled"}
SCHEDULE_FIELDS = {
    "name", "description", "task_type", "context_data", "priority", "cron_expression",
    "timezone", "enabled", "calendar", "overlap_policy", "catchup_policy", "catchup_window_s",
    "dst_gap_policy", "start_at", "end_at",
}  # fmt: skip


class CronJobNotCancellable(Conflict):
    error_code = "CRON_JOB_NOT_CANCELLABLE"
    default_detail = "The job's task has already started or the job was cancelled."


class ScheduleNameTaken(Conflict):
    error_code = "SCHEDULE_NAME_TAKEN"
    default_detail = "A schedule with this name already exists in this brand."


class CalendarNameTaken(Conflict):
    error_code = "CALENDAR_NAME_TAKEN"
    default_detail = "A calendar with this name already exists in this brand."


def _actor(user) -> str:
    return core.actor_name(user, system="system:scheduler")


# --- schedules ----------------------------------------------------------------------------
def schedule_clean(*, brand: Brand, data: dict, instance: PeriodicSchedule | None = None) -> dict:
    """Validate schedule fields (merged over ``instance``); returns them normalised.

    Raises DomainValidationError naming the field: CRON_INVALID, TIMEZONE_INVALID,
    UNKNOWN_TASK_TYPE, CONTEXT_INVALID, or VALIDATION_ERROR (calendar, start/end).
    """
    merged = {f: getattr(instance, f) for f in SCHEDULE_FIELDS} if instance else {}
    merged.update(data)
    out = dict(data)
    if "cron_expression" in data:
        out["cron_expression"] = cron.cron_normalize(data["cron_expression"])
    elif instance is not None and merged.get("enabled"):
        # Resuming, or any edit of an enabled schedule, re-checks the stored expression (a row
        # from before the check, or edited outside the services); pausing always works.
        cron.cron_normalize(instance.cron_expression)
    if "timezone" in data:
        cron.timezone_validate(data["timezone"])
    core.task_validate_request(
        task_type=merged.get("task_type", ""),
        priority=merged.get("priority", Task.Priority.NORMAL),
        context_data=merged.get("context_data", {}),
    )
    calendar = data.get("calendar")
    if calendar is not None and calendar.brand_id != brand.pk:
        raise DomainValidationError(
            field_errors={"calendar": ["Unknown calendar (not found in this brand)."]}
        )
    start, end = merged.get("start_at"), merged.get("end_at")
    if start and end and end <= start:
        raise DomainValidationError(field_errors={"end_at": ["Must be after start_at."]})
    return out


def _next_fire(schedule: PeriodicSchedule, *, after: datetime) -> cron.Fire | None:
    """The schedule's first fire strictly after ``after`` inside [start_at, end_at]."""
    if schedule.start_at and after < schedule.start_at:
        after = schedule.start_at - timedelta(microseconds=1)
    try:
        fire = cron.next_fire(
            schedule.cron_expression,
            schedule.timezone,
            after,
            gap_policy=schedule.dst_gap_policy,
        )
    except DomainValidationError:  # a stored row that cannot fire (e.g. "0 0 30 2 *")
        return None
    if schedule.end_at and fire.at > schedule.end_at:
        return None
    return fire


def _reschedule(schedule: PeriodicSchedule, now: datetime) -> None:
    fire = _next_fire(schedule, after=now) if schedule.enabled else None
    schedule.next_run_at = fire.at if fire else None


def schedule_create(*, brand: Brand, user=None, now: datetime | None = None, **fields):
    """Create a schedule; its first run is the first fire after now (and after start_at)."""
    fields = schedule_clean(brand=brand, data=fields)
    if not fields.get("name"):  # the seed's example names none: the type and the expression
        fields["name"] = f"{fields['task_type']} {fields['cron_expression']}"
    schedule = PeriodicSchedule(brand=brand, created_by=user, **fields)
    _reschedule(schedule, now or timezone.now())
    try:
        with transaction.atomic():
            schedule.save(force_insert=True)
    except IntegrityError:
        raise ScheduleNameTaken()
    return schedule


def schedule_update(*, schedule: PeriodicSchedule, user=None, now=None, **fields):
    """Apply an edit; a timing change takes effect at the dispatcher's next tick."""
    fields = schedule_clean(brand=schedule.brand, data=fields, instance=schedule)
    with transaction.atomic():
        locked = PeriodicSchedule.objects.unscoped().select_for_update().get(pk=schedule.pk)
        timing = any(getattr(locked, k) != v for k, v in fields.items() if k in TIMING_FIELDS)
        for key, value in fields.items():
            setattr(locked, key, value)
        if timing:
            _reschedule(locked, now or timezone.now())
        try:
            with transaction.atomic():
                locked.save()
        except IntegrityError:
            raise ScheduleNameTaken()
    return locked


def schedule_pause(*, schedule: PeriodicSchedule, user=None) -> PeriodicSchedule:
    """Stop firing. Fire times while paused are not expected, so not caught up on resume."""
    return schedule_update(schedule=schedule, user=user, enabled=False)


def schedule_resume(*, schedule: PeriodicSchedule, user=None, now=None) -> PeriodicSchedule:
    """Fire again from the next fire time after now."""
    return schedule_update(schedule=schedule, user=user, enabled=True, now=now)


def schedule_delete(*, schedule: PeriodicSchedule) -> None:
    """Delete a schedule and its ledger; the tasks it created stay."""
    schedule.delete()


def schedule_run_now(*, schedule: PeriodicSchedule, user=None) -> ScheduleRun:
    """Create one task for the schedule now (ledger outcome "manual"); the cron timing and the
    overlap policy are untouched: an operator asked for it explicitly."""
    now = timezone.now()
    with transaction.atomic():
        task, _ = core.task_create(
            brand=schedule.brand,
            user=user,
            task_type=schedule.task_type,
            priority=schedule.priority,
            description=_task_description(schedule),
            context_data=schedule.context_data,
            idempotency_key=f"schedule:{schedule.pk}:manual:{now.isoformat()}",
            actor=_actor(user),
        )
        run = ScheduleRun.objects.create(
            brand=schedule.brand,
            schedule=schedule,
            fire_time=now,
            outcome=Outcome.MANUAL,
            task=task,
            detail=f"run now by {_actor(user)}",
        )
        PeriodicSchedule.objects.unscoped().filter(pk=schedule.pk).update(
            last_run_at=now, last_task=task
        )
    return run


def _task_description(schedule: PeriodicSchedule) -> str:
    return f"schedule {schedule.name}"[:5000]


# --- dispatcher ---------------------------------------------------------------------------
def schedules_dispatch_due(
    *, now: datetime | None = None, batch_size: int | None = None, max_batches: int = 1000
) -> Counter:
    """Fire every due schedule once per fire time; returns outcome counts.

    Safe to run from several processes at once: each batch locks its schedules with
    FOR UPDATE SKIP LOCKED, and the ledger's unique (schedule, fire_time) is the last guard.
    ``now`` is injectable (tests); by default each batch reads the clock.
    """
    batch_size = batch_size or settings.SCHEDULE_DISPATCH_BATCH
    totals: Counter = Counter()
    created: list[int] = []
    try:
        for _ in range(max_batches):
            handled, backlog = _dispatch_batch(
                now=now or timezone.now(), limit=batch_size, totals=totals, created=created
            )
            if handled < batch_size and not backlog:
                break
    finally:
        # Published once every batch is committed, so that publishing the first batches does
        # not delay recording the next ones; the release loop covers a crash in between.
        # on_commit: at once outside a transaction, after the caller's commit inside one.
        if created:
            transaction.on_commit(
                lambda: publishing.tasks_publish_many(task_pks=created, actor="system:scheduler")
            )
    return totals


def _blackouts(schedules, lo: datetime, hi: datetime) -> dict[int, list[BlackoutWindow]]:
    calendar_ids = {s.calendar_id for s in schedules if s.calendar_id}
    windows: dict[int, list[BlackoutWindow]] = defaultdict(list)
    if calendar_ids:
        for window in BlackoutWindow.objects.filter(
            calendar_id__in=calendar_ids, ends_at__gt=lo, starts_at__lte=hi
        ):
            windows[window.calendar_id].append(window)
    return windows


def _plan(schedule, fires, truncated, now, windows, active_statuses):
    """Outcome of each fire of one schedule in this tick: [(fire, outcome, detail)]."""
    grace = settings.SCHEDULE_MISFIRE_GRACE_SECONDS
    late = [f for f in fires if (now - f.at).total_seconds() > grace]
    late_at = {f.at for f in late}
    on_time = len(late) < len(fires)
    plan = []
    for fire in fires:
        if any(w.covers(fire.at) for w in windows.get(schedule.calendar_id, ())):
            plan.append([fire, Outcome.SKIPPED_BLACKOUT, "calendar blackout"])
            continue
        if fire.at not in late_at:
            plan.append([fire, Outcome.FIRED, ""])
            continue
        policy = schedule.catchup_policy
        if policy == PeriodicSchedule.CatchUp.RUN_ALL:
            within = (now - fire.at).total_seconds() <= schedule.catchup_window_s
            outcome = Outcome.CAUGHT_UP if within else Outcome.MISSED
        elif policy == PeriodicSchedule.CatchUp.RUN_ONCE:
            last_late = fire is late[-1] and not on_time and not truncated
            outcome = Outcome.CAUGHT_UP if last_late else Outcome.MISSED
        else:
            outcome = Outcome.MISSED
        plan.append([fire, outcome, "" if outcome == Outcome.CAUGHT_UP else "dispatcher down"])
    to_run = [p for p in plan if p[1] in (Outcome.FIRED, Outcome.CAUGHT_UP)]
    if to_run:
        overlap = schedule.overlap_policy
        blocked = (overlap == PeriodicSchedule.Overlap.SKIP and active_statuses) or (
            overlap == PeriodicSchedule.Overlap.QUEUE_ONE
            and any(s in WAITING_STATUSES for s in active_statuses)
        )
        if blocked:
            for p in to_run:
                p[1], p[2] = Outcome.SKIPPED_OVERLAP, "previous run still active"
        else:
            try:
                core.task_validate_request(
                    task_type=schedule.task_type,
                    priority=schedule.priority,
                    context_data=schedule.context_data,
                )
            except DomainError as exc:
                for p in to_run:
                    p[1], p[2] = Outcome.FAILED, f"{exc.error_code}: {exc.detail}"[:300]
    return plan


def _save_progress(schedules: list[PeriodicSchedule]) -> None:
    """Write next_run_at, last_run_at and last_task of a batch in one statement."""
    if connection.vendor != "postgresql":  # bulk_update's CASE is slow but portable
        PeriodicSchedule.objects.unscoped().bulk_update(
            schedules, ["next_run_at", "last_run_at", "last_task"], batch_size=1000
        )
        return
    table = PeriodicSchedule._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} AS s SET next_run_at = v.next_run_at, "  # noqa: S608 - our table
            "last_run_at = v.last_run_at, last_task_id = v.last_task_id "
            "FROM unnest(%s::bigint[], %s::timestamptz[], %s::timestamptz[], %s::bigint[]) "
            "AS v(id, next_run_at, last_run_at, last_task_id) WHERE s.id = v.id",
            [
                [s.pk for s in schedules],
                [s.next_run_at for s in schedules],
                [s.last_run_at for s in schedules],
                [s.last_task_id for s in schedules],
            ],
        )


def _dispatch_batch(
    *, now: datetime, limit: int, totals: Counter, created: list[int]
) -> tuple[int, bool]:
    """One transaction: returns (schedules handled, whether a long downtime left fire times
    for another batch)."""
    max_fires = settings.SCHEDULE_MAX_FIRES_PER_TICK
    try:
        with transaction.atomic():
            schedules = list(
                PeriodicSchedule.objects.unscoped()
                .select_for_update(skip_locked=True, of=("self",))
                .select_related("brand")
                .filter(enabled=True, next_run_at__lte=now)
                .order_by("next_run_at")[:limit]
            )
            if not schedules:
                return 0, False
            ids = [s.pk for s in schedules]
            fires_of: dict[int, tuple[list[cron.Fire], bool]] = {}
            for s in schedules:
                try:
                    fires = cron.fires_between(
                        s.cron_expression,
                        s.timezone,
                        s.next_run_at,
                        min(now, s.end_at) if s.end_at else now,
                        limit=max_fires + 1,
                        gap_policy=s.dst_gap_policy,
                    )
                except DomainValidationError:  # a stored row that cannot fire: next_run_at
                    fires = []  # becomes null below, the other schedules of the batch go on
                fires_of[s.pk] = (fires[:max_fires], len(fires) > max_fires)
            lo = min(s.next_run_at for s in schedules)
            windows = _blackouts(schedules, lo, now)
            active: dict[int, list[str]] = defaultdict(list)
            for schedule_id, status in (
                ScheduleRun.objects.unscoped()
                .filter(schedule_id__in=ids, task__status__in=ACTIVE_STATUSES)
                .values_list("schedule_id", "task__status")
            ):
                active[schedule_id].append(status)
            recorded = set(
                ScheduleRun.objects.unscoped()
                .filter(schedule_id__in=ids, fire_time__gte=lo, fire_time__lte=now)
                .values_list("schedule_id", "fire_time")
            )
            runs: list[ScheduleRun] = []
            requests: list[tuple[ScheduleRun, core.TaskRequest]] = []
            for s in schedules:
                fires, truncated = fires_of[s.pk]
                fires = [f for f in fires if (s.pk, f.at) not in recorded]
                for fire, outcome, detail in _plan(s, fires, truncated, now, windows, active[s.pk]):
                    run = ScheduleRun(
                        brand_id=s.brand_id,
                        schedule=s,
                        fire_time=fire.at,
                        outcome=outcome,
                        dst=fire.dst or "",
                        detail=detail,
                    )
                    runs.append(run)
                    totals[outcome] += 1
                    if outcome in (Outcome.FIRED, Outcome.CAUGHT_UP):
                        key = f"schedule:{s.pk}:{fire.at.isoformat()}"
                        requests.append(
                            (
                                run,
                                core.TaskRequest(
                                    brand=s.brand,
                                    task_type=s.task_type,
                                    priority=s.priority,
                                    description=_task_description(s),
                                    context_data=s.context_data,
                                    idempotency_key=key,
                                ),
                            )
                        )
            results = core.task_create_many(
                requests=[r for _, r in requests],
                actor="system:scheduler",
                publish=False,
                validated=True,  # _plan validated each schedule's request
            )
            for (run, _), (task, _) in zip(requests, results, strict=True):
                run.task = task
            ScheduleRun.objects.bulk_create(runs, batch_size=1000)
            last_task_of = {run.schedule_id: run for run, _ in requests}
            for s in schedules:
                fires, truncated = fires_of[s.pk]
                if truncated:  # the rest of a long downtime is handled by the next batch
                    fire = _next_fire(s, after=fires[-1].at)
                else:
                    fire = _next_fire(s, after=max(now, fires[-1].at) if fires else now)
                s.next_run_at = fire.at if fire else None
                if s.pk in last_task_of:
                    s.last_run_at = last_task_of[s.pk].fire_time
                    s.last_task = last_task_of[s.pk].task
            _save_progress(schedules)
    except IntegrityError:
        # Another process recorded one of these fire times first: nothing of this batch was
        # committed, and the next tick sees the ledger as it now is.
        logger.warning("schedule dispatch batch lost a ledger race; retried next tick")
        return 0, False
    created.extend(task.pk for task, new in results if new)
    if runs:
        logger.info(
            "schedules dispatched",
            extra={"schedules": len(schedules), "tasks": len(requests), "runs": len(runs)},
        )
    return len(schedules), any(truncated for _, truncated in fires_of.values())


# --- calendars ----------------------------------------------------------------------------
def _clean_windows(windows: list[dict]) -> list[dict]:
    errors = {}
    for i, window in enumerate(windows):
        if window["ends_at"] <= window["starts_at"]:
            errors[str(i)] = ["ends_at must be after starts_at."]
    if errors:
        raise DomainValidationError(field_errors={"blackout_windows": errors})
    return windows


def calendar_create(*, brand: Brand, name: str, description: str = "", blackout_windows=()):
    """Create a calendar with its blackout windows."""
    windows = _clean_windows(list(blackout_windows))
    try:
        with transaction.atomic():
            calendar = Calendar.objects.create(brand=brand, name=name, description=description)
            BlackoutWindow.objects.bulk_create(
                BlackoutWindow(calendar=calendar, **w) for w in windows
            )
    except IntegrityError:
        raise CalendarNameTaken()
    return calendar


def calendar_update(*, calendar: Calendar, blackout_windows=None, **fields) -> Calendar:
    """Edit a calendar; ``blackout_windows``, when given, replaces the whole set."""
    windows = _clean_windows(list(blackout_windows)) if blackout_windows is not None else None
    try:
        with transaction.atomic():
            for key, value in fields.items():
                setattr(calendar, key, value)
            calendar.save()
            if windows is not None:
                calendar.windows.all().delete()
                BlackoutWindow.objects.bulk_create(
                    BlackoutWindow(calendar=calendar, **w) for w in windows
                )
    except IntegrityError:
        raise CalendarNameTaken()
    return calendar


def calendar_delete(*, calendar: Calendar) -> None:
    """Delete a calendar; its schedules keep running, without blackouts."""
    calendar.delete()


# --- one-off jobs (cron-jobs/) ----------------------------------------------------------
def cron_job_create(
    *,
    brand: Brand,
    user=None,
    task_type: str,
    run_at: datetime,
    context_data: dict | None = None,
    priority: str = Task.Priority.NORMAL,
    name: str = "",
) -> OneOffJob:
    """Schedule a task type to run once at ``run_at``: the task waits in the database
    (scheduled_for) and the release loop publishes it when due."""
    if run_at <= timezone.now():
        raise DomainValidationError(field_errors={"run_at": ["Must be in the future."]})
    with transaction.atomic():
        task, _ = core.task_create(
            brand=brand,
            user=user,
            task_type=task_type,
            priority=priority,
            description=f"cron job {name}".strip(),
            context_data=context_data or {},
            scheduled_for=run_at,
            actor=_actor(user),
        )
        return OneOffJob.objects.create(
            brand=brand,
            name=name,
            task_type=task_type,
            context_data=context_data or {},
            priority=priority,
            run_at=run_at,
            task=task,
            created_by=user,
        )


def cron_job_cancel(*, job: OneOffJob, user=None) -> OneOffJob:
    """Cancel a job whose task has not started yet."""
    with transaction.atomic():
        job = OneOffJob.objects.unscoped().select_for_update().get(pk=job.pk)
        task = job.task
        if job.status == OneOffJob.Status.CANCELLED or (
            task is not None and task.status not in (Task.Status.PENDING, Task.Status.QUEUED)
        ):
            raise CronJobNotCancellable()
        if task is not None:
            core.task_cancel(task=task, user=user)
        job.status = OneOffJob.Status.CANCELLED
        job.save(update_fields=["status"])
    return job

"""Liveness and readiness probes (no auth, no brand)."""

from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.migrations.executor import MigrationExecutor
from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_GET

from task_core.selectors import events_backlog
from task_monitoring.selectors import platform_loops

BEAT_STALE_AFTER = timedelta(seconds=60)


@require_GET
def liveness(request):
    return JsonResponse({"status": "ok"})


def _check_database() -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return {"status": "ok"}


def _check_migrations() -> dict:
    executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        return {"status": "fail", "detail": f"{len(plan)} migration(s) not applied"}
    return {"status": "ok"}


def _check_broker() -> dict:
    with current_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
    return {"status": "ok"}


def _check_beat() -> dict:
    """Beat is alive if it sent one of the platform's periodic tasks recently."""
    from django_celery_beat.models import PeriodicTask

    last = (
        PeriodicTask.objects.filter(name__startswith="megahub.", last_run_at__isnull=False)
        .order_by("-last_run_at")
        .values_list("last_run_at", flat=True)
        .first()
    )
    if last is None:
        return {"status": "warn", "detail": "beat has not run yet"}
    age = timezone.now() - last
    if age > BEAT_STALE_AFTER:
        return {"status": "warn", "detail": f"beat last ran {int(age.total_seconds())}s ago"}
    return {"status": "ok", "last_run_at": last.isoformat()}


def _check_workers() -> dict:
    try:
        replies = current_app.control.ping(timeout=1.0) or []
    except Exception as exc:  # transports without broadcast (filesystem) land here
        return {"status": "warn", "detail": f"cannot ping workers: {type(exc).__name__}"}
    if not replies:
        return {"status": "warn", "detail": "no worker answered within 1s"}
    return {"status": "ok", "online": len(replies)}


def _check_events_outbox() -> dict:
    backlog = events_backlog()
    if backlog["unpublished"] > settings.EVENTS_BACKLOG_WARN:
        return {"status": "warn", "detail": "events are piling up in the outbox", **backlog}
    return {"status": "ok", **backlog}


def _check_loops() -> dict:
    """Each platform loop with its last successful tick; a loop silent for 3 of its intervals
    is ``late`` and turns this check into a warning."""
    loops = platform_loops()
    late = [loop["task"] for loop in loops if loop["status"] == "late"]
    if late:
        return {"status": "warn", "detail": f"late: {', '.join(late)}", "loops": loops}
    return {"status": "ok", "loops": loops}


# Failing a critical check makes the instance not ready (503); warnings are reported only,
# because the web process can accept tasks while beat or the workers restart.
CHECKS = {
    "database": (_check_database, True),
    "migrations": (_check_migrations, True),
    "broker": (_check_broker, True),
    "beat": (_check_beat, False),
    "workers": (_check_workers, False),
    "events_outbox": (_check_events_outbox, False),
    "loops": (_check_loops, False),
}


@require_GET
def readiness(request):
    results, ready = {}, True
    for name, (check, critical) in CHECKS.items():
        try:
            results[name] = check()
        except Exception as exc:
            results[name] = {"status": "fail", "detail": type(exc).__name__}
        if critical and results[name]["status"] == "fail":
            ready = False
    return JsonResponse(
        {"status": "ok" if ready else "fail", "checks": results}, status=200 if ready else 503
    )


# --- Red/amber/green for the operations page -------------------------------------------------

COLOURS = {"ok": "green", "pending": "amber", "warn": "amber", "late": "red", "fail": "red"}
DISPATCH_LOOP = "megahub.schedules_dispatch_due"


def _run(check) -> dict:
    try:
        return check()
    except Exception as exc:  # an unreachable broker raises: that is a red light, not a 500
        return {"status": "fail", "detail": type(exc).__name__}


def _age(seconds: float | None) -> str:
    return "never" if seconds is None else f"{int(seconds)}s ago"


def platform_health() -> list[dict]:
    """The readiness checks the operations page shows, each with a colour: ``green`` (ok),
    ``amber`` (warning: beat not run yet, outbox above EVENTS_BACKLOG_WARN, a loop not run yet)
    or ``red`` (broker unreachable, a loop silent for 3 of its intervals, a failed check).
    Platform-wide, not per brand."""
    rows = []
    beat = _run(_check_beat)
    rows.append(
        {
            "name": "Beat last tick",
            "colour": COLOURS[beat["status"]],
            "detail": beat.get("detail") or f"last tick {beat.get('last_run_at', '')}",
        }
    )
    loops = _run(_check_loops)
    by_name = {loop["task"]: loop for loop in loops.get("loops", [])}
    dispatch = by_name.get(DISPATCH_LOOP)
    if dispatch is None:
        detail = loops.get("detail", "schedule dispatch loop not configured")
        rows.append({"name": "Dispatcher lag", "colour": "red", "detail": detail})
    else:
        rows.append(
            {
                "name": "Dispatcher lag",
                "colour": COLOURS[dispatch["status"]],
                "detail": f"schedule dispatch {_age(dispatch['age_s'])} "
                f"(every {dispatch['interval_s']:g}s)",
            }
        )
    outbox = _run(_check_events_outbox)
    rows.append(
        {
            "name": "Outbox backlog",
            "colour": COLOURS[outbox["status"]],
            "detail": outbox.get("detail", "")
            + (f" {outbox['unpublished']} unpublished" if "unpublished" in outbox else ""),
        }
    )
    broker = _run(_check_broker)
    rows.append(
        {
            "name": "Broker reachable",
            "colour": COLOURS[broker["status"]],
            "detail": "reachable" if broker["status"] == "ok" else broker.get("detail", ""),
        }
    )
    late = [name for name, loop in by_name.items() if loop["status"] == "late"]
    pending = [name for name, loop in by_name.items() if loop["status"] == "pending"]
    rows.append(
        {
            "name": "Platform loops on time",
            "colour": "red"
            if late or loops["status"] == "fail"
            else ("amber" if pending else "green"),
            "detail": f"late: {', '.join(late)}"
            if late
            else (f"not run yet: {len(pending)}" if pending else f"{len(by_name)} on time"),
            "loops": [{**loop, "colour": COLOURS[loop["status"]]} for loop in by_name.values()],
        }
    )
    return rows

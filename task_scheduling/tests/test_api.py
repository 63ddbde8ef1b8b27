"""The /tasks/scheduled/ API: shapes, bad input, roles, and the cross-brand matrix."""

from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from task_core.models import Task
from task_scheduling import services
from task_scheduling.models import Calendar, OneOffJob, PeriodicSchedule, ScheduleRun

BASE = "/tasks/scheduled"
SCHEDULE = {
    "name": "nightly report",
    "task_type": "noop",
    "cron_expression": "30 2 * * *",
    "timezone": "Europe/Paris",
}


def assert_error(response, status, code, field=None):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["error_code"] == code, body
    assert isinstance(body["detail"], str) and body["detail"]
    if field is not None:
        assert field in body["field_errors"], body
    return body


@pytest.fixture
def schedule(brand):
    return services.schedule_create(brand=brand, **SCHEDULE)


@pytest.fixture
def foreign(other_brand):
    """One object of every kind in the other brand."""
    schedule = services.schedule_create(brand=other_brand, **SCHEDULE)
    calendar = services.calendar_create(brand=other_brand, name="theirs")
    job = services.cron_job_create(
        brand=other_brand, task_type="noop", run_at=timezone.now() + timedelta(days=1)
    )
    services.schedule_run_now(schedule=schedule)
    return {"schedule": schedule, "calendar": calendar, "job": job}


# --- periodic-tasks ------------------------------------------------------------------------
def test_create_a_schedule(api, owner, brand):
    response = api(owner, brand).post(f"{BASE}/periodic-tasks/", SCHEDULE, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "active" and body["enabled"] is True
    assert body["cron_description"] == "At 02:30"
    assert body["overlap_policy"] == "skip" and body["catchup_policy"] == "run_once"
    assert body["next_run_local"].endswith(("T02:30:00+01:00", "T02:30:00+02:00", ":00+02:00"))
    assert body["created_by"] == {"id": owner.pk, "username": "owner"}
    schedule = PeriodicSchedule.objects.unscoped().get()
    assert schedule.brand == brand and schedule.next_run_at is not None


@pytest.mark.parametrize(
    "change,code,field",
    [
        ({"cron_expression": "0 0 * * * *"}, "CRON_INVALID", "cron_expression"),
        ({"cron_expression": "0 25 * * *"}, "CRON_INVALID", "cron_expression"),
        ({"cron_expression": "every day"}, "CRON_INVALID", "cron_expression"),
        ({"timezone": "Europe/Atlantis"}, "TIMEZONE_INVALID", "timezone"),
        ({"task_type": "rm_rf"}, "UNKNOWN_TASK_TYPE", "task_type"),
        ({"start_at": "2030-01-02T00:00:00Z", "end_at": "2030-01-01T00:00:00Z"},
         "VALIDATION_ERROR", "end_at"),
        ({"overlap_policy": "sometimes"}, "VALIDATION_ERROR", "overlap_policy"),
        ({"catchup_policy": "never"}, "VALIDATION_ERROR", "catchup_policy"),
        ({"priority": "urgent"}, "VALIDATION_ERROR", "priority"),
        ({"context_data": [1]}, "VALIDATION_ERROR", "context_data"),
        ({"calendar": 999999}, "VALIDATION_ERROR", "calendar"),
        ({"next_run_at": "2030-01-01T00:00:00Z"}, "VALIDATION_ERROR", "next_run_at"),
        ({"brand": 1}, "VALIDATION_ERROR", "brand"),
        ({"last_task": 1}, "VALIDATION_ERROR", "last_task"),
    ],
)  # fmt: skip
def test_bad_schedule_input_is_a_400_naming_the_field(api, owner, brand, change, code, field):
    response = api(owner, brand).post(
        f"{BASE}/periodic-tasks/", {**SCHEDULE, **change}, format="json"
    )
    assert_error(response, 400, code, field)
    assert not PeriodicSchedule.objects.unscoped().exists()


def test_a_calendar_of_another_brand_is_a_400(api, owner, brand, foreign):
    response = api(owner, brand).post(
        f"{BASE}/periodic-tasks/",
        {**SCHEDULE, "calendar": foreign["calendar"].pk},
        format="json",
    )
    assert_error(response, 400, "VALIDATION_ERROR", "calendar")
    assert not PeriodicSchedule.objects.filter(brand=brand).exists()


def test_bad_update_saves_nothing(api, owner, brand, schedule):
    response = api(owner, brand).patch(
        f"{BASE}/periodic-tasks/{schedule.pk}/", {"cron_expression": "61 * * * *"}, format="json"
    )
    assert_error(response, 400, "CRON_INVALID", "cron_expression")
    schedule.refresh_from_db()
    assert schedule.cron_expression == "30 2 * * *"


def test_duplicate_name_is_a_409(api, owner, brand, schedule):
    response = api(owner, brand).post(f"{BASE}/periodic-tasks/", SCHEDULE, format="json")
    assert_error(response, 409, "SCHEDULE_NAME_TAKEN")


def test_update_moves_the_next_run(api, owner, brand, schedule):
    response = api(owner, brand).patch(
        f"{BASE}/periodic-tasks/{schedule.pk}/",
        {"cron_expression": "*/5 * * * *", "timezone": "UTC"},
        format="json",
    )
    assert response.status_code == 200, response.content
    next_run = datetime.fromisoformat(response.json()["next_run_at"].replace("Z", "+00:00"))
    assert timezone.now() < next_run <= timezone.now() + timedelta(minutes=5)


def test_pause_resume_and_status_filter(api, owner, brand, schedule):
    client = api(owner, brand)
    services.schedule_create(brand=brand, **{**SCHEDULE, "name": "other"})
    paused = client.post(f"{BASE}/periodic-tasks/{schedule.pk}/pause/").json()
    assert paused["status"] == "paused" and paused["next_run_at"] is None
    assert [
        s["id"] for s in client.get(f"{BASE}/periodic-tasks/?status=paused").json()["results"]
    ] == [schedule.pk]
    assert len(client.get(f"{BASE}/periodic-tasks/?status=active").json()["results"]) == 1
    assert_error(client.get(f"{BASE}/periodic-tasks/?status=odd"), 400, "VALIDATION_ERROR")
    resumed = client.post(f"{BASE}/periodic-tasks/{schedule.pk}/resume/").json()
    assert resumed["status"] == "active" and resumed["next_run_at"] is not None


def test_run_now_and_the_ledger(api, brand, schedule, user_with_role):
    client = api(user_with_role("operator"), brand)
    response = client.post(f"{BASE}/periodic-tasks/{schedule.pk}/run-now/")
    assert response.status_code == 201, response.content
    run = response.json()
    assert run["outcome"] == "manual" and run["task"]["status"] == "queued"
    runs = client.get(f"{BASE}/periodic-tasks/{schedule.pk}/runs/").json()
    assert [r["id"] for r in runs["results"]] == [run["id"]]
    assert (
        client.get(f"{BASE}/periodic-tasks/{schedule.pk}/runs/?outcome=fired").json()["results"]
        == []
    )
    assert Task.objects.unscoped().get().pk == run["task"]["id"]


def test_ready_for_execution_lists_due_schedules(api, owner, brand, schedule):
    client = api(owner, brand)
    assert client.get(f"{BASE}/periodic-tasks/ready-for-execution/").json()["results"] == []
    PeriodicSchedule.objects.unscoped().filter(pk=schedule.pk).update(
        next_run_at=timezone.now() - timedelta(seconds=5)
    )
    due = client.get(f"{BASE}/periodic-tasks/ready-for-execution/").json()["results"]
    assert [s["id"] for s in due] == [schedule.pk]


def test_delete_a_schedule_keeps_its_tasks(api, owner, brand, schedule):
    services.schedule_run_now(schedule=schedule)
    response = api(owner, brand).delete(f"{BASE}/periodic-tasks/{schedule.pk}/")
    assert response.status_code == 204
    assert not PeriodicSchedule.objects.unscoped().exists() and Task.objects.unscoped().count() == 1


# --- validate-cron -------------------------------------------------------------------------
def test_validate_cron_lists_runs_in_the_zone_and_utc_with_dst_flags(api, brand, user_with_role):
    response = api(user_with_role("viewer"), brand).post(
        f"{BASE}/periodic-tasks/validate-cron/",
        {
            "cron_expression": "30 2 * * *",
            "timezone": "Europe/Paris",
            "count": 3,
            "after": "2026-03-28T00:00:00Z",
        },
        format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["valid"] is True and body["description"] == "At 02:30"
    assert body["next_runs"] == [
        {"local": "2026-03-28T02:30:00+01:00", "utc": "2026-03-28T01:30:00Z",
         "scheduled_local": "2026-03-28T02:30:00", "dst": None},
        {"local": "2026-03-29T03:00:00+02:00", "utc": "2026-03-29T01:00:00Z",
         "scheduled_local": "2026-03-29T02:30:00", "dst": "gap"},
        {"local": "2026-03-30T02:30:00+02:00", "utc": "2026-03-30T00:30:00Z",
         "scheduled_local": "2026-03-30T02:30:00", "dst": None},
    ]  # fmt: skip


def test_validate_cron_flags_a_repeated_time(api, owner, brand):
    body = (
        api(owner, brand)
        .post(
            f"{BASE}/periodic-tasks/validate-cron/",
            {"cron_expression": "30 1 * * *", "timezone": "America/New_York", "count": 1,
             "after": "2026-11-01T00:00:00Z"},
            format="json",
        )
        .json()
    )  # fmt: skip
    assert body["next_runs"][0]["dst"] == "overlap"
    assert body["next_runs"][0]["utc"] == "2026-11-01T05:30:00Z"  # 01:30 EDT, the first one


@pytest.mark.parametrize(
    "payload,code,field",
    [
        ({"cron_expression": "* * * * * *"}, "CRON_INVALID", "cron_expression"),
        ({"cron_expression": "99 * * * *"}, "CRON_INVALID", "cron_expression"),
        ({"cron_expression": "lol"}, "CRON_INVALID", "cron_expression"),
        ({"cron_expression": "0 0 30 2 *"}, "CRON_INVALID", "cron_expression"),
        ({"cron_expression": "* * * * *", "timezone": "Nowhere/City"}, "TIMEZONE_INVALID",
         "timezone"),
        ({"cron_expression": "* * * * *", "count": 1000}, "VALIDATION_ERROR", "count"),
        ({}, "VALIDATION_ERROR", "cron_expression"),
    ],
)  # fmt: skip
def test_validate_cron_bad_input(api, owner, brand, payload, code, field):
    response = api(owner, brand).post(
        f"{BASE}/periodic-tasks/validate-cron/", payload, format="json"
    )
    assert_error(response, 400, code, field)


# --- calendars -------------------------------------------------------------------------------
def test_calendar_with_blackouts_and_upcoming_runs(api, owner, brand):
    client = api(owner, brand)
    response = client.post(
        f"{BASE}/calendars/",
        {
            "name": "holidays",
            "blackout_windows": [
                {"starts_at": "2030-12-25T00:00:00Z", "ends_at": "2030-12-26T00:00:00Z",
                 "reason": "Christmas"},
            ],
        },
        format="json",
    )  # fmt: skip
    assert response.status_code == 201, response.content
    calendar = response.json()
    assert calendar["blackout_windows"][0]["reason"] == "Christmas"
    services.schedule_create(
        brand=brand,
        name="daily",
        task_type="noop",
        cron_expression="0 9 * * *",
        calendar=Calendar.objects.unscoped().get(pk=calendar["id"]),
    )
    services.schedule_create(
        brand=brand, name="other", task_type="noop", cron_expression="0 8 * * *"
    )
    url = (
        f"{BASE}/calendars/{calendar['id']}/upcoming/"
        "?from=2030-12-24T00:00:00Z&to=2030-12-27T00:00:00Z"
    )
    body = client.get(url).json()
    assert [(r["utc"], r["blackout"]) for r in body["runs"]] == [
        ("2030-12-24T09:00:00Z", False),
        ("2030-12-25T09:00:00Z", True),
        ("2030-12-26T09:00:00Z", False),
    ]
    every = client.get(
        f"{BASE}/calendars/upcoming/?from=2030-12-24T00:00:00Z&to=2030-12-25T00:00:00Z"
    ).json()
    assert [r["schedule_name"] for r in every["runs"]] == ["other", "daily"]


@pytest.mark.parametrize(
    "payload,field",
    [
        ({"name": "x", "blackout_windows": [
            {"starts_at": "2030-01-02T00:00:00Z", "ends_at": "2030-01-01T00:00:00Z"}]},
         "blackout_windows"),
        ({"name": "x", "blackout_windows": [{"starts_at": "soon"}]}, "blackout_windows"),
        ({"blackout_windows": []}, "name"),
        ({"name": "x", "brand": 3}, "brand"),
    ],
)  # fmt: skip
def test_bad_calendar_input(api, owner, brand, payload, field):
    response = api(owner, brand).post(f"{BASE}/calendars/", payload, format="json")
    assert_error(response, 400, "VALIDATION_ERROR", field)
    assert not Calendar.objects.unscoped().exists()


@pytest.mark.parametrize(
    "query", ["", "?from=2030-01-02T00:00:00Z&to=2030-01-01T00:00:00Z", "?from=x&to=y",
              "?from=2030-01-01T00:00:00Z&to=2031-01-01T00:00:00Z"],
)  # fmt: skip
def test_bad_upcoming_range(api, owner, brand, query):
    assert_error(
        api(owner, brand).get(f"{BASE}/calendars/upcoming/{query}"), 400, "VALIDATION_ERROR"
    )


# --- cron-jobs ---------------------------------------------------------------------------------
def test_cron_job_create_and_cancel(api, brand, user_with_role):
    client = api(user_with_role("operator"), brand)
    run_at = (timezone.now() + timedelta(hours=2)).isoformat()
    response = client.post(
        f"{BASE}/cron-jobs/", {"task_type": "noop", "run_at": run_at, "name": "once"}, format="json"
    )
    assert response.status_code == 201, response.content
    job = response.json()
    task = Task.objects.unscoped().get(pk=job["task"]["id"])
    assert task.status == "pending" and task.available_at == task.scheduled_for
    cancelled = client.post(f"{BASE}/cron-jobs/{job['id']}/cancel/")
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["task"]["status"] == "cancelled"
    assert_error(
        client.post(f"{BASE}/cron-jobs/{job['id']}/cancel/"), 409, "CRON_JOB_NOT_CANCELLABLE"
    )


@pytest.mark.parametrize(
    "payload,code,field",
    [
        ({"task_type": "noop", "run_at": "2000-01-01T00:00:00Z"}, "VALIDATION_ERROR", "run_at"),
        ({"task_type": "nope", "run_at": "2099-01-01T00:00:00Z"}, "UNKNOWN_TASK_TYPE",
         "task_type"),
        ({"task_type": "noop"}, "VALIDATION_ERROR", "run_at"),
        ({"task_type": "noop", "run_at": "2099-01-01T00:00:00Z", "status": "x"},
         "VALIDATION_ERROR", "status"),
    ],
)  # fmt: skip
def test_bad_cron_job_input(api, owner, brand, payload, code, field):
    assert_error(
        api(owner, brand).post(f"{BASE}/cron-jobs/", payload, format="json"), 400, code, field
    )
    assert not OneOffJob.objects.unscoped().exists() and not Task.objects.unscoped().exists()


# --- cross-brand lists (the access matrix is generated in tests/security/) ------------------
LISTS = [
    "periodic-tasks/",
    "periodic-tasks/ready-for-execution/",
    "calendars/",
    "cron-jobs/",
]


@pytest.mark.parametrize("path", LISTS)
def test_lists_never_show_another_brands_rows(api, member, brand, foreign, path):
    PeriodicSchedule.objects.unscoped().update(next_run_at=timezone.now() - timedelta(minutes=1))
    assert api(member, brand).get(f"{BASE}/{path}").json()["results"] == []
    assert len(api(member, foreign["schedule"].brand).get(f"{BASE}/{path}").json()["results"]) == 1


def test_upcoming_never_shows_another_brands_runs(api, owner, brand, foreign):
    url = f"{BASE}/calendars/upcoming/?from=2030-01-01T00:00:00Z&to=2030-01-03T00:00:00Z"
    assert api(owner, brand).get(url).json()["runs"] == []


def test_ledger_is_attached_to_tasks_of_the_brand_only(brand, other_brand, foreign):
    assert not ScheduleRun.objects.for_brand(brand).exists()
    assert ScheduleRun.objects.for_brand(other_brand).count() == 1

"""An expression with no fire time (``0 0 31 2 *``) is CRON_INVALID on every write path through
one validation (cron.cron_normalize); a stored row that cannot fire never breaks a read."""

from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from task_scheduling import cron, services
from task_scheduling.models import PeriodicSchedule
from tests.factories import UserFactory

BASE = "/tasks/scheduled"
NEVER = ["0 0 31 2 *", "0 0 30 2 *", "15 10 31 4,6,9,11 *"]
GOOD = {"name": "good", "task_type": "noop", "cron_expression": "0 9 * * *", "timezone": "UTC"}


def assert_cron_invalid(response):
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error_code"] == "CRON_INVALID", body
    assert "cron_expression" in body["field_errors"], body


def stored_never(brand, *, enabled=True, name="never", **fields):
    """A row as left by an older version (or a raw edit): no write path accepts it now."""
    fields = {"next_run_at": None, **fields}
    return PeriodicSchedule.objects.create(
        brand=brand, name=name, task_type="noop", cron_expression="0 0 31 2 *",
        timezone="UTC", enabled=enabled, **fields,
    )  # fmt: skip


def test_the_one_validation_refuses_expressions_without_a_fire_time():
    for expression in NEVER:
        with pytest.raises(cron.CronNeverFires):
            cron.cron_normalize(expression)
    # Rare but real dates are fine: 29 February, 31st of the long months, Feb 31 OR Monday.
    for expression in ["0 0 29 2 *", "0 0 31 * *", "0 0 31 2 mon"]:
        assert cron.cron_normalize(expression) == expression


@pytest.mark.parametrize("expression", NEVER)
def test_create_refuses_a_never_firing_expression(api, owner, brand, expression):
    response = api(owner, brand).post(
        f"{BASE}/periodic-tasks/", {**GOOD, "cron_expression": expression}, format="json"
    )
    assert_cron_invalid(response)
    assert not PeriodicSchedule.objects.unscoped().exists()


def test_patch_refuses_a_never_firing_expression(api, owner, brand):
    schedule = services.schedule_create(brand=brand, **GOOD)
    response = api(owner, brand).patch(
        f"{BASE}/periodic-tasks/{schedule.pk}/", {"cron_expression": "0 0 31 2 *"}, format="json"
    )
    assert_cron_invalid(response)
    schedule.refresh_from_db()
    assert schedule.cron_expression == "0 9 * * *" and schedule.next_run_at is not None


def test_resume_refuses_a_stored_never_firing_schedule_and_pause_works(api, owner, brand):
    paused = stored_never(brand, enabled=False)
    client = api(owner, brand)
    assert_cron_invalid(client.post(f"{BASE}/periodic-tasks/{paused.pk}/resume/"))
    paused.refresh_from_db()
    assert not paused.enabled
    active = stored_never(brand, name="active one")
    response = client.post(f"{BASE}/periodic-tasks/{active.pk}/pause/")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "paused"
    fixed = client.patch(
        f"{BASE}/periodic-tasks/{paused.pk}/",
        {"cron_expression": "0 0 28 2 *", "enabled": True},
        format="json",
    )
    assert fixed.status_code == 200, fixed.content
    assert fixed.json()["next_run_at"] is not None


def test_admin_form_refuses_a_never_firing_expression(brand):
    client = Client()
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    response = client.post(
        "/admin/task_scheduling/periodicschedule/add/",
        {
            "brand": brand.pk, "name": "x", "task_type": "noop", "context_data": "{}",
            "priority": "normal", "cron_expression": "0 0 31 2 *", "timezone": "UTC",
            "enabled": "on", "overlap_policy": "skip", "catchup_policy": "run_once",
            "catchup_window_s": 3600, "dst_gap_policy": "shift",
            "runs-TOTAL_FORMS": 0, "runs-INITIAL_FORMS": 0,
        },
    )  # fmt: skip
    assert response.status_code == 200  # the form again, with the error
    assert "never matches a real date" in response.content.decode()
    assert not PeriodicSchedule.objects.unscoped().exists()


def test_validate_cron_command_refuses_a_never_firing_expression():
    with pytest.raises(CommandError, match="never matches"):
        call_command("validate_cron", "0 0 31 2 *")


def test_upcoming_and_ready_views_skip_a_stored_row_that_cannot_fire(api, owner, brand):
    services.schedule_create(brand=brand, **GOOD)
    stored_never(brand)
    # A stored row with a due next_run_at (as an older version could leave it).
    stored_never(brand, name="due", next_run_at=timezone.now() - timedelta(minutes=1))
    client = api(owner, brand)
    response = client.get(
        f"{BASE}/calendars/upcoming/?from=2030-12-24T00:00:00Z&to=2030-12-26T00:00:00Z"
    )
    assert response.status_code == 200, response.content
    assert [(r["schedule_name"], r["utc"]) for r in response.json()["runs"]] == [
        ("good", "2030-12-24T09:00:00Z"),
        ("good", "2030-12-25T09:00:00Z"),
    ]
    ready = client.get(f"{BASE}/periodic-tasks/ready-for-execution/")
    assert ready.status_code == 200, ready.content
    listing = client.get(f"{BASE}/periodic-tasks/")
    assert listing.status_code == 200, listing.content
    never = {r["name"]: r for r in listing.json()["results"]}["never"]
    assert never["status"] == "active" and never["next_run_at"] is None


def test_dispatcher_goes_on_past_a_stored_row_that_cannot_fire(brand):
    due = timezone.now().replace(second=0, microsecond=0)  # a fire time within the grace
    good = services.schedule_create(brand=brand, **{**GOOD, "cron_expression": "* * * * *"})
    PeriodicSchedule.objects.unscoped().filter(pk=good.pk).update(next_run_at=due)
    bad = stored_never(brand, next_run_at=due)
    totals = services.schedules_dispatch_due()
    assert totals["fired"] == 1
    bad.refresh_from_db()
    assert bad.next_run_at is None

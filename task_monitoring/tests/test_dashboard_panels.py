"""The operations page's panels: due-only queue depth, recent failures grouped by type,
platform health colours, admin links, and brand scoping of the new panels."""

from datetime import timedelta

from django.conf import settings as django_settings
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from task_core.models import Task
from task_monitoring import health, selectors, services
from task_monitoring.models import Alert, PlatformLoop
from task_monitoring.tests.factories import AlertRuleFactory
from tests.factories import MembershipFactory, TaskFactory, UserFactory


def staff_client(brand):
    staff = UserFactory(is_staff=True)
    MembershipFactory(user=staff, brand=brand, role="viewer")
    client = Client()
    client.force_login(staff)
    return client


def test_queue_depth_counts_only_due_work(brand):
    now = timezone.now()
    future = now.replace(year=2030)
    TaskFactory(brand=brand, status="pending", queue="default", available_at=now)
    TaskFactory(
        brand=brand, status="pending", queue="default", available_at=future, scheduled_for=future
    )
    TaskFactory(brand=brand, status="pending", queue="default", scheduled_for=future)
    TaskFactory(
        brand=brand, status="retrying", queue="default", available_at=now + timedelta(hours=1)
    )
    TaskFactory(
        brand=brand, status="retrying", queue="default", available_at=now - timedelta(seconds=1)
    )
    TaskFactory(brand=brand, status="queued", queue="default")
    TaskFactory(brand=brand, status="running", queue="default")
    tasks = Task.objects.for_brand(brand)

    depths = selectors.due_queue_depths(tasks=tasks, now=now)

    assert depths == {"default": {"pending": 1, "retrying": 1, "queued": 1, "running": 1}}


def test_recent_failures_are_grouped_by_type_with_the_latest_error(brand):
    now = timezone.now()
    for minutes, message in [(30, "old boom"), (5, "newest boom"), (10, "middle boom")]:
        TaskFactory(
            brand=brand,
            task_type="send_report",
            status="failed",
            completed_at=now - timedelta(minutes=minutes),
            error_message=message,
        )
    TaskFactory(
        brand=brand,
        task_type="resize",
        status="failed",
        completed_at=now,
        error_message="disk full",
    )
    TaskFactory(
        brand=brand,
        task_type="resize",
        status="failed",
        completed_at=now - timedelta(hours=25),
        error_message="too old",
    )
    TaskFactory(brand=brand, task_type="resize", status="completed", completed_at=now)

    groups = selectors.recent_failures(tasks=Task.objects.for_brand(brand), now=now, per_type=2)

    assert [(g["task_type"], g["count"]) for g in groups] == [("send_report", 3), ("resize", 1)]
    assert groups[0]["latest_error"] == "newest boom"
    assert [t.error_message for t in groups[0]["tasks"]] == ["newest boom", "middle boom"]
    assert groups[1]["latest_error"] == "disk full"


def _beat_ticked(at):
    every, _ = IntervalSchedule.objects.get_or_create(every=10, period="seconds")
    PeriodicTask.objects.create(
        name="megahub.tasks_sweep", task="megahub.tasks_sweep", interval=every, last_run_at=at
    )


def _loops_ticked(at):
    for entry in django_settings.CELERY_BEAT_SCHEDULE.values():
        PlatformLoop.objects.create(task_name=entry["task"], first_run_at=at, last_run_at=at)


def test_platform_health_is_green_when_everything_ticks(db):
    now = timezone.now()
    _beat_ticked(now)
    _loops_ticked(now)

    rows = {row["name"]: row for row in health.platform_health()}

    assert list(rows) == [
        "Beat last tick",
        "Dispatcher lag",
        "Outbox backlog",
        "Broker reachable",
        "Platform loops on time",
    ]
    assert {name: row["colour"] for name, row in rows.items()} == dict.fromkeys(rows, "green")


def test_platform_health_turns_amber_and_red(db, monkeypatch, settings):
    long_ago = timezone.now() - timedelta(hours=1)
    _beat_ticked(long_ago)  # beat stale: amber (a warning, as readiness says)
    _loops_ticked(long_ago)  # every loop silent for more than 3 intervals: red
    settings.EVENTS_BACKLOG_WARN = -1  # any backlog (even 0) is above the warning level

    def unreachable():
        raise ConnectionRefusedError

    monkeypatch.setattr(health, "_check_broker", unreachable)

    rows = {row["name"]: row["colour"] for row in health.platform_health()}

    assert rows == {
        "Beat last tick": "amber",
        "Dispatcher lag": "red",
        "Outbox backlog": "amber",
        "Broker reachable": "red",
        "Platform loops on time": "red",
    }


def test_new_panels_link_to_admin_and_show_only_the_users_brands(brand, other_brand):
    now = timezone.now()
    mine = TaskFactory(
        brand=brand,
        task_type="mine_fails",
        status="failed",
        completed_at=now,
        error_message="<script>alert(1)</script> " + "x" * 600,
    )
    foreign = TaskFactory(
        brand=other_brand,
        task_type="foreign_fails",
        status="failed",
        completed_at=now,
        error_message="foreign secret",
    )
    running = TaskFactory(brand=brand, status="running", task_type="mine_running")
    TaskFactory(brand=brand, status="queued")
    rule = AlertRuleFactory(brand=brand, name="Backlog too deep", threshold=0)
    services.alert_rule_evaluate(rule=rule)
    alert = Alert.objects.for_brand(brand).get(rule=rule)

    html = staff_client(brand).get("/dashboard/").content.decode()

    assert 'id="recent-failures"' in html and 'id="health"' in html
    assert reverse("admin:task_core_task_change", args=[mine.pk]) in html
    assert reverse("admin:task_core_task_change", args=[running.pk]) in html
    assert reverse("admin:task_monitoring_alert_change", args=[alert.pk]) in html
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    assert "x" * 600 not in html  # truncated
    assert "foreign_fails" not in html and "foreign secret" not in html
    assert reverse("admin:task_core_task_change", args=[foreign.pk]) not in html


def test_fragment_returns_the_panels_only(brand):
    TaskFactory(brand=brand, task_type="mine_fails", status="failed", completed_at=timezone.now())
    response = staff_client(brand).get("/dashboard/?fragment=1")
    body = response.content.decode()
    assert response.status_code == 200
    assert 'id="recent-failures"' in body and "mine_fails" in body
    assert "<html" not in body and "<script" not in body

"""The default topology (`make run` = bin/run-stack): brand work filling every slot of the brand
worker never delays the platform's loops, which have their own worker on the `system` queue."""

import time
from datetime import timedelta

import pytest
import requests
from django.conf import settings as django_settings
from django.utils import timezone

from task_core import services
from task_core.models import Task, TaskEvent
from task_monitoring.models import AlertRule, Worker
from task_monitoring.tests.factories import AlertRuleFactory
from task_scheduling import services as scheduling
from task_scheduling.models import PeriodicSchedule, ScheduleRun
from tests.factories import TaskFactory
from tests.integration.conftest import ROOT, Proc, free_port, wait_for

pytestmark = [pytest.mark.integration]

# Short loop intervals for the test (seconds); each loop must act within 2 of them.
INTERVALS = {
    "TASK_RELEASE_INTERVAL_SECONDS": 2,
    "EVENTS_RELAY_INTERVAL_SECONDS": 2,
    "SCHEDULE_DISPATCH_INTERVAL_SECONDS": 2,
    "ALERT_EVALUATION_INTERVAL_SECONDS": 3,
}


def within(interval_key: str) -> timedelta:
    return timedelta(seconds=2 * INTERVALS[interval_key])


def test_platform_loops_stay_on_time_while_brand_work_fills_every_slot(
    brand, process_env, purge_queues, request
):
    port = free_port()
    env = {
        **process_env,
        **{key: str(value) for key, value in INTERVALS.items()},
        "DEBUG": "1",  # runserver, as `make run`
        "PORT": str(port),
        "WORKER_CONCURRENCY": "2",
        "SCHEDULE_MISFIRE_GRACE_SECONDS": "300",  # a fire time up to a minute old still fires
    }
    stack = Proc(f"{request.node.name[:60]}-run-stack", [str(ROOT / "bin" / "run-stack")], env)
    try:

        def started(workers: int) -> bool:
            out = stack.output()
            return out.count(" ready.") >= workers and "beat: Starting" in out

        wait_for(lambda: started(1) or stack.popen.poll() is not None, 120,
                 message="a worker and beat")  # fmt: skip
        assert stack.popen.poll() is None, stack.output()[-3000:]
        deadline = time.monotonic() + 20
        while not started(2) and time.monotonic() < deadline:  # the second worker, if any
            time.sleep(0.2)
        # Every brand slot busy with a long task, more waiting behind them.
        long = [
            services.task_create(brand=brand, task_type="sleep", context_data={"seconds": 60})[0]
            for _ in range(4)
        ]
        wait_for(lambda: Task.objects.unscoped().filter(status="running").count() == 2, 30,
                 message="both brand slots busy")  # fmt: skip

        now = timezone.now()
        retry = TaskFactory(brand=brand, task_type="noop", status="retrying", available_at=now)
        schedule = scheduling.schedule_create(
            brand=brand, name="due", task_type="noop", cron_expression="* * * * *"
        )  # its fire time of this minute made due now:
        fire = now.replace(second=0, microsecond=0)
        PeriodicSchedule.objects.unscoped().filter(pk=schedule.pk).update(next_run_at=fire)
        event = TaskEvent.objects.create(task=retry, brand=brand, kind="created", actor="test")
        rule = AlertRuleFactory(brand=brand, metric="failure_rate", threshold=50)

        released = wait_for(
            lambda: retry.events.filter(kind="queued", actor="system:release").first(), 15,
            message="the due retry to be released",
        )  # fmt: skip
        assert released.created_at - now <= within("TASK_RELEASE_INTERVAL_SECONDS")
        run = wait_for(lambda: ScheduleRun.objects.unscoped().filter(schedule=schedule).first(), 15,
                       message="the due schedule to fire")  # fmt: skip
        assert run.outcome == "fired" and run.fire_time == fire
        assert run.task.created_at - now <= within("SCHEDULE_DISPATCH_INTERVAL_SECONDS")
        event = wait_for(
            TaskEvent.objects.unscoped().filter(pk=event.pk, published_at__isnull=False).first,
            15, message="the event to be relayed",
        )  # fmt: skip
        assert event.published_at - event.created_at <= within("EVENTS_RELAY_INTERVAL_SECONDS")
        rule = wait_for(
            AlertRule.objects.unscoped().filter(pk=rule.pk, last_evaluated_at__isnull=False).first,
            15, message="the alert rule to be evaluated",
        )  # fmt: skip
        assert rule.last_evaluated_at - rule.created_at <= within(
            "ALERT_EVALUATION_INTERVAL_SECONDS"
        )
        # Still saturated: both slots held by the long tasks all along.
        assert (
            Task.objects.unscoped().filter(pk__in=[t.pk for t in long], status="running").count()
            == 2
        )

        # Readiness lists every loop; the fast ones have run recently.
        loops = requests.get(f"http://127.0.0.1:{port}/health/ready/", timeout=10).json()
        by_task = {loop["task"]: loop for loop in loops["checks"]["loops"]["loops"]}
        for name in [
            "megahub.tasks_release_due",
            "megahub.events_relay",
            "megahub.schedules_dispatch_due",
            "megahub.alert_rules_evaluate",
        ]:
            assert by_task[name]["status"] == "ok", by_task[name]  # fmt: skip
        # Two workers, each on its own queues; ticks are not the brand worker's work.
        wait_for(lambda: Worker.objects.count() == 2, 15, message="both worker heartbeats")
        queues = {w.hostname.split("@")[0]: w.queues for w in Worker.objects.all()}
        prefix = process_env["CELERY_QUEUE_PREFIX"]
        assert queues == {"brand": [f"{prefix}default", f"{prefix}long"],
                          "system": [f"{prefix}system"]}  # fmt: skip
        assert Worker.objects.get(hostname__startswith="brand@").processed == 0
        # Quiet at INFO: no per-tick lines from beat or the workers.
        output = stack.output()
        assert "Sending due task" not in output
        for name in django_settings.MEGAHUB_PLATFORM_LOOPS:
            assert f"Task {name}[" not in output, output[-2000:]
    finally:
        for task in Task.objects.unscoped().filter(status__in=["running", "queued", "pending"]):
            services.task_cancel(task=task)
        stack.stop()
        assert stack.popen.returncode is not None

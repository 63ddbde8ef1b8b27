"""task_monitoring over real worker and beat processes: worker health from Celery's signals,
per-attempt metrics measured in the pool process, alert evaluation and signed delivery."""

import signal
import time

import pytest

from task_core import services as core_services
from task_core.models import Task
from task_monitoring import selectors
from task_monitoring.models import Alert, AlertNotification, TaskMetric, Worker
from task_monitoring.tests.conftest import Receiver
from task_monitoring.tests.factories import AlertRuleFactory
from tests.factories import TaskFactory
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.integration]
FAST_HEALTH = {"WORKER_HEARTBEAT_SECONDS": "1", "WORKER_OFFLINE_AFTER_SECONDS": "3"}


def completed(task_pk, timeout=60):
    wait_for(
        lambda: Task.objects.unscoped().filter(pk=task_pk, status="completed").exists(),
        timeout,
        message=f"task {task_pk} completed",
    )
    return wait_for(lambda: TaskMetric.objects.unscoped().filter(task_id=task_pk).first(), 10,
                    message="its metrics row")  # fmt: skip


def test_worker_health_and_measured_attempt_memory(brand, start_process, settings):
    settings.WORKER_OFFLINE_AFTER_SECONDS = 3
    proc = start_process("worker", concurrency=2, env=FAST_HEALTH)
    row = wait_for(lambda: Worker.objects.first(), 20, message="the worker's first heartbeat")
    assert row.pid == proc.popen.pid and row.concurrency == 2
    assert row.hostname.startswith("w") and row.rss_mb > 30
    assert {q.rsplit(".", 1)[-1] for q in row.queues} >= {"default", "long", "system"}
    assert sorted(row.pool_pids) == sorted(proc.pool_children())

    big, _ = core_services.task_create(brand=brand, task_type="memory_probe",
                                       context_data={"mb": 200, "hold_ms": 200})  # fmt: skip
    big_metric = completed(big.pk)
    small, _ = core_services.task_create(brand=brand, task_type="memory_probe",
                                         context_data={"mb": 0})  # fmt: skip
    small_metric = completed(small.pk)
    assert big_metric.memory_method == "vmhwm"
    assert big_metric.memory_growth_mb >= 190, big_metric.memory_growth_mb
    assert big_metric.memory_usage_mb >= 200
    assert small_metric.memory_growth_mb < 30, small_metric.memory_growth_mb
    assert big_metric.worker_hostname == row.hostname and big_metric.worker_pid in row.pool_pids
    assert big_metric.queue_wait_ms is not None and big_metric.cpu_time_ms > 0
    assert float(big_metric.cost_usd) > 0.0005  # CPU x 0.001/s + 0.0005 reported

    wait_for(lambda: Worker.objects.get().processed >= 2, 10, message="processed count")
    proc.kill(signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for(lambda: not selectors.worker_is_online(Worker.objects.get()), 15,
             message="the killed worker shown offline")  # fmt: skip
    # offline within the allowance (3 s) after its last heartbeat (<= 1 s before the kill)
    assert time.monotonic() - killed_at < 3 + 1 + 2


def test_warm_shutdown_marks_the_worker_stopped(brand, start_process):
    proc = start_process("worker", env=FAST_HEALTH)
    wait_for(lambda: Worker.objects.exists(), 20, message="the worker's heartbeat")
    proc.stop()
    worker = Worker.objects.get()
    assert worker.stopped_at is not None and not selectors.worker_is_online(worker)


def test_beat_evaluates_rules_and_the_worker_delivers_a_signed_webhook(brand, start_process):
    receiver = Receiver()
    try:
        env = {"ALERT_EVALUATION_INTERVAL_SECONDS": "1", "ALERT_DELIVERY_INTERVAL_SECONDS": "1"}
        AlertRuleFactory(brand=brand, metric="queue_depth", threshold=2, webhook_url=receiver.url)
        for _ in range(3):
            TaskFactory(brand=brand, status="queued", task_type="noop")
        start_process("worker", env=env)
        start_process("beat", env=env)
        alert = wait_for(lambda: Alert.objects.unscoped().first(), 30, message="the alert to fire")
        assert alert.status == "firing" and alert.value == 3.0
        wait_for(lambda: receiver.requests, 30, message="the webhook delivery")
        assert receiver.requests[0]["headers"]["webhook-signature"].startswith("v1,")
        # the receiver records the request before answering; the row is updated after that
        wait_for(lambda: AlertNotification.objects.unscoped().get().status == "delivered", 15,
                 message="the delivery recorded")  # fmt: skip
        time.sleep(3)  # more evaluations: still one episode, one notification
        assert Alert.objects.unscoped().count() == 1 and len(receiver.requests) == 1
    finally:
        receiver.close()

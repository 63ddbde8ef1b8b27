from datetime import timedelta

import factory
from django.utils import timezone

from task_monitoring.models import AlertRule, TaskMetric, Worker
from tests.factories import TaskFactory


class MetricFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TaskMetric

    task = factory.SubFactory(TaskFactory, status="completed", attempts=1)
    brand = factory.SelfAttribute("task.brand")
    attempt = 1
    task_type = factory.SelfAttribute("task.task_type")
    status = "completed"
    worker_hostname = "w1@host"
    finished_at = factory.LazyFunction(timezone.now)
    execution_time_ms = 100
    cpu_time_ms = 50
    memory_usage_mb = 64.0
    memory_growth_mb = 1.0
    memory_method = "vmhwm"
    queue_wait_ms = 10
    cost_usd = 0


class WorkerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Worker

    hostname = factory.Sequence(lambda n: f"w{n}@host")
    pid = 1234
    queues = ["default", "long", "system"]
    concurrency = 2
    last_heartbeat_at = factory.LazyFunction(timezone.now)


def stale(seconds: int):
    return timezone.now() - timedelta(seconds=seconds)


class AlertRuleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AlertRule

    name = factory.Sequence(lambda n: f"rule {n}")
    metric = AlertRule.Metric.QUEUE_DEPTH
    comparison = "gt"
    threshold = 5
    window_minutes = 15
    cooldown_minutes = 0

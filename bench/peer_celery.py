"""The peer's Celery app: what a Django team would run beside its models, with
django-celery-results storing every task's state in the database (the `django-db` backend,
`task_track_started`, `result_extended`).

Broker, acks, prefetch and the rest of the worker settings are megahub's own (its CELERY_*
Django settings, loaded the usual way); only the queue, the result backend and the things a
peer has no use for (megahub's routes, annotations, beat schedule) differ. The queue is declared
with megahub's arguments (x-max-priority 10).

    celery -A bench.peer_celery worker -P prefork -c 2 -Q <prefix>peer   (bench/drain.py)
"""

import os

from celery import Celery
from kombu import Exchange, Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

PREFIX = os.environ.get("CELERY_QUEUE_PREFIX", "bench.")
QUEUE = f"{PREFIX}peer"
EXCHANGE = f"{PREFIX}peer.tasks"

app = Celery("bench_peer", set_as_current=False)
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    task_default_queue=QUEUE,
    task_default_exchange=EXCHANGE,
    task_default_routing_key="peer",
    task_queues=[
        Queue(
            QUEUE,
            Exchange(EXCHANGE, type="direct"),
            routing_key="peer",
            queue_arguments={"x-max-priority": 10},
        )
    ],
    task_routes=None,
    task_annotations=None,
    beat_schedule={},
    result_backend="django-db",
    task_ignore_result=False,
    task_track_started=True,
    result_extended=True,
)


@app.task(name="bench.peer_noop")
def peer_noop(task_pk):
    """The peer's no-op: django-celery-results records STARTED and SUCCESS around it."""
    return None


def publish(n: int) -> None:
    """Publish n no-op messages (apply_async, megahub's default priority)."""
    with app.producer_or_acquire() as producer:
        for i in range(n):
            peer_noop.apply_async(args=[i], priority=4, producer=producer)

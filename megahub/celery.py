"""The one Celery application of megahub (workers and beat)."""

import os
from contextlib import suppress
from functools import cache, partial

from celery import Celery, bootsteps, signals
from django import db as django_db

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "megahub.settings")


class SystemTicksQuiet:
    """Task annotation (CELERY_TASK_ANNOTATIONS): the platform's ticks send no monitoring
    events, so Celery's event stream (Flower) lists brand tasks only."""

    def annotate_any(self):
        return None

    def annotate(self, task):
        from megahub.logging import is_platform_tick

        if is_platform_tick(task.name):
            return {"send_events": False}
        return None


class EventsWithoutConfirms(bootsteps.StartStopStep):
    """The worker's monitoring events (task-received/started/succeeded, for Flower) are
    published without waiting for the broker's confirm. Publisher confirms are on for the
    broker connection (CELERY_BROKER_TRANSPORT_OPTIONS ``confirm_publish``) for the sake of
    execution messages, and py-amqp applies them to every channel of a connection, so the
    event dispatcher's channel waited for one confirm round trip per flush (the worker's event
    loop blocked meanwhile). Events are best-effort monitoring: Celery never confirms them by
    default.

    By the time this step starts, the Events step has already published on the dispatcher's
    channel (the exchange, ``worker-online``), which put it in confirm mode for good (a channel
    cannot leave it). So the dispatcher gets a channel of its own, opened without confirms on
    the same connection; a channel still unused is simply switched."""

    requires = ("celery.worker.consumer.events:Events",)

    def start(self, c):
        dispatcher = getattr(c, "event_dispatcher", None)
        producer = getattr(dispatcher, "producer", None)
        channel = getattr(producer, "channel", None)
        if channel is None or not hasattr(channel, "basic_publish_confirm"):
            return  # not py-amqp, or events disabled
        if not channel._confirm_selected:
            # py-amqp sets basic_publish = basic_publish_confirm on the channel instance;
            # without it, the class's plain basic_publish is used.
            vars(channel).pop("basic_publish", None)
            return
        connection = channel.connection  # the py-amqp connection of the dispatcher
        confirm, connection.confirm_publish = connection.confirm_publish, False
        try:  # read when a channel is created, nowhere else
            plain = dispatcher.connection.channel()
        finally:
            connection.confirm_publish = confirm
        # Closed with the dispatcher's connection (the Events step); kept for a later enable().
        dispatcher.channel = plain
        producer.revive(plain)


class EventsBatched(bootsteps.StartStopStep):
    """The worker's task events (task-received/started/succeeded...) leave in batches, at most
    ``WORKER_EVENTS_FLUSH_MS`` after they happen, instead of at the next turn of the event loop.

    Celery buffers a worker's task events and publishes the buffer as one ``task.multi``
    message per flush, but schedules that flush for the next loop iteration, and a busy worker
    turns its loop for nearly every event: about three publishes (three socket writes, three
    messages for RabbitMQ to route) per task. Flushed on a timer, the same events travel
    together, and a worker that stops flushes what it holds before its dispatcher closes. With
    the timer, Celery's size cap (``buffer_limit``, 24 events: a flush every 8 tasks, most of
    them before the timer fires) rises to BUFFER_LIMIT, which a worker reaches only above ~85
    tasks per flush interval (850 tasks/s with the default 100 ms). 0: Celery's own behaviour.
    Worker (``worker-*``) events are not buffered by Celery and are unaffected."""

    BUFFER_LIMIT = 256  # events of one group per task.multi message (~250 bytes each)

    requires = ("celery.worker.consumer.events:Events",)

    def __init__(self, c, **kwargs):
        from django.conf import settings

        self.delay = getattr(settings, "WORKER_EVENTS_FLUSH_MS", 0) / 1000
        self.scheduled = False
        super().__init__(c, **kwargs)

    def start(self, c):
        dispatcher = getattr(c, "event_dispatcher", None)
        # Only where Celery buffers (an event loop, the prefork pool): the Events step started
        # just before this one and handed the dispatcher c.on_send_event_buffered.
        buffered = dispatcher is not None and dispatcher.on_send_buffered is not None
        if self.delay > 0 and c.hub is not None and buffered:
            self.scheduled = False
            dispatcher.on_send_buffered = partial(self._schedule, c)
            dispatcher.buffer_limit = max(dispatcher.buffer_limit, self.BUFFER_LIMIT)

    def _schedule(self, c):
        if not self.scheduled:
            self.scheduled = True
            c.hub.call_later(self.delay, self._flush, c)

    def _flush(self, c):
        self.scheduled = False
        c._flush_events()

    def stop(self, c):
        self._flush_now(c)

    def shutdown(self, c):
        self._flush_now(c)

    @staticmethod
    def _flush_now(c):
        # Before the Events step (stopped after this one) closes the dispatcher.
        if getattr(c, "event_dispatcher", None) is not None:
            with suppress(Exception):  # best-effort, as every event is
                c.event_dispatcher.flush()


class ReleaserStep(bootsteps.StartStopStep):
    """The fair-share releaser (task_core/releaser.py) as a thread of each worker that consumes
    the ``system`` queue (the platform's loops), started once the pool has forked its children:
    the default topology needs no process of its own."""

    requires = ("celery.worker.components:Pool",)

    def __init__(self, parent, **kwargs):
        super().__init__(parent, **kwargs)
        self.releaser = None

    def start(self, w):
        from django.conf import settings
        from django.db import connection

        from task_core.releaser import Releaser

        system = f"{settings.CELERY_QUEUE_PREFIX}system"
        if not (settings.TASK_FAIR_SHARE and settings.TASK_RELEASER):
            return
        if connection.vendor != "postgresql":  # no LISTEN/NOTIFY: the release loop refills
            return
        if system not in w.app.amqp.queues.consume_from:
            return
        self.releaser = Releaser()
        self.releaser.start()

    def stop(self, w):
        if self.releaser is not None:
            self.releaser.stop()
            self.releaser = None


app = Celery("megahub")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.steps["consumer"].add(EventsWithoutConfirms)
app.steps["consumer"].add(EventsBatched)
app.steps["worker"].add(ReleaserStep)


def _is_eager(sender) -> bool:
    return getattr(getattr(sender, "request", None), "is_eager", False)


@signals.task_prerun.connect(weak=False)
def _connections_before_task(sender=None, **kwargs):
    """What Django does before a request: drop a connection that is past DB_CONN_MAX_AGE,
    broken by an error, or left in a transaction, and health-check the kept one on its next use.
    Celery's fixup leaves connections open when CELERY_DB_REUSE_MAX is set (settings.py).

    For the execution entry point the kept connection is not health-checked (a SELECT 1 round
    trip per task): its claim, the first statement, retries once on a new connection if that
    one died (task_core.execution.task_claim)."""
    if _is_eager(sender):  # as Celery's Django fixup does
        return
    execute = getattr(sender, "name", None) == _execute_task_name()
    for connection in django_db.connections.all(initialized_only=True):
        connection.close_if_unusable_or_obsolete()  # django.db.close_old_connections()
        if execute:
            connection.health_check_done = True


@signals.task_postrun.connect(weak=False)
def _connections_after_task(sender=None, **kwargs):
    """What Django does after a request (the same checks): a connection a task left broken,
    or in a transaction, is not kept while the worker waits for its next message."""
    if not _is_eager(sender):
        django_db.close_old_connections()


@cache
def _execute_task_name() -> str:
    from task_core.broker import EXECUTE_TASK_NAME

    return EXECUTE_TASK_NAME


@signals.beat_init.connect(weak=False)
def _beat_sends_no_sent_events(sender=None, **kwargs):
    """Beat publishes only ticks: no task-sent events for them (see SystemTicksQuiet)."""
    sender.app.conf.task_send_sent_event = False

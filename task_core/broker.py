"""The execution message of a brand task and putting it on the broker: built once per task
(queue, priority, time limits, what monitors show), published one at a time with the broker's
confirm (or, for a task already recorded as queued, without waiting for it: copied from the
thread's previous message of the same shape), or many on one confirm-mode channel with one
round trip for the confirms; the sent ones recorded as queued."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from contextlib import nullcontext
from datetime import timedelta

from celery import current_app, signals
from celery.utils import uuid
from django.conf import settings
from kombu import Queue, pools
from kombu.common import maybe_declare

from task_core import state_machine as sm
from task_core.models import Task, TaskEvent
from task_core.registry import TaskType, get_task_type

logger = logging.getLogger("megahub.tasks")
S = Task.Status
K = TaskEvent.Kind
EXECUTE_TASK_NAME = "megahub.task_execute"
RELEASED_FIELDS = ("queued_at", "available_at", "waiting_reason")


def released(now) -> dict:
    """The fields a task leaving the database for the broker gets."""
    return dict(zip(RELEASED_FIELDS, (now, None, None), strict=True))


def celery_task_name(task_type: str) -> str:
    """The name a task type's executions carry in Celery's events, logs and monitors (Flower,
    ``celery events``): every brand task runs the one entry point EXECUTE_TASK_NAME, published
    with this name as Celery's ``shadow`` name."""
    return f"megahub.{task_type}"


def _message_options(task: Task, spec: TaskType | None) -> dict:
    """Execution message options: queue, priority, the type's time limits, and what monitors
    show (the type's Celery name, brand and task id in the headers and the args repr)."""
    return {
        "args": [task.pk],
        "shadow": celery_task_name(task.task_type),
        "argsrepr": f"(task_id={task.task_id}, brand={task.brand_id}, type={task.task_type})",
        "headers": {
            "megahub_task_id": str(task.task_id),
            "megahub_brand_id": task.brand_id,
            "megahub_task_type": task.task_type,
        },
        "queue": f"{settings.CELERY_QUEUE_PREFIX}{task.queue}",
        "routing_key": task.queue,
        "priority": Task.BROKER_PRIORITY.get(task.priority, 4),
        "soft_time_limit": spec.soft_time_limit_s if spec else None,
        "time_limit": spec.time_limit_s if spec else None,
    }


def send(task: Task, *, confirm: bool = True) -> None:
    """Publish the execution message (priority, queue and time limits from the task type).

    ``confirm=False``: on a connection without publisher confirms, so the call returns once
    the message is written to the socket, not once RabbitMQ has taken it. Only for a task the
    database already records as ``queued``, whose lost message the sweeper republishes
    (publishing.tasks_requeue_lost). A connection error still raises (after the retries).
    Unconfirmed, the message (and its task-sent event) is the one ``send_task`` builds, made
    from this thread's earlier message of the same shape when there is one (_send_copied)."""
    options = _message_options(task, get_task_type(task.task_type))
    with nullcontext(None) if confirm else _unconfirmed_producers().acquire(block=True) as p:
        if p is not None and _send_copied(current_app, task, options, p):
            return
        current_app.send_task(
            EXECUTE_TASK_NAME,
            **options,
            producer=p,
            retry=True,
            retry_policy={
                "max_retries": settings.TASK_PUBLISH_RETRIES,
                "interval_start": 0,
                "interval_step": 0.2,
                "interval_max": 0.5,
            },
        )


_singles = threading.local()


def _send_copied(app, task: Task, options: dict, producer) -> bool:
    """Publish ``task``'s message as _batch_message makes it (send_task in full for the first
    of its shape in this thread, a copy of that one after) and its task-sent event, written
    straight to the pooled producer's channel: no routing, message building, signal dispatch
    or kombu retry wrappers per send. False when nothing was written, for send_task to do it
    (with its retries): a send from inside a Celery task (the message names its parent), with
    receivers of Celery's publish signals or with Sentry on (per-call headers), or after an
    error before the message was written (a broken connection: send_task reconnects)."""
    if app.current_worker_task is not None or _publish_hooks():
        return False
    key = (os.getpid(), app.thread_oid, app.conf.task_send_sent_event)
    if getattr(_singles, "key", None) != key:
        _singles.key, _singles.prototypes = key, {}
    channel = producer.channel
    if getattr(_singles, "channel", None) is not channel:  # entities declared on it, by us
        _singles.channel, _singles.declared = channel, set()
    writer = _BatchProducer(producer.connection, channel, producer, batch_events=False)
    writer.declared = _singles.declared
    try:
        body, publish, event = _batch_message(
            app, task, _singles.prototypes, producer.connection, options=options
        )
        writer.publish(body, **publish)
        if event is not None:
            writer.publish(event[0], **event[1])
    except Exception:
        if writer.published:  # the message is out; only its monitoring event is missing
            logger.warning("task-sent event not published", exc_info=True)
            return True
        _singles.prototypes = {}
        logger.debug("copied publish failed; publishing through send_task", exc_info=True)
        return False
    return True


def _publish_hooks() -> bool:
    """Something that must see every send_task call: receivers of Celery's publish signals,
    or Sentry's Celery integration (a trace header per call)."""
    if signals.before_task_publish.receivers or signals.after_task_publish.receivers:
        return True
    sentry = sys.modules.get("sentry_sdk")
    return sentry is not None and sentry.get_client().get_integration("celery") is not None


# RabbitMQ closes a connection that sent nothing for two heartbeat intervals (Celery's
# broker_heartbeat, 120 s), and the first publish written to a connection the server closed
# is lost without an error. So a pool unused for this long is dropped, and the next send opens
# a new connection (one handshake) before it publishes.
UNCONFIRMED_IDLE_SECONDS = 30.0
_unconfirmed: dict = {"key": None, "pool": None, "used": 0.0}


def _unconfirmed_producers() -> pools.ProducerPool:
    """This process's pool of producers on broker connections without publisher confirms (the
    app's own pool confirms every publish, CELERY_BROKER_TRANSPORT_OPTIONS). Made again after
    UNCONFIRMED_IDLE_SECONDS without a send, or when the app's connection pool is replaced (a
    fork, a new broker URL)."""
    app = current_app
    key, now = (os.getpid(), id(app.pool)), time.monotonic()
    pool = _unconfirmed["pool"]
    if (
        pool is None
        or _unconfirmed["key"] != key
        or now - _unconfirmed["used"] > (UNCONFIRMED_IDLE_SECONDS)
    ):
        if pool is not None and _unconfirmed["key"] == key:
            pool.connections.force_close_all()
        options = {**(app.conf.broker_transport_options or {}), "confirm_publish": False}
        conn = app.connection_for_write(transport_options=options)
        pool = pools.ProducerPool(conn.Pool(limit=app.pool.limit), limit=app.pool.limit)
        _unconfirmed.update(key=key, pool=pool)
    _unconfirmed["used"] = now
    return pool


class _ConfirmChannel:
    """A process's long-lived broker connection for batch publishes (one per thread), its
    channel in confirm mode: delivery tags count on across batches; ``resolved`` holds the
    confirms of the batch in flight."""

    def __init__(self, app):
        self.pid = os.getpid()
        self.conn = app.connection_for_write(
            # No per-message confirms (collected per batch here) and no heartbeats: nothing
            # would send them while the connection idles; a dead one fails its next publish.
            transport_options={"confirm_publish": False},
            heartbeat=0,
        )
        self.conn.ensure_connection(max_retries=settings.TASK_PUBLISH_RETRIES)
        channel = self.conn.default_channel
        channel.events["basic_ack"].add(self._record(True))
        channel.events["basic_nack"].add(self._record(False))
        channel.confirm_select()
        self.producer = app.amqp.Producer(self.conn)
        self.published = 0  # delivery tags used on the channel
        self.base = 0  # the last tag before the batch in flight
        self.resolved: dict[int, bool] = {}  # tag in the batch -> confirmed (True) or refused

    def _record(self, confirmed: bool):
        def record(delivery_tag, multiple=False):
            first = self.base + 1 if multiple else delivery_tag
            for tag in range(first, delivery_tag + 1):
                self.resolved.setdefault(tag - self.base, confirmed)

        return record

    def close(self) -> None:
        try:
            self.conn.release()
        except Exception:  # a broken connection may fail to close: dropped all the same
            logger.debug("closing the publish connection failed", exc_info=True)


_channels = threading.local()


def _confirm_channel(app, *, fresh: bool = False) -> _ConfirmChannel:
    channel = getattr(_channels, "channel", None)
    if channel is not None and (fresh or channel.pid != os.getpid()):
        if channel.pid == os.getpid():
            channel.close()
        channel = None
    if channel is None:
        channel = _channels.channel = _ConfirmChannel(app)
    return channel


def _drop_confirm_channel() -> None:
    channel = getattr(_channels, "channel", None)
    _channels.channel = None
    if channel is not None and channel.pid == os.getpid():
        channel.close()


class _BatchProducer:
    """What Celery's ``send_task`` hands to kombu's ``Producer.publish``, published as kombu
    publishes it (body serialized with the given serializer, the message's properties and
    headers, persistent delivery, priority) on the batch's raw confirm channel, without kombu's
    per-message wrappers: no retry wrapper (a broken connection fails the batch: send_many),
    each entity declared once per batch (kombu's own per-connection cache behind it). The
    ``task-sent`` event that follows each message is kept, and the batch's events leave
    together as one ``task.multi`` message (the form Celery's own buffered dispatcher uses,
    which event receivers such as Flower read), after the execution messages."""

    EVENT_KEY = "task.sent"

    def __init__(self, connection, channel, kombu, *, batch_events: bool = True):
        self.connection = connection  # Celery raises its errors through the connection
        self.channel = channel
        self.kombu = kombu  # its serializer and delivery-mode defaults
        self.batch_events = batch_events  # False: each event published as it comes
        self.declared: set = set()
        self.events: list = []
        self.event_options: dict = {}
        self.published = 0  # messages written to the channel

    def publish(self, body, routing_key=None, delivery_mode=None, mandatory=False,
                immediate=False, priority=0, content_type=None, content_encoding=None,
                serializer=None, headers=None, compression=None, exchange=None, retry=False,
                retry_policy=None, declare=None, expiration=None, timeout=None,
                confirm_timeout=None, **properties):  # fmt: skip
        if routing_key == self.EVENT_KEY and self.batch_events:
            self.events.append(body)
            self.event_options = {"exchange": exchange, "serializer": serializer,
                                  "headers": headers, "delivery_mode": delivery_mode,
                                  "declare": declare}  # fmt: skip
            return
        self._publish(body, routing_key=routing_key, delivery_mode=delivery_mode,
                      priority=priority, content_type=content_type,
                      content_encoding=content_encoding, serializer=serializer,
                      headers=headers, compression=compression, exchange=exchange,
                      declare=declare, expiration=expiration, mandatory=mandatory,
                      immediate=immediate, properties=properties)  # fmt: skip

    def _publish(self, body, *, routing_key, delivery_mode, priority=0, content_type=None,
                 content_encoding=None, serializer=None, headers=None, compression=None,
                 exchange=None, declare=None, expiration=None, mandatory=False,
                 immediate=False, properties=None):  # fmt: skip
        # kombu.Producer.publish and _publish, step by step.
        properties = properties or {}
        headers = {} if headers is None else headers
        exchange_name, properties["delivery_mode"] = self.kombu._delivery_details(
            exchange or self.kombu.exchange, delivery_mode
        )
        if expiration is not None:
            properties["expiration"] = str(int(expiration * 1000))
        body, content_type, content_encoding = self.kombu._prepare(
            body, serializer, content_type, content_encoding, compression, headers
        )
        message = self.channel.prepare_message(
            body, priority, content_type, content_encoding, headers, properties
        )
        for entity in declare or ():
            if entity not in self.declared:
                maybe_declare(entity, self.channel)
                self.declared.add(entity)
        reply_to = properties.get("reply_to")
        if isinstance(reply_to, Queue):
            properties["reply_to"] = reply_to.name
        self.channel.basic_publish(
            message,
            exchange=exchange_name,
            routing_key=routing_key,
            mandatory=mandatory,
            immediate=immediate,
        )
        self.published += 1

    def flush_events(self) -> None:
        """The batch's task-sent events, as one ``task.multi`` message."""
        if self.events:
            self._publish(self.events, routing_key="task.multi", **self.event_options)
            self.events = []


class _Capture:
    """A stand-in producer for ``send_task``: keeps what it would publish (the execution
    message's body and publish arguments, its task-sent event) instead of publishing it."""

    def __init__(self, connection):
        self.connection = connection
        self.message: tuple | None = None
        self.event: tuple | None = None

    def publish(self, body, **options):
        if options.get("routing_key") == _BatchProducer.EVENT_KEY:
            self.event = (body, options)
        else:
            self.message = (body, options)


# What a prototype's copies share: the options _message_options gives that are not per task.
_SHAPE = ("shadow", "queue", "routing_key", "priority", "soft_time_limit", "time_limit")


class _Prototype:
    """The message Celery built for the first task of a batch with a given type, queue and
    priority; the others of that shape are made from it (_batch_message)."""

    def __init__(self, capture: _Capture, task_id: str):
        self.body, self.options = capture.message
        self.event = capture.event
        self.own_root = self.options["headers"]["root_id"] == task_id  # not sent from a task


def _batch_message(
    app, task: Task, prototypes: dict, connection, *, options: dict | None = None
) -> tuple:
    """The execution message of ``task`` (body, publish options) and its task-sent event (body,
    options) or None. The first task of each shape (_SHAPE: type, queue, priority, time limits)
    in ``prototypes`` (a batch's, or a thread's for single sends) goes through Celery's
    ``send_task`` in full (routing, the protocol-2 message, signals), into a _Capture;
    the next ones reuse that message with what differs per task: the Celery task id (id,
    root_id, correlation_id), args, argsrepr and megahub's headers, and in the event its ids,
    args, logical clock and timestamp."""
    options = options or _message_options(task, get_task_type(task.task_type))
    shape = tuple(options[k] for k in _SHAPE)
    proto = prototypes.get(shape)
    if proto is None:
        capture = _Capture(connection)
        task_id = uuid()
        app.send_task(EXECUTE_TASK_NAME, **options, producer=capture, task_id=task_id)
        proto = prototypes[shape] = _Prototype(capture, task_id)
        return capture.message[0], capture.message[1], capture.event
    task_id = uuid()
    headers = {
        **proto.options["headers"],
        **options["headers"],
        "id": task_id,
        "argsrepr": options["argsrepr"],
    }
    if proto.own_root:
        headers["root_id"] = task_id
    nested = headers.get("headers")
    if isinstance(nested, dict):  # Sentry's integration copies the custom headers in there too
        headers["headers"] = {
            **nested,
            **{k: options["headers"][k] for k in nested.keys() & options["headers"].keys()},
        }
    publish = {**proto.options, "headers": headers, "correlation_id": task_id}
    if "argsrepr" in publish:  # Celery passes its options on as message properties too
        publish["argsrepr"] = options["argsrepr"]
    body = (options["args"], *proto.body[1:])
    event = None
    if proto.event is not None:
        fields, event_options = proto.event
        fields = {
            **fields,
            "uuid": task_id,
            "root_id": headers["root_id"],
            "args": options["argsrepr"],
            "clock": app.clock.forward(),
            "timestamp": time.time(),
        }
        event = (fields, event_options)
    return body, publish, event


def send_many(tasks: list[Task]) -> int:
    """Publish execution messages for ``tasks`` in order; returns how many leading ones the
    broker confirmed. One goes with its own confirm on the producer pool's connection (kept);
    several, on RabbitMQ, go on the process's long-lived confirm-mode channel (each message as
    ``send_task`` builds it, _batch_message; written by _BatchProducer without kombu's
    per-message wrappers, the task-sent events as one message at the end) and the confirms are
    awaited once at the end (one round trip per batch, not per message); a broken connection is
    replaced (once, if it broke before the batch's first publish)."""
    if len(tasks) < 2 or not settings.CELERY_BROKER_URL.startswith(("amqp", "pyamqp")):
        for sent, task in enumerate(tasks):
            try:
                send(task)
            except Exception as exc:
                logger.warning("publish failed", extra={"error": repr(exc)})
                return sent
        return len(tasks)
    app = current_app
    # Message n of the batch has delivery tag n counted from the batch's base; the batch's
    # task-sent events (one message) come after the last one.
    sent, channel = 0, None
    for attempt in range(2):
        try:
            channel = _confirm_channel(app, fresh=attempt > 0)
            channel.base, channel.resolved = channel.published, {}
            producer = _BatchProducer(channel.conn, channel.conn.default_channel, channel.producer)
            prototypes: dict[tuple, _Prototype] = {}
            for task in tasks:
                body, options, event = _batch_message(app, task, prototypes, channel.conn)
                producer.publish(body, **options)
                if event is not None:
                    producer.publish(event[0], **event[1])
                sent += 1
            producer.flush_events()
            channel.published += producer.published
            deadline = time.monotonic() + 30
            while len(channel.resolved) < producer.published and time.monotonic() < deadline:
                channel.conn.drain_events(timeout=5)
            if len(channel.resolved) < producer.published:
                _drop_confirm_channel()  # confirms still owed: not a channel to count on
            break
        except Exception as exc:
            _drop_confirm_channel()
            if sent or attempt:
                logger.warning(
                    "batch publish interrupted", extra={"error": repr(exc), "sent": sent}
                )
                break
    confirmed = 0
    resolved = channel.resolved if channel is not None else {}
    while confirmed < sent and resolved.get(confirmed + 1):
        confirmed += 1
    return confirmed


def publish_planned(planned: list[Task], *, actor: str, now) -> int:
    """Send ``planned`` (rows the caller holds locked) in order and record the sent ones as
    queued; if the broker stops taking them, the rest waits for the next release."""
    published = planned[: send_many(planned)]
    count = sm.transition_many(
        published, to=S.QUEUED, kind=K.QUEUED, actor=actor, fields=released(now)
    )
    unpublished = [t.pk for t in planned[len(published) :]]
    if unpublished:
        Task.objects.unscoped().filter(pk__in=unpublished).update(
            available_at=now + timedelta(seconds=settings.TASK_PUBLISH_GRACE_SECONDS)
        )
    return count

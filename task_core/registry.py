"""The task-type registry: handlers are registered in code with ``@task_type(...)``."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

from django.conf import settings


class PermanentError(Exception):
    """Raised by a handler for a failure that no retry can fix (bad input, missing object)."""


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3
    backoff_base_s: float = 2.0  # delay before retry n = base * 2**(n-1), capped, with jitter
    backoff_max_s: float = 300.0
    jitter: float = 0.25  # +/- fraction of the delay
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def as_dict(self) -> dict:
        return {
            "max_retries": self.max_retries,
            "backoff_base_s": self.backoff_base_s,
            "backoff_max_s": self.backoff_max_s,
            "jitter": self.jitter,
            "retry_on": [exc.__name__ for exc in self.retry_on],
        }


@dataclass(frozen=True)
class TaskType:
    name: str
    handler: Callable[..., Any]
    description: str = ""
    queue: str = "default"
    soft_time_limit_s: int = 300
    time_limit_s: int = 330
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    resumable: bool = False
    context_schema: dict | None = None
    cost_per_cpu_second_usd: float = 0.0
    options: dict = field(default_factory=dict)  # free-form settings other apps may read
    demo: bool = False  # a demo or test-only type: served only with MEGAHUB_DEMO_TASK_TYPES on

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "queue": self.queue,
            "soft_time_limit_s": self.soft_time_limit_s,
            "time_limit_s": self.time_limit_s,
            "retry_policy": self.retry.as_dict(),
            "resumable": self.resumable,
            "context_schema": self.context_schema,
            "cost_per_cpu_second_usd": self.cost_per_cpu_second_usd,
        }

    def submit(self, *, brand, **options):
        """Create a task of this type: ``task_core.producer.submit(self, brand=..., ...)``."""
        if _SUBMITTER is None:  # task_core.producer installs itself when the app loads
            raise RuntimeError("task_core.producer is not loaded (is task_core installed?)")
        return _SUBMITTER(self, brand=brand, **options)


# task_core.producer.submit, installed by that module (it imports this one, not the reverse).
_SUBMITTER: Callable[..., Any] | None = None


def set_submitter(submit: Callable[..., Any]) -> None:
    global _SUBMITTER
    _SUBMITTER = submit


_REGISTRY: dict[str, TaskType] = {}


# Celery task options megahub has no use for, and what to write instead.
_REFUSED_CELERY_OPTIONS = {
    "rate_limit": "megahub has no per-type rate limit (Celery's is per worker process); bound "
    "a type's concurrency with its queue (queue=...) and that queue's worker concurrency",
    "bind": "the handler already receives the task context: def handler(ctx)",
    "name": "the type's name is the decorator's first argument",
    "default_retry_delay": "use retry_backoff=<seconds>: the first retry waits that long, each "
    "later one twice as long",
    "retry_kwargs": "use max_retries=, retry_backoff= and retry_backoff_max=",
    "acks_late": "megahub acknowledges each message as a worker takes it and claims each "
    "task exactly once in the database; a task whose worker is lost is retried by megahub",
    "reject_on_worker_lost": "a task whose worker is lost is retried (or resumed) by megahub",
    "ignore_result": "a handler's return value is always stored as the task's result_data",
    "store_errors_even_if_ignored": "errors are always stored on the task (error_message)",
    "track_started": "the task's status is always tracked (running, with started_at)",
    "serializer": "context and results are always JSON",
    "priority": "priority belongs to each task: submit(..., priority='high')",
    "expires": "no expiry; cancel a task with manage.py tasks cancel or POST /tasks/{id}/cancel/",
    "countdown": "submit(..., scheduled_for=<datetime>)",
    "eta": "submit(..., scheduled_for=<datetime>)",
    "throws": "raise PermanentError for an expected failure that no retry can fix",
    "base": "a task type is a plain function; megahub's worker runs it",
}
# Celery options megahub maps onto its own settings.
_CELERY_OPTIONS = (
    "time_limit",
    "soft_time_limit",
    "max_retries",
    "autoretry_for",
    "retry_backoff",
    "retry_backoff_max",
    "retry_jitter",
)


def _spec_options(name: str, options: dict) -> dict:
    """The TaskType fields for ``@task_type(name, **options)``: megahub's own options, plus
    Celery's familiar ones mapped onto them; anything else is a TypeError that says what to use."""
    own = {f.name for f in fields(TaskType)} - {"name", "handler"}
    for key in options:
        if key in _REFUSED_CELERY_OPTIONS:
            raise TypeError(
                f"task type {name}: option {key!r} is not supported: {_REFUSED_CELERY_OPTIONS[key]}"
            )
        if key not in own and key not in _CELERY_OPTIONS:
            raise TypeError(
                f"task type {name}: unknown option {key!r}; megahub's options are "
                f"{', '.join(sorted(own))}, and Celery's {', '.join(_CELERY_OPTIONS)}"
            )
    spec = {k: v for k, v in options.items() if k in own}
    celery = {k: v for k, v in options.items() if k in _CELERY_OPTIONS}
    for celery_key, own_key in (
        ("time_limit", "time_limit_s"),
        ("soft_time_limit", "soft_time_limit_s"),
    ):
        if celery_key in celery and own_key in spec:
            raise TypeError(f"task type {name}: give {celery_key!r} or {own_key!r}, not both")
    for key in ("time_limit", "soft_time_limit"):
        value = celery.get(key)
        if key in celery and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise TypeError(f"task type {name}: {key} must be a number of seconds")
    if "soft_time_limit" in celery:
        spec["soft_time_limit_s"] = math.ceil(celery["soft_time_limit"])
    if "time_limit" in celery:
        spec["time_limit_s"] = math.ceil(celery["time_limit"])
        if "soft_time_limit_s" not in spec:  # the handler is warned a little before the kill
            spec["soft_time_limit_s"] = max(
                1, spec["time_limit_s"] - min(30, spec["time_limit_s"] // 10 or 1)
            )
    elif "soft_time_limit" in celery and "time_limit_s" not in spec:
        spec["time_limit_s"] = spec["soft_time_limit_s"] + 30

    retry_options = {k: celery[k] for k in _CELERY_OPTIONS[2:] if k in celery}
    if retry_options:
        if "retry" in spec:
            raise TypeError(
                f"task type {name}: give retry=RetryPolicy(...) or Celery's retry options "
                f"({', '.join(retry_options)}), not both"
            )
        policy: dict = {}
        if "max_retries" in retry_options:
            value = retry_options["max_retries"]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise TypeError(
                    f"task type {name}: max_retries must be an integer >= 0 (megahub does not "
                    "retry forever)"
                )
            policy["max_retries"] = value
        if "autoretry_for" in retry_options:
            value = tuple(retry_options["autoretry_for"])
            if not value or not all(
                isinstance(e, type) and issubclass(e, BaseException) for e in value
            ):
                raise TypeError(
                    f"task type {name}: autoretry_for must be a tuple of exception classes"
                )
            policy["retry_on"] = value
        if "retry_backoff" in retry_options:
            value = retry_options["retry_backoff"]
            if value is False:
                raise TypeError(
                    f"task type {name}: retry_backoff=False is not supported: megahub always "
                    "backs off exponentially; give retry_backoff=<seconds of the first delay>"
                )
            if value is not True and (not isinstance(value, int | float) or value <= 0):
                raise TypeError(f"task type {name}: retry_backoff must be True or seconds > 0")
            policy["backoff_base_s"] = 1.0 if value is True else float(value)
        if "retry_backoff_max" in retry_options:
            value = retry_options["retry_backoff_max"]
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise TypeError(f"task type {name}: retry_backoff_max must be seconds > 0")
            policy["backoff_max_s"] = float(value)
        if "retry_jitter" in retry_options:
            value = retry_options["retry_jitter"]
            if not isinstance(value, bool):
                raise TypeError(f"task type {name}: retry_jitter must be True or False")
            policy["jitter"] = RetryPolicy.jitter if value else 0.0
        spec["retry"] = replace(RetryPolicy(), **policy)
    return spec


def task_type(name: str, **options) -> Callable:
    """Register ``handler(ctx) -> result dict`` as task type ``name`` (ctx.data is the
    task's context_data). ``demo=True`` marks a demo or test-only type (see demo_types_enabled).

    Celery's ``time_limit``, ``soft_time_limit``, ``max_retries``, ``autoretry_for``,
    ``retry_backoff``, ``retry_backoff_max`` and ``retry_jitter`` are accepted and mapped onto
    megahub's time limits and retry policy (docs/task-types.md); other Celery options raise a
    TypeError that says what to use instead.
    """
    spec_options = _spec_options(name, options)

    def decorator(handler: Callable) -> Callable:
        spec = TaskType(name=name, handler=handler, **spec_options)
        if spec.queue not in settings.MEGAHUB_QUEUES:
            raise ValueError(f"task type {name}: unknown queue {spec.queue!r}")
        if spec.time_limit_s <= spec.soft_time_limit_s:
            raise ValueError(f"task type {name}: time_limit_s must exceed soft_time_limit_s")
        _REGISTRY[name] = spec
        return handler

    return decorator


def demo_types_enabled() -> bool:
    """The one place that decides whether demo and test-only types (``demo=True``) exist:
    the MEGAHUB_DEMO_TASK_TYPES setting, read at each lookup. When it is off they are absent
    from every door (``/tasks/types/``, creation, schedules, the worker), as if unregistered."""
    return bool(getattr(settings, "MEGAHUB_DEMO_TASK_TYPES", False))


def _served(spec: TaskType | None) -> TaskType | None:
    if spec is not None and spec.demo and not demo_types_enabled():
        return None
    return spec


def get_task_type(name: str) -> TaskType | None:
    return _served(_REGISTRY.get(name))


def all_task_types() -> list[TaskType]:
    return sorted((t for t in _REGISTRY.values() if _served(t)), key=lambda t: t.name)

"""The task-type registry: handlers are registered in code with ``@task_type(...)``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
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


_REGISTRY: dict[str, TaskType] = {}


def task_type(name: str, **options) -> Callable:
    """Register ``handler(ctx) -> result dict`` as task type ``name`` (ctx.data is the
    task's context_data). ``demo=True`` marks a demo or test-only type (see demo_types_enabled).
    """

    def decorator(handler: Callable) -> Callable:
        spec = TaskType(name=name, handler=handler, **options)
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

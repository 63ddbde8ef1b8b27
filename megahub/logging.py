"""Log formatters: JSON lines in production, readable text in development.

Structured fields are passed with ``extra={...}`` and end up as top-level JSON keys.
"""

import json
import logging
from datetime import UTC, datetime

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "context"}


def _extras(record: logging.LogRecord) -> dict:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            payload["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = _extras(record)
        record.context = " ".join(f"{k}={v}" for k, v in extras.items()) if extras else ""
        return super().format(record)


def is_platform_tick(task_name: str) -> bool:
    """The platform's own periodic tasks (release, sweeper, relay, schedule dispatch, alert
    evaluation, deliveries...): MEGAHUB_PLATFORM_LOOPS, routed to the ``system`` queue
    (settings.py)."""
    from django.conf import settings

    return str(task_name) in settings.MEGAHUB_PLATFORM_LOOPS


class PlatformTicksAtDebug(logging.Filter):
    """Celery logs one INFO line per message: beat's "Sending due task", the worker's
    "received" and "succeeded". For the platform's ticks (several per second) these are
    logged at DEBUG instead, so INFO shows brand work and problems; failures keep their
    level. With LOG_LEVEL=DEBUG they show again, as DEBUG."""

    _PER_MESSAGE = {"celery.worker.strategy", "celery.app.trace"}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not self._is_tick(record):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)

    def _is_tick(self, record: logging.LogRecord) -> bool:
        if record.name in self._PER_MESSAGE:
            data = getattr(record, "data", None)
            return isinstance(data, dict) and is_platform_tick(data.get("name", ""))
        if record.name == "celery.beat" and record.msg.startswith("Scheduler: Sending due task"):
            args = record.args if isinstance(record.args, tuple) else ()
            return len(args) == 2 and is_platform_tick(args[1])
        return False

"""Optional error reporting to Sentry: settings.py calls init() only when SENTRY_DSN is set, and
sentry_sdk is imported only then.

Errors from the web (Django integration) and the workers (Celery integration: a failed brand
task is a Celery FAILURE, see task_core/tasks.py), tagged with the brand and the task type.
Nothing personal or secret leaves: send_default_pii=False, no request bodies, and before_send
scrubs credentials from headers, cookies, query strings and extra data.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

FILTERED = "[Filtered]"
# Header, cookie, query and extra keys whose values are credentials.
SECRET_KEY_RE = re.compile(
    r"authorization|cookie|token|secret|password|passwd|api[-_]?key|signature|session|csrf|"
    r"jwt|refresh|access|credential",
    re.IGNORECASE,
)


def _scrub(value: Any, depth: int = 0) -> Any:
    """Replace the values of secret-looking keys, recursively (bounded)."""
    if depth > 8:
        return value
    if isinstance(value, dict):
        return {
            k: FILTERED if SECRET_KEY_RE.search(str(k)) else _scrub(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_scrub(v, depth + 1) for v in value]
    return value


def _scrub_query(query: Any) -> Any:
    if isinstance(query, str):
        pairs = [p.split("=", 1) for p in query.split("&") if p]
        return "&".join(
            f"{p[0]}={FILTERED}" if len(p) == 2 and SECRET_KEY_RE.search(p[0]) else "=".join(p)
            for p in pairs
        )
    if isinstance(query, list):  # [[key, value], ...]
        return [
            [p[0], FILTERED] if len(p) == 2 and SECRET_KEY_RE.search(str(p[0])) else p
            for p in query
        ]
    return _scrub(query)


def before_send(event: dict, hint: dict | None = None) -> dict:
    """Drop request bodies and cookies, filter credential headers, query parameters and extra
    data; tag the brand of a request from its X-Brand-ID header."""
    request = event.get("request")
    if isinstance(request, dict):
        request.pop("data", None)
        request.pop("cookies", None)
        headers = request.get("headers")
        if isinstance(headers, dict):
            brand = next((v for k, v in headers.items() if k.lower() == "x-brand-id"), None)
            if brand and str(brand).isdigit():
                event.setdefault("tags", {}).setdefault("brand_id", str(brand))
            request["headers"] = _scrub(headers)
        if "query_string" in request:
            request["query_string"] = _scrub_query(request["query_string"])
    for key in ("extra", "contexts"):
        if isinstance(event.get(key), dict):
            event[key] = _scrub(event[key])
    return event


def tag_celery_task(sender=None, task=None, **kwargs) -> None:
    """task_prerun: a brand task's brand and type (message headers, task_core's _send) as tags
    of the task's Sentry scope (the Celery integration isolates each task's scope)."""
    import sentry_sdk

    request = getattr(task, "request", None)
    custom = getattr(request, "headers", None) or {}  # where apply(headers=...) puts them
    for header, tag in (
        ("megahub_brand_id", "brand_id"),
        ("megahub_task_type", "task_type"),
        ("megahub_task_id", "megahub_task_id"),
    ):
        value = getattr(request, header, None) or custom.get(header)
        if value is not None:
            sentry_sdk.set_tag(tag, str(value))


def init(dsn: str, *, environment: str | None = None, release: str | None = None, **options):
    """Initialise sentry_sdk with the Django and Celery integrations (errors only)."""
    import sentry_sdk
    from celery import signals
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration

    with warnings.catch_warnings():  # newer SDKs call send_default_pii deprecated; it holds
        warnings.simplefilter("ignore", DeprecationWarning)
        sentry_sdk.init(
            dsn=dsn,
            environment=environment,
            release=release,
            integrations=[DjangoIntegration(), CeleryIntegration()],
            send_default_pii=False,
            max_request_body_size="never",  # no request bodies
            include_local_variables=False,  # frame locals hold bodies, contexts and tokens
            before_send=before_send,
            **options,
        )
    signals.task_prerun.connect(tag_celery_task, weak=False, dispatch_uid="megahub.sentry.tags")

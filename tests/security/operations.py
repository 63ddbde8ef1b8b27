"""The API's operations, read once from the OpenAPI schema, and what the security suite needs to
call each of them: the kind of object its ``{id}`` names, a valid body, its query, the minimum
role the product grants it to.

Every operation of the schema must have an entry here; ``test_every_operation_is_covered``
fails on a new endpoint until someone says how to call it and who may.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta

from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer

from task_core import registry

METHODS = ("get", "post", "put", "patch", "delete")


def load_schema() -> dict:
    raw = SchemaGenerator().get_schema(request=None, public=True)
    return json.loads(OpenApiJsonRenderer().render(raw, renderer_context={}))


SCHEMA = load_schema()
# The task types SCHEMA lists (its task type enums): test modules collected later register
# types of their own, which the schema served later lists too.
SCHEMA_TASK_TYPES = dict(registry._REGISTRY)
COMPONENTS = SCHEMA["components"]["schemas"]


@dataclass(frozen=True)
class Op:
    method: str  # upper case
    path: str  # the schema's template, e.g. /tasks/{id}/retry/
    operation: dict = field(repr=False, compare=False, hash=False)

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def has_id(self) -> bool:
        return "{id}" in self.path

    @property
    def writes(self) -> bool:
        return self.method in ("POST", "PUT", "PATCH")

    @property
    def success_codes(self) -> set[int]:
        return {int(c) for c in self.operation["responses"] if c.startswith("2")}

    @property
    def is_list(self) -> bool:
        return "cursor" in {p["name"] for p in self.operation.get("parameters", [])}

    @property
    def public(self) -> bool:
        """No brand header (the token endpoints)."""
        return self.path.startswith("/auth/")

    def url(self, pk: int | None = None) -> str:
        path = self.path.replace("{id}", str(pk)) if self.has_id else self.path
        for name, value in PATH_SAMPLES.items():
            path = path.replace(f"{{{name}}}", value)
        return path

    def request_schema(self) -> dict | None:
        body = self.operation.get("requestBody")
        if not body:
            return None
        return resolve(body["content"]["application/json"]["schema"])

    def response_schemas(self) -> list[dict]:
        schemas = []
        for code, response in self.operation["responses"].items():
            content = response.get("content", {}).get("application/json")
            if code.startswith("2") and content:
                schemas.append(resolve(content["schema"]))
        return schemas


# Values of path parameters other than {id} (the brand event type of POST /events/...).
PATH_SAMPLES = {"solution": "shop", "model": "order", "action": "created"}


def resolve(schema: dict) -> dict:
    while "$ref" in schema:
        schema = COMPONENTS[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


OPERATIONS: list[Op] = [
    Op(method.upper(), path, operation)
    for path, item in sorted(SCHEMA["paths"].items())
    for method, operation in item.items()
    if method in METHODS
]
BRAND_OPERATIONS = [op for op in OPERATIONS if not op.public]


# --- how to call each operation ---------------------------------------------------------------
def _later(days=1) -> str:
    return (timezone.now() + timedelta(days=days)).isoformat()


SCHEDULE = {"name": "nightly", "task_type": "noop", "cron_expression": "30 2 * * *"}
RULE = {"name": "depth", "metric": "queue_depth", "threshold": 5}
UPCOMING = {"from": "2030-01-01T00:00:00Z", "to": "2030-01-02T00:00:00Z"}


@dataclass(frozen=True)
class Call:
    kind: str | None = None  # the world object whose id fills {id}, or the rows a list shows
    role: str | None = None  # minimum role the product grants (SPEC §2); None: public
    body: object = None  # dict, or a callable(world) -> dict
    query: dict = field(default_factory=dict)


VWR, OPR, ADM = "viewer", "operator", "admin"
CALLS: dict[str, Call] = {
    # auth (no brand; exercised by test_jwt.py)
    "POST /auth/token/": Call(),
    "POST /auth/token/refresh/": Call(),
    "POST /auth/token/verify/": Call(),
    # task_core
    "GET /tasks/": Call("task", VWR),
    "POST /tasks/": Call("task", OPR, {"task_type": "noop", "description": "new"}),
    "GET /tasks/{id}/": Call("task", VWR),
    "POST /tasks/{id}/cancel/": Call("task", OPR, {}),
    "GET /tasks/{id}/events/": Call("task", VWR),
    "POST /tasks/{id}/retry/": Call("failed_task", OPR, {}),
    "GET /tasks/queue-stats/": Call(None, VWR),
    "GET /tasks/types/": Call(None, VWR),
    "GET /tasks/limits/": Call("brand_limit", VWR),
    "POST /tasks/limits/": Call("brand_limit", ADM, {"task_type": "noop", "max_running": 3}),
    "GET /tasks/limits/{id}/": Call("brand_limit", VWR),
    "PATCH /tasks/limits/{id}/": Call("brand_limit", ADM, {"max_running": 9}),
    "DELETE /tasks/limits/{id}/": Call("brand_limit", ADM),
    "GET /tasks/webhooks/": Call("webhook", ADM),
    "POST /tasks/webhooks/": Call("webhook", ADM, {"url": "https://hooks.example.com/new"}),
    "GET /tasks/webhooks/{id}/": Call("webhook", ADM),
    "PATCH /tasks/webhooks/{id}/": Call("webhook", ADM, {"description": "renamed"}),
    "DELETE /tasks/webhooks/{id}/": Call("webhook", ADM),
    "GET /tasks/webhooks/{id}/deliveries/": Call("webhook", ADM),
    # task_monitoring
    "GET /tasks/monitoring/metrics/": Call("metric", VWR),
    "GET /tasks/monitoring/metrics/{id}/": Call("metric", VWR),
    "GET /tasks/monitoring/metrics/dashboard/": Call(None, VWR),
    "GET /tasks/monitoring/workers/": Call("worker", VWR),
    "GET /tasks/monitoring/workers/{id}/": Call("worker", VWR),
    "GET /tasks/monitoring/workers/overview/": Call(None, VWR),
    "GET /tasks/monitoring/alert-rules/": Call("alert_rule", ADM),
    "POST /tasks/monitoring/alert-rules/": Call("alert_rule", ADM, RULE),
    "GET /tasks/monitoring/alert-rules/{id}/": Call("alert_rule", ADM),
    "PUT /tasks/monitoring/alert-rules/{id}/": Call("alert_rule", ADM, RULE),
    "PATCH /tasks/monitoring/alert-rules/{id}/": Call("alert_rule", ADM, {"threshold": 7}),
    "DELETE /tasks/monitoring/alert-rules/{id}/": Call("alert_rule", ADM),
    "POST /tasks/monitoring/alert-rules/{id}/evaluate/": Call("alert_rule", ADM, {}),
    "GET /tasks/monitoring/alert-rules/{id}/evaluations/": Call("alert_rule", ADM),
    "GET /tasks/monitoring/alerts/": Call("alert", VWR),
    "GET /tasks/monitoring/alerts/{id}/": Call("alert", VWR),
    "POST /tasks/monitoring/alerts/{id}/acknowledge/": Call("alert", OPR, {}),
    "GET /tasks/monitoring/alerts/{id}/notifications/": Call("alert", VWR),
    "POST /tasks/monitoring/alerts/{id}/resolve/": Call("alert", OPR, {}),
    # task_persistence
    "GET /tasks/persistent-jobs/persistent-jobs/": Call("job", VWR),
    "POST /tasks/persistent-jobs/persistent-jobs/": Call(
        "job", OPR, {"task_type": "seo_keyword_audit", "context_data": {"keyword_ids": [1, 2]}}
    ),
    "GET /tasks/persistent-jobs/persistent-jobs/{id}/": Call("job", VWR),
    "POST /tasks/persistent-jobs/persistent-jobs/{id}/cancel/": Call("job", OPR, {}),
    "POST /tasks/persistent-jobs/persistent-jobs/{id}/pause/": Call("job", OPR, {}),
    "POST /tasks/persistent-jobs/persistent-jobs/{id}/resume/": Call("paused_job", OPR, {}),
    "GET /tasks/persistent-jobs/checkpoints/": Call("checkpoint", VWR),
    "GET /tasks/persistent-jobs/checkpoints/{id}/": Call("checkpoint", VWR),
    "GET /tasks/persistent-jobs/persistent-jobs/resumable/": Call("paused_job", VWR),
    # task_scheduling
    "GET /tasks/scheduled/periodic-tasks/": Call("schedule", VWR),
    "POST /tasks/scheduled/periodic-tasks/": Call("schedule", ADM, SCHEDULE),
    "GET /tasks/scheduled/periodic-tasks/{id}/": Call("schedule", VWR),
    "PUT /tasks/scheduled/periodic-tasks/{id}/": Call("schedule", ADM, SCHEDULE),
    "PATCH /tasks/scheduled/periodic-tasks/{id}/": Call("schedule", ADM, {"priority": "high"}),
    "DELETE /tasks/scheduled/periodic-tasks/{id}/": Call("schedule", ADM),
    "POST /tasks/scheduled/periodic-tasks/{id}/pause/": Call("schedule", ADM, {}),
    "POST /tasks/scheduled/periodic-tasks/{id}/resume/": Call("paused_schedule", ADM, {}),
    "POST /tasks/scheduled/periodic-tasks/{id}/run-now/": Call("schedule", OPR, {}),
    "GET /tasks/scheduled/periodic-tasks/{id}/runs/": Call("schedule", VWR),
    "GET /tasks/scheduled/periodic-tasks/ready-for-execution/": Call("schedule", VWR),
    "POST /tasks/scheduled/periodic-tasks/validate-cron/": Call(
        None, VWR, {"cron_expression": "*/5 * * * *"}
    ),
    "GET /tasks/scheduled/calendars/": Call("calendar", VWR),
    "POST /tasks/scheduled/calendars/": Call("calendar", ADM, {"name": "holidays"}),
    "GET /tasks/scheduled/calendars/{id}/": Call("calendar", VWR),
    "PUT /tasks/scheduled/calendars/{id}/": Call("calendar", ADM, {"name": "renamed"}),
    "PATCH /tasks/scheduled/calendars/{id}/": Call("calendar", ADM, {"description": "x"}),
    "DELETE /tasks/scheduled/calendars/{id}/": Call("calendar", ADM),
    "GET /tasks/scheduled/calendars/{id}/upcoming/": Call("calendar", VWR, query=UPCOMING),
    "GET /tasks/scheduled/calendars/upcoming/": Call(None, VWR, query=UPCOMING),
    "GET /tasks/scheduled/cron-jobs/": Call("cron_job", VWR),
    "POST /tasks/scheduled/cron-jobs/": Call(
        "cron_job", OPR, lambda world: {"task_type": "noop", "run_at": _later()}
    ),
    "GET /tasks/scheduled/cron-jobs/{id}/": Call("cron_job", VWR),
    "POST /tasks/scheduled/cron-jobs/{id}/cancel/": Call("cron_job", OPR, {}),
    # brand events
    "GET /events/": Call("brand_event", VWR),
    "GET /events/{id}/": Call("brand_event", VWR),
    "POST /events/{solution}/{model}/{action}/": Call(
        "brand_event", OPR, {"order_id": 12345, "customer": "John Doe", "total_amount": 250}
    ),
}

# Objects every brand shares (the worker fleet): no "foreign" id exists for them.
SHARED_KINDS = {"worker"}


def call_for(op: Op) -> Call:
    return CALLS[op.id]


def body_for(op: Op, world) -> dict | None:
    body = call_for(op).body
    return body(world) if callable(body) else body

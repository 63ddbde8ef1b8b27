"""Property-based tests of every operation against the OpenAPI schema (schemathesis) with
negative data (schema-violating requests) as well as positive data: no 5xx, every status code
documented, every response as the schema says, a schema-valid request never refused as bad
input and a schema-violating one never accepted. Positive mode alone is test_schemathesis.py.

Requests go to the WSGI application in-process, authenticated as a brand admin with the
brand's X-Brand-ID, and ``{id}`` filled with an id of the brand's own object of that kind so
that examples reach the serializers, not only the 404 path. Examples are derandomized (the same
inputs on every run) and bounded per operation so the run stays short.
"""

import copy as copy_module
from datetime import timedelta

import jsonschema
import pytest
import schemathesis
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from hypothesis import HealthCheck, reject, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from megahub.wsgi import application
from task_core.registry import get_task_type
from task_scheduling import cron
from tests.security.conftest import call_case_as_owner
from tests.security.operations import CALLS, SCHEMA

MAX_EXAMPLES = 10
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    positive_data_acceptance,
    negative_data_rejection,
]
# ?cursor= is a token only this server writes (pagination.py refuses any other): no schema can
# describe it, so schema-valid strings would be "rejected". Pagination has its own tests.
BRAND_PARAMETERS = {("header", "X-Brand-ID"), ("query", "brand"), ("query", "cursor")}


def without_brand_and_auth(schema: dict) -> dict:
    """The schema less X-Brand-ID, ?brand=, ?cursor= and every security requirement: the
    test pins the brand and the credentials itself (tenancy and authentication have their own
    tests).
    Left in, schemathesis would negate them (a bad X-Brand-ID, a bad session cookie), the
    request would go out with the valid ones anyway and be reported as "accepted"."""
    copy = copy_module.deepcopy(schema)
    copy["components"].pop("securitySchemes", None)
    copy.pop("security", None)
    for item in copy["paths"].values():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            operation.pop("security", None)
            if "parameters" in operation:
                operation["parameters"] = [
                    p
                    for p in operation["parameters"]
                    if (p["in"], p["name"]) not in BRAND_PARAMETERS
                ]
    return copy


pytestmark = pytest.mark.schemathesis  # not in make test-fast (tests/security/conftest.py)

schema = schemathesis.openapi.from_dict(without_brand_and_auth(SCHEMA))
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
schema.app = application


# --- rules between fields or about the world, which no schema can state ----------------------
# A schema-valid request may still break one of these; each function below turns a positive
# component (query or body) into one that keeps them, changing only the values the rule is
# about, so that positive_data_acceptance still checks everything else. Negative components are
# left as generated. schemathesis re-validates a modified component against the schema, so a
# change that broke the schema would show as a negative case, not hide a mismatch.
PUBLIC_URL = "https://hooks.example.com/megahub"


def _minimal(schema: dict):
    """The smallest value of a task type's context_schema (its required keys only)."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: _minimal(properties.get(name, {})) for name in schema.get("required", [])}
    if kind == "array":
        return [_minimal(schema.get("items", {}))] * max(1, schema.get("minItems", 0))
    if kind in ("integer", "number"):
        return schema.get("minimum", 0)
    return {"boolean": False, "string": ""}.get(kind)


def _ordered(start: str, end: str, *, at_most: timedelta | None = None) -> tuple[str, str]:
    """``start`` and ``end`` if ``end`` is after ``start`` (by at most ``at_most``), else
    ``end`` moved to one second after ``start`` (``start`` one second before it at the end of
    the calendar)."""
    first, last = parse_datetime(start), parse_datetime(end)
    if first < last and (at_most is None or last - first <= at_most):
        return start, end
    try:
        return start, (first + timedelta(seconds=1)).isoformat()
    except OverflowError:
        return (first - timedelta(seconds=1)).isoformat(), start


def _stored(world, kind: str):
    """The operation's object as stored now (earlier examples of the test may have edited it)."""
    obj = world.own.get(kind)
    return None if obj is None else type(obj)._base_manager.get(pk=obj.pk)


def context_follows_its_type(body: dict, world, kind: str) -> None:
    """context_data must match its task type's context_schema (GET /tasks/types/): a rule
    between two fields. A PATCH that names no type keeps the object's; a PUT or PATCH that
    sends no context_data keeps the object's (checked against the type it names)."""
    stored = _stored(world, kind)
    task_type = body.get("task_type") or getattr(stored, "task_type", None)
    spec = get_task_type(task_type) if isinstance(task_type, str) else None
    if spec is None or not spec.context_schema:
        return
    context = (
        body["context_data"] if "context_data" in body else getattr(stored, "context_data", {})
    )
    if not jsonschema.Draft202012Validator(spec.context_schema).is_valid(context):
        body["context_data"] = _minimal(spec.context_schema)


def schedule_rules(body: dict, world, kind: str) -> None:
    """A schedule's calendar must exist in the brand; end_at after start_at; the cron
    expression's ranges go forwards and it fires within cron.CRON_HORIZON_YEARS (the part of
    the cron grammar a pattern cannot hold: such a case is rejected, not rewritten)."""
    if isinstance(body.get("calendar"), int):
        body["calendar"] = world.own["calendar"].pk
    stored_start = getattr(_stored(world, kind), "start_at", None)
    start = body.get("start_at", stored_start and stored_start.isoformat())
    if start and body.get("end_at"):
        start, body["end_at"] = _ordered(start, body["end_at"])
        if "start_at" in body:
            body["start_at"] = start
    expression = body.get("cron_expression")
    if isinstance(expression, str):
        try:
            cron.cron_normalize(expression)
        except cron.CronNeverFires:
            reject()
        except cron.CronInvalid as exc:
            if "goes backwards" in exc.field_errors["cron_expression"][0]:
                reject()


def run_at_in_future(body: dict, world, kind: str) -> None:
    """A one-off job runs in the future."""
    if isinstance(body.get("run_at"), str) and parse_datetime(body["run_at"]) <= timezone.now():
        body["run_at"] = (timezone.now() + timedelta(days=1)).isoformat()


def windows_end_after_start(body: dict, world, kind: str) -> None:
    """Each blackout window ends after it starts."""
    for window in body.get("blackout_windows") or []:
        window["starts_at"], window["ends_at"] = _ordered(window["starts_at"], window["ends_at"])


def public_webhook_url(body: dict, world, kind: str) -> None:
    """A webhook URL names a public host that Django's URLValidator takes (the URL policy of
    megahub.webhooks: no internal address, no credentials), beyond format uri."""
    for name in ("url", "webhook_url"):
        if body.get(name):
            body[name] = PUBLIC_URL


def weight_on_the_brand_wide_limit(body: dict, world, kind: str) -> None:
    """A limit's weight is the brand's: only the brand-wide limit (task_type "") has one other
    than 1. A PATCH that names no type keeps the stored limit's."""
    task_type = body.get("task_type", getattr(_stored(world, kind), "task_type", ""))
    if task_type:
        body["weight"] = 1


def upcoming_range(query: dict, world, kind: str) -> None:
    """``to`` is after ``from``, by at most 92 days."""
    if query.get("from") and query.get("to"):
        query["from"], query["to"] = _ordered(
            query["from"], query["to"], at_most=timedelta(days=92)
        )


def _holds_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    return isinstance(value, list) and any(_holds_nul(v) for v in value)


def no_nul_inside_free_json(body, world, kind: str) -> None:
    """The one rule the schema states only in part: no NUL in any JSON string or key, at any
    depth. Every string field and every object's keys carry the pattern, but the values inside
    a free-form object (context_data, state, a brand event's data) are any JSON, which only a
    recursive schema could constrain. A schema-valid body holding NUL can only hold it there:
    such a case is rejected, not sent."""
    if _holds_nul(body):
        reject()


BODY_RULES = {
    "POST /tasks/": [context_follows_its_type],
    "POST /tasks/persistent-jobs/persistent-jobs/": [context_follows_its_type],
    "POST /tasks/scheduled/periodic-tasks/": [context_follows_its_type, schedule_rules],
    "PUT /tasks/scheduled/periodic-tasks/{id}/": [context_follows_its_type, schedule_rules],
    "PATCH /tasks/scheduled/periodic-tasks/{id}/": [context_follows_its_type, schedule_rules],
    "POST /tasks/scheduled/periodic-tasks/validate-cron/": [schedule_rules],
    "POST /tasks/scheduled/cron-jobs/": [context_follows_its_type, run_at_in_future],
    "POST /tasks/scheduled/calendars/": [windows_end_after_start],
    "PUT /tasks/scheduled/calendars/{id}/": [windows_end_after_start],
    "PATCH /tasks/scheduled/calendars/{id}/": [windows_end_after_start],
    "POST /tasks/webhooks/": [public_webhook_url],
    "PATCH /tasks/webhooks/{id}/": [public_webhook_url],
    "POST /tasks/monitoring/alert-rules/": [public_webhook_url],
    "PUT /tasks/monitoring/alert-rules/{id}/": [public_webhook_url],
    "PATCH /tasks/monitoring/alert-rules/{id}/": [public_webhook_url],
    "POST /tasks/limits/": [weight_on_the_brand_wide_limit],
    "PATCH /tasks/limits/{id}/": [weight_on_the_brand_wide_limit],
}
QUERY_RULES = {
    "GET /tasks/scheduled/calendars/upcoming/": [upcoming_range],
    "GET /tasks/scheduled/calendars/{id}/upcoming/": [upcoming_range],
}


def keep_semantic_rules(case, world) -> None:
    operation = f"{case.operation.method.upper()} {case.operation.path}"
    # The object the operation edits, whose stored fields the rules read (None when it creates).
    kind = CALLS[operation].kind if "{id}" in operation else None
    if isinstance(case.body, dict) and not case.meta.is_negative_at(ParameterLocation.BODY):
        body = copy_module.deepcopy(case.body)
        for rule in [no_nul_inside_free_json, *BODY_RULES.get(operation, [])]:
            rule(body, world, kind)
        case.body = body
    if case.query and not case.meta.is_negative_at(ParameterLocation.QUERY):
        query = dict(case.query)
        for rule in QUERY_RULES.get(operation, []):
            rule(query, world, kind)
        case.query = query


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_schema_with_negative_data(
    case, world, in_test_transaction, unthrottled, public_dns
):
    # A negated {id} stays as generated: replaced by a real id, it would be sent valid and
    # reported as a schema-violating request "accepted".
    negative_path = case.meta is not None and case.meta.is_negative_at(ParameterLocation.PATH)
    if case.meta is not None:
        keep_semantic_rules(case, world)
    call_case_as_owner(case, world, CHECKS, fill_id=not negative_path)

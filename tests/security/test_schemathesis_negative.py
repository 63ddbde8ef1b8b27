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

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
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
from tests.security.conftest import call_case_as_owner
from tests.security.operations import SCHEMA

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


schema = schemathesis.openapi.from_dict(without_brand_and_auth(SCHEMA))
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
schema.app = application


# Operations where schema and behaviour still disagree (measured with these settings); each is
# expected to fail until its rule is in the schema or the server. Every other operation must
# pass, and these run too, so a 5xx or a new kind of mismatch shows in their failure output.
KNOWN_MISMATCHES = {
    # schema-valid requests refused: rules not (yet) in the schema
    "POST /auth/token/refresh/": "a refresh token is a signed JWT, not any string",
    "POST /auth/token/verify/": "a token is a signed JWT, not any string",
    "GET /tasks/": "free-text filters (status) refused beyond their choices",
    "POST /tasks/": "task_type must be a registered type (not an enum in the schema yet)",
    "POST /tasks/persistent-jobs/persistent-jobs/": "task_type must be a registered type",
    "POST /tasks/scheduled/cron-jobs/": "task_type registered, run_at in the future",
    "POST /tasks/scheduled/periodic-tasks/": "calendar id must exist in the brand",
    "PUT /tasks/scheduled/periodic-tasks/{id}/": "IANA timezone names, cron grammar",
    "PATCH /tasks/scheduled/periodic-tasks/{id}/": "IANA timezone names, cron grammar",
    "POST /tasks/scheduled/periodic-tasks/validate-cron/": "cron grammar",
    "GET /tasks/scheduled/calendars/upcoming/": "to must be after from",
    "GET /tasks/scheduled/calendars/{id}/upcoming/": "to must be after from",
    "POST /tasks/scheduled/calendars/": "a blackout window ends after it starts",
    "PUT /tasks/scheduled/calendars/{id}/": "a blackout window ends after it starts",
    "PATCH /tasks/scheduled/calendars/{id}/": "a blackout window ends after it starts",
    "POST /tasks/monitoring/alert-rules/": "webhook_url rules (public host) beyond format uri",
    "PUT /tasks/monitoring/alert-rules/{id}/": "webhook_url rules beyond format uri",
    "PATCH /tasks/monitoring/alert-rules/{id}/": "webhook_url rules beyond format uri",
    "POST /tasks/limits/": "task_type registered (or empty), one limit per task type",
    "PATCH /tasks/limits/{id}/": "task_type registered (or empty), one limit per task type",
    "POST /tasks/webhooks/": "url rules (public host) beyond format uri",
    "PATCH /tasks/webhooks/{id}/": "url rules (public host) beyond format uri",
    "GET /tasks/monitoring/metrics/": "status/task_type filters refused beyond their values",
    "GET /tasks/persistent-jobs/persistent-jobs/": "status is a comma-separated list: no pattern",
    "GET /tasks/persistent-jobs/persistent-jobs/resumable/": "status list: no pattern yet",
    # text parameters refuse NUL (megahub.inputs), not yet a pattern in the schema
    "POST /auth/token/": "NUL in a JSON key refused",
    "GET /events/": "NUL in a text filter refused",
    "GET /tasks/monitoring/alert-rules/": "NUL in ?search= refused",
    "GET /tasks/monitoring/workers/": "NUL in ?search= refused",
    "GET /tasks/monitoring/alerts/": "NUL in ?search= refused",
    "GET /tasks/scheduled/calendars/": "NUL in ?search= refused",
    "GET /tasks/scheduled/periodic-tasks/{id}/runs/": "UTC offsets beyond ±15:59 refused",
}


@pytest.fixture
def known_mismatch(request):
    """Marks an operation of KNOWN_MISMATCHES as an expected failure (not strict: the
    examples that reach a mismatch depend on the example budget)."""
    operation = request.node.callspec.id if hasattr(request.node, "callspec") else ""
    for key, reason in KNOWN_MISMATCHES.items():
        if request.node.name.endswith(f"[{key}]") or operation == key:
            request.applymarker(pytest.mark.xfail(reason=reason, strict=False))


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_schema_with_negative_data(
    case, world, in_test_transaction, unthrottled, known_mismatch
):
    # A negated {id} stays as generated: replaced by a real id, it would be sent valid and
    # reported as a schema-violating request "accepted".
    negative_path = case.meta is not None and case.meta.is_negative_at(ParameterLocation.PATH)
    call_case_as_owner(case, world, CHECKS, fill_id=not negative_path)

"""Property-based tests of every operation against the OpenAPI schema (schemathesis): no 5xx,
every status code documented, every response body and content type as the schema says.

Requests go to the WSGI application in-process, authenticated as a brand admin with the
brand's X-Brand-ID, and ``{id}`` filled with an id of the brand's own object of that kind so
that examples reach the serializers, not only the 404 path. Examples are derandomized (the same
inputs on every run) and bounded per operation so the run stays short.
"""

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from rest_framework_simplejwt.tokens import AccessToken
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from megahub.wsgi import application
from tests.security.operations import CALLS, SCHEMA

MAX_EXAMPLES = 20
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

schema = schemathesis.openapi.from_dict(SCHEMA)
schema.app = application


def test_the_tested_schema_is_the_served_schema(client, db):
    assert client.get("/openapi.json").json() == SCHEMA


@pytest.fixture
def in_test_transaction():
    """The WSGI handler closes "obsolete" connections around each request, which would end
    the test's transaction; Django's own test client disconnects the same receivers."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def unthrottled(settings):
    settings.THROTTLE_USER_RATE = "1000000/minute"
    settings.THROTTLE_ANON_RATE = "1000000/minute"


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_schema(case, world, in_test_transaction, unthrottled):
    headers = {
        "Authorization": f"Bearer {AccessToken.for_user(world.owner)}",
        "X-Brand-ID": str(world.brand.pk),
    }
    kind = CALLS[f"{case.operation.method.upper()} {case.operation.path}"].kind
    if "id" in (case.path_parameters or {}) and kind:
        case.path_parameters["id"] = world.own[kind].pk
    case.call_and_validate(headers=headers, checks=CHECKS)

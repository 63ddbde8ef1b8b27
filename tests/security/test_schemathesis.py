"""Property-based tests of every operation against the OpenAPI schema (schemathesis): no 5xx,
every status code documented, every response body and content type as the schema says.

Requests go to the WSGI application in-process, authenticated as a brand admin with the
brand's X-Brand-ID, and ``{id}`` filled with an id of the brand's own object of that kind so
that examples reach the serializers, not only the 404 path. Examples are derandomized (the same
inputs on every run) and bounded per operation so the run stays short.
"""

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from megahub.wsgi import application
from tests.security.conftest import call_case_as_owner
from tests.security.operations import SCHEMA

MAX_EXAMPLES = 20
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

pytestmark = pytest.mark.schemathesis  # not in make test-fast (tests/security/conftest.py)

schema = schemathesis.openapi.from_dict(SCHEMA)
schema.app = application


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_schema(case, world, in_test_transaction, unthrottled, public_dns):
    call_case_as_owner(case, world, CHECKS)

"""Every class of bad input, tried on every operation where it applies (read from the schema):
always a 4xx in the JSON error format naming what was wrong, never a 500, never silently
accepted. The rules are megahub.inputs' (docs/api.md, "Input rules"); this suite runs on
PostgreSQL under `make test` and on SQLite under `make test-fast`.
"""

import base64
import json

import pytest
from django.db import connection
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from megahub.inputs import MAX_JSON_DEPTH
from tests.security.conftest import client_for, own_pk
from tests.security.operations import BRAND_OPERATIONS, body_for, call_for, resolve

FULLWIDTH_ONE = "\uff11"
# superscript two, circled one, fullwidth one, Arabic-Indic one
NON_ASCII_DIGITS = ["\u00b2", "\u2460", FULLWIDTH_ONE, "\u0661"]


def owner_client(world) -> APIClient:
    return client_for(str(AccessToken.for_user(world.owner)), str(world.brand.pk))


def assert_400_naming(response, name, code="VALIDATION_ERROR"):
    assert response.status_code == 400, response.content[:500]
    body = response.json()
    assert body["error_code"] == code, body
    assert name in body["field_errors"], body


def query_parameters(op):
    return [p for p in op.operation.get("parameters", []) if p["in"] == "query"]


def schema_of(parameter) -> dict:
    return resolve(parameter.get("schema", {}))


GETS = [op for op in BRAND_OPERATIONS if op.method == "GET"]
LISTS = [op for op in GETS if op.is_list]


# --- numbers in query parameters ------------------------------------------------------------------
NUMERIC_PARAMS = [
    (op, p["name"], schema_of(p))
    for op in GETS
    for p in query_parameters(op)
    if schema_of(p).get("type") in ("integer", "number")
    and p["name"] != "brand"  # the tenancy fallback: BRAND_REQUIRED, tested below
]


def test_the_reported_filters_are_among_the_numeric_cases():
    cases = {(op.id, name) for op, name, _ in NUMERIC_PARAMS}
    for case in [
        ("GET /tasks/monitoring/alerts/", "rule"),
        ("GET /tasks/monitoring/metrics/", "task"),
        ("GET /tasks/monitoring/metrics/", "execution_time__gte"),
        ("GET /tasks/", "execution_time__gte"),
        ("GET /tasks/", "page_size"),
    ]:
        assert case in cases


def out_of_range_values(schema: dict) -> list[str]:
    """Values beyond what the parameter's column can hold (its declared bounds)."""
    values = ["-8.669416148891079e+136", "1e400", "-1e400"]
    integral = schema.get("type") == "integer"
    for edge, step in (("maximum", 1), ("minimum", -1)):
        if edge in schema:
            bound = schema[edge]
            if integral:
                values.append(str(int(bound) + step))
            else:
                values.append(repr(float(bound) * 10 + step) if bound else str(step))
    return values


@pytest.mark.parametrize(
    "op,name,schema", NUMERIC_PARAMS, ids=[f"{op.id}?{name}" for op, name, _ in NUMERIC_PARAMS]
)
def test_numbers_out_of_range_or_not_ascii_are_a_400_naming_the_parameter(op, name, schema, world):
    client = owner_client(world)
    url = op.url(own_pk(op, world))
    values = [*NON_ASCII_DIGITS, "", " "]
    if name == "page_size":  # above the cap is capped (test_tokens_and_limits), not refused
        values += ["0", "-1", "1.5", "1e3"]
    else:
        values += out_of_range_values(schema)
    if schema.get("type") == "integer":
        values += ["1.5", "1e3", "0x10"]
    for value in values:
        response = client.get(url, {**call_for(op).query, name: value})
        assert response.status_code == 400, (value, response.content[:200])
        assert_400_naming(response, name)


@pytest.mark.parametrize(
    "op,name,schema", NUMERIC_PARAMS, ids=[f"{op.id}?{name}" for op, name, _ in NUMERIC_PARAMS]
)
def test_numbers_at_the_edges_of_the_range_are_accepted(op, name, schema, world):
    client = owner_client(world)
    url = op.url(own_pk(op, world))
    for edge in ("minimum", "maximum"):
        if edge in schema and name != "page_size":
            value = schema[edge]
            value = str(int(value)) if schema["type"] == "integer" else repr(float(value))
            response = client.get(url, {**call_for(op).query, name: value})
            assert response.status_code == 200, (value, response.content[:500])


# One list with several numeric filters, every one of them out of the range of its column, on
# whichever backend this run uses (PostgreSQL: make test; SQLite: make test-fast).
METRIC_FILTERS = {
    "task": str(2**63),
    "execution_time__gte": str(2**31),
    "execution_time__lte": "-1",
    "queue_wait__gte": str(2**31),
    "memory_usage__gte": "1e309",
    "cost_usd__gte": "1e20",
}


@pytest.mark.parametrize("name,value", METRIC_FILTERS.items())
def test_each_numeric_filter_of_the_metrics_list_refuses_out_of_range_on_this_backend(
    name, value, world
):
    response = owner_client(world).get("/tasks/monitoring/metrics/", {name: value})
    assert_400_naming(response, name)
    assert connection.vendor in ("postgresql", "sqlite")


def test_the_alerts_rule_filter_that_answered_500_on_sqlite(world):
    response = owner_client(world).get(
        "/tasks/monitoring/alerts/", {"rule": "-8.669416148891079e+136", "severity": "info"}
    )
    assert_400_naming(response, "rule")


def test_every_filter_set_is_a_strict_filter_set():
    import django_filters

    from megahub.filters import StrictFilterSet

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    ours = [c for c in subclasses(django_filters.FilterSet) if c.__module__.startswith("task_")]
    assert ours and all(issubclass(c, StrictFilterSet) for c in ours), ours


# --- empty values of typed filters ----------------------------------------------------------------
TYPED_PARAMS = [
    (op, p["name"])
    for op in GETS
    for p in query_parameters(op)
    if p["name"] not in ("cursor", "search", "ordering", "brand")
    and (
        schema_of(p).get("type") in ("integer", "number", "boolean", "array")
        or "enum" in schema_of(p)
        or schema_of(p).get("format") in ("date-time", "date")
    )
]


@pytest.mark.parametrize(
    "op,name", TYPED_PARAMS, ids=[f"{op.id}?{name}=" for op, name in TYPED_PARAMS]
)
def test_an_empty_value_of_a_typed_parameter_is_a_400(op, name, world):
    response = owner_client(world).get(op.url(own_pk(op, world)), {**call_for(op).query, name: ""})
    assert_400_naming(response, name)


# --- datetimes ------------------------------------------------------------------------------------
DATETIME_PARAMS = [
    (op, p["name"])
    for op in GETS
    for p in query_parameters(op)
    if schema_of(p).get("format") == "date-time"
]


@pytest.mark.parametrize(
    "op,name", DATETIME_PARAMS, ids=[f"{op.id}?{name}" for op, name in DATETIME_PARAMS]
)
@pytest.mark.parametrize("offset", ["+16:00", "-16:00", "+23:59"])
def test_a_datetime_offset_beyond_15_59_is_a_400(op, name, offset, world):
    query = {**call_for(op).query, name: f"2030-01-01T12:00:00{offset}"}
    response = owner_client(world).get(op.url(own_pk(op, world)), query)
    assert_400_naming(response, name)


@pytest.mark.parametrize(
    "op,name", DATETIME_PARAMS, ids=[f"{op.id}?{name}" for op, name in DATETIME_PARAMS]
)
def test_a_datetime_offset_of_15_59_is_accepted(op, name, world):
    query = dict(call_for(op).query)
    query[name] = "2030-01-01T12:00:00+15:59" if name != "to" else "2030-01-01T23:00:00-15:59"
    response = owner_client(world).get(op.url(own_pk(op, world)), query)
    assert response.status_code == 200, response.content[:500]


# --- text with NUL in query parameters ------------------------------------------------------------
TEXT_PARAMS = [
    (op, p["name"])
    for op in LISTS
    for p in query_parameters(op)
    if schema_of(p).get("type") == "string" and not schema_of(p).get("format")
    and "enum" not in schema_of(p) and p["name"] != "cursor"
]  # fmt: skip


@pytest.mark.parametrize(
    "op,name", TEXT_PARAMS, ids=[f"{op.id}?{name}" for op, name in TEXT_PARAMS]
)
def test_a_nul_in_a_text_parameter_is_a_400(op, name, world):
    response = owner_client(world).get(
        op.url(own_pk(op, world)), {**call_for(op).query, name: "a\x00b"}
    )
    assert_400_naming(response, name)


# --- forged cursors -------------------------------------------------------------------------------
def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


FORGED_CURSORS = [
    _b64("p=abc"),
    _b64("p="),
    _b64("p=1.5"),
    _b64(f"p={FULLWIDTH_ONE}"),
    _b64(f"p={2**70}"),
    _b64("o=-1"),
    _b64("o=abc"),
    _b64("r=2"),
    _b64("p=2030-01-01T00:00:00%2B16:00"),
    _b64("p=a%00b"),
    "not-base64!",
    "%FF%FE",
]


# Lists whose cursor position is text (a hostname): "abc", "" and "1.5" are positions there.
TEXT_ORDERED = {"/tasks/monitoring/workers/"}
NUMERIC_POSITIONS = [*FORGED_CURSORS[:5], FORGED_CURSORS[8]]


@pytest.mark.parametrize("op", LISTS, ids=[op.id for op in LISTS])
def test_a_forged_cursor_is_a_400_naming_cursor_on_every_list(op, world):
    client = owner_client(world)
    url = op.url(own_pk(op, world))
    forged = FORGED_CURSORS
    if op.path in TEXT_ORDERED:
        forged = [c for c in FORGED_CURSORS if c not in NUMERIC_POSITIONS]
    for cursor in forged:
        response = client.get(url, {**call_for(op).query, "cursor": cursor})
        assert response.status_code == 400, (cursor, response.content[:200])
        assert_400_naming(response, "cursor")


@pytest.mark.parametrize("op", LISTS, ids=[op.id for op in LISTS])
def test_the_cursor_a_list_hands_out_still_works(op, world):
    client = owner_client(world)
    url = op.url(own_pk(op, world))
    first = client.get(url, {**call_for(op).query, "page_size": 1}).json()
    if first["next"]:
        assert client.get(first["next"]).status_code == 200


# --- the brand: header, query fallback, path ids --------------------------------------------------
@pytest.mark.parametrize("op", BRAND_OPERATIONS, ids=[op.id for op in BRAND_OPERATIONS])
def test_a_brand_id_in_other_digits_is_brand_required(op, world):
    token = str(AccessToken.for_user(world.owner))
    for value in ["\u00b2", FULLWIDTH_ONE, str(2**63), f"{world.brand.pk}.0"]:
        client = client_for(token, value)
        response = getattr(client, op.method.lower())(op.url(own_pk(op, world)))
        assert response.status_code == 400, (value, response.content[:300])
        assert response.json()["error_code"] == "BRAND_REQUIRED"


def test_the_brand_query_fallback_takes_ascii_digits_only(world):
    token = str(AccessToken.for_user(world.owner))
    for value in [*NON_ASCII_DIGITS, str(2**63), "-1", ""]:
        response = client_for(token, None).get("/tasks/", {"brand": value})
        assert response.status_code == 400, (value, response.content[:300])
        assert response.json()["error_code"] == "BRAND_REQUIRED"
    assert client_for(token, None).get("/tasks/", {"brand": world.brand.pk}).status_code == 200


ID_OPERATIONS = [op for op in BRAND_OPERATIONS if op.has_id]


@pytest.mark.parametrize("op", ID_OPERATIONS, ids=[op.id for op in ID_OPERATIONS])
def test_an_id_in_other_digits_or_beyond_bigint_is_not_found(op, world):
    client = owner_client(world)
    for raw in [FULLWIDTH_ONE, "\u00b2", str(2**63), str(10**30)]:
        url = op.path.replace("{id}", raw)
        response = getattr(client, op.method.lower())(url)
        assert response.status_code == 404, (raw, response.content[:300])
        assert response.json()["error_code"].endswith("NOT_FOUND")


# --- bodies ---------------------------------------------------------------------------------------
WRITES = [op for op in BRAND_OPERATIONS if op.writes and op.request_schema()]


def writable_properties(op) -> dict:
    schema = op.request_schema() or {}
    return {
        name: resolve(prop)
        for name, prop in schema.get("properties", {}).items()
        if not prop.get("readOnly")
    }


def send_raw(client, op, world, text: str, **headers):
    return getattr(client, op.method.lower())(
        op.url(own_pk(op, world)), text, content_type="application/json", **headers
    )


def with_field(op, world, name, value) -> str:
    body = dict(body_for(op, world) or {})
    body[name] = value
    return json.dumps(body)  # ensure_ascii: a lone surrogate travels as "\\ud800"


STRING_FIELDS = [
    (op, name)
    for op in WRITES
    for name, prop in writable_properties(op).items()
    if prop.get("type") == "string" and "enum" not in prop and not prop.get("format")
]


@pytest.mark.parametrize("op,name", STRING_FIELDS, ids=[f"{op.id} {n}" for op, n in STRING_FIELDS])
@pytest.mark.parametrize("text", ["a\x00b", "a\ud800b", "\udfff"], ids=["nul", "high", "low"])
def test_nul_or_a_lone_surrogate_in_a_string_field_is_a_400(op, name, text, world):
    response = send_raw(owner_client(world), op, world, with_field(op, world, name, text))
    assert_400_naming(response, name)


JSON_FIELDS = [
    (op, name)
    for op in WRITES
    for name, prop in writable_properties(op).items()
    if prop.get("type") == "object" or name == "context_data"
]


def test_json_fields_are_among_the_cases():
    assert ("POST /tasks/", "context_data") in {(op.id, n) for op, n in JSON_FIELDS}


@pytest.mark.parametrize("op,name", JSON_FIELDS, ids=[f"{op.id} {n}" for op, n in JSON_FIELDS])
def test_nul_or_surrogate_inside_a_json_field_is_a_400(op, name, world):
    client = owner_client(world)
    for value in [{"k": "a\x00"}, {"a\x00": 1}, {"k": ["x", {"y": "\ud800"}]}]:
        assert_400_naming(send_raw(client, op, world, with_field(op, world, name, value)), name)


def nested(depth: int) -> str:
    return '{"a":' * (depth - 1) + "1" + "}" * (depth - 1)


@pytest.mark.parametrize("op", WRITES, ids=[op.id for op in WRITES])
def test_json_nested_beyond_the_limit_is_a_400(op, world):
    client = owner_client(world)
    for depth in (MAX_JSON_DEPTH + 1, 930, 100_000):
        text = '{"deep": ' + nested(depth) + "}"
        response = send_raw(client, op, world, text)
        assert response.status_code == 400, (depth, response.content[:300])
        assert str(MAX_JSON_DEPTH) in response.json()["detail"] + json.dumps(
            response.json()["field_errors"]
        )


@pytest.mark.parametrize("op", WRITES, ids=[op.id for op in WRITES])
def test_a_body_over_the_upload_limit_is_413_in_the_json_error_format(op, world, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    response = send_raw(owner_client(world), op, world, json.dumps({"pad": "x" * 20_000}))
    assert response.status_code == 413, response.content[:300]
    assert response.json() == {
        "detail": "The request body is larger than the limit of 10000 bytes.",
        "error_code": "REQUEST_TOO_LARGE",
        "field_errors": {},
    }


INTEGER_FIELDS = [
    (op, name, prop)
    for op in WRITES
    for name, prop in writable_properties(op).items()
    if prop.get("type") == "integer"
]


@pytest.mark.parametrize(
    "op,name,prop", INTEGER_FIELDS, ids=[f"{op.id} {n}" for op, n, _ in INTEGER_FIELDS]
)
def test_integer_fields_take_ascii_digits_within_range_only(op, name, prop, world):
    client = owner_client(world)
    for value in [*NON_ASCII_DIGITS, 2**63, -(2**63) - 1, 10**40, True, "1.5", 1.5]:
        response = send_raw(client, op, world, with_field(op, world, name, value))
        assert_400_naming(response, name)


NUMBER_FIELDS = [
    (op, name)
    for op in WRITES
    for name, prop in writable_properties(op).items()
    if prop.get("type") == "number"
]


@pytest.mark.parametrize("op,name", NUMBER_FIELDS, ids=[f"{op.id} {n}" for op, n in NUMBER_FIELDS])
def test_number_fields_take_finite_ascii_numbers_only(op, name, world):
    client = owner_client(world)
    for value in ['"\u00b2"', f'"{FULLWIDTH_ONE}"', "1e400", "-1e400", "true"]:
        body = json.dumps(body_for(op, world) or {})[:-1]
        text = (body + ", " if body != "{" else body) + f'"{name}": {value}}}'
        assert_400_naming(send_raw(client, op, world, text), name)


DATETIME_FIELDS = [
    (op, name)
    for op in WRITES
    for name, prop in writable_properties(op).items()
    if prop.get("format") == "date-time"
]


@pytest.mark.parametrize(
    "op,name", DATETIME_FIELDS, ids=[f"{op.id} {n}" for op, n in DATETIME_FIELDS]
)
def test_a_datetime_field_offset_beyond_15_59_is_a_400(op, name, world):
    text = with_field(op, world, name, "2030-01-01T00:00:00+16:00")
    assert_400_naming(send_raw(owner_client(world), op, world, text), name)


# --- headers --------------------------------------------------------------------------------------
IDEMPOTENT = [
    op
    for op in WRITES
    if "Idempotency-Key" in {p["name"] for p in op.operation.get("parameters", [])}
]


def test_both_create_endpoints_take_an_idempotency_key():
    ids = {op.id for op in IDEMPOTENT}
    assert ids == {"POST /tasks/", "POST /tasks/persistent-jobs/persistent-jobs/"}


@pytest.mark.parametrize("op", IDEMPOTENT, ids=[op.id for op in IDEMPOTENT])
def test_an_idempotency_key_over_255_characters_is_a_400_not_cut(op, world):
    client = owner_client(world)
    body = json.dumps(body_for(op, world))
    for key in ["k" * 256, "k" * 255 + "x" * 10]:
        response = send_raw(client, op, world, body, HTTP_IDEMPOTENCY_KEY=key)
        assert_400_naming(response, "Idempotency-Key")
    # 255 characters is the limit: two keys that differ only in their 256th character could
    # not both be kept apart, so neither is accepted; one of 255 is, and replays as itself.
    first = send_raw(client, op, world, body, HTTP_IDEMPOTENCY_KEY="k" * 255)
    again = send_raw(client, op, world, body, HTTP_IDEMPOTENCY_KEY="k" * 255)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]


# --- time zones -----------------------------------------------------------------------------------
NOT_ZONE_NAMES = [
    "localtime",
    "posixrules",
    "right/UTC",
    "posix/UTC",
    "Factory",
    "right/Europe/Paris",
]


@pytest.mark.parametrize("name", NOT_ZONE_NAMES)
def test_only_iana_time_zone_names_are_accepted(name, world):
    client = client_for(str(AccessToken.for_user(world.owner)), str(world.brand.pk))
    schedule = {"name": "tz", "task_type": "noop", "cron_expression": "0 3 * * *"}
    base = "/tasks/scheduled/periodic-tasks/"
    for method, url, body in [
        ("post", base, {**schedule, "timezone": name}),
        ("patch", f"{base}{world.own['schedule'].pk}/", {"timezone": name}),
        ("post", f"{base}validate-cron/", {"cron_expression": "0 3 * * *", "timezone": name}),
    ]:
        response = getattr(client, method)(url, body, format="json")
        assert response.status_code == 400, (url, response.content[:300])
        assert response.json()["error_code"] == "TIMEZONE_INVALID"
        assert "timezone" in response.json()["field_errors"]
    ok = client.post(
        "/tasks/scheduled/periodic-tasks/",
        {**schedule, "timezone": "Europe/Kiev"},  # a link of the IANA database: a real name
        format="json",
    )
    assert ok.status_code == 201, ok.content[:300]


# --- tokens ---------------------------------------------------------------------------------------
def test_refreshing_the_token_of_a_deleted_user_is_401(world):
    from tests.factories import UserFactory

    user = UserFactory(username="sec-doomed")
    refresh = str(RefreshToken.for_user(user))
    user.delete()
    response = APIClient().post("/auth/token/refresh/", {"refresh": refresh}, format="json")
    assert response.status_code == 401, response.content[:300]
    assert response.json()["error_code"] == "AUTHENTICATION_FAILED"


@pytest.mark.parametrize(
    "path,body,name",
    [
        ("/tasks/scheduled/calendars/", {"name": "c", "description": 0}, "description"),
        ("/tasks/scheduled/calendars/", {"name": 0}, "name"),
        (
            "/tasks/scheduled/periodic-tasks/",
            {"cron_expression": "0 9 * * 1-5", "task_type": "daily_seo_report", "enabled": 0},
            "enabled",
        ),
        (
            "/tasks/scheduled/periodic-tasks/",
            {
                "cron_expression": "0 9 * * 1-5",
                "task_type": "daily_seo_report",
                "enabled": "true",
            },
            "enabled",
        ),
    ],
)
def test_a_json_value_of_the_wrong_type_for_a_text_or_boolean_field_is_a_400(
    path, body, name, world
):
    """DRF turns 0 into "0" for a CharField and 0 or "true" into a boolean; a JSON body says
    what type it means, and the schema says string or boolean."""
    response = owner_client(world).post(path, body, format="json")
    assert_400_naming(response, name)


@pytest.mark.parametrize("path", ["/tasks/monitoring/alerts/", "/tasks/scheduled/periodic-tasks/"])
def test_an_empty_ordering_is_a_400(path, world):
    """The schema's ordering is an enum of the offered fields: empty is not one of them."""
    assert_400_naming(owner_client(world).get(path, {"ordering": ""}), "ordering")


@pytest.mark.parametrize(
    ("path", "ordering"),
    [
        ("/tasks/", "created_at,id"),
        ("/tasks/", "-id,-id"),
        ("/tasks/monitoring/metrics/", "queue_wait_ms,memory_usage_mb"),
        ("/tasks/scheduled/periodic-tasks/", "name,-next_run_at"),
    ],
)
def test_an_ordering_by_two_fields_is_a_400(path, ordering, world):
    """A keyset page's position is one field's value and the id: an order by two fields would
    skip or repeat rows from page to page, so it is refused (ties are ordered by the id)."""
    assert_400_naming(owner_client(world).get(path, {"ordering": ordering}), "ordering")

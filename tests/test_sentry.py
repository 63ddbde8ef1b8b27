"""Optional Sentry reporting: what would leave the process, captured by a local transport."""

import json
import subprocess
import sys

import pytest
import sentry_sdk
from sentry_sdk.transport import Transport

from megahub import sentry
from task_core import broker, services
from task_core.models import Task


class CapturingTransport(Transport):
    """Keeps the envelopes Sentry would send."""

    envelopes: list = []

    def capture_envelope(self, envelope):
        CapturingTransport.envelopes.append(envelope)


def sent_events() -> list[dict]:
    sentry_sdk.flush()
    events = []
    for envelope in CapturingTransport.envelopes:
        for item in envelope.items:
            if item.type == "event":
                events.append(json.loads(item.payload.get_bytes()))
    return events


@pytest.fixture
def sentry_capture():
    CapturingTransport.envelopes = []
    sentry.init("https://public@sentry.invalid/1", transport=CapturingTransport)
    yield sent_events
    sentry_sdk.get_client().close()
    sentry_sdk.init()  # no DSN: the client is inactive again for the rest of the run


def wsgi_post(path: str, query: str, body: dict, **headers) -> int:
    """POST through Django's real WSGI handler (as gunicorn calls it), not the test client."""
    from io import BytesIO
    from wsgiref.util import setup_testing_defaults

    from django.core.wsgi import get_wsgi_application

    data = json.dumps(body).encode()
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(data)),
        "wsgi.input": BytesIO(data),
        **headers,
    }
    setup_testing_defaults(environ)
    status = []
    get_wsgi_application()(environ, lambda s, h, *a: status.append(s))
    return int(status[0].split()[0])


def test_request_error_is_reported_without_body_or_token(
    sentry_capture, owner, brand, monkeypatch, transactional_db
):
    from rest_framework_simplejwt.tokens import RefreshToken

    def broken(**kwargs):
        raise RuntimeError("backend exploded")

    monkeypatch.setattr(services, "task_create", broken)
    token = str(RefreshToken.for_user(owner).access_token)
    status = wsgi_post(
        "/tasks/",
        "access_token=qs-secret&page=2",
        {"task_type": "noop", "context_data": {"customer_secret": "body-secret-value"}},
        HTTP_AUTHORIZATION=f"Bearer {token}",
        HTTP_X_BRAND_ID=str(brand.pk),
        HTTP_COOKIE="sessionid=cookie-secret",
        HTTP_HOST="localhost",
    )
    assert status == 500

    events = sentry_capture()
    assert events, "the unhandled error reached Sentry"
    raw = json.dumps(events)
    for secret in (token, "body-secret-value", "qs-secret", "cookie-secret"):
        assert secret not in raw
    (event,) = [e for e in events if "backend exploded" in json.dumps(e.get("exception", {}))]
    request = event["request"]
    assert request["method"] == "POST" and request["url"].endswith("/tasks/")
    assert "data" not in request and "cookies" not in request
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert headers["authorization"] == sentry.FILTERED
    assert "page=2" in request["query_string"]
    assert event["tags"]["brand_id"] == str(brand.pk)


def test_failed_task_is_reported_with_brand_and_type_tags(sentry_capture, brand):
    from task_core.tasks import task_execute

    task, _ = services.task_create(
        brand=brand, task_type="flaky_api_call", context_data={"permanent": True}
    )
    options = broker._message_options(task, None)
    result = task_execute.apply(args=options["args"], headers=options["headers"])
    assert result.failed()  # Celery FAILURE, after megahub recorded it
    assert Task.objects.for_brand(brand).get(pk=task.pk).status == "failed"

    (event,) = sentry_capture()
    assert event["tags"]["brand_id"] == str(brand.pk)
    assert event["tags"]["task_type"] == "flaky_api_call"
    assert event["tags"]["megahub_task_id"] == task.task_id
    assert event["exception"]["values"][-1]["type"] == "PermanentError"


def test_before_send_scrubs_nested_credentials():
    event = {
        "request": {
            "data": '{"password": "x"}',
            "headers": {"Authorization": "Bearer abc", "X-Api-Key": "k", "Accept": "json"},
            "query_string": [["refresh", "r"], ["page", "1"]],
        },
        "extra": {"payload": {"token": "t", "ok": 1}},
    }
    scrubbed = sentry.before_send(event, {})
    assert "data" not in scrubbed["request"]
    assert scrubbed["request"]["headers"] == {
        "Authorization": sentry.FILTERED,
        "X-Api-Key": sentry.FILTERED,
        "Accept": "json",
    }
    assert scrubbed["request"]["query_string"] == [["refresh", sentry.FILTERED], ["page", "1"]]
    assert scrubbed["extra"] == {"payload": {"token": sentry.FILTERED, "ok": 1}}


@pytest.mark.parametrize("dsn", ["", "https://public@sentry.invalid/1"])
def test_sentry_sdk_is_imported_only_with_a_dsn(dsn):
    code = (
        "import os, sys, django; os.environ.setdefault('DJANGO_SETTINGS_MODULE', "
        "'megahub.settings'); django.setup(); print('sentry_sdk' in sys.modules)"
    )
    env = {"SENTRY_DSN": dsn, "SECRET_KEY": "x", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == str(bool(dsn))

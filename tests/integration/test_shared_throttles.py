"""With REDIS_URL set, every web process counts a client's requests in one Redis: two gunicorn
workers together allow the rate, not twice the rate (real HTTP, real Redis)."""

import os
import re
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
import requests
from rest_framework_simplejwt.tokens import AccessToken

from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration

# A database of its own on the machine's Redis, and a prefix per test: parallel runs and other
# users of the server never see each other's counters.
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://localhost:6379/9")
LIMIT, REQUESTS = 10, 40


@pytest.fixture
def redis_prefix():
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail(
            f"Redis is not reachable at {REDIS_URL} (start it: redis-server --daemonize yes)"
        )
    prefix = f"megahub-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    yield prefix
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)


def test_the_throttle_limit_holds_across_two_gunicorn_workers(
    brand, owner, start_process, redis_prefix
):
    port = free_port()
    web = start_process(
        "web",
        concurrency=2,
        env={
            "PORT": str(port),
            "REDIS_URL": REDIS_URL,
            "CACHE_KEY_PREFIX": redis_prefix,
            "THROTTLE_USER_RATE": f"{LIMIT}/minute",
            "SECURE_SSL_REDIRECT": "0",  # plain http on loopback
        },
        # Each answer logged with the pid of the worker that served it.
        args=["--access-logfile", "-", "--access-logformat", "%(p)s %(s)s"],
    )
    headers = {
        "Authorization": f"Bearer {AccessToken.for_user(owner)}",
        "X-Brand-ID": str(brand.pk),
    }

    def get(_):
        return requests.get(f"http://127.0.0.1:{port}/tasks/", headers=headers, timeout=10)

    with ThreadPoolExecutor(max_workers=6) as pool:  # concurrent: both workers serve
        answers = list(pool.map(get, range(REQUESTS)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * LIMIT + [429] * (REQUESTS - LIMIT)
    throttled = next(a for a in answers if a.status_code == 429)
    assert throttled.json()["error_code"] == "THROTTLED"
    assert 0 < int(throttled.headers["Retry-After"]) <= 61
    served_by = {pid for pid, status in re.findall(r"<(\d+)> (200|429)", web.output())}
    assert len(served_by) == 2, web.output()[-2000:]

"""The image's entry point, run as is on this machine: the web role waits for the database
(retrying) before it migrates and starts gunicorn, and gives up after DB_WAIT_RETRIES."""

import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests
from django.db import connection

from tests.integration.conftest import Proc, free_port, wait_for

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]


def entrypoint_env(process_env, db_port: int, **extra) -> dict:
    parts = urlsplit(process_env["DATABASE_URL"])
    auth = parts.netloc.rpartition("@")[0]
    return {
        **process_env,
        "PATH": f"{Path(sys.executable).parent}:{process_env.get('PATH', '')}",
        "DATABASE_URL": urlunsplit(parts._replace(netloc=f"{auth}@127.0.0.1:{db_port}")),
        "PGCONNECT_TIMEOUT": "2",
        "SECURE_SSL_REDIRECT": "0",
        "WEB_CONCURRENCY": "1",
        **extra,
    }


def test_web_role_waits_for_the_database_then_migrates_and_serves(process_env, tcp_proxy):
    proxy = tcp_proxy(int(connection.settings_dict["PORT"] or 5432))
    proxy.cut()  # the database is "still starting": connections are refused
    port = free_port()
    env = entrypoint_env(process_env, proxy.port, PORT=str(port), DB_WAIT_INTERVAL="0.5",
                         DB_WAIT_RETRIES="60")  # fmt: skip
    web = Proc("entrypoint-web-waits", [str(ROOT / "bin" / "docker-entrypoint"), "web"], env)
    try:
        wait_for(lambda: web.output().count("database not ready") >= 2, 60,
                 message="two refused tries")  # fmt: skip
        assert web.popen.poll() is None, web.output()
        assert "Operations to perform" not in web.output()  # no migrate before the database
        assert "Booting worker" not in web.output()
        proxy.restore()
        wait_for(lambda: "Booting worker" in web.output(), 90, message="gunicorn")
        out = web.output()
        assert out.index("database ready") < out.index("Operations to perform")
        assert out.index("Operations to perform") < out.index("Booting worker")
        health = wait_for(lambda: _get(f"http://127.0.0.1:{port}/health/"), 30, message="/health/")
        assert health.status_code == 200
    finally:
        web.stop()


def test_web_role_gives_up_when_the_database_never_comes(process_env):
    env = entrypoint_env(process_env, free_port(), PORT=str(free_port()), DB_WAIT_INTERVAL="0.2",
                         DB_WAIT_RETRIES="3")  # fmt: skip
    web = Proc("entrypoint-web-gives-up", [str(ROOT / "bin" / "docker-entrypoint"), "web"], env)
    try:
        assert web.popen.wait(60) != 0
        out = web.output()
        assert "database not ready (3/3)" in out and "unreachable after 3 tries" in out
        assert "Operations to perform" not in out and "Booting worker" not in out
    finally:
        web.stop()


def _get(url):
    try:
        return requests.get(url, timeout=2)
    except requests.RequestException:
        return None

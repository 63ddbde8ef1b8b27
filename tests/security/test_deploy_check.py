"""``manage.py check --deploy`` with the production environment docs/production.md documents."""

import functools
import os
import secrets
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The production environment of docs/production.md: only what a deployment must set.
PRODUCTION_ENV = {
    "DEBUG": "0",
    "SECRET_KEY": secrets.token_urlsafe(64),
    "ALLOWED_HOSTS": "megahub.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://megahub.example.com",
    "DATABASE_URL": "postgres://megahub@db.example.com:5432/megahub",
    "CELERY_BROKER_URL": "amqp://megahub:secret@mq.example.com:5672//",
}


def check_deploy(**overrides) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SECURE_", "DJANGO_"))}
    env.update(PRODUCTION_ENV, DJANGO_SETTINGS_MODULE="megahub.settings", **overrides)
    env = {k: v for k, v in env.items() if v is not None}
    # --database is not given: the check needs no connection to the (unreachable) servers.
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@functools.cache
def production_check() -> subprocess.CompletedProcess:
    """check --deploy with the production environment as it is: run once, read by two tests."""
    return check_deploy()


def test_check_deploy_is_clean_with_the_production_environment():
    result = production_check()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout, result.stdout + result.stderr


def test_secure_defaults_when_debug_is_off():
    """Nothing security-related is left for the deployment to opt into, HSTS preload included."""
    result = production_check()
    output = result.stdout + result.stderr
    for code in ("W004", "W005", "W008", "W009", "W012", "W016", "W018", "W020", "W021"):
        assert f"security.{code}" not in output, output


def test_hsts_preload_can_be_opted_out():
    result = check_deploy(SECURE_HSTS_PRELOAD="0")
    assert result.returncode != 0
    assert "security.W021" in result.stdout + result.stderr


def test_weakened_settings_are_reported():
    result = check_deploy(
        SECURE_SSL_REDIRECT="0", SECURE_COOKIES="0", SECURE_HSTS_SECONDS="0", SECRET_KEY="short"
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    for code in ("W008", "W012", "W004", "W009"):
        assert f"security.{code}" in output, output

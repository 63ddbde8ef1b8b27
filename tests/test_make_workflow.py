"""The container and make workflow: `make health` (bin/health-check), the database wait of the
image's web role (wait_for_database), the multi-stage Dockerfile and the compose file."""

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from django.core.management import CommandError, call_command

ROOT = Path(__file__).resolve().parents[1]


class Ready(BaseHTTPRequestHandler):
    answer = (200, {"status": "ok", "checks": {"database": {"status": "ok"}}})

    def do_GET(self):
        status, body = self.server.answer
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


@pytest.fixture
def stack():
    """A stand-in for the running stack's web service, answering /health/ready/."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Ready)
    server.answer = Ready.answer
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def make_health(port: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "-s", "--no-print-directory", "health", "HEALTH_HOST=127.0.0.1",
         f"HEALTH_PORT={port}"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_make_health_exits_zero_only_when_the_stack_is_ready(stack):
    ready = make_health(stack.server_port)
    assert ready.returncode == 0, ready.stderr
    assert f"127.0.0.1:{stack.server_port}/health/ready/: ready (HTTP 200)" in ready.stdout
    failing = {"database": {"status": "fail", "detail": "OperationalError"}}
    stack.answer = (503, {"status": "fail", "checks": failing})
    not_ready = make_health(stack.server_port)
    assert not_ready.returncode != 0
    assert "NOT READY (HTTP 503)" in not_ready.stdout
    assert "database" in not_ready.stdout and "OperationalError" in not_ready.stdout


def test_make_health_fails_when_nothing_listens():
    from tests.integration.conftest import free_port

    down = make_health(free_port())
    assert down.returncode != 0 and "unreachable" in down.stderr


def test_wait_for_database_returns_at_once_when_the_database_answers(db, capsys):
    call_command("wait_for_database", retries=1, interval=0)
    assert "database ready (try 1/1)" in capsys.readouterr().out


def test_wait_for_database_gives_up_after_its_retries(monkeypatch, settings):
    from django.db import connection

    tries = []

    def refuse():
        tries.append(1)
        raise OSError("connection refused")

    monkeypatch.setattr(connection, "ensure_connection", refuse)
    with pytest.raises(CommandError, match="unreachable after 3 tries"):
        call_command("wait_for_database", retries=3, interval=0)
    assert len(tries) == 3


# --- the image -------------------------------------------------------------------------------
def stages() -> dict[str, list[str]]:
    """Dockerfile instructions by stage name (continuation lines joined)."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    found: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            current = line.split()[-1] if " AS " in line.upper() else f"stage{len(found)}"
            found[current] = []
        if current:
            found[current].append(line)
    return found


def test_the_dockerfile_builds_with_uv_and_runs_slim_as_a_non_root_user():
    built = stages()
    assert list(built) == ["build", "runtime"]
    build = " ".join(built["build"])
    assert "uv sync --frozen --no-dev" in build and "COPY pyproject.toml uv.lock" in build
    runtime = built["runtime"]
    assert runtime[0].startswith("FROM ${PYTHON_IMAGE}")  # the slim base again
    joined = " ".join(runtime)
    assert "COPY --from=build /app /app" in joined
    assert "uv " not in joined and "pip install" not in joined  # no build tools at run time
    assert "USER megahub" in runtime
    assert runtime.index("USER megahub") > max(
        i for i, line in enumerate(runtime) if line.startswith(("RUN", "COPY"))
    )
    assert 'ENTRYPOINT ["/usr/bin/tini", "--", "/app/bin/docker-entrypoint"]' in runtime


def test_the_web_role_waits_for_the_database_before_migrating():
    script = (ROOT / "bin" / "docker-entrypoint").read_text()
    web = script[script.index("  web)") : script.index("  worker)")]
    assert web.index("wait_for_database") < web.index("migrate --noinput") < web.index("gunicorn")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["web"]["command"] == ["web"]


def test_the_entrypoint_is_valid_bash():
    subprocess.run(["bash", "-n", str(ROOT / "bin" / "docker-entrypoint")], check=True)
    subprocess.run([sys.executable, "-m", "py_compile", str(ROOT / "bin" / "health-check")],
                   check=True)  # fmt: skip


def _planned(target: str) -> list[str]:
    """The sync commands `make TARGET` would run on a fresh clone (dry run, every stamp stale)."""
    out = subprocess.run(
        ["make", "-n", "-B", "--no-print-directory", target], cwd=ROOT, capture_output=True,
        text=True, timeout=60,
    ).stdout  # fmt: skip
    return [line.split(" sync ", 1)[1] for line in out.splitlines() if " sync --frozen" in line]


def test_make_run_installs_runtime_dependencies_only_and_make_test_the_dev_tools():
    assert _planned("run") == ["--frozen --no-dev --inexact --compile-bytecode"]
    assert _planned("worker") == ["--frozen --no-dev --inexact --compile-bytecode"]
    assert _planned("test-fast") == ["--frozen --compile-bytecode"]
    assert _planned("lint") == ["--frozen --compile-bytecode"]


def test_switching_between_run_and_test_syncs_only_when_needed(tmp_path):
    """A development sync also stands for a runtime one; a runtime one never for the dev tools;
    a changed lock file resyncs either mode. Run on a copy of the Makefile with a fake uv."""
    import os
    import shutil

    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    for name in ("pyproject.toml", "uv.lock"):
        (tmp_path / name).write_text("")
    (tmp_path / ".venv").mkdir()
    log = tmp_path / "uv.log"
    fake_uv = tmp_path / "uv"
    fake_uv.write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    fake_uv.chmod(0o755)

    def make(target: str) -> list[str]:
        before = log.read_text().splitlines() if log.exists() else []
        subprocess.run(["make", "-s", f"UV={fake_uv}", target], cwd=tmp_path, check=True,
                       capture_output=True, timeout=60)  # fmt: skip
        return log.read_text().splitlines()[len(before) :]

    assert make("install-runtime") == [
        "sync --frozen --no-dev --inexact --compile-bytecode"
    ]  # a newcomer's run
    assert make("install-runtime") == []
    assert make("install") == [
        "sync --frozen --compile-bytecode"
    ]  # then make test: the dev tools are added
    assert make("install-runtime") == []  # back to make run: nothing to do
    assert make("install") == []
    stamp = (tmp_path / ".venv" / ".synced").stat().st_mtime
    os.utime(tmp_path / "uv.lock", (stamp + 5, stamp + 5))  # the lock file changed
    assert make("install-runtime") == ["sync --frozen --no-dev --inexact --compile-bytecode"]
    assert make("install") == ["sync --frozen --compile-bytecode"]

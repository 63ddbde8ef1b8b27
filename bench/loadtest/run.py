"""Load test: locust users against gunicorn + Celery workers + beat, on loopback only.

    make loadtest [LOAD_USERS=50] [LOAD_DURATION=120] [LOAD_SPAWN_RATE=10]
                  [LOAD_WEB_WORKERS=3] [LOAD_WORKER_CONCURRENCY=2]

Runs on its own database (megahub_load, created and migrated here; never a test or dev
database) and its own RabbitMQ queues (load-<pid>.*, deleted afterwards). It creates a brand,
a user and a JWT through manage.py and the API, starts the processes, runs locust headless
for the given time, waits for the queue to drain, then checks: no 5xx and no connection
error, no 429 (the run sets THROTTLE_USER_RATE so that one user may drive every locust user),
and every task created reached a terminal state. Prints p95 per endpoint and writes
docs/loadtest.md. Exits non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import psycopg
import requests

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".venv" / "bin"
PYTHON = str(BIN / "python") if (BIN / "python").exists() else sys.executable
LOOPBACK = {"localhost", "127.0.0.1", "::1"}
TERMINAL = ("completed", "failed", "cancelled")
LOGS = REPO / "bench" / "loadtest" / "results"


def loopback_only(url: str, what: str) -> None:
    host = urlparse(url).hostname or "localhost"
    if host not in LOOPBACK:
        raise SystemExit(f"the load test runs on loopback only; {what} host is {host!r}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Proc:
    """A process in its own group, logging to LOGS/<name>.log, stopped with its children."""

    def __init__(self, name: str, args: list[str], env: dict):
        LOGS.mkdir(parents=True, exist_ok=True)
        self.name, self.log_path = name, LOGS / f"{name}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            args, cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def wait_for(self, marker: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker in self.log_path.read_text(errors="replace"):
                return
            if self.popen.poll() is not None:
                break
            time.sleep(0.3)
        raise SystemExit(f"{self.name} did not start; see {self.log_path}")

    def stop(self, timeout: float = 30) -> None:
        if self.popen.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        self.log.close()


def manage(env: dict, *args: str) -> str:
    done = subprocess.run(
        [PYTHON, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def ensure_database(url: str) -> None:
    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin = urlunparse(parsed._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def task_counts(url: str, brand_id: int) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT status, count(*) FROM task_core_task WHERE brand_id = %s GROUP BY status",
            [brand_id],
        ).fetchall()
    return dict(rows)


def read_stats(prefix: Path) -> list[dict]:
    with open(f"{prefix}_stats.csv") as stats:
        return list(csv.DictReader(stats))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().splitlines()[0].split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    system = f"{platform.system()} {platform.release()}"
    return f"{os.cpu_count()} CPUs ({cpu}){mem}, {system}, Python {platform.python_version()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--duration", type=int, default=120, help="seconds of load")
    parser.add_argument("--spawn-rate", type=float, default=10)
    parser.add_argument("--web-workers", type=int, default=3)
    parser.add_argument("--worker-concurrency", type=int, default=2)
    parser.add_argument("--drain-timeout", type=int, default=300)
    parser.add_argument("--database", default="megahub_load")
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/loadtest.md")
    opts = parser.parse_args()
    if not opts.database.startswith("megahub_load"):
        raise SystemExit("the load test database is named megahub_load*")

    source = os.environ.get("DATABASE_URL", "postgres://postgres@localhost:5432/megahub")
    broker = os.environ.get("CELERY_BROKER_URL", "amqp://guest:guest@localhost:5672//")
    if not urlparse(source).scheme.startswith("postgres") or not broker.startswith("amqp"):
        raise SystemExit(
            "the load test needs PostgreSQL and RabbitMQ (DATABASE_URL, CELERY_BROKER_URL)"
        )
    loopback_only(source, "DATABASE_URL")
    loopback_only(broker, "CELERY_BROKER_URL")
    database_url = urlunparse(urlparse(source)._replace(path=f"/{opts.database}"))
    prefix = f"load-{os.getpid()}."
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "megahub.settings",
        "DEBUG": "0",
        "SECURE_SSL_REDIRECT": "0",  # plain http on loopback, no TLS proxy in front
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": broker,
        "CELERY_QUEUE_PREFIX": prefix,
        "SECRET_KEY": os.environ.get("SECRET_KEY") or "load-test-only-secret-key-not-for-deploys",
        # One user drives every locust user: its per-user rate must cover all of them.
        "THROTTLE_USER_RATE": os.environ.get("LOAD_THROTTLE_USER_RATE", "1000000/minute"),
        "JWT_ACCESS_MINUTES": "600",  # the token minted once outlives the run
        "MEGAHUB_DEMO_TASK_TYPES": "1",  # the workload is the demo types
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "INFO"),  # the production default
    }
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    print(f"database {opts.database}: create if missing, migrate")
    ensure_database(database_url)
    manage(env, "migrate", "--noinput")
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    out = manage(env, "brand_create", f"Load {stamp}", "--slug", f"load-{stamp}")
    brand_id = int(out.split("id=")[1].split()[0])
    username, password = f"load-{stamp}", secrets.token_urlsafe(16)
    user_env = {**env, "LOAD_USERNAME": username, "LOAD_PASSWORD": password}
    manage(
        user_env, "shell", "-c",
        "import os; from django.contrib.auth import get_user_model; "
        "get_user_model().objects.create_user(os.environ['LOAD_USERNAME'], "
        "password=os.environ['LOAD_PASSWORD'])",
    )  # fmt: skip
    manage(env, "brand_grant", username, str(brand_id), "operator")

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    procs: list[Proc] = []
    result_path = Path(tempfile.mkstemp(prefix="megahub-load-", suffix=".json")[1])
    csv_prefix = LOGS / "locust"
    try:
        web = Proc("web", [
            str(BIN / "gunicorn"), "megahub.wsgi:application", "--bind", f"127.0.0.1:{port}",
            "--workers", str(opts.web_workers), "--preload",
        ], env)  # fmt: skip
        procs.append(web)
        worker = Proc("worker", [
            str(BIN / "celery"), "-A", "megahub", "worker", "-c", str(opts.worker_concurrency),
            "--pool", "prefork", "-n", f"load{os.getpid()}@%h", "--without-mingle",
            "--without-gossip", "--loglevel", "INFO",
        ], env)  # fmt: skip
        procs.append(worker)
        procs.append(Proc("beat", [
            str(BIN / "celery"), "-A", "megahub", "beat", "--loglevel", "INFO", "--pidfile=",
        ], env))  # fmt: skip
        web.wait_for("Booting worker")
        worker.wait_for("ready.")
        procs[-1].wait_for("beat: Starting")
        token = requests.post(
            f"{base}/auth/token/", json={"username": username, "password": password}, timeout=30
        )
        token.raise_for_status()
        access = token.json()["access"]

        load_before = os.getloadavg()[0]
        print(f"locust: {opts.users} users for {opts.duration}s against {base}")
        started = time.monotonic()
        locust = subprocess.run(
            [
                str(BIN / "locust"), "-f", str(REPO / "bench" / "loadtest" / "locustfile.py"),
                "--headless", "--host", base, "--users", str(opts.users),
                "--spawn-rate", str(opts.spawn_rate), "--run-time", f"{opts.duration}s",
                "--stop-timeout", "10", "--csv", str(csv_prefix), "--only-summary",
                "--exit-code-on-error", "0",
            ],
            cwd=REPO,
            env={**env, "LOADTEST_TOKEN": access, "LOADTEST_BRAND_ID": str(brand_id),
                 "LOADTEST_RESULT": str(result_path)},
            timeout=opts.duration + 120,
        )  # fmt: skip
        load_s = time.monotonic() - started
        load_after = os.getloadavg()[0]
        if locust.returncode:
            raise SystemExit(f"locust exited with {locust.returncode}")

        print("waiting for the queue to drain")
        drain_started = time.monotonic()
        while True:
            counts = task_counts(database_url, brand_id)
            active = sum(n for status, n in counts.items() if status not in TERMINAL)
            if not active or time.monotonic() - drain_started > opts.drain_timeout:
                break
            time.sleep(1)
        drain_s = time.monotonic() - drain_started
    finally:
        for proc in reversed(procs):
            proc.stop()
        with suppress(Exception):
            from kombu import Connection

            with Connection(broker) as conn:
                channel = conn.channel()
                for queue in ("default", "long", "system"):  # settings.CELERY_TASK_QUEUES
                    with suppress(Exception):
                        channel.queue_delete(f"{prefix}{queue}")
                with suppress(Exception):
                    channel.exchange_delete(f"{prefix}megahub.tasks")

    result = json.loads(result_path.read_text() or "{}")
    result_path.unlink()
    by_status: dict[int, int] = {}
    for _name, status, count in result.get("status_counts", []):
        by_status[status] = by_status.get(status, 0) + count
    created = len(result.get("created_ids", []))
    stats = read_stats(csv_prefix)
    rows = [r for r in stats if r["Name"] != "Aggregated"] + [
        r for r in stats if r["Name"] == "Aggregated"
    ]
    table = [
        "| endpoint | requests | failures | req/s | p50 ms | p95 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        name = f"{r['Type']} {r['Name']}".strip() if r["Name"] != "Aggregated" else "all"
        table.append(
            f"| {name} | {r['Request Count']} | {r['Failure Count']} | "
            f"{float(r['Requests/s']):.1f} | {r['50%']} | {r['95%']} | {r['99%']} | "
            f"{float(r['Max Response Time']):.0f} |"
        )
    server_errors = sum(n for s, n in by_status.items() if s >= 500)
    connection_errors = by_status.get(0, 0)
    throttled = by_status.get(429, 0)
    checks = {
        "no 5xx": server_errors == 0,
        "no connection error": connection_errors == 0,
        "no 429": throttled == 0,
        "every created task terminal": active == 0,
        "every 201 is a task of the brand": sum(counts.values()) == created,
    }
    print("\n".join(table))
    print(f"status codes: {dict(sorted(by_status.items()))}")
    print(f"tasks: created {created}, by status {counts}, drained in {drain_s:.1f}s")
    for name, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")

    if not opts.no_docs:
        command = (
            f"make loadtest LOAD_USERS={opts.users} LOAD_DURATION={opts.duration} "
            f"LOAD_SPAWN_RATE={opts.spawn_rate:g} LOAD_WEB_WORKERS={opts.web_workers} "
            f"LOAD_WORKER_CONCURRENCY={opts.worker_concurrency}"
        )
        doc = [
            "# Load test",
            "",
            "Generated by `bench/loadtest/run.py` (`make loadtest`); see docs/development.md.",
            "",
            f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            f"- Command: `{command}`",
            f"- Machine: {machine()}; 1-min load average {load_before:.1f} before the run, "
            f"{load_after:.1f} at its end",
            f"- Processes: gunicorn with {opts.web_workers} sync workers, one Celery worker "
            f"(prefork, concurrency {opts.worker_concurrency}), beat; PostgreSQL and RabbitMQ "
            "on loopback; locust in one process on the same machine",
            f"- Load: {opts.users} users (spawn rate {opts.spawn_rate:g}/s) for "
            f"{load_s:.0f}s, each waiting 0.5-2 s between requests: create (2), list page "
            "of 20 (3), poll one of its own tasks (5)",
            "",
            *table,
            "",
            "Status codes (counted by a request listener, so they include the requests that "
            "finished during locust's stop timeout): "
            f"{', '.join(f'{s}: {n}' for s, n in sorted(by_status.items()))}.",
            f"Tasks created: {created}; after the run: "
            f"{', '.join(f'{s} {n}' for s, n in sorted(counts.items()))}; queue drained "
            f"{drain_s:.1f}s after the load stopped.",
            "",
            "Checks: " + "; ".join(f"{n}: {'ok' if ok else 'FAILED'}" for n, ok in checks.items()),
            "",
        ]
        (REPO / "docs" / "loadtest.md").write_text("\n".join(doc))
        print("wrote docs/loadtest.md")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

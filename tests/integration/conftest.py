"""Real processes for integration and chaos tests: celery worker and beat subprocesses running
megahub's production settings against this test run's PostgreSQL database and RabbitMQ queues."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
from celery import current_app
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]
CELERY = str(Path(sys.executable).with_name("celery"))
ARTIFACTS = ROOT / "test-artifacts"


def wait_for(predicate, timeout=30.0, interval=0.2, message="condition"):
    """Poll until predicate() is truthy; return its value or fail with `message`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {message}")


def _database_url() -> str:
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"


class Proc:
    """A megahub process (worker or beat) with its log file."""

    def __init__(self, name: str, args: list[str], env: dict):
        ARTIFACTS.mkdir(exist_ok=True)
        self.name = name
        self.log_path = ARTIFACTS / f"{name}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: we can kill it with its children
        )  # fmt: skip

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, marker: str, timeout=30.0):
        wait_for(
            lambda: marker in self.output() or self.popen.poll() is not None,
            timeout,
            interval=0.05,  # a read of the log file: cheap, and every test waits on it
            message=f"{self.name} to be ready",
        )
        if self.popen.poll() is not None:
            pytest.fail(f"{self.name} exited early:\n{self.output()[-3000:]}")

    def pool_children(self) -> list[int]:
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.popen.pid)], capture_output=True, text=True
        ).stdout
        return [int(p) for p in out.split()]

    def kill(self, sig=signal.SIGKILL):
        """Signal the whole process group (main process and pool children)."""
        with suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout=15.0):
        if self.popen.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.popen.wait(5)
        self.kill(signal.SIGKILL)  # stray pool children
        self.log.close()


@pytest.fixture
def process_env(transactional_db):
    """Environment for megahub subprocesses: production settings, this test's DB and queues."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "megahub.settings",
        "DATABASE_URL": _database_url(),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CELERY_QUEUE_PREFIX": settings.CELERY_QUEUE_PREFIX,
        "SECRET_KEY": settings.SECRET_KEY,
        "LOG_FORMAT": "text",
        "LOG_LEVEL": "INFO",
        "TASK_HEARTBEAT_SECONDS": "1",
        "TASK_HEARTBEAT_TIMEOUT_SECONDS": "4",
        "TASK_RELEASE_INTERVAL_SECONDS": "1",
        "TASK_SWEEP_INTERVAL_SECONDS": "1",
        "TASK_PUBLISH_GRACE_SECONDS": "2",
        "DB_CONN_MAX_AGE": "0",
        "MEGAHUB_DEMO_TASK_TYPES": "1",
        "WEBHOOK_ALLOWED_NETWORKS": ",".join(settings.WEBHOOK_ALLOWED_NETWORKS),  # receivers
    }
    return env


@pytest.fixture(scope="session", autouse=True)
def _delete_test_queues_at_exit():
    yield
    with current_app.connection_for_write() as conn:
        channel = conn.default_channel
        for queue in settings.CELERY_TASK_QUEUES:
            queue(channel).delete()
            queue.exchange(channel).delete()


@pytest.fixture
def purge_queues(transactional_db):
    """Drop messages left by earlier tests (their rows are gone with the database flush)."""
    with current_app.connection_for_write() as conn:
        channel = conn.default_channel
        for queue in settings.CELERY_TASK_QUEUES:
            queue(channel).declare()
            queue(channel).purge()


@pytest.fixture
def start_process(process_env, purge_queues, request):
    started: list[Proc] = []

    def start(
        kind: str, *, concurrency: int = 2, env: dict | None = None, wait=True, args=()
    ) -> Proc:
        """kind: "worker", "beat", "web" (gunicorn on env["PORT"]), or a manage.py command
        name; `args` are appended to the command line."""
        name = f"{request.node.name[:60]}-{kind}-{len(started)}"
        full_env = {**process_env, **(env or {})}
        extra = list(args)
        if kind == "worker":
            args = [
                CELERY, "-A", "megahub", "worker", "-c", str(concurrency), "--pool", "prefork",
                "-n", f"w{uuid.uuid4().hex[:8]}@%h", "--without-mingle", "--without-gossip",
                "--loglevel", "INFO",
            ]  # fmt: skip
            marker = "ready."
        elif kind == "web":
            args = [
                str(Path(sys.executable).with_name("gunicorn")), "megahub.wsgi:application",
                "-b", f"127.0.0.1:{full_env['PORT']}", "-w", str(concurrency),
                "--preload",  # workers fork with the app loaded: ready when they boot
            ]  # fmt: skip
            marker = "Booting worker"
        elif kind == "beat":
            args = [CELERY, "-A", "megahub", "beat", "--loglevel", "INFO", "--pidfile="]
            marker = "beat: Starting"
        else:  # a manage.py command, e.g. consume_task_requests
            args = [sys.executable, "manage.py", kind]
            marker = "ready"
        proc = Proc(name, args + extra, full_env)
        started.append(proc)
        if wait:
            proc.wait_ready(marker)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def effect_log(tmp_path):
    return tmp_path / "effects.log"


@pytest.fixture
def effect_worker(start_process, effect_log):
    """Start a worker that also runs the `effect_marker` type, recording into effect_log."""

    def start(*, env: dict | None = None, **options):
        env = {"MEGAHUB_EFFECT_LOG": str(effect_log), **(env or {})}
        return start_process(
            "worker", env=env, args=["--include", "tests.integration.effect_types"], **options
        )

    return start


@pytest.fixture
def worker(start_process):
    return start_process("worker")


@pytest.fixture
def beat(start_process):
    return start_process("beat")


@contextmanager
def broker_unreachable():
    """Point this process's publisher at a closed port: publishes fail as in a broker outage.

    The original connection pools are set aside, not closed, and put back afterwards.
    """
    app = current_app
    saved = (app.conf.broker_write_url, app._pool, app.amqp._producer_pool)
    app._pool, app.amqp._producer_pool = None, None
    # broker_write_url: broker_url itself is overridden by the CELERY_BROKER_URL env var.
    app.conf.broker_write_url = "amqp://guest:guest@127.0.0.1:1//"
    try:
        yield
    finally:
        if app._pool is not None:
            app._pool.force_close_all()
        app.conf.broker_write_url, app._pool, app.amqp._producer_pool = saved


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TcpProxy:
    """A loopback TCP relay to `target` that a test can cut and restore.

    cut() closes every relayed connection (both sides see it end, as when a network path or a
    peer goes away) and, until restore(), accepts new connections only to close them at once;
    cut(refuse_new=False) only resets the connections (the path stays open).
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connected: list[float] = []  # monotonic time of each relayed connection
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._open = True
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._stopped:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            with self._lock:
                refuse = not self._open
            if refuse:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._pairs.append((client, upstream))
                self.connected.append(time.monotonic())
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self, *, refuse_new: bool = True):
        with self._lock:
            self._open = not refuse_new
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def restore(self):
        with self._lock:
            self._open = True

    def close(self):
        self._stopped = True
        self.cut()
        self.server.close()


@pytest.fixture
def tcp_proxy():
    proxies: list[TcpProxy] = []

    def make(target_port: int) -> TcpProxy:
        proxies.append(TcpProxy(target_port))
        return proxies[-1]

    yield make
    for proxy in proxies:
        proxy.close()

"""Shared plumbing of the benchmarks: environment, bench databases, processes, statistics.

Every benchmark runs against its own PostgreSQL database (``megahub_bench*``, created and
migrated here, never a test or dev database) and its own RabbitMQ queues
(``bench-<pid>.*``, deleted afterwards), on loopback only.
"""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path
from urllib.parse import urlparse, urlunparse

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
LOGS = RESULTS / "logs"
VENV_BIN = REPO / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable

DEFAULT_PG = "postgres://postgres@localhost:5432/megahub"
DEFAULT_AMQP = "amqp://guest:guest@localhost:5672//"
LOOPBACK = {"localhost", "127.0.0.1", "::1", "[::1]"}
BENCH_DB_PREFIX = "megahub_bench"
# The rate is per user and per gunicorn process; a one-second window keeps the throttle's work
# (a cache read and write per request) on every request without ever answering 429.
BENCH_THROTTLE_RATE = "1000000/second"

# What the processes we start log at: the project's own default, unless the caller set one.
CHILD_LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")


def _loopback_only(url: str, what: str) -> None:
    host = urlparse(url).hostname or "localhost"
    if host not in LOOPBACK:
        raise SystemExit(f"{what} must be on loopback for benchmarks, got host {host!r}")


def configure(db_name: str = BENCH_DB_PREFIX, *, settings_module: str = "bench.settings") -> dict:
    """Point this process, and every process it starts, at a bench database and bench queues."""
    if not db_name.startswith(BENCH_DB_PREFIX):
        raise SystemExit(f"bench databases are named {BENCH_DB_PREFIX}*, not {db_name!r}")
    source = os.environ.get("BENCH_SOURCE_DATABASE_URL") or os.environ.get(
        "DATABASE_URL", DEFAULT_PG
    )
    parsed = urlparse(source)
    if not parsed.scheme.startswith("postgres"):
        raise SystemExit(f"benchmarks need PostgreSQL; DATABASE_URL is {parsed.scheme}://")
    _loopback_only(source, "DATABASE_URL")
    broker = os.environ.get("CELERY_BROKER_URL", DEFAULT_AMQP)
    if not broker.startswith(("amqp://", "pyamqp://")):
        raise SystemExit("benchmarks need RabbitMQ (CELERY_BROKER_URL=amqp://...)")
    _loopback_only(broker, "CELERY_BROKER_URL")
    prefix = os.environ.get("BENCH_QUEUE_PREFIX") or f"bench-{os.getpid()}."
    # A plain SIGTERM would skip the try/finally blocks that stop workers and delete queues.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.environ.update(
        {
            # Children started by a benchmark inherit this; keep the original for re-derivation.
            "BENCH_SOURCE_DATABASE_URL": source,
            "DATABASE_URL": urlunparse(parsed._replace(path=f"/{db_name}")),
            "CELERY_BROKER_URL": broker,
            "CELERY_QUEUE_PREFIX": prefix,
            "BENCH_QUEUE_PREFIX": prefix,
            "SECRET_KEY": os.environ.get("SECRET_KEY") or "bench-only-secret-key-not-for-deploys",
            "DJANGO_SETTINGS_MODULE": settings_module,
            "THROTTLE_USER_RATE": BENCH_THROTTLE_RATE,
            "JWT_ACCESS_MINUTES": "600",  # tokens minted once must outlive the run
            "LOG_LEVEL": "WARNING",  # this driver process; children get CHILD_LOG_LEVEL
            "MEGAHUB_DEMO_TASK_TYPES": "1",  # the workload is the demo types
        }
    )
    return {"db_name": db_name, "database_url": os.environ["DATABASE_URL"], "prefix": prefix}


def child_env(**overrides: str) -> dict[str, str]:
    env = dict(os.environ, LOG_LEVEL=CHILD_LOG_LEVEL, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(overrides)
    return env


# --- PostgreSQL ---------------------------------------------------------------------------
def _maintenance_conninfo() -> str:
    parsed = urlparse(os.environ.get("BENCH_SOURCE_DATABASE_URL", DEFAULT_PG))
    return urlunparse(parsed._replace(scheme="postgresql", path="/postgres"))


def pg_connect(dbname: str | None = None, *, autocommit: bool = True):
    """A psycopg connection to a bench database (or the maintenance database if None)."""
    import psycopg

    url = _maintenance_conninfo()
    if dbname is not None:
        if not dbname.startswith(BENCH_DB_PREFIX):
            raise SystemExit(f"refusing to connect to non-bench database {dbname!r}")
        url = urlunparse(urlparse(url)._replace(path=f"/{dbname}"))
    return psycopg.connect(url, autocommit=autocommit)


def ensure_database(db_name: str) -> None:
    """Create the bench database if it does not exist (never drops anything)."""
    if not db_name.startswith(BENCH_DB_PREFIX):
        raise SystemExit(f"refusing to create non-bench database {db_name!r}")
    with pg_connect() as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db_name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{db_name}"')


def django_setup(db_name: str, *, migrate: bool = True) -> None:
    """Create + migrate the bench database, then set Django up on it (call after configure)."""
    ensure_database(db_name)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import django

    django.setup()
    if migrate:
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)


def xact_commits(db_name: str) -> int:
    """Committed transactions of the database so far (as flushed to pg_stat_database).

    Read over a connection to the maintenance database, so reading does not count itself.
    Backends flush their counters at exit or after ~1-10 s: stop the processes first.
    """
    with pg_connect() as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", [db_name]
        ).fetchone()
    return int(row[0])


def pg_version() -> str:
    with pg_connect() as conn:
        return conn.execute("SHOW server_version").fetchone()[0]


TX_STATEMENTS = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")


def statement_kind(sql: str) -> str:
    """'SELECT task_core_task', 'INSERT task_core_taskevent'...: what a query touches."""
    head = sql.split()[0].upper() if sql.split() else "?"
    match = re.search(r'\b(?:FROM|INTO|UPDATE)\s+"?(\w+)"?', sql, re.IGNORECASE)
    return f"{head} {match.group(1)}" if match else head


def captured_statements(captured) -> list[str]:
    """The kinds of the queries a CaptureQueriesContext saw, without transaction control."""
    sqls = [q["sql"] for q in captured.captured_queries]
    return [statement_kind(s) for s in sqls if not s.split()[0].upper().startswith(TX_STATEMENTS)]


# --- RabbitMQ -----------------------------------------------------------------------------
def broker_connection(**transport_options):
    from kombu import Connection

    return Connection(
        os.environ["CELERY_BROKER_URL"], connect_timeout=5, transport_options=transport_options
    )


def queue_depth(conn, name: str) -> int:
    """Ready messages in a queue (passive declare: never creates it)."""
    channel = conn.channel()
    try:
        _, depth, _ = channel.queue_declare(queue=name, passive=True)
        return depth
    finally:
        with suppress(Exception):
            channel.close()


def queue_depth_now(name: str, attempts: int = 5) -> int:
    """queue_depth on a fresh connection, retried: the broker may drop connections (the test
    suite's chaos tests close them) and a benchmark should not die of it."""
    for attempt in range(attempts):
        try:
            with broker_connection() as conn:
                return queue_depth(conn, name)
        except OSError:
            if attempt == attempts - 1:
                raise
            time.sleep(1)
    raise AssertionError("unreachable")


def wait_for_services(db_name: str, timeout: float = 600) -> None:
    """Block until RabbitMQ and PostgreSQL both answer (after an outage, say)."""

    def up() -> bool:
        try:
            with broker_connection() as conn:
                conn.ensure_connection(max_retries=1, timeout=3)
            with pg_connect(db_name) as pg:
                pg.execute("SELECT 1")
            return True
        except Exception:
            return False

    wait_until(up, timeout=timeout, interval=2, what="RabbitMQ and PostgreSQL")


def queue_purge(name: str) -> None:
    """Drop the ready messages of a queue, keeping the queue and its bindings."""
    with suppress(Exception), broker_connection() as conn:
        channel = conn.channel()
        channel.queue_purge(queue=name)
        channel.close()


def broker_cleanup(queues: list[str], exchanges: list[str]) -> None:
    """Delete the bench queues and exchanges this run declared (errors ignored: maybe absent)."""
    with broker_connection() as conn:
        for name in queues:
            with suppress(Exception):
                channel = conn.channel()
                channel.queue_delete(queue=name)
                channel.close()
        for name in exchanges:
            with suppress(Exception):
                channel = conn.channel()
                channel.exchange_delete(exchange=name)
                channel.close()


def rabbitmq_version() -> str:
    with broker_connection() as conn:
        conn.connect()
        props = conn.connection.server_properties
        return str(props.get("version", "?"))


# --- processes ----------------------------------------------------------------------------
class Proc:
    """A child process in its own session, logging to bench/results/logs/<name>.log.

    ``stop()`` asks politely (SIGTERM to the process we started), then kills its process group.
    """

    def __init__(self, name: str, argv: list[str], env: dict[str, str]):
        LOGS.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = LOGS / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 30.0) -> int | None:
        try:
            if self.alive():
                with suppress(ProcessLookupError):
                    self.popen.send_signal(signal.SIGTERM)
                with suppress(subprocess.TimeoutExpired):
                    self.popen.wait(timeout)
            # Whatever the process left behind in its session (pool children) goes too.
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            with suppress(subprocess.TimeoutExpired):
                self.popen.wait(5)
        finally:
            self._log.close()
        return self.popen.returncode

    def tail(self, lines: int = 30) -> str:
        with suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds user + system) of a process from /proc, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _CLK_TCK


class CpuWindow:
    """CPU time per completed task of a worker (its main process, its pool processes) and of
    the PostgreSQL backends of a bench database (local server), measured between the first
    poll past 20% of the tasks and the last one: the worker's start-up and the last stragglers
    stay out. Linux /proc; figures are None elsewhere. A process that exits inside the window
    (a worker's connection recycled after CELERY_DB_REUSE_MAX tasks) counts up to the last poll
    that saw it."""

    def __init__(self, root_pid: int, n: int, db_name: str | None = None):
        self.root, self.n, self.db = root_pid, n, db_name
        self.first_done: int | None = None
        self.last_done = 0
        self.base: dict[tuple[str, int], float] = {}  # CPU when first seen in the window
        self.latest: dict[tuple[str, int], float] = {}

    def _snapshot(self) -> dict[tuple[str, int], float]:
        stats = {}
        for name in os.listdir("/proc"):
            if name.isdigit() and (st := _proc_stat(int(name))) is not None:
                stats[int(name)] = st
        tree, frontier = {self.root}, [self.root]
        while frontier:
            parent = frontier.pop()
            kids = [pid for pid, (ppid, _) in stats.items() if ppid == parent]
            tree.update(kids)
            frontier.extend(kids)
        snap = {("worker main", self.root): stats[self.root][1]} if self.root in stats else {}
        snap.update({("pool processes", p): stats[p][1] for p in tree - {self.root}})
        if self.db:
            with pg_connect() as pg:
                rows = pg.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s", [self.db]
                ).fetchall()
            snap.update({("postgres backends", p): stats[p][1] for (p,) in rows if p in stats})
        return snap

    def poll(self, done: int) -> None:
        if not os.path.isdir("/proc") or done < self.n * 0.2:
            return
        snap = self._snapshot()
        first = self.first_done is None
        if first:
            self.first_done = done
        for key, cpu in snap.items():
            # A process that appears inside the window counts from 0 (a new connection).
            self.base.setdefault(key, cpu if first else 0.0)
            self.latest[key] = cpu
        self.last_done = done

    def per_task_ms(self) -> dict[str, float] | None:
        if self.first_done is None or self.last_done - self.first_done < 50:
            return None
        tasks = self.last_done - self.first_done
        out: dict[str, float] = {}
        for (group, _pid), cpu in self.latest.items():
            out[group] = out.get(group, 0.0) + cpu - self.base[(group, _pid)]
        return {group: ms / tasks * 1000 for group, ms in out.items()}


def wait_until(predicate, *, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# --- statistics ---------------------------------------------------------------------------
def percentile(values: list[float], p: float) -> float:
    """Linear-interpolated percentile (p in 0..100)."""
    if not values:
        return float("nan")
    data = sorted(values)
    k = (len(data) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def summary(values: list[float]) -> dict:
    return {
        "n": len(values),
        "median": percentile(values, 50),
        "min": min(values) if values else float("nan"),
        "max": max(values) if values else float("nan"),
        "p5": percentile(values, 5),
        "p95": percentile(values, 95),
    }


# --- results ------------------------------------------------------------------------------
def write_result(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str))
    return path


def read_result(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def machine_info() -> dict:
    cpu = "?"
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram_gb = "?"
    with suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram_gb = f"{int(line.split()[1]) / 1024 / 1024:.1f}"
    info = {
        "nproc": os.cpu_count(),
        "ram_gb": ram_gb,
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    for key, fn in (("postgresql", pg_version), ("rabbitmq", rabbitmq_version)):
        try:
            info[key] = fn()
        except Exception as exc:
            info[key] = f"unavailable ({exc.__class__.__name__})"
    with suppress(Exception):
        import celery
        import django
        import rest_framework

        info["django"] = django.__version__
        info["drf"] = rest_framework.__version__
        info["celery"] = celery.__version__
    with suppress(Exception):
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    with suppress(Exception):
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        info["git_modified"] = sorted(
            line[3:] for line in status if not line[3:].startswith(("bench/", "docs/"))
        )
    return info


def fmt(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def commit_latency_ms(db_name: str, n: int = 200) -> dict:
    """How long one small committed INSERT takes, with and without waiting for the WAL fsync.

    The machine's storage sets the floor of every durable write transaction; the drain and the
    REST create pay it once per write transaction.
    """
    out = {}
    with pg_connect(db_name) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_commit_probe (x int)")
        try:
            for mode in ("on", "off"):
                conn.execute(f"SET synchronous_commit = {mode}")
                t0 = time.perf_counter()
                for _ in range(n):
                    conn.execute("INSERT INTO bench_commit_probe VALUES (1)")
                out[f"sync_{mode}"] = (time.perf_counter() - t0) / n * 1000
        finally:
            conn.execute("DROP TABLE IF EXISTS bench_commit_probe")
    return out


def publish_latency_ms(n: int = 200) -> float:
    """One persistent message published with a publisher confirm, as the project publishes."""
    from kombu import Exchange, Queue

    name = f"{os.environ['CELERY_QUEUE_PREFIX']}probe"
    queue = Queue(name, Exchange(name, type="direct"), routing_key="probe")
    with broker_connection(confirm_publish=True) as conn:
        producer = conn.Producer()
        try:
            producer.publish({}, exchange=queue.exchange, routing_key="probe", declare=[queue])
            t0 = time.perf_counter()
            for _ in range(n):
                producer.publish(
                    {"x": 1}, exchange=queue.exchange, routing_key="probe", delivery_mode=2
                )
            return (time.perf_counter() - t0) / n * 1000
        finally:
            broker_cleanup([name], [name])


# --- servers and process memory -------------------------------------------------------------
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gunicorn(name: str, workers: int = 2, **env: str) -> tuple[Proc, int]:
    """gunicorn megahub.wsgi (bench.settings) on a free loopback port, once /health/ answers;
    ``env``: settings overrides for its processes."""
    import http.client

    port = free_port()
    server = Proc(
        name,
        [
            str(VENV_BIN / "gunicorn"),
            "megahub.wsgi:application",
            "--workers",
            str(workers),
            "--bind",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
        ],
        child_env(DJANGO_SETTINGS_MODULE="bench.settings", **env),
    )

    def up() -> bool:
        if not server.alive():
            raise RuntimeError(f"gunicorn exited:\n{server.tail()}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health/")
            answered = conn.getresponse().status == 200
            conn.close()
            return answered
        except OSError:
            return False

    try:
        wait_until(up, timeout=60, interval=0.2, what="gunicorn")
    except BaseException:
        server.stop()
        raise
    return server, port


def _proc_kb(pid: int, path: str, key: str) -> int:
    with suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/{path}").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    return 0


def process_tree(pid: int) -> list[int]:
    """pid and its descendants (from /proc/<pid>/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        with suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                with suppress(OSError, ValueError):
                    todo += [int(c) for c in (task / "children").read_text().split()]
    return out


def memory_of_tree(pid: int) -> dict:
    """RSS of a process and of its descendants, and their PSS (shared pages split), in KB."""
    tree = process_tree(pid)
    children = tree[1:]
    return {
        "rss_parent_kb": _proc_kb(pid, "status", "VmRSS:"),
        "rss_children_kb": sum(_proc_kb(c, "status", "VmRSS:") for c in children),
        "pss_kb": sum(_proc_kb(p, "smaps_rollup", "Pss:") for p in tree),
        "processes": len(tree),
    }


def linear_slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (NaN with fewer than 2 distinct xs)."""
    n = len(xs)
    if n < 2:
        return float("nan")
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    if not var:
        return float("nan")
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var

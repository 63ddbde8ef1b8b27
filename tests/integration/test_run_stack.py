"""`make run` (bin/run-stack) prints the demo credentials and curl line only once the web server
accepts connections, and only once."""

import socket
import time

import pytest

from tests.integration.conftest import ROOT, Proc, free_port

pytestmark = [pytest.mark.integration]

BANNER = "megahub demo ready (test banner)"


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_the_curl_line_is_printed_once_the_web_server_accepts_connections(
    process_env, purge_queues, tmp_path, request
):
    port = free_port()
    banner = tmp_path / "demo-banner.txt"
    banner.write_text(f"{BANNER}\n  curl -sS -X POST http://127.0.0.1:{port}/tasks/ ...\n")
    env = {**process_env, "DEBUG": "1", "PORT": str(port), "DEMO_BANNER": str(banner)}
    stack = Proc(f"{request.node.name[:60]}", [str(ROOT / "bin" / "run-stack")], env)
    try:
        refused_before = 0
        deadline = time.monotonic() + 120
        while BANNER not in stack.output():
            assert stack.popen.poll() is None, stack.output()[-3000:]
            assert time.monotonic() < deadline, "no banner after 120 s:\n" + stack.output()[-3000:]
            # Read the output first: whenever it does not hold the banner yet, either the port
            # still refuses or the banner is about to be printed.
            refused_before += not accepts(port)
            time.sleep(0.05)
        # The banner is out: the server must accept connections now.
        assert accepts(port), stack.output()[-3000:]
        assert refused_before > 0  # it started before the server listened, and waited for it
        time.sleep(1)
        out = stack.output()
        assert out.count(BANNER) == 1
        assert f"megahub is up: http://127.0.0.1:{port}/" in out
        assert out.index(BANNER) < out.index("megahub is up")
    finally:
        stack.stop()

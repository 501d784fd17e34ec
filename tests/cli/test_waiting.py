"""A server that accepts connections and never answers: the CLI says what it waits for,
then gives up with one error line, within its socket timeout (not attempts x timeout)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest


class SilentServer:
    """Listens on a free loopback port, accepts every connection, never replies."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # closed
                return
            self.accepted.append(conn)  # held open, never read from or written to

    def close(self) -> None:
        self.listener.close()
        for conn in self.accepted:
            conn.close()
        self.thread.join(5)


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def test_a_silent_server_is_named_while_the_cli_waits(run, silent):
    env = {
        "SWARM_MEMORY_REDIS_URL": f"redis://127.0.0.1:{silent.port}/0",
        "SWARM_MEMORY_SOCKET_TIMEOUT": "3",
    }
    started = time.monotonic()
    proc = run.proc("ns", "list", env=env, timeout=60)
    elapsed = time.monotonic() - started
    assert proc.returncode == 6, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert (
        lines[0] == f"swarm-memory: waiting for Redis at 127.0.0.1:{silent.port} (timeout 3 s)..."
    )
    assert len(lines) == 2 and lines[1].startswith("swarm-memory: error: Redis unreachable")
    assert "timeout" in lines[1].lower()
    assert silent.accepted  # it did connect: the wait was for a reply
    assert elapsed < 10, elapsed  # one socket timeout, not one per retry attempt


def test_a_healthy_server_gets_no_waiting_line(run):
    proc = run.proc("ns", "list")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""

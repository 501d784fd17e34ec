"""Helpers for test suites that use swarm_memory (public API, like structlog.testing).

- :class:`SlotGuard`: attach to a client; every script call must touch one Cluster slot
  (standalone Redis and fakeredis never check, so this is how you catch it early).
- :func:`fake_memory`: a :class:`~swarm_memory.SwarmMemory` over an in-process fakeredis.
- :func:`embedded_server`: a throwaway Redis to point a URL at: ``redis-server`` on a free
  loopback port when the binary exists, else a fakeredis TCP server in a thread.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import redis
from redis.crc import key_slot

from swarm_memory.client import SwarmMemory
from swarm_memory.settings import Settings


class CrossSlotError(AssertionError):
    """A script call touched keys in more than one Cluster slot."""


class SlotGuard:
    """Script observer asserting one slot per call; counts the calls it checked."""

    def __init__(self) -> None:
        self.calls = 0
        self.by_script: dict[str, int] = {}

    def __call__(self, script: str, keys: list[str], args: list[Any]) -> None:
        slots = {key_slot(k.encode("utf-8")) for k in keys}
        if len(slots) != 1:
            raise CrossSlotError(f"script {script} touched slots {sorted(slots)}: {keys}")
        self.calls += 1
        self.by_script[script] = self.by_script.get(script, 0) + 1


def fake_memory(agent: str = "agent", settings: Settings | None = None) -> SwarmMemory:
    """A SwarmMemory over a private in-process fakeredis server (Lua included)."""
    import fakeredis  # noqa: PLC0415 - a test-only dependency

    memory = SwarmMemory.from_client(fakeredis.FakeRedis(), agent=agent, settings=settings)
    memory.observe_scripts(SlotGuard())
    return memory


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def embedded_server(kind: str = "auto") -> Iterator[str]:
    """Yield a ``redis://`` URL of a private server that lives for the ``with`` block.

    ``kind``: ``"redis-server"``, ``"fakeredis"``, or ``"auto"`` (the binary if found).
    """
    if kind not in ("auto", "redis-server", "fakeredis"):
        raise ValueError(f"unknown embedded server kind {kind!r}")
    binary = shutil.which("redis-server") if kind != "fakeredis" else None
    if kind == "redis-server" and not binary:
        raise FileNotFoundError("redis-server is not installed")
    if binary:
        port = _free_port()
        workdir = tempfile.mkdtemp(prefix="swarm-memory-")
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        try:
            _wait_ready(url)
            yield url
        finally:
            proc.terminate()
            proc.wait(10)
            shutil.rmtree(workdir, ignore_errors=True)
        return
    from fakeredis import TcpFakeServer  # noqa: PLC0415

    port = _free_port()
    server = TcpFakeServer(("127.0.0.1", port))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.shutdown()
        server.server_close()


def _wait_ready(url: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    client = redis.Redis.from_url(url, socket_connect_timeout=0.2)
    try:
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        client.close()

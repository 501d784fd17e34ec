"""Helpers for test suites that use swarm_memory (public API, like structlog.testing).

- :class:`SlotGuard`: attach to a client; every script call must touch one Cluster slot
  (standalone Redis and fakeredis never check, so this is how you catch it early).
- :func:`fake_memory`: a :class:`~swarm_memory.SwarmMemory` over an in-process fakeredis.
- :func:`embedded_server`: a throwaway Redis to point a URL at: ``redis-server`` on a free
  loopback port when the binary exists, else a fakeredis TCP server in a thread.
- :class:`IsolatedStore`: one test's private store -- a fresh fakeredis server, or a unique
  key prefix on a real Redis whose keys it deletes at the end -- handing out sync and async
  clients as any agent. The pytest plugin (``swarm_memory.pytest_plugin``) builds its
  fixtures on it; use it directly under unittest or in a script.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Self

import redis
import redis.asyncio
import redis.asyncio.retry
from redis.backoff import NoBackoff
from redis.crc import key_slot

from swarm_memory._shell import client_options
from swarm_memory.aio import AsyncSwarmMemory
from swarm_memory.client import SwarmMemory
from swarm_memory.errors import InvalidOption
from swarm_memory.settings import Settings

TEST_URL_ENV = "SWARM_MEMORY_TEST_URL"
"""Environment variable naming a real Redis for :meth:`IsolatedStore.from_env` (and so
for the pytest fixtures); unset or empty means fakeredis."""


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


def _unique_prefix(base: str) -> str:
    # Settings.key_prefix allows [A-Za-z0-9_.-]{1,32}: no glob characters (so the prefix
    # is safe in SCAN MATCH) and no ":" (so "<prefix>:*" never matches another prefix).
    return f"{base[:16]}.t{uuid.uuid4().hex[:12]}"


def _settings_with(base: Settings, overrides: dict[str, Any]) -> Settings:
    unknown = sorted(set(overrides) - set(Settings.model_fields))
    if unknown:
        raise InvalidOption(f"unknown Settings field(s): {', '.join(unknown)}", field="settings")
    if "key_prefix" in overrides:
        raise InvalidOption(
            "key_prefix is chosen per test (unique, and deleted afterwards)", field="key_prefix"
        )
    if not overrides:
        return base
    # Every field given explicitly: validated, and the environment cannot change any.
    return Settings(**{**base.model_dump(), **overrides})


class IsolatedStore:
    """One test's private store, and every client made on it.

    Without ``url``: a fresh in-process fakeredis server (Lua included), gone with this
    object. With ``url``: a real Redis (standalone, or Cluster when ``settings.cluster``)
    that may be shared, so every key lives under a unique ``key_prefix`` and
    :meth:`close` deletes every key under it (SCAN MATCH ``<prefix>:*``; never FLUSHDB).
    Either way the prefix is unique, so a test passes or fails the same on both.

    :meth:`memory` / :meth:`async_memory` give a client as any agent, each on its own
    connection (like another process), all with a :class:`SlotGuard` attached. Close with
    :meth:`close` (sync clients, then the keys) or ``await`` :meth:`aclose` (async clients
    first); ``with`` / ``async with`` do it for you.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        agent: str = "agent",
    ) -> None:
        base = settings or Settings()
        self.url = url or None
        self.agent = agent
        self.settings = base.model_copy(update={"key_prefix": _unique_prefix(base.key_prefix)})
        self.guard = SlotGuard()
        self._server: Any = None
        if self.url is None:
            import fakeredis  # noqa: PLC0415 - only the fake store needs it

            self._server = fakeredis.FakeServer()
        self._memories: list[SwarmMemory] = []
        self._clients: list[Any] = []
        self._async_memories: list[AsyncSwarmMemory] = []
        self._async_clients: list[Any] = []

    @classmethod
    def from_env(cls, *, settings: Settings | None = None, agent: str = "agent") -> IsolatedStore:
        """A store on ``$SWARM_MEMORY_TEST_URL`` if it is set (and not empty), else fake."""
        return cls(os.environ.get(TEST_URL_ENV) or None, settings=settings, agent=agent)

    @property
    def prefix(self) -> str:
        """The key prefix every client of this store uses."""
        return self.settings.key_prefix

    @property
    def is_fake(self) -> bool:
        """True on the in-process fakeredis server."""
        return self.url is None

    def _sync_client(self, settings: Settings) -> Any:
        if self.url is None:
            import fakeredis  # noqa: PLC0415

            return fakeredis.FakeRedis(server=self._server)
        if settings.cluster:
            return redis.RedisCluster.from_url(self.url, **client_options(settings))
        return redis.Redis.from_url(self.url, **client_options(settings))

    def _async_client(self, settings: Settings) -> Any:
        if self.url is None:
            import fakeredis  # noqa: PLC0415

            return fakeredis.FakeAsyncRedis(server=self._server)
        options = client_options(settings)
        options["retry"] = redis.asyncio.retry.Retry(NoBackoff(), 0)  # an asyncio client's own
        if settings.cluster:
            return redis.asyncio.RedisCluster.from_url(self.url, **options)
        return redis.asyncio.Redis.from_url(self.url, **options)

    def redis(self) -> Any:
        """A new sync redis-py client onto this store (for assertions on raw keys);
        closed by :meth:`close`."""
        client = self._sync_client(self.settings)
        self._clients.append(client)
        return client

    def memory(self, agent: str | None = None, **settings: Any) -> SwarmMemory:
        """A :class:`SwarmMemory` as ``agent`` (default: this store's agent) on its own
        connection; ``settings``: :class:`Settings` fields to change for this client
        (not ``key_prefix``). Raises InvalidOption for an unknown or forbidden field."""
        merged = _settings_with(self.settings, settings)
        client = self._sync_client(merged)
        self._clients.append(client)
        memory = SwarmMemory.from_client(client, agent=agent or self.agent, settings=merged)
        memory.observe_scripts(self.guard)
        self._memories.append(memory)
        return memory

    def async_memory(self, agent: str | None = None, **settings: Any) -> AsyncSwarmMemory:
        """The :class:`AsyncSwarmMemory` twin of :meth:`memory`. Its connections bind to
        the event loop that first uses them; ``await`` :meth:`close_async_clients` (or
        :meth:`aclose`) on that loop."""
        merged = _settings_with(self.settings, settings)
        client = self._async_client(merged)
        self._async_clients.append(client)
        memory = AsyncSwarmMemory.from_client(client, agent=agent or self.agent, settings=merged)
        memory.observe_scripts(self.guard)
        self._async_memories.append(memory)
        return memory

    def keys(self) -> list[str]:
        """Every Redis key under this store's prefix, sorted."""
        client = self._sync_client(self.settings)
        try:
            return sorted(
                k.decode() if isinstance(k, bytes) else k
                for k in client.scan_iter(match=f"{self.prefix}:*", count=1000)
            )
        finally:
            client.close()

    def _delete_keys(self) -> None:
        client = self._sync_client(self.settings)
        try:
            found = list(client.scan_iter(match=f"{self.prefix}:*", count=1000))
            for start in range(0, len(found), 500):
                client.delete(*found[start : start + 500])  # split per slot on Cluster
        finally:
            client.close()

    async def close_async_clients(self) -> None:
        """Stop the watches of every async client made here and close their connections
        (on the loop they were used on). Idempotent."""
        memories, self._async_memories = self._async_memories, []
        clients, self._async_clients = self._async_clients, []
        async with contextlib.AsyncExitStack() as stack:  # LIFO: memories, then clients
            for client in clients:
                stack.push_async_callback(client.aclose)
            for memory in memories:
                stack.push_async_callback(memory.close)

    def close(self) -> None:
        """Stop the watches of every sync client, delete every key under the prefix (real
        server) and close the connections. Idempotent. Raises RuntimeError while an async
        client made here is open: ``await`` :meth:`aclose` instead."""
        if self._async_memories or self._async_clients:
            raise RuntimeError(
                "async clients of this IsolatedStore are still open: "
                "await store.close_async_clients() or store.aclose() first"
            )
        memories, self._memories = self._memories, []
        clients, self._clients = self._clients, []
        with contextlib.ExitStack() as stack:  # LIFO: memories, keys, clients
            for client in clients:
                stack.callback(client.close)
            if self.url is not None:
                stack.callback(self._delete_keys)
            for memory in memories:
                stack.callback(memory.close)

    async def aclose(self) -> None:
        """:meth:`close_async_clients`, then :meth:`close`."""
        try:
            await self.close_async_clients()
        finally:
            self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

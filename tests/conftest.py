"""One behaviour test, many backends (STYLE.md, the fakeredis and limits way).

``env`` is parametrized over backend x client: ``fake`` (fakeredis[lua]), ``redis`` (a
redis-server the fixtures start on a free loopback port) and ``cluster`` (three
cluster-mode nodes the fixtures start), each through the sync and the async client.
Every test gets its own key prefix, so no test sees another's keys and nothing is ever
flushed. Every script call is checked to touch one Cluster slot, on every backend.

SWARM_MEMORY_TEST_BACKENDS=fake,redis (say) narrows the matrix for a quick local run;
CI runs all three.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import pytest
import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from swarm_memory import AsyncSwarmMemory, Settings, SwarmMemory
from swarm_memory.testing import SlotGuard
from tests.servers import RedisCluster, RedisServer
from tests.support import Facade, snapshot

BACKENDS = [
    b.strip()
    for b in os.environ.get("SWARM_MEMORY_TEST_BACKENDS", "fake,redis,cluster").split(",")
    if b.strip()
]
CLIENTS = ["sync", "async"]
NO_RETRY = Retry(NoBackoff(), 0)
# redis-py 8.2 warns when an asyncio client gets the sync Retry: each side gets its own.
NO_ASYNC_RETRY = AsyncRetry(NoBackoff(), 0)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    with RedisCluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def cluster_raw(redis_cluster: RedisCluster) -> Iterator[redis.RedisCluster]:
    """One sync Cluster client for every test's assertions and sync clients: each test
    has its own key prefix, and a new client runs COMMAND on its first node (~16 ms,
    ~30 s of the suite's Cluster tests when each made its own)."""
    client = redis.RedisCluster(host="127.0.0.1", port=redis_cluster.ports[0], retry=NO_RETRY)
    yield client
    client.close()


@dataclass
class Env:
    """A backend + client combination for one test."""

    backend: str
    mode: str
    settings: Settings
    raw: Any  # sync redis client onto the same data, for assertions
    make_async_raw: Any
    loop: asyncio.AbstractEventLoop | None
    guard: SlotGuard = field(default_factory=SlotGuard)
    _async_clients: list[Any] = field(default_factory=list)
    _memories: list[Any] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return self.settings.key_prefix

    def mem(self, agent: str = "planner", **settings: Any) -> Any:
        """A client as ``agent`` (sync, or the async one behind a sync facade)."""
        s = self.settings.model_copy(update=settings) if settings else self.settings
        if self.mode == "sync":
            memory: Any = SwarmMemory.from_client(self.raw, agent=agent, settings=s)
        else:
            client = self.make_async_raw()
            self._async_clients.append(client)
            memory = AsyncSwarmMemory.from_client(client, agent=agent, settings=s)
        memory.observe_scripts(self.guard)
        self._memories.append(memory)
        return memory if self.mode == "sync" else Facade(memory, self.loop)  # type: ignore[arg-type]

    def sleep(self, seconds: float) -> None:
        """Let time pass; on the async client, with the event loop running (its
        background tasks, such as the event hub, only progress then)."""
        if self.loop is None:
            import time

            time.sleep(seconds)
        else:
            self.loop.run_until_complete(asyncio.sleep(seconds))

    def snapshot(self) -> dict[bytes, Any]:
        return snapshot(self.raw, self.prefix)

    def close(self) -> None:
        for memory in self._memories:  # stops event hubs (threads / tasks) of the test
            if self.loop is None:
                memory.close()
            else:
                self.loop.run_until_complete(memory.close())
        if self.loop is not None:
            for client in self._async_clients:
                self.loop.run_until_complete(client.aclose())
            self.loop.close()


def _params() -> list[Any]:
    return [pytest.param((b, c), id=f"{b}-{c}") for b in BACKENDS for c in CLIENTS]


@pytest.fixture(params=_params())
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    backend, mode = request.param
    settings = Settings(key_prefix="t" + uuid.uuid4().hex[:12])
    if backend == "fake":
        server = fakeredis.FakeServer()
        raw: Any = fakeredis.FakeRedis(server=server)

        def make_async() -> Any:
            return fakeredis.FakeAsyncRedis(server=server)
    elif backend == "redis":
        srv: RedisServer = request.getfixturevalue("redis_server")
        raw = redis.Redis(host="127.0.0.1", port=srv.port, retry=NO_RETRY)

        def make_async() -> Any:
            return redis.asyncio.Redis(host="127.0.0.1", port=srv.port, retry=NO_ASYNC_RETRY)
    elif backend == "cluster":
        cl: RedisCluster = request.getfixturevalue("redis_cluster")
        raw = request.getfixturevalue("cluster_raw")  # shared: closed at the session's end

        def make_async() -> Any:
            return redis.asyncio.RedisCluster(
                host="127.0.0.1", port=cl.ports[0], retry=NO_ASYNC_RETRY
            )
    else:
        raise ValueError(f"unknown backend {backend!r}")
    loop = asyncio.new_event_loop() if mode == "async" else None
    e = Env(backend, mode, settings, raw, make_async, loop)
    try:
        yield e
    finally:
        e.close()
        if backend != "cluster":
            raw.close()

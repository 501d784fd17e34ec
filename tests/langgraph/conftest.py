"""Backends for tests/langgraph: ``backend`` is fake (fakeredis), redis (the session's
redis-server) or cluster (the session's 3-node Cluster), narrowed like the contract suite
by SWARM_MEMORY_TEST_BACKENDS. Each test gets its own key prefix; clients are closed after.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import pytest
import redis
import redis.asyncio

from swarm_memory import AsyncSwarmMemory, Settings, SwarmMemory
from swarm_memory.testing import SlotGuard
from tests.conftest import BACKENDS, NO_ASYNC_RETRY, NO_RETRY


@dataclass
class Backend:
    """Makes sync and async clients onto one store, each with a slot guard."""

    name: str
    request: pytest.FixtureRequest
    server: Any = None
    guard: SlotGuard = field(default_factory=SlotGuard)
    _closers: list[Callable[[], Any]] = field(default_factory=list)
    _async: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.name == "fake":
            self.server = fakeredis.FakeServer()
        elif self.name == "redis":
            self.server = self.request.getfixturevalue("redis_server")
        else:
            self.server = self.request.getfixturevalue("redis_cluster")

    @property
    def url(self) -> str:
        return str(self.server.url)

    def settings(self, prefix: str | None = None, **kw: Any) -> Settings:
        return Settings(key_prefix=prefix or "lg" + uuid.uuid4().hex[:10], **kw)

    def raw(self) -> Any:
        if self.name == "fake":
            return fakeredis.FakeRedis(server=self.server)
        if self.name == "redis":
            return redis.Redis(host="127.0.0.1", port=self.server.port, retry=NO_RETRY)
        return redis.RedisCluster(host="127.0.0.1", port=self.server.ports[0], retry=NO_RETRY)

    def raw_async(self) -> Any:
        if self.name == "fake":
            return fakeredis.FakeAsyncRedis(server=self.server)
        if self.name == "redis":
            return redis.asyncio.Redis(
                host="127.0.0.1", port=self.server.port, retry=NO_ASYNC_RETRY
            )
        return redis.asyncio.RedisCluster(
            host="127.0.0.1", port=self.server.ports[0], retry=NO_ASYNC_RETRY
        )

    def memory(self, agent: str = "lg", settings: Settings | None = None) -> SwarmMemory:
        client = self.raw()
        mem = SwarmMemory.from_client(client, agent=agent, settings=settings or self.settings())
        mem.observe_scripts(self.guard)
        self._closers.append(mem.close)
        self._closers.append(client.close)
        return mem

    def async_memory(self, agent: str = "lg", settings: Settings | None = None) -> AsyncSwarmMemory:
        client = self.raw_async()
        mem = AsyncSwarmMemory.from_client(
            client, agent=agent, settings=settings or self.settings()
        )
        mem.observe_scripts(self.guard)
        self._async.append((mem, client))
        return mem

    async def aclose(self) -> None:
        for mem, client in self._async:
            await mem.close()
            await client.aclose()
        self._async.clear()

    def close(self) -> None:
        for close in reversed(self._closers):
            close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    b = Backend(request.param, request)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
async def abackend(backend: Backend) -> AsyncIterator[Backend]:
    """``backend`` whose async clients are closed on the test's event loop."""
    yield backend
    await backend.aclose()

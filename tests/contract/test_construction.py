"""Connecting with the wrong mode or to nothing: a SwarmMemoryError, never redis-py's.

redis-py's sync RedisCluster connects while it is built, the async one on its first
command: the same error class comes out of both, at those two moments.
"""

from __future__ import annotations

import asyncio

import pytest

from swarm_memory import AsyncSwarmMemory, Settings, SwarmMemory, TransportError
from swarm_memory.errors import ClusterModeMismatch
from tests.servers import RedisServer, free_port


def _async_first_call(url: str) -> BaseException:
    async def go() -> BaseException:
        mem = AsyncSwarmMemory.from_url(url, agent="a", settings=Settings(cluster=True))
        try:
            await mem.list_namespaces()
        except Exception as exc:
            return exc
        finally:
            await mem.close()
        raise AssertionError("no error")

    return asyncio.run(go())


def test_cluster_client_against_a_standalone_server(redis_server: RedisServer) -> None:
    with pytest.raises(ClusterModeMismatch) as info:
        SwarmMemory.from_url(redis_server.url, agent="a", settings=Settings(cluster=True))
    assert info.value.configured_cluster is True and info.value.server_cluster is False
    assert "SWARM_MEMORY_CLUSTER" in info.value.message
    exc = _async_first_call(redis_server.url)
    assert isinstance(exc, ClusterModeMismatch), repr(exc)
    assert exc.configured_cluster is True and exc.server_cluster is False


def test_cluster_client_against_nothing_is_a_transport_error() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    settings = Settings(cluster=True, retry_attempts=1)
    with pytest.raises(TransportError) as info:
        SwarmMemory.from_url(url, agent="a", settings=settings)
    assert "connection refused" in info.value.message.lower()
    exc = _async_first_call(url)
    assert isinstance(exc, TransportError), repr(exc)

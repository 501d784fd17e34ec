"""Which clients send script calls directly (``_drive.direct_pool``: packed with hiredis,
on a pool connection) and which keep redis-py's execute_command; the packing itself.
No I/O: redis-py clients connect on their first command."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest
import redis
import redis.asyncio
import redis.exceptions as rexc
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from swarm_memory import AsyncSwarmMemory, Settings, SwarmMemory
from swarm_memory._drive import direct_pool, pack

URL = "redis://127.0.0.1:1/0"


def _off(is_async: bool) -> Any:
    return AsyncRetry(NoBackoff(), 0) if is_async else Retry(NoBackoff(), 0)


@pytest.mark.parametrize("cls", [SwarmMemory, AsyncSwarmMemory], ids=["sync", "async"])
async def test_clients_built_from_a_url_send_directly(cls: Any) -> None:
    mem = cls.from_url(URL, agent="a")
    try:
        assert mem._driver.direct is mem.redis.connection_pool
    finally:
        close = mem.close()
        if close is not None:
            await close


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_plain_client_with_retries_off_sends_directly(is_async: bool) -> None:
    module: Any = redis.asyncio if is_async else redis
    client = module.Redis(port=1, retry=_off(is_async))
    assert direct_pool(client) is client.connection_pool


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_clients_that_keep_execute_command(is_async: bool) -> None:
    module: Any = redis.asyncio if is_async else redis
    # redis-py's own retries on (its default): they must keep retrying as they did.
    assert direct_pool(module.Redis(port=1)) is None
    # A response callback for a script command is redis-py's to apply.
    client = module.Redis(port=1, retry=_off(is_async))
    client.set_response_callback("FCALL", lambda reply, **_: reply)
    assert direct_pool(client) is None
    # Cluster clients route and follow redirects.
    cluster_cls = redis.asyncio.RedisCluster if is_async else redis.RedisCluster
    fake_cluster = object.__new__(cluster_cls)
    assert direct_pool(fake_cluster) is None


def test_single_connection_and_fakeredis_keep_execute_command() -> None:
    single = redis.asyncio.Redis(port=1, retry=_off(True), single_connection_client=True)
    assert direct_pool(single) is None
    assert direct_pool(fakeredis.FakeRedis()) is None
    assert direct_pool(fakeredis.FakeAsyncRedis()) is None


def test_fakeredis_memory_keeps_execute_command() -> None:
    mem = SwarmMemory(fakeredis.FakeRedis(), agent="a", settings=Settings())
    assert mem._driver.direct is None


def test_pack_is_what_redis_py_sends() -> None:
    command = ("FCALL", "fn", 2, "k:{é}", b"\x00bin", 7, -3, "")
    expected = b"".join(redis.Redis().connection_pool.make_connection().pack_command(*command))
    assert pack(command) == expected


@pytest.mark.parametrize("bad", [True, None, object()])
def test_pack_refuses_what_redis_py_refuses(bad: Any) -> None:
    with pytest.raises(rexc.DataError):
        pack(("FCALL", "fn", 0, bad))

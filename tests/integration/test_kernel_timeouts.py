"""A sync client built from a redis:// URL keeps its socket timeout in the kernel
(swarm_memory/_sockets.py, stop 33): blocking sockets with SO_RCVTIMEO / SO_SNDTIMEO, so
CPython polls nothing before a send or a receive; a receive the kernel cuts short is
still a timeout, and the connection recovers after it."""

from __future__ import annotations

import socket
import struct
import sys
import time
import uuid
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.sentinel
from redis import exceptions as rexc

from swarm_memory import Settings, SwarmMemory
from swarm_memory._shell import make_client
from swarm_memory._sockets import KernelTimeoutConnection, use_kernel_timeouts
from swarm_memory.errors import TransportError

from ..servers import RedisServer

pytestmark = pytest.mark.skipif(
    sys.platform not in ("linux", "darwin"), reason="kernel timeouts are set on Linux and macOS"
)
TIMEOUT = 0.3


def _settings(**kw: Any) -> Settings:
    return Settings(key_prefix="t" + uuid.uuid4().hex[:12], socket_timeout=TIMEOUT, **kw)


def _sockets(mem: SwarmMemory) -> list[socket.socket]:
    """The open sockets of the client's pool: idle and checked out (held) ones."""
    pool = mem.redis.connection_pool
    conns = [*pool._available_connections, *pool._in_use_connections]
    return [c._sock for c in conns if c._sock is not None]


def _timeval(sock: socket.socket, option: int) -> float:
    seconds, micros = struct.unpack("ll", sock.getsockopt(socket.SOL_SOCKET, option, 16))
    return float(seconds + micros / 1e6)


def _causes(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(out) < 10:
        out.append(seen)
        seen = seen.__cause__ or seen.__context__
    return out


def test_a_url_client_s_sockets_block_with_the_timeout_in_the_kernel(
    redis_server: RedisServer,
) -> None:
    mem = SwarmMemory.from_url(redis_server.url, agent="a", settings=_settings())
    try:
        mem.create_namespace("team")
        ns = mem.namespace("team")
        assert ns.put("k", 1).version == 1
        got = ns.get("k")
        assert got is not None and got.value == 1
        assert mem.redis.connection_pool.connection_class is KernelTimeoutConnection
        socks = _sockets(mem)
        assert socks
        for sock in socks:
            assert sock.gettimeout() is None  # blocking: no poll() before each call
            for option in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
                # (the kernel keeps it in its own ticks: a few ms either way)
                assert TIMEOUT - 0.01 <= _timeval(sock, option) <= TIMEOUT + 0.02
    finally:
        mem.close()


def test_a_read_the_kernel_cuts_short_is_a_timeout_and_the_client_recovers() -> None:
    with RedisServer() as server:
        mem = SwarmMemory.from_url(server.url, agent="a", settings=_settings(retry_attempts=1))
        try:
            mem.create_namespace("team")
            ns = mem.namespace("team")
            ns.put("k", 1)
            server.pause()
            started = time.monotonic()
            try:
                with pytest.raises(TransportError) as info:
                    ns.get("k")
            finally:
                server.resume()
            elapsed = time.monotonic() - started
            assert TIMEOUT * 0.9 <= elapsed < TIMEOUT * 10
            causes = _causes(info.value)
            assert any(isinstance(c, rexc.TimeoutError) for c in causes), causes
            got = ns.get("k")  # a new connection, the same answers
            assert got is not None and got.value == 1
            assert ns.put("k", 2).version == 2
        finally:
            mem.close()


@pytest.mark.parametrize(
    "url", ["rediss://127.0.0.1:6390/0", "unix:///tmp/none.sock", "redis://127.0.0.1:6390/0"]
)
def test_only_plain_tcp_connections_with_a_timeout_change(url: str) -> None:
    client = redis.Redis.from_url(url, socket_timeout=TIMEOUT)  # (never connected)
    before = client.connection_pool.connection_class
    use_kernel_timeouts(client)
    pool = client.connection_pool
    if url.startswith("redis://"):
        assert pool.connection_class is KernelTimeoutConnection
        assert pool.connection_kwargs["socket_timeout"] is None
        assert pool.connection_kwargs["kernel_timeout"] == TIMEOUT
    else:  # TLS and Unix sockets keep redis-py's own timeouts
        assert pool.connection_class is before
        assert pool.connection_kwargs["socket_timeout"] == TIMEOUT
    untimed = redis.Redis.from_url("redis://127.0.0.1:6390/0")
    use_kernel_timeouts(untimed)
    assert untimed.connection_pool.connection_class is redis.Connection


def test_sentinel_and_async_clients_keep_redis_py_s_timeouts() -> None:
    """A Sentinel-managed pool's connections are not plain ones: left alone; and the
    client builder gives kernel timeouts to a sync redis:// client only (never
    connected here)."""
    sentinel = redis.sentinel.Sentinel([("127.0.0.1", 1)]).master_for("m", socket_timeout=TIMEOUT)
    before = sentinel.connection_pool.connection_class
    use_kernel_timeouts(sentinel)
    assert sentinel.connection_pool.connection_class is before
    url = "redis://127.0.0.1:6390/0"
    settings = Settings(socket_timeout=TIMEOUT)
    sync_client = make_client(url, settings)
    assert sync_client.connection_pool.connection_class is KernelTimeoutConnection
    async_client = make_client(url, settings, is_async=True)
    assert async_client.connection_pool.connection_class is redis.asyncio.Connection
    assert async_client.connection_pool.connection_kwargs["socket_timeout"] == TIMEOUT

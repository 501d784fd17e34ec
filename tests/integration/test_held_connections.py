"""A sync client keeps its direct-path connections checked out between script calls
(``swarm_memory._held``): reused, never shared by two threads at once, checked again by
the pool after an idle second, forgotten in a forked child, released on close, and not
held at all where holding could starve the pool. Against a real redis-server."""

from __future__ import annotations

import os
import threading
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from swarm_memory import SwarmMemory, _held
from tests.servers import RedisServer


@pytest.fixture
def mem(redis_server: RedisServer) -> Iterator[SwarmMemory]:
    m = SwarmMemory.from_url(redis_server.url, agent="held")
    yield m
    m.close()


def _ns(mem: SwarmMemory) -> str:
    name = f"held-{uuid.uuid4().hex[:8]}"
    mem.create_namespace(name)
    return name


def _held_of(mem: SwarmMemory) -> _held.HeldConnections:
    held = mem._driver.held
    assert isinstance(held, _held.HeldConnections)
    return held


def test_script_calls_reuse_one_held_connection(mem: SwarmMemory) -> None:
    ns = mem.namespace(_ns(mem))
    pool = mem.redis.connection_pool
    ns.put("k", 0)
    held = _held_of(mem)
    assert held.enabled and len(held.held) == 1
    conn = held.held[0][0]
    for i in range(20):
        ns.put("k", i)
        ns.get("k")
    assert [c for c, _ in held.held] == [conn]  # the same connection every time
    assert conn in pool._in_use_connections  # still the pool's
    # another identity over the same pool shares the held connections
    other = mem.as_agent("held-2")
    assert other._driver.held is held


def test_threads_never_share_a_held_connection(mem: SwarmMemory) -> None:
    name = _ns(mem)
    ns = mem.namespace(name)
    ns.put("n", 0)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(100):
                ns.incr("n")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    entry = ns.get("n")
    assert entry is not None and entry.value == 1200  # no reply read by the wrong caller
    held = _held_of(mem)
    assert len(held.held) <= _held.MAX_HELD
    assert len({id(c) for c, _ in held.held}) == len(held.held)


def test_an_idle_held_connection_goes_through_the_pools_checks(
    mem: SwarmMemory, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ns = mem.namespace(_ns(mem))
    ns.put("k", 1)
    held = _held_of(mem)
    (conn, _last) = held.held[0]
    gone = conn._sock
    raw = redis_server.client()
    try:
        # The server closes every other connection: the held one is dead now.
        assert raw.client_kill_filter(_type="normal", skipme=True) >= 1
    finally:
        raw.close()
    monkeypatch.setattr(_held, "IDLE_CHECK_S", 0.0)  # "idle": through the pool
    released: list[Any] = []
    real_release = mem.redis.connection_pool.release

    def release(c: Any) -> None:
        released.append(c)
        real_release(c)

    monkeypatch.setattr(mem.redis.connection_pool, "release", release)
    entry = ns.put("k", 2)
    assert entry.version == 2
    assert released and released[0] is conn  # handed back to the pool's checkout...
    assert conn._sock is not gone  # ...which found it closed and connected it again


def test_a_forked_child_forgets_held_connections(mem: SwarmMemory) -> None:
    ns = mem.namespace(_ns(mem))
    ns.put("k", 1)
    held = _held_of(mem)
    assert held.held
    _held._forget_all()  # what os.register_at_fork runs in a child
    assert held.held == []
    assert ns.put("k", 2).version == 2  # a fresh connection from the pool


def test_close_releases_held_connections(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url, retry=Retry(NoBackoff(), 0))
    mem = SwarmMemory.from_client(client, agent="held")
    ns = mem.namespace(_ns(mem))
    ns.put("k", 1)
    held = _held_of(mem)
    assert held.held
    mem.close()  # the client is the caller's: only our held connections go back
    pool = client.connection_pool
    assert held.held == []
    assert pool._in_use_connections == set()
    client.close()


def test_small_or_special_pools_hold_nothing(redis_server: RedisServer) -> None:
    off = Retry(NoBackoff(), 0)  # the pool's own: direct sending needs redis-py's retries off
    small = redis.Redis(
        connection_pool=redis.ConnectionPool.from_url(
            redis_server.url, max_connections=4, retry=off
        ),
    )
    blocking = redis.Redis(
        connection_pool=redis.BlockingConnectionPool.from_url(redis_server.url, retry=off),
    )
    for client in (small, blocking):
        mem = SwarmMemory.from_client(client, agent="held")
        ns = mem.namespace(_ns(mem))
        ns.put("k", 1)
        held = mem._driver.held
        assert held is not None and not held.enabled and held.held == []
        pool = client.connection_pool
        if isinstance(pool, redis.BlockingConnectionPool):
            assert all(c in pool.pool.queue for c in pool._connections)  # every one back
        else:
            assert pool._in_use_connections == set()
        mem.close()
        client.close()


def test_a_held_connection_the_server_closed_within_the_idle_second_costs_a_retry(
    mem: SwarmMemory, redis_server: RedisServer
) -> None:
    # Within IDLE_CHECK_S nobody polls the held connection first: the call finds it
    # closed, and the one retry layer resends it (same op id): applied exactly once.
    ns = mem.namespace(_ns(mem))
    assert ns.put("k", 1).version == 1
    raw = redis_server.client()
    try:
        assert raw.client_kill_filter(_type="normal", skipme=True) >= 1
        assert ns.put("k", 2).version == 2
        assert ns.incr("n") == 1
        entry = ns.get("k")
        assert entry is not None and (entry.version, entry.value) == (2, 2)
    finally:
        raw.close()


def test_a_sentinel_pool_holds_nothing() -> None:
    # A Sentinel pool swaps its master on failover: redis-py's checkout stays (no I/O here:
    # neither the manager nor the pool connects when built).
    from redis.sentinel import Sentinel, SentinelConnectionPool

    pool = SentinelConnectionPool("svc", Sentinel([("127.0.0.1", 1)]))
    assert not _held.HeldConnections.of(pool).enabled


def test_a_real_fork_forgets_the_held_connections(mem: SwarmMemory) -> None:
    # os.register_at_fork runs _forget_all in the child: it must not use (or close) the
    # parent's sockets.
    ns = mem.namespace(_ns(mem))
    ns.put("k", 1)
    held = _held_of(mem)
    assert held.held
    with warnings.catch_warnings():  # Python 3.12+ warns of fork() beside threads
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: report by exit code only
        os._exit(0 if held.held == [] else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert held.held  # the parent keeps its own
    assert ns.put("k", 2).version == 2

"""Tests of the test infrastructure itself: throwaway servers, cluster and fault proxy."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.cluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.conftest import BACKENDS
from tests.faultproxy import FaultProxy
from tests.servers import (
    RedisCluster,
    RedisServer,
    free_port,
    port_is_free,
    redis_server_available,
)


def _no_retry() -> Retry:
    # redis-py >= 6 retries 3 times by default; these tests must see the first failure.
    return Retry(NoBackoff(), 0)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); Popen.wait() reaped ours, so treat any hit as alive.
    return True


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with RedisCluster() as c:
        yield c


def test_binaries_available() -> None:
    assert redis_server_available()


def test_free_port() -> None:
    port = free_port()
    assert 1024 < port <= 65535
    assert port != 6379
    assert port_is_free(port)
    bus_port = free_port(need_bus=True)
    assert bus_port + 10000 <= 65535
    assert port_is_free(bus_port)
    assert port_is_free(bus_port + 10000)


def test_server_answers_and_cleans_up() -> None:
    srv = RedisServer()
    with srv:
        assert srv.port != 6379
        assert srv.url == f"redis://127.0.0.1:{srv.port}/0"
        assert srv.dir is not None
        workdir = srv.dir
        assert workdir.is_dir()
        assert srv.process is not None
        pid = srv.process.pid
        client = redis.Redis.from_url(srv.url)
        try:
            assert client.ping() is True
            assert client.set("greeting", "hello") is True
            assert client.get("greeting") == b"hello"
            assert client.config_get("save") == {"save": ""}
            assert client.config_get("appendonly") == {"appendonly": "no"}
        finally:
            client.close()
    assert srv.process is None
    assert not _pid_alive(pid)
    assert not workdir.exists()
    srv.stop()  # idempotent


def test_server_extra_args() -> None:
    with RedisServer(["--maxmemory", "10mb", "--maxmemory-policy", "noeviction"]) as srv:
        client = srv.client(decode_responses=True)
        try:
            assert client.config_get("maxmemory") == {"maxmemory": str(10 * 1024 * 1024)}
            assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        finally:
            client.close()


def test_pause_and_resume(server: RedisServer) -> None:
    client = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=0.5, retry=_no_retry())
    try:
        assert client.set("k", "before") is True
        server.pause()
        assert server.paused
        with pytest.raises(redis.exceptions.TimeoutError):
            client.get("k")
        server.resume()
        assert not server.paused
        assert client.get("k") == b"before"
    finally:
        client.close()


def test_stop_while_paused_does_not_hang() -> None:
    srv = RedisServer().start()
    assert srv.process is not None
    pid = srv.process.pid
    srv.pause()
    srv.stop()
    assert not _pid_alive(pid)


def test_cluster_is_ready(cluster: RedisCluster) -> None:
    assert len(cluster.ports) == 3
    assert 6379 not in cluster.ports
    assert cluster.url == f"redis://127.0.0.1:{cluster.ports[0]}"
    for port in cluster.ports:
        node = redis.Redis(host="127.0.0.1", port=port, decode_responses=True)
        try:
            info = node.cluster("info")
            assert info["cluster_state"] == "ok"
            assert int(info["cluster_slots_assigned"]) == 16384
            assert int(info["cluster_known_nodes"]) == 3
        finally:
            node.close()


def test_cluster_set_get_across_slots(cluster: RedisCluster) -> None:
    client = redis.cluster.RedisCluster.from_url(cluster.url)
    try:
        keys = [f"key-{i}" for i in range(30)]
        owners = {client.get_node_from_key(key).port for key in keys}
        assert len(owners) == 3, "30 keys should land on all three masters"
        for key in keys:
            assert client.set(key, key.upper()) is True
        for key in keys:
            assert client.get(key) == key.upper().encode()
    finally:
        client.close()


def test_cluster_eval_with_hash_tag(cluster: RedisCluster) -> None:
    client = cluster.client(decode_responses=True)
    try:
        assert client.keyslot("{x}a") == client.keyslot("{x}b")
        script = (
            "redis.call('SET', KEYS[1], ARGV[1]); "
            "redis.call('SET', KEYS[2], ARGV[2]); "
            "return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2])}"
        )
        assert client.eval(script, 2, "{x}a", "{x}b", "one", "two") == ["one", "two"]
        assert client.get("{x}a") == "one"
        assert client.get("{x}b") == "two"
    finally:
        client.close()


def test_cluster_stops_cleanly() -> None:
    c = RedisCluster().start()
    pids = [s.process.pid for s in c.servers if s.process is not None]
    dirs = [s.dir for s in c.servers]
    assert len(pids) == 3
    c.stop()
    assert c.servers == []
    assert not any(_pid_alive(pid) for pid in pids)
    assert not any(d is not None and d.exists() for d in dirs)


def test_proxy_forwards(server: RedisServer) -> None:
    with FaultProxy("127.0.0.1", server.port) as proxy:
        assert proxy.url == f"redis://127.0.0.1:{proxy.port}/0"
        client = redis.Redis.from_url(proxy.url, retry=_no_retry())
        try:
            assert client.ping() is True
            big = b"x" * 1_000_000  # several chunks each way
            assert client.set("big", big) is True
            assert client.get("big") == big
            pipe = client.pipeline(transaction=False)
            for i in range(500):
                pipe.set(f"p{i}", i)
            assert all(pipe.execute())
            assert proxy.dropped == 0
        finally:
            client.close()


def test_proxy_drops_reply_but_command_runs(server: RedisServer) -> None:
    direct = server.client()
    with FaultProxy("127.0.0.1", server.port) as proxy:
        client = redis.Redis.from_url(proxy.url, retry=_no_retry())
        try:
            assert client.ping() is True  # connect first: the handshake is not the target
            proxy.drop_next_reply()
            assert proxy.armed
            with pytest.raises(redis.exceptions.ConnectionError):
                client.set("k", "v")
            assert proxy.dropped == 1
            assert not proxy.armed
            assert direct.get("k") == b"v"  # it ran on the server
            # Disarmed: the client reconnects and works again.
            assert client.get("k") == b"v"
            assert proxy.dropped == 1
        finally:
            client.close()
            direct.close()


def test_proxy_drop_targets_named_command(server: RedisServer) -> None:
    direct = server.client()
    with FaultProxy("127.0.0.1", server.port) as proxy:
        proxy.drop_next_reply("INCRBY")  # redis-py sends INCR as INCRBY
        client = redis.Redis.from_url(proxy.url, retry=_no_retry())
        try:
            # A fresh connection's handshake and other commands pass untouched.
            assert client.set("counter", 10) is True
            assert client.get("counter") == b"10"
            with pytest.raises(redis.exceptions.ConnectionError):
                client.incr("counter")
            assert proxy.dropped == 1
            assert direct.get("counter") == b"11"
            assert client.incr("counter") == 12
        finally:
            client.close()
            direct.close()


def test_proxy_drop_hits_only_the_connection_that_sent(server: RedisServer) -> None:
    with FaultProxy("127.0.0.1", server.port) as proxy:
        idle = redis.Redis.from_url(proxy.url, retry=_no_retry())
        busy = redis.Redis.from_url(proxy.url, retry=_no_retry())
        try:
            assert idle.ping() is True
            assert busy.ping() is True
            proxy.drop_next_reply()
            with pytest.raises(redis.exceptions.ConnectionError):
                busy.set("a", 1)
            assert idle.ping() is True  # its connection survived
            assert proxy.dropped == 1
            assert proxy.connections_accepted == 2
        finally:
            idle.close()
            busy.close()


def test_proxy_drop_several(server: RedisServer) -> None:
    with FaultProxy("127.0.0.1", server.port) as proxy:
        client = redis.Redis.from_url(proxy.url, retry=_no_retry())
        try:
            assert client.ping() is True
            proxy.drop_next_reply("RPUSH", times=2)
            for _ in range(2):
                with pytest.raises(redis.exceptions.ConnectionError):
                    client.rpush("list", "item")
            assert client.lrange("list", 0, -1) == [b"item", b"item"]
            assert proxy.dropped == 2
        finally:
            client.close()


def test_proxy_close_cuts_connections(server: RedisServer) -> None:
    proxy = FaultProxy("127.0.0.1", server.port)
    client = redis.Redis.from_url(proxy.url, retry=_no_retry())
    try:
        assert client.ping() is True
        assert proxy.active_connections == 1
        proxy.close()
        with pytest.raises(redis.exceptions.ConnectionError):
            client.ping()
        proxy.close()  # idempotent
    finally:
        client.close()
        proxy.close()


async def test_proxy_drop_with_asyncio_client(server: RedisServer) -> None:
    direct = server.client()
    with FaultProxy("127.0.0.1", server.port) as proxy:
        client = redis.asyncio.Redis.from_url(proxy.url, retry=AsyncRetry(NoBackoff(), 0))
        try:
            assert await client.ping() is True
            proxy.drop_next_reply()
            with pytest.raises(redis.exceptions.ConnectionError):
                await client.set("ak", "av")
            assert proxy.dropped == 1
            assert direct.get("ak") == b"av"
            assert await client.get("ak") == b"av"
        finally:
            await client.aclose()
            direct.close()


# The keyspace snapshot the contract tests compare before and after a call
# (tests/support.py): every backend, sync (it reads through the sync client only).
SNAPSHOT_ENVS = [pytest.param((b, "sync"), id=f"{b}-sync") for b in BACKENDS]


@pytest.mark.parametrize("env", SNAPSHOT_ENVS, indirect=True)
def test_the_snapshot_sees_every_change_of_every_type(env: Any) -> None:
    """Each kind of key under the prefix, one by one changed, moves the snapshot; a key
    outside the prefix does not (read in two pipelined rounds; on Cluster through the
    session's one client)."""
    raw, p = env.raw, env.prefix + ":{s}:"
    raw.hset(p + "h", mapping={"a": "1", "b": "2"})
    raw.zadd(p + "z", {"m": 1.0})
    raw.xadd(p + "x", {"f": "v"})
    raw.set(p + "s", "v")
    raw.rpush(p + "l", "1", "2")
    raw.sadd(p + "t", "a", "b")
    before = env.snapshot()
    assert len(before) == 6
    raw.set("elsewhere:" + p, "v")  # not under the prefix
    assert env.snapshot() == before
    for change in (
        lambda: raw.hset(p + "h", "b", "3"),
        lambda: raw.zadd(p + "z", {"m": 2.0}),
        lambda: raw.xadd(p + "x", {"f": "w"}),
        lambda: raw.set(p + "s", "w"),
        lambda: raw.lset(p + "l", 0, "9"),
        lambda: raw.sadd(p + "t", "c"),
        lambda: raw.delete(p + "s"),
        lambda: raw.set(p + "new", "v"),
    ):
        change()
        after = env.snapshot()
        assert after != before
        before = after
    raw.delete("elsewhere:" + p)

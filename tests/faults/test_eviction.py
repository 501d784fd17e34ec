"""A server that may evict any key (maxmemory-policy allkeys-*) loses namespace metadata
and indexes (a hand-run fault test lost 65,294 acknowledged writes, and a counter reissued
1,353 values). Writes are refused there before the first one is sent — one clear error,
checked once per client and cached — unless Settings(allow_eviction=True)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from swarm_memory import AsyncSwarmMemory, Settings, SwarmMemory, UnsafeEvictionPolicy
from tests.servers import RedisCluster, RedisServer


@pytest.fixture(scope="module")
def lru_server() -> Iterator[RedisServer]:
    with RedisServer(extra_args=["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"]) as s:
        yield s


def _settings(**kw: object) -> Settings:
    return Settings(key_prefix="ev" + uuid.uuid4().hex[:8], **kw)  # type: ignore[arg-type]


def test_writes_are_refused_on_allkeys_lru_before_anything_is_written(lru_server: RedisServer):
    settings = _settings()
    mem = SwarmMemory.from_url(lru_server.url, agent="a", settings=settings)
    calls: list[str] = []
    mem.observe_scripts(lambda name, keys, args: calls.append(name))
    try:
        for _ in range(2):  # the second time from the cache: no second CONFIG GET needed
            with pytest.raises(UnsafeEvictionPolicy) as info:
                mem.create_namespace("team")
            assert info.value.policy == "allkeys-lru"
            assert "noeviction" in info.value.message and "allow_eviction" in info.value.message
        assert calls == []  # no script was sent
        raw = lru_server.client()
        assert list(raw.scan_iter(match=settings.key_prefix + "*")) == []
        raw.close()
    finally:
        mem.close()


def test_reads_are_not_refused(lru_server: RedisServer):
    writer = SwarmMemory.from_url(
        lru_server.url, agent="a", settings=(settings := _settings(allow_eviction=True))
    )
    reader = SwarmMemory.from_url(
        lru_server.url, agent="a", settings=settings.model_copy(update={"allow_eviction": False})
    )
    try:
        writer.create_namespace("team")
        writer.namespace("team").put("k", 1)
        entry = reader.namespace("team").get("k")
        assert entry is not None and entry.value == 1
    finally:
        writer.close()
        reader.close()


async def test_the_async_client_refuses_too(lru_server: RedisServer):
    mem = AsyncSwarmMemory.from_url(lru_server.url, agent="a", settings=_settings())
    try:
        with pytest.raises(UnsafeEvictionPolicy):
            await mem.create_namespace("team")
    finally:
        await mem.close()


def test_noeviction_and_fakeredis_write_normally(redis_server: RedisServer):
    import fakeredis

    for mem in (
        SwarmMemory.from_url(redis_server.url, agent="a", settings=_settings()),
        SwarmMemory.from_client(fakeredis.FakeRedis(), agent="a", settings=_settings()),
    ):
        try:
            mem.create_namespace("team")
            assert mem.namespace("team").put("k", 1).version == 1
        finally:
            mem.close()


def test_a_cluster_is_refused_when_any_primary_may_evict():
    """Every primary is asked, not only the client's default node: with one of three
    primaries on allkeys-lru, every client refuses, whichever primary is the odd one."""
    with RedisCluster(nodes=3) as cluster:
        primaries = [s.client() for s in cluster.servers]
        try:
            for odd in primaries:
                for node in primaries:
                    policy = "allkeys-lru" if node is odd else "noeviction"
                    node.config_set("maxmemory-policy", policy)
                settings = _settings(cluster=True)
                with (
                    SwarmMemory.from_url(cluster.url, agent="a", settings=settings) as mem,
                    pytest.raises(UnsafeEvictionPolicy),
                ):
                    mem.create_namespace("team")
            for node in primaries:
                node.config_set("maxmemory-policy", "noeviction")
            with SwarmMemory.from_url(
                cluster.url, agent="a", settings=_settings(cluster=True)
            ) as mem:
                mem.create_namespace("team")
                assert mem.namespace("team").put("k", 1).version == 1
        finally:
            for node in primaries:
                node.close()

"""swarm_memory.testing.IsolatedStore used directly (unittest, scripts): the part the
plugin's fixtures are built on."""

from __future__ import annotations

import pytest
import redis

from swarm_memory import Settings
from swarm_memory.errors import InvalidOption
from swarm_memory.testing import TEST_URL_ENV, IsolatedStore
from tests.servers import RedisCluster, RedisServer


def test_fake_stores_are_separate_servers() -> None:
    with IsolatedStore() as one, IsolatedStore() as two:
        assert one.is_fake and two.is_fake
        one.memory("a").create_namespace("n")
        assert one.keys() and two.keys() == []
        assert two.redis().dbsize() == 0
        assert one.prefix != two.prefix


def test_the_prefix_keeps_the_base_and_is_unique() -> None:
    prefixes = {IsolatedStore(settings=Settings(key_prefix="x" * 32)).prefix for _ in range(50)}
    assert len(prefixes) == 50
    for prefix in prefixes:
        Settings(key_prefix=prefix)  # still a valid prefix
        assert prefix.startswith("x" * 16 + ".t")


def test_from_env_picks_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TEST_URL_ENV, "redis://127.0.0.1:1/0")
    assert IsolatedStore.from_env().url == "redis://127.0.0.1:1/0"
    monkeypatch.setenv(TEST_URL_ENV, "")
    assert IsolatedStore.from_env().is_fake


def test_settings_overrides_are_checked() -> None:
    store = IsolatedStore()
    assert store.memory("a", max_depth=3).settings.max_depth == 3
    with pytest.raises(InvalidOption, match="unknown Settings field"):
        store.memory("a", max_dept=3)
    with pytest.raises(InvalidOption, match="key_prefix"):
        store.memory("a", key_prefix="p")
    store.close()


async def test_close_refuses_while_async_clients_are_open() -> None:
    store = IsolatedStore()
    memory = store.async_memory("a")
    await memory.create_namespace("n")
    with pytest.raises(RuntimeError, match="aclose"):
        store.close()
    await store.aclose()
    store.close()  # idempotent


async def test_a_real_store_deletes_its_keys_and_only_those(redis_server: RedisServer) -> None:
    raw = redis.Redis.from_url(redis_server.url)
    raw.set("outside", "1")
    try:
        async with IsolatedStore(redis_server.url, agent="me") as store:
            sync = store.memory()
            assert sync.agent == "me"
            sync.create_namespace("n")
            await store.async_memory("other").namespace("n").put("k", 1)
            assert len(store.keys()) > 3
        assert list(raw.scan_iter(match=store.prefix + ":*")) == []
        assert raw.get("outside") == b"1"
    finally:
        raw.delete("outside")
        raw.close()


async def test_a_cluster_store_deletes_its_keys_on_every_node(redis_cluster: RedisCluster) -> None:
    settings = Settings(cluster=True)
    async with IsolatedStore(redis_cluster.url, settings=settings) as store:
        for name in ("a", "b", "c", "d"):  # namespaces hash to different slots
            store.memory().create_namespace(name)
            await store.async_memory().namespace(name).put("k", name)
        metas = {f"{store.prefix}:{{{name}}}:meta" for name in ("a", "b", "c", "d")}
        assert metas <= set(store.keys())
    raw = redis_cluster.client()
    try:
        assert list(raw.scan_iter(match=store.prefix + ":*")) == []
    finally:
        raw.close()

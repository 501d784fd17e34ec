"""The exporter's collector on fakeredis and a real redis-server; series counts stay flat
with 10,000 distinct keys and agents; serve() over HTTP; an unreachable Redis."""

from __future__ import annotations

import asyncio
import urllib.request
import uuid
from typing import Any

import fakeredis
import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from swarm_memory import AsyncSwarmMemory, ClientMetrics, PermissionDenied, Settings, SwarmMemory
from swarm_memory.cli.exporter import exporter_cmd
from swarm_memory.exporter import DEFAULT_ADDR, DEFAULT_PORT, FAMILIES, SwarmCollector, serve
from tests.servers import RedisServer


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def populate(mem: SwarmMemory) -> None:
    mem.create_namespace("team", default_permission="read", max_keys=10, max_bytes=10_000)
    ns = mem.namespace("team")
    for i in range(3):
        ns.put(f"k{i}", "x" * 10)
    ns.delete("k2")
    with pytest.raises(PermissionDenied):
        mem.as_agent("intruder").namespace("team").put("k9", 1)
    mem.create_namespace("empty")
    for agent in ("scout", "builder"):
        mem.as_agent(agent).heartbeat(ttl=60)


def check_namespace_series(samples) -> None:
    assert sample(samples, "swarm_memory_namespaces") == 2
    assert sample(samples, "swarm_memory_namespace_entries", namespace="team") == 2
    value_bytes = len('"xxxxxxxxxx"')  # JSON text of "x" * 10
    assert sample(samples, "swarm_memory_namespace_bytes", namespace="team") == 2 * value_bytes
    assert sample(samples, "swarm_memory_namespace_max_entries", namespace="team") == 10
    assert sample(samples, "swarm_memory_namespace_max_bytes", namespace="team") == 10_000
    # ns_create (rev 1) + 3 puts + 1 delete: revision 5, five events retained from 1.
    assert sample(samples, "swarm_memory_namespace_revision", namespace="team") == 5
    assert sample(samples, "swarm_memory_namespace_events_stream_length", namespace="team") == 5
    retention = sample(
        samples, "swarm_memory_namespace_event_retention_revisions", namespace="team"
    )
    assert retention == 4
    ops = "swarm_memory_namespace_operations_total"
    assert sample(samples, ops, namespace="team", op="put") == 3
    assert sample(samples, ops, namespace="team", op="delete") == 1
    assert sample(samples, "swarm_memory_namespace_denied_total", namespace="team") == 1
    assert sample(samples, "swarm_memory_namespace_evicted_total", namespace="team") == 0
    assert sample(samples, "swarm_memory_namespace_locks_held", namespace="team") == 0
    assert sample(samples, "swarm_memory_namespace_entries", namespace="empty") == 0
    assert ("swarm_memory_namespace_max_entries", (("namespace", "empty"),)) not in samples
    assert sample(samples, "swarm_memory_agents_live") == 2
    assert sample(samples, "swarm_memory_agents_known") == 2
    assert sample(samples, "swarm_memory_redis_up") == 1
    assert sample(samples, "swarm_memory_exporter_scrape_errors") == 0


def populated_scrape(client: Any, settings: Settings) -> dict[Any, float]:
    """populate() through ``client``, then one scrape of a collector on the same client,
    checked by check_namespace_series."""
    populate(SwarmMemory.from_client(client, agent="admin", settings=settings))
    registry = CollectorRegistry()
    registry.register(SwarmCollector(client, prefix=settings.key_prefix))
    samples = scrape(registry)
    check_namespace_series(samples)
    return samples


def test_collector_on_fakeredis():
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    samples = populated_scrape(client, Settings(key_prefix="sm"))
    # fakeredis has no INFO: health beyond PING is absent, not an error.
    assert ("swarm_memory_redis_memory_used_bytes", ()) not in samples


def test_collector_on_real_redis(redis_server: RedisServer):
    prefix = "x" + uuid.uuid4().hex[:10]
    client = redis_server.client()
    samples = populated_scrape(client, Settings(key_prefix=prefix))
    assert sample(samples, "swarm_memory_redis_primaries") == 1
    assert sample(samples, "swarm_memory_redis_memory_used_bytes") > 100_000
    assert sample(samples, "swarm_memory_redis_memory_max_bytes") == 0  # the fixture's: unlimited
    assert sample(samples, "swarm_memory_redis_maxmemory_policy", policy="noeviction") == 1
    assert sample(samples, "swarm_memory_redis_aof_enabled") == 0  # fixture: --appendonly no
    assert sample(samples, "swarm_memory_redis_persistence_ok") == 1
    assert sample(samples, "swarm_memory_redis_connected_clients") >= 1
    # Only the families FAMILIES lists, all named swarm_memory_*.
    names = {name for name, _ in samples}
    allowed = set(FAMILIES) | {n.removesuffix("_total") + "_created" for n in FAMILIES}
    assert names <= allowed, names - allowed
    client.close()


def test_collector_on_cluster(redis_cluster):
    prefix = "c" + uuid.uuid4().hex[:10]
    client = redis_cluster.client()
    samples = populated_scrape(client, Settings(key_prefix=prefix, cluster=True))
    assert sample(samples, "swarm_memory_redis_primaries") == 3
    assert sample(samples, "swarm_memory_redis_maxmemory_policy", policy="noeviction") == 3
    client.close()


def test_unreachable_redis_reports_down_instead_of_raising():
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from tests.servers import free_port

    client = redis.Redis(host="127.0.0.1", port=free_port(), retry=Retry(NoBackoff(), 0))
    registry = CollectorRegistry()
    registry.register(SwarmCollector(client))
    samples = scrape(registry)
    assert sample(samples, "swarm_memory_redis_up") == 0
    assert sample(samples, "swarm_memory_exporter_scrape_errors") == 1
    assert ("swarm_memory_namespaces", ()) not in samples


def test_serve_exposes_metrics_over_http(redis_server: RedisServer):
    prefix = "s" + uuid.uuid4().hex[:10]
    settings = Settings(key_prefix=prefix)
    mem = SwarmMemory.from_url(redis_server.url, agent="admin", settings=settings)
    mem.create_namespace("web")
    mem.namespace("web").put("k", 1)
    exporter = serve(redis_server.url, settings=settings, port=0, addr="127.0.0.1")
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{exporter.port}/metrics", timeout=10)
        text = body.read().decode()
    finally:
        exporter.close()
        mem.close()
    assert 'swarm_memory_namespace_entries{namespace="web"} 1.0' in text
    assert "swarm_memory_redis_up 1.0" in text


def test_cli_arguments(monkeypatch):
    monkeypatch.delenv("SWARM_MEMORY_EXPORTER_PORT", raising=False)
    monkeypatch.delenv("SWARM_MEMORY_EXPORTER_ADDR", raising=False)
    argv = ["--url", "redis://h:1/0", "--port", "0", "--addr", "::1"]
    args = exporter_cmd.make_context("exporter", argv).params
    assert (args["url"], args["port"], args["addr"]) == ("redis://h:1/0", 0, "::1")
    defaults = exporter_cmd.make_context("exporter", []).params
    assert defaults["addr"] == "127.0.0.1"  # never all interfaces unasked
    assert (defaults["port"], defaults["addr"]) == (DEFAULT_PORT, DEFAULT_ADDR)


def count_series(registry: CollectorRegistry) -> int:
    return sum(
        1 for line in generate_latest(registry).decode().splitlines() if not line.startswith("#")
    )


def test_series_count_does_not_grow_with_10000_keys_and_agents(redis_server: RedisServer):
    """Labels are namespace/op/outcome only: 10,000 more distinct keys and agents leave
    the number of series (exporter and client) exactly where it was."""
    prefix = "n" + uuid.uuid4().hex[:10]
    settings = Settings(key_prefix=prefix)
    client_registry = CollectorRegistry()
    metrics = ClientMetrics(client_registry)
    client = redis_server.client()
    mem = SwarmMemory.from_client(client, agent="admin", settings=settings, metrics=metrics)
    mem.create_namespace("big", default_permission="read")
    ns = mem.namespace("big")
    exporter_registry = CollectorRegistry()
    exporter_registry.register(SwarmCollector(client, prefix=prefix))

    def workload(keys: range, agents: range) -> None:
        ns.put_many({f"key-{i}": i for i in keys})
        ns.get(f"key-{keys.start}")
        for a in agents:
            other = mem.as_agent(f"agent-{a}").namespace("big")
            other.get(f"key-{keys.start}")
            with pytest.raises(PermissionDenied):
                other.put(f"key-{a}", a)

    workload(range(1), range(1))
    before = (count_series(exporter_registry), count_series(client_registry))
    asyncio.run(_many(redis_server.url, settings, metrics))  # 10,000 distinct agents, async
    for start in range(1, 10_001, 1000):
        ns.put_many({f"key-{i}": i for i in range(start, start + 1000)})
    workload(range(10_001, 10_002), range(10_001, 10_002))
    after = (count_series(exporter_registry), count_series(client_registry))
    assert after == before
    samples = scrape(exporter_registry)
    assert sample(samples, "swarm_memory_namespace_entries", namespace="big") == 10_002
    denied = sample(samples, "swarm_memory_namespace_denied_total", namespace="big")
    assert denied == 10_002
    client.close()


async def _many(url: str, settings: Settings, metrics: ClientMetrics) -> None:
    mem = AsyncSwarmMemory.from_url(url, agent="admin", settings=settings, metrics=metrics)
    sem = asyncio.Semaphore(64)

    async def one(a: int) -> None:
        async with sem:
            try:
                await mem.as_agent(f"agent-{a}").namespace("big").put(f"key-{a}", a)
            except PermissionDenied:
                return
            raise AssertionError("a read-only agent could write")

    await asyncio.gather(*(one(a) for a in range(1, 10_001)))
    await mem.close()


def test_scrape_walks_the_registry_in_pages_and_never_scans(redis_server: RedisServer):
    """README: the registry, never KEYS/SCAN; each page of namespaces in one pipeline."""
    prefix = "p" + uuid.uuid4().hex[:10]
    client = redis_server.client()
    mem = SwarmMemory.from_client(client, agent="admin", settings=Settings(key_prefix=prefix))
    for i in range(5):
        mem.create_namespace(f"ns{i}")
    collector = SwarmCollector(client, prefix=prefix, page=2)
    pipelines = []
    real_pipeline = client.pipeline

    def counting_pipeline(*args: Any, **kwargs: Any) -> Any:
        pipelines.append(real_pipeline(*args, **kwargs))
        return pipelines[-1]

    client.pipeline = counting_pipeline
    client.config_resetstat()
    registry = CollectorRegistry()
    registry.register(collector)
    samples = scrape(registry)
    client.pipeline = real_pipeline
    calls = {
        name.removeprefix("cmdstat_"): int(stat["calls"])
        for name, stat in client.info("commandstats").items()
    }
    assert sample(samples, "swarm_memory_namespaces") == 5
    assert sample(samples, "swarm_memory_exporter_scrape_errors") == 0
    assert "scan" not in calls and "keys" not in calls
    assert calls["zrange"] == 3  # pages of 2, 2, 1
    assert calls["hmget"] == 5  # one meta read per namespace
    assert len(pipelines) == 3 + 1  # three namespace pages, one presence read
    client.close()

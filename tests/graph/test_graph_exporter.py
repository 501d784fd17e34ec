"""The exporter's graph series: sizes per namespace, labels bounded (no node, agent,
context or tag ever becomes a label)."""

from __future__ import annotations

import fakeredis
from prometheus_client import CollectorRegistry

from swarm_memory import Settings, SwarmMemory
from swarm_memory.exporter import SwarmCollector
from tests.ops.test_exporter import sample, scrape


def _scrape(client):
    registry = CollectorRegistry()
    registry.register(SwarmCollector(client, prefix="sm"))
    return scrape(registry)


def test_graph_sizes_are_exported_with_bounded_labels():
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    mem = SwarmMemory.from_client(client, agent="admin", settings=Settings(key_prefix="sm"))
    mem.create_graph("kb")
    mem.create_namespace("plain")
    g = mem.graph("kb")
    a = g.add("a", context="c", kind="k", ttl=60)
    b = g.add("b", context="c", kind="k")
    g.link(a, b, "supports")
    g.bundle("t").add(a, b)
    samples = _scrape(client)
    assert sample(samples, "swarm_memory_graph_nodes", namespace="kb") == 2
    assert sample(samples, "swarm_memory_graph_links", namespace="kb") == 1
    assert sample(samples, "swarm_memory_graph_bundle_members", namespace="kb") == 2
    assert sample(samples, "swarm_memory_graph_expiring_nodes", namespace="kb") == 1
    assert ("swarm_memory_graph_nodes", (("namespace", "plain"),)) not in samples
    ops = "swarm_memory_namespace_operations_total"
    assert sample(samples, ops, namespace="kb", op="graph_add") == 2
    before = len(samples)
    for i in range(200):
        mem.as_agent(f"agent{i}").graph("kb").add(
            i, context=f"ctx{i}", kind=f"k{i}", tags=[f"t{i}"]
        )
    after = _scrape(client)
    assert len(after) == before
    assert sample(after, "swarm_memory_graph_nodes", namespace="kb") == 202

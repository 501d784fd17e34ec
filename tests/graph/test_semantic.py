"""Semantic recall with a user-supplied embed: cosine over a client cache that the
namespace's change feed keeps fresh (adds by other agents appear, deletes and expiries
disappear), filters applied, on every backend and client."""

from __future__ import annotations

import hashlib
import re

import pytest

from swarm_memory import InvalidInput, PermissionDenied
from swarm_memory._async.semantic import cosine

DIMS = 64


def embed(text: str) -> list[float]:
    """A deterministic bag-of-words hashing embedding (a stand-in for a real model)."""
    vec = [0.0] * DIMS
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        vec[int(hashlib.blake2b(word.encode(), digest_size=2).hexdigest(), 16) % DIMS] += 1.0
    return vec


def test_cosine_golden_values():
    assert cosine([1, 0], [1, 0]) == 1.0
    assert cosine([1, 0], [0, 1]) == 0.0
    assert cosine([1, 1], [1, 0]) == pytest.approx(0.7071067811865476)
    assert cosine([0, 0], [1, 0]) == 0.0


def test_semantic_search_follows_the_feed(env):
    mem = env.mem()
    mem.create_graph("kb")
    g = mem.graph("kb")
    cpu = g.add({"f": "latency doubles under high cpu load"}, context="perf", kind="finding")
    gc = g.add({"f": "garbage collector pauses grow with heap"}, context="perf", kind="finding")
    index = g.semantic(embed)
    top = index.search("cpu load latency", k=1)
    assert [n.id for _, n in top] == [cpu.id]
    # Another agent's add shows up at the next search (read from the feed, not a rescan).
    disk = (
        env.mem("worker")
        .graph("kb")
        .add({"f": "disk latency spikes during compaction"}, context="storage", kind="finding")
    )
    found = index.search("disk compaction", k=1)
    assert [n.id for _, n in found] == [disk.id]
    in_perf = [n.id for _, n in index.search("latency", k=5, context="perf")]
    assert in_perf == [cpu.id, gc.id]  # the filter keeps disk out; gc scores 0, ranks last
    g.delete(cpu)
    assert cpu.id not in [n.id for _, n in index.search("cpu load latency", k=5)]
    g.update(gc, content={"f": "cpu throttling"})
    assert [n.id for _, n in index.search("cpu throttling", k=1)] == [gc.id]
    assert index.cached() == 2
    with pytest.raises(InvalidInput):
        index.search("x", k=0)
    with pytest.raises(InvalidInput):
        g.semantic(lambda text: [float("nan")]).search("x")


def test_semantic_search_needs_read_permission(env):
    mem = env.mem()
    mem.create_graph("kb", default_permission="none")
    mem.graph("kb").add("x", context="c", kind="k")
    with pytest.raises(PermissionDenied):
        env.mem("stranger").graph("kb").semantic(embed).search("x")

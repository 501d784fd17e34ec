"""Many OS processes churning one memory graph on a real redis-server.

Six spawned processes (each its own client and agent) add nodes (some with a short
TTL), link and unlink them, bundle them, and delete some, all at once; then the graph
must be whole: every link stored both ways with its weight, every index entry naming a
live node and every node indexed exactly as its record says, every acknowledged node
that was neither deleted nor given a TTL present. Eight processes adding the same fact
at once make exactly one node.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import random
import time
import traceback
import uuid
from typing import Any

import pytest

from swarm_memory import NodeNotFound, Settings, SwarmMemory
from swarm_memory._ops.records import unpack
from swarm_memory.keys import GraphKeys
from tests.servers import RedisServer

CTX = multiprocessing.get_context("spawn")
GRAPH = "kb"
CHURNERS = 6
OPS = 120
SAME_FACT = 8
TIMEOUT = 90.0


def _worker(kind: str, i: int, where: tuple[str, str], barrier: Any, out: Any) -> None:
    url, prefix = where
    try:
        mem = SwarmMemory.from_url(url, agent=f"w{i}", settings=Settings(key_prefix=prefix))
        g = mem.graph(GRAPH)
        barrier.wait(timeout=60)
        if kind == "fact":
            n = g.add({"fact": "the sky is blue", "n": 1}, context="weather", kind="fact")
            out.put((i, "ok", [n.id, n.created]))
        else:
            out.put((i, "ok", _churn(g, i)))
        mem.close()
    except BaseException:
        out.put((i, "error", traceback.format_exc()))


def _churn(g: Any, i: int) -> list[str]:
    rng = random.Random(i)
    kept: list[str] = []
    mine: list[str] = []
    for step in range(OPS):
        roll = rng.random()
        if roll < 0.4 or not mine:
            ttl = 0.2 if rng.random() < 0.25 else None
            n = g.add(
                {"w": i, "s": step},
                context=f"c{rng.randrange(3)}",
                kind=rng.choice(["fact", "plan"]),
                confidence=rng.random(),
                tags=rng.sample(["x", "y", "z"], rng.randrange(3)),
                ttl=ttl,
            )
            mine.append(n.id)
            if ttl is None:
                kept.append(n.id)
        elif roll < 0.7:
            others = [n.id for n in g.recall(limit=20)]
            a, b = rng.choice(mine), rng.choice(others or mine)
            with contextlib.suppress(NodeNotFound):  # deleted or expired meanwhile
                g.link(a, b, rng.choice(["supports", "next"]), rng.random())
        elif roll < 0.8:
            others = [n.id for n in g.recall(limit=20)]
            if others:
                g.unlink(rng.choice(mine), rng.choice(others), "supports")
        elif roll < 0.9:
            with contextlib.suppress(NodeNotFound):
                g.bundle(f"task{rng.randrange(3)}").add(rng.choice(mine))
        else:
            victim = mine.pop(rng.randrange(len(mine)))
            g.delete(victim)
            if victim in kept:
                kept.remove(victim)
    return kept


def _run(kind: str, n: int, url: str, prefix: str) -> list[Any]:
    barrier, out = CTX.Barrier(n), CTX.Queue()
    procs = [
        CTX.Process(target=_worker, args=(kind, i, (url, prefix), barrier, out)) for i in range(n)
    ]
    for p in procs:
        p.start()
    results: dict[int, Any] = {}
    try:
        deadline = time.monotonic() + TIMEOUT
        while len(results) < n:
            i, status, payload = out.get(timeout=max(0.1, deadline - time.monotonic()))
            assert status == "ok", payload
            results[i] = payload
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
    return [results[i] for i in range(n)]


@pytest.fixture
def setup(redis_server: RedisServer) -> Any:
    prefix = "t" + uuid.uuid4().hex[:12]
    mem = SwarmMemory.from_url(redis_server.url, agent="lead", settings=Settings(key_prefix=prefix))
    mem.create_graph(GRAPH, link_kinds=["supports", "next"])
    yield redis_server.url, prefix, mem
    mem.close()


def _node_members(node_id: str, raw: bytes) -> set[bytes]:
    f = unpack(raw)
    agent, context, kind, tags, ct = f[2], f[3], f[4], unpack(f[6]), int(f[10])
    tail = b"\0%015d\0" % ct + node_id.encode()
    members = {b"t" + tail, b"a\0" + agent + tail, b"c\0" + context + tail, b"k\0" + kind + tail}
    return members | {b"g\0" + t + tail for t in tags}


def test_churning_processes_leave_a_whole_graph(setup: Any) -> None:
    url, prefix, mem = setup
    kept = [x for xs in _run("churn", CHURNERS, url, prefix) for x in xs]
    time.sleep(0.3)  # every TTL has run out
    mem.namespace(GRAPH).sweep()
    r = mem._driver.client
    gmeta, nodes, facts, gix, conf, gexp, adj, weights, bundles = GraphKeys.of(
        prefix, GRAPH
    ).fixed()
    stored = {k.decode(): v for k, v in r.hgetall(nodes).items()}
    assert set(kept) <= set(stored), "an acknowledged node is missing"
    assert not r.zcard(gexp), "expired nodes left after the sweep"
    assert int(r.hget(gmeta, "n")) == len(stored)
    # Indexes: exactly the members the records imply.
    expected: set[bytes] = set()
    for node_id, raw in stored.items():
        expected |= _node_members(node_id, raw)
    assert set(r.zrange(gix, 0, -1)) == expected
    assert {m.decode() for m in r.zrange(conf, 0, -1)} == set(stored)
    assert {v.decode() for v in r.hvals(facts)} == set(stored)
    # Adjacency: symmetric, between live nodes, one weight per link.
    links = set()
    for m in r.zrange(adj, 0, -1):
        a, d, k, b = m.split(b"\0")
        mirror = b"\0".join([b, b"<" if d == b">" else b">", k, a])
        assert r.zscore(adj, mirror) is not None, f"one-way link {m!r}"
        assert a.decode() in stored and b.decode() in stored, f"dangling link {m!r}"
        if d == b">":
            links.add(b"\0".join([a, k, b]))
    assert set(r.hkeys(weights)) == links
    for m in r.zrange(bundles, 0, -1):
        side, x, y = m.split(b"\0")
        node_id = (y if side == b"b" else x).decode()
        assert node_id in stored, f"bundle member {m!r} names a missing node"
    assert len(links) > 0 and len(stored) > 0  # the run did something


def test_eight_processes_adding_the_same_fact_make_one_node(setup: Any) -> None:
    url, prefix, mem = setup
    results = _run("fact", SAME_FACT, url, prefix)
    assert len({node_id for node_id, _ in results}) == 1
    assert sum(1 for _, created in results if created) == 1
    assert mem.graph(GRAPH).stats().nodes == 1

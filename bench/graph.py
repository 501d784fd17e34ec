"""Memory graph benchmark: ``add`` with a link per node, and ``recall``, at growing sizes,
against the same data in a plain hand-written HSET/ZSET layout, in one run.

    python -m bench.graph                      # 10,000 and 100,000 nodes
    python -m bench.graph --sizes 2000,20000   # smaller
    python -m bench.graph --json bench/results/graph.json

Starts its own ``redis-server`` on a free loopback port (never 6379). Both layouts are
loaded by one client, one node (plus one link to an earlier node) at a time:

* ``ours``: ``Graph.add`` then ``Graph.link`` — two atomic scripts: permission check,
  fact dedupe, op-id record, indexes, events, audit, stats;
* ``plain``: per node one pipelined round trip (``transaction=False``) of HSET of the
  record, ZADD into a time index and into an agent, context, kind and per-tag index
  (score = created ms), a confidence ZADD, and SADD of the link both ways — no
  atomicity, no permission, no events, no dedupe.

Recall queries (newest 20 matches) are the same for both; the plain one does by hand what
the script does: count each named index (ZCOUNT), scan the narrowest newest first in
chunks, HGETALL the records in a pipeline and filter them in Python. Latencies are
medians over ``--queries`` queries per kind, measured after each size is loaded (sizes
grow in place: the second size adds to the first).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis

from swarm_memory import Settings, SwarmMemory

AGENTS = [f"agent{i}" for i in range(10)]
CONTEXTS = [f"task-{i}" for i in range(100)]
KINDS = ["finding", "plan", "result", "question", "fact"]
TAGS = [f"tag{i}" for i in range(20)]

QUERIES: dict[str, Callable[[random.Random], dict[str, Any]]] = {
    "context": lambda r: {"context": r.choice(CONTEXTS)},
    "agent+kind+tag+conf": lambda r: {
        "agent": r.choice(AGENTS),
        "kind": r.choice(KINDS),
        "tags": [r.choice(TAGS)],
        "min_confidence": 0.5,
    },
    "newest": lambda r: {},
    "tag+context": lambda r: {"tags": [r.choice(TAGS)], "context": r.choice(CONTEXTS)},
}


def node_spec(rng: random.Random, i: int) -> dict[str, Any]:
    return {
        "content": {"finding": f"observation {i}", "value": rng.random()},
        "agent": rng.choice(AGENTS),
        "context": rng.choice(CONTEXTS),
        "kind": rng.choice(KINDS),
        "confidence": round(rng.random(), 3),
        "tags": rng.sample(TAGS, 2),
    }


class Plain:
    """The hand-written layout: a hash per node, a sorted set per index value."""

    CHUNK = 200

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.r = client
        self.p = prefix

    def add(self, node_id: str, spec: dict[str, Any], link_to: str | None) -> None:
        now = int(time.time() * 1000)
        p = self.p
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(
            f"{p}:node:{node_id}",
            mapping={
                "agent": spec["agent"],
                "context": spec["context"],
                "kind": spec["kind"],
                "conf": spec["confidence"],
                "tags": ",".join(spec["tags"]),
                "ct": now,
                "content": json.dumps(spec["content"], separators=(",", ":")),
            },
        )
        pipe.zadd(f"{p}:ix:t", {node_id: now})
        pipe.zadd(f"{p}:ix:a:{spec['agent']}", {node_id: now})
        pipe.zadd(f"{p}:ix:c:{spec['context']}", {node_id: now})
        pipe.zadd(f"{p}:ix:k:{spec['kind']}", {node_id: now})
        for tag in spec["tags"]:
            pipe.zadd(f"{p}:ix:g:{tag}", {node_id: now})
        pipe.zadd(f"{p}:conf", {node_id: spec["confidence"]})
        if link_to:
            pipe.sadd(f"{p}:out:{node_id}", link_to)
            pipe.sadd(f"{p}:in:{link_to}", node_id)
        pipe.execute()

    def recall(self, q: dict[str, Any], limit: int = 20) -> list[str]:
        p = self.p
        keys = [f"{p}:ix:t"]
        if "agent" in q:
            keys.append(f"{p}:ix:a:{q['agent']}")
        if "context" in q:
            keys.append(f"{p}:ix:c:{q['context']}")
        if "kind" in q:
            keys.append(f"{p}:ix:k:{q['kind']}")
        keys += [f"{p}:ix:g:{t}" for t in q.get("tags", [])]
        pipe = self.r.pipeline(transaction=False)
        for k in keys:
            pipe.zcard(k)
        counts = pipe.execute()
        best = keys[counts.index(min(counts))]
        out: list[str] = []
        start = 0
        while len(out) < limit:
            ids = self.r.zrevrange(best, start, start + self.CHUNK - 1)
            if not ids:
                break
            start += len(ids)
            pipe = self.r.pipeline(transaction=False)
            for node_id in ids:
                pipe.hgetall(f"{p}:node:{node_id.decode()}")
            for node_id, h in zip(ids, pipe.execute(), strict=True):
                if self._matches(h, q):
                    out.append(node_id.decode())
                    if len(out) >= limit:
                        break
        return out

    @staticmethod
    def _matches(h: dict[bytes, bytes], q: dict[str, Any]) -> bool:
        if "agent" in q and h[b"agent"].decode() != q["agent"]:
            return False
        if "context" in q and h[b"context"].decode() != q["context"]:
            return False
        if "kind" in q and h[b"kind"].decode() != q["kind"]:
            return False
        tags = set(h[b"tags"].decode().split(","))
        if not set(q.get("tags", [])) <= tags:
            return False
        return not ("min_confidence" in q and float(h[b"conf"]) < q["min_confidence"])


def load(mem: SwarmMemory, plain: Plain, start: int, stop: int, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    graphs = {a: mem.as_agent(a).graph("bench") for a in AGENTS}
    ours_ids: list[str] = []
    plain_ids: list[str] = []
    ours_t = plain_t = 0.0
    for i in range(start, stop):
        spec = node_spec(rng, i)
        g = graphs[spec["agent"]]
        t0 = time.perf_counter()
        node = g.add(
            spec["content"],
            context=spec["context"],
            kind=spec["kind"],
            confidence=spec["confidence"],
            tags=spec["tags"],
        )
        if ours_ids:
            g.link(node, ours_ids[rng.randrange(len(ours_ids))], "supports")
        t1 = time.perf_counter()
        pid = uuid.uuid4().hex[:24]
        plain.add(pid, spec, plain_ids[rng.randrange(len(plain_ids))] if plain_ids else None)
        t2 = time.perf_counter()
        ours_t += t1 - t0
        plain_t += t2 - t1
        ours_ids.append(node.id)
        plain_ids.append(pid)
    n = stop - start
    return {"ours_add_link_per_s": n / ours_t, "plain_add_link_per_s": n / plain_t}


def measure_recall(mem: SwarmMemory, plain: Plain, queries: int, seed: int) -> dict[str, Any]:
    g = mem.graph("bench")
    out: dict[str, Any] = {}
    for name, make in QUERIES.items():
        rng = random.Random(seed)
        ours_ms, plain_ms, indexes = [], [], set()
        for _ in range(queries):
            q = make(rng)
            t0 = time.perf_counter()
            page = g.recall(limit=20, **q)
            t1 = time.perf_counter()
            plain.recall(q)
            t2 = time.perf_counter()
            ours_ms.append((t1 - t0) * 1000)
            plain_ms.append((t2 - t1) * 1000)
            indexes.add(page.index)
        out[name] = {
            "ours_ms_p50": statistics.median(ours_ms),
            "plain_ms_p50": statistics.median(plain_ms),
            "index": sorted(indexes),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    sizes = [int(s) for s in a.sizes.split(",")]

    from tests.servers import RedisServer

    server = RedisServer()
    server.start()
    results: dict[str, Any] = {"sizes": {}}
    try:
        prefix = "b" + uuid.uuid4().hex[:8]
        mem = SwarmMemory.from_url(server.url, agent="bench", settings=Settings(key_prefix=prefix))
        mem.create_graph("bench", default_permission="write")
        plain = Plain(redis.Redis.from_url(server.url), prefix + "plain")
        loaded = 0
        for size in sizes:
            t0 = time.perf_counter()
            rates = load(mem, plain, loaded, size, seed=size)
            loaded = size
            recall = measure_recall(mem, plain, a.queries, seed=7)
            results["sizes"][size] = {**rates, "recall": recall, "load_s": time.perf_counter() - t0}
            print(f"\n{size:,} nodes (load {time.perf_counter() - t0:.0f} s)")
            print(
                f"  add+link: ours {rates['ours_add_link_per_s']:,.0f}/s, "
                f"plain {rates['plain_add_link_per_s']:,.0f}/s "
                f"({rates['ours_add_link_per_s'] / rates['plain_add_link_per_s']:.2f}x)"
            )
            for name, r in recall.items():
                print(
                    f"  recall {name:22} ours {r['ours_ms_p50']:6.2f} ms "
                    f"(index {','.join(r['index'])})  plain {r['plain_ms_p50']:6.2f} ms"
                )
        mem.close()
    finally:
        server.stop()
    if len(sizes) > 1:
        first, last = results["sizes"][sizes[0]], results["sizes"][sizes[-1]]
        print(f"\nrecall p50 growth from {sizes[0]:,} to {sizes[-1]:,} nodes:")
        for name in QUERIES:
            o = last["recall"][name]["ours_ms_p50"] / first["recall"][name]["ours_ms_p50"]
            p = last["recall"][name]["plain_ms_p50"] / first["recall"][name]["plain_ms_p50"]
            print(f"  {name:22} ours x{o:.2f}  plain x{p:.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

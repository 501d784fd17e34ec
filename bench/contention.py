"""Contended read-modify-write of ONE key by 8 and 32 worker processes.

Every worker is a forked process with its own connection; all start together (a
barrier), run for a fixed time, and report how many operations were acknowledged.
Throughput = acknowledged operations / (last end - first start). After the run the
key is read back and **lost updates** = acknowledged - applied (must be 0):

- counters (``incr``, ``update(fn)`` and the baselines): applied = final value;
- ``merge`` (a ``merge``-strategy namespace): worker w writes ``{"w<w>": its count}``;
  applied = the entry's version, and a field below its worker's count is a lost merge.

Baselines, same run, same key shape (a hash with the value and a version, plus an event):

- ``base.lua_rmw``: one EVALSHA that reads, adds, bumps the version and XADDs;
- ``base.watch_multi``: WATCH / HMGET / MULTI HSET XADD EXEC, retried on WatchError;
- ``base.client_cas``: HMGET, then the bare Lua CAS+XADD, retried on a version mismatch
  with the value the CAS reply carries (no backoff) — a bare client CAS loop, the
  baseline of ``update(fn)``.

On a 2-core machine 8 or 32 processes time-share two CPUs with redis-server: these
numbers measure how each approach behaves under heavy oversubscription, which is what a
swarm on a small box looks like.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import threading
import time
from collections.abc import Callable
from typing import Any

from bench.baselines import CAS_XADD, RMW_XADD
from bench.harness import Case, Ctx, Sample, encode

CONTEND_NS = "bench-contend"
MERGE_NS = "bench-merge"
KINDS = (
    "base.lua_rmw",
    "base.watch_multi",
    "base.client_cas",
    "ours.incr",
    "ours.merge",
    "ours.update",
)
VS: dict[str, tuple[str, ...]] = {
    "ours.incr": ("base.lua_rmw", "base.watch_multi"),
    "ours.merge": ("base.lua_rmw", "base.watch_multi"),
    "ours.update": ("base.client_cas", "base.watch_multi"),
    "base.client_cas": ("base.lua_rmw",),
}


def name_of(kind: str, workers: int) -> str:
    return f"{kind}@{workers}"


def _make_op(
    kind: str, url: str, key: str, wid: int, stats: dict[str, int]
) -> Callable[[], object]:
    """Build, inside the worker process, the operation one acknowledgement stands for."""
    import redis

    stream = key + ":events"
    if kind.startswith("base."):
        r = redis.Redis.from_url(url)
        if kind == "base.lua_rmw":
            sha = r.script_load(RMW_XADD)
            return lambda: r.evalsha(sha, 2, key, stream, 1)
        if kind == "base.watch_multi":

            def watch_multi() -> None:
                with r.pipeline() as p:
                    while True:
                        try:
                            p.watch(key)
                            v, ver = p.hmget(key, "v", "ver")
                            p.multi()
                            nver = int(ver or 0) + 1
                            p.hset(key, mapping={"v": int(v or 0) + 1, "ver": nver})
                            p.xadd(stream, {"k": key, "ver": nver}, maxlen=100_000)
                            p.execute()
                            return
                        except redis.WatchError:
                            stats["conflicts"] += 1

            return watch_multi
        sha = r.script_load(CAS_XADD)

        def client_cas() -> None:
            v, ver = r.hmget(key, "v", "ver")
            value, version = json.loads(v) if v else 0, int(ver or 0)
            while True:
                reply = r.evalsha(sha, 2, key, stream, version, encode(value + 1))
                if reply[0] == 1:
                    return
                stats["conflicts"] += 1
                version, value = reply[1], json.loads(reply[2]) if reply[2] else 0

        return client_cas

    from swarm_memory import SwarmMemory

    mem = SwarmMemory.from_url(url, agent=f"w{wid}")

    def count_writes(script: str, _keys: list[str], _args: list[Any]) -> None:
        stats["script_calls"] += 1  # every round trip: the reads of a CAS loop too
        if script in WRITE_SCRIPTS:
            stats["write_calls"] += 1

    mem.observe_scripts(count_writes)
    if kind == "ours.incr":
        ns = mem.namespace(CONTEND_NS)
        return lambda: ns.incr(key)
    if kind == "ours.update":
        ns = mem.namespace(CONTEND_NS)
        return lambda: ns.update(key, lambda v: (v or 0) + 1)
    ns = mem.namespace(MERGE_NS)
    field = f"w{wid}"

    def merge() -> None:
        ns.put(key, {field: stats["acks"] + 1})

    return merge


# The scripts that write an entry: lua/put.lua (one put or incr, since stops 28 and 29;
# a merge namespace's put too since stop 32) and lua/write.lua (the rest, and what
# put.lua hands on).
WRITE_SCRIPTS = frozenset({"put", "write"})


def _worker(  # noqa: PLR0917 - a multiprocessing target takes positional args
    kind: str, url: str, key: str, wid: int, seconds: float, barrier: Any, out: Any
) -> None:
    stats = {"acks": 0, "conflicts": 0, "write_calls": 0, "script_calls": 0}
    try:
        op = _make_op(kind, url, key, wid, stats)
        op()  # warm-up: connect, load scripts (acknowledged, so it counts as applied)
        stats["acks"] += 1
        barrier.wait()
        t0 = time.perf_counter()  # CLOCK_MONOTONIC: comparable across processes
        deadline = t0 + seconds
        timed = 0
        while time.perf_counter() < deadline:
            op()
            stats["acks"] += 1
            timed += 1
        out.put((wid, stats, timed, t0, time.perf_counter(), None))
    except BaseException as exc:  # report, never hang the parent on the barrier
        barrier.abort()
        out.put((wid, stats, 0, 0.0, 0.0, f"{type(exc).__name__}: {exc}"))


def _applied(kind: str, ctx: Ctx, key: str, acks: dict[int, int]) -> tuple[int, int]:
    """(applied, lost) read back from the store after a run."""
    if kind.startswith("base."):
        r = ctx.raw()
        try:
            applied = int(r.hget(key, "v") or 0)
        finally:
            r.close()
        return applied, sum(acks.values()) - applied
    from swarm_memory import SwarmMemory

    mem = SwarmMemory.from_url(ctx.url, agent="bench")
    try:
        if kind == "ours.merge":
            e = mem.namespace(MERGE_NS).get(key)
            doc = e.value if e is not None else {}
            version = e.version if e is not None else 0
            lost_fields = sum(max(0, n - int(doc.get(f"w{w}", 0))) for w, n in acks.items())
            return version, max(sum(acks.values()) - version, 0) + lost_fields
        e = mem.namespace(CONTEND_NS).get(key)
        applied = int(e.value) if e is not None else 0
        return applied, sum(acks.values()) - applied
    finally:
        mem.close()


def run_contended(ctx: Ctx, kind: str, workers: int, seconds: float) -> Sample:
    key = ctx.fresh("hot").replace(":", "-")
    fork = mp.get_context("fork")  # the parent's imports are inherited: cheap to start
    barrier = fork.Barrier(workers + 1)
    out = fork.SimpleQueue()
    procs = [
        fork.Process(target=_worker, args=(kind, ctx.url, key, w, seconds, barrier, out))
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    # A worker that failed before the start breaks the barrier: its error is read below.
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait(timeout=60)
    reports = [out.get() for _ in procs]
    for p in procs:
        p.join(30)
    errors = [r[5] for r in reports if r[5]]
    if errors:
        raise RuntimeError(f"{kind} x{workers}: worker failed: {errors[0]}")
    acks = {r[0]: r[1]["acks"] for r in reports}
    timed = sum(r[2] for r in reports)
    elapsed = max(r[4] for r in reports) - min(r[3] for r in reports)
    applied, lost = _applied(kind, ctx, key, acks)
    extra = {
        "acknowledged": sum(acks.values()),
        "applied": applied,
        "lost": lost,
        "conflicts": sum(r[1]["conflicts"] for r in reports),
    }
    if kind.startswith("ours."):
        # Write-script calls beyond one per acknowledged op: CAS retries inside update(),
        # and put.lua's hand-backs to write.lua (before stop 32, a merge namespace's: one
        # per worker, then one every GENERAL_PUTS puts; none since).
        extra["retries"] = sum(r[1]["write_calls"] for r in reports) - sum(acks.values())
        # Script calls (writes and reads) per acknowledged op: the round trips a CAS loop
        # spends per success, steadier than its throughput on a loaded machine.
        extra["script_calls"] = sum(r[1]["script_calls"] for r in reports)
    return Sample(elapsed, timed, extra)


def contention_cases(ctx: Ctx, workers: int, seconds: float) -> list[Case]:
    from swarm_memory import SwarmMemory

    mem = SwarmMemory.from_url(ctx.url, agent="bench")
    mem.create_namespace(CONTEND_NS, exist_ok=True)
    mem.create_namespace(MERGE_NS, strategy="merge", exist_ok=True)
    mem.close()

    def case(kind: str) -> Case:
        return Case(
            name_of(kind, workers),
            lambda _n: run_contended(ctx, kind, workers, seconds),
            vs=tuple(name_of(b, workers) for b in VS.get(kind, ())),
            fixed=True,
            note=f"{workers} processes, one key",
        )

    return [case(k) for k in KINDS]

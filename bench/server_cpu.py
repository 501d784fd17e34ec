"""The server's own CPU per call: ``INFO commandstats`` ``usec_per_call``, ours vs bare.

Family ``server``. Each case runs ``--server-calls`` (3,000) operations on the run's own
redis-server (``bench.run`` always starts one on a free port, never 6379) right after
``CONFIG RESETSTAT``, then reads ``INFO commandstats``. A case's server µs per operation
is the ``usec`` of its **top-level** commands over the operations: the script rows
(``evalsha``, ``eval``, ``evalsha_ro``, ``eval_ro``, ``fcall``, ``fcall_ro`` — so the
table works whether the scripts run by EVALSHA or as a Redis Functions library) plus the
plain commands a bare baseline sends. Commands a script calls are counted by Redis in
their own rows too (and inside the script's time): those rows are kept in the JSON but
not added. The cases of a pair alternate, in an order rotated per round; the ratio is
ours ÷ bare per round (lower is better here: 2.00x = twice the server time).

- ``put``: ``ns.put`` vs the bare Lua CAS + XADD (``base.cas_xadd``);
- ``get``: ``ns.get`` vs ``HGETALL`` of an entry-shaped hash;
- ``lock``: ``ns.lock`` acquire + release vs ``SET NX PX`` + the Lua compare-and-delete
  release (when ``Namespace.lock`` exists);
- ``incr`` / ``merge``: ``ns.incr`` and a merge-strategy ``put`` vs one bare Lua
  read-add-write + XADD (``base.lua_rmw``): the server-side share of the contended
  ``incr`` / ``merge`` ratios (no goal of their own);
- ``put.floor`` / ``get.floor`` / ``lock.floor``: the floors of bench/server_cost.py
  (``floor.put``, ``floor.get``, ``floor.lock``: Redis Functions making exactly the
  Redis calls of a put, a get, a lock pair, with their key names and arguments and no
  logic around them) vs the same bare baselines, when the server loads Functions: what
  the calls alone cost, measured beside ours, so a goal the floor misses too is seen to
  be out of reach of any script making those calls.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench import locks
from bench.baselines import CAS_XADD, ENTRY_SHAPE, RELEASE, RMW_XADD
from bench.harness import Ctx, encode, spread
from swarm_memory import SwarmMemory

SCRIPT_ROWS = frozenset({"evalsha", "eval", "evalsha_ro", "eval_ro", "fcall", "fcall_ro"})
NAMESPACE = "bench-server"
MERGE_NAMESPACE = "bench-server-merge"


@dataclass
class Side:
    name: str
    op: Callable[[], Any]
    plain: frozenset[str] = frozenset()  # top-level commands besides scripts


def commandstats(r: Any) -> dict[str, dict[str, int]]:
    return {
        name.removeprefix("cmdstat_"): {"calls": int(row["calls"]), "usec": int(row["usec"])}
        for name, row in r.info("commandstats").items()
    }


def measure(r: Any, side: Side, calls: int) -> dict[str, Any]:
    """Server µs per operation of ``calls`` operations of ``side``."""
    side.op()  # warm: connect, load scripts (before the reset)
    r.config_resetstat()
    for _ in range(calls):
        side.op()
    stats = commandstats(r)
    stats.pop("config|resetstat", None)
    stats.pop("config", None)
    stats.pop("info", None)
    top = SCRIPT_ROWS | side.plain
    usec = sum(v["usec"] for k, v in stats.items() if k in top)
    top_calls = sum(v["calls"] for k, v in stats.items() if k in top)
    return {
        "us_per_op": usec / calls,
        "top_level_calls_per_op": top_calls / calls,
        "rows": stats,
    }


Pair = tuple[str, Side, Side]  # (what, ours or a floor, the bare baseline)


def pairs(ctx: Ctx, mem: SwarmMemory, r: Any) -> list[Pair]:
    mem.create_namespace(NAMESPACE, exist_ok=True)
    ns = mem.namespace(NAMESPACE)
    value, data = ctx.value, encode(ctx.value)
    kput, kget = ctx.fresh("sput"), ctx.fresh("sget")
    ns.put(kget, value)
    ckey, stream, hkey = ctx.fresh("scas"), ctx.fresh("sstream"), ctx.fresh("shash")
    r.hset(hkey, mapping={"v": data, **ENTRY_SHAPE})
    cas_sha = r.script_load(CAS_XADD)
    ver = [0]

    def bare_put() -> None:
        reply = r.evalsha(cas_sha, 2, ckey, stream, ver[0], encode(value))
        ver[0] = reply[1]

    # Server-side read-modify-write: incr and a merge-strategy put vs one bare Lua RMW.
    mem.create_namespace(MERGE_NAMESPACE, strategy="merge", exist_ok=True)
    mns = mem.namespace(MERGE_NAMESPACE)
    kincr, kmerge = ctx.fresh("sincr"), ctx.fresh("smerge")
    rmw_key, rmw_stream = ctx.fresh("srmw"), ctx.fresh("srmwstream")
    rmw_sha = r.script_load(RMW_XADD)
    n = [0]

    def merge() -> None:
        n[0] += 1
        mns.put(kmerge, {"w1": n[0]})

    out = [
        ("put", Side("ours.put", lambda: ns.put(kput, value)), Side("base.cas_xadd", bare_put)),
        (
            "get",
            Side("ours.get", lambda: ns.get(kget)),
            Side("base.hgetall", lambda: r.hgetall(hkey), frozenset({"hgetall"})),
        ),
    ]
    rmw = Side("base.lua_rmw", lambda: r.evalsha(rmw_sha, 2, rmw_key, rmw_stream, 1))
    out.append(("incr", Side("ours.incr", lambda: ns.incr(kincr)), rmw))
    out.append(("merge", Side("ours.merge", merge), rmw))
    if locks.available():
        name, bare_name = ctx.fresh("slock").replace(":", "-"), ctx.fresh("sbarelock")
        release = r.script_load(RELEASE)

        def ours_lock() -> None:
            with ns.lock(name, ttl=10.0):
                pass

        def bare_lock() -> None:
            token = uuid.uuid4().hex
            r.set(bare_name, token, nx=True, px=10_000)
            r.evalsha(release, 1, bare_name, token)

        out.append(
            (
                "lock",
                Side("ours.lock", ours_lock),
                Side("base.lock", bare_lock, frozenset({"set"})),
            )
        )
    return out + floor_pairs(r, mem, kget, data, {base.name: base for _, _, base in out})


def floor_pairs(
    r: Any, mem: SwarmMemory, kget: str, body: str, bases: dict[str, Side]
) -> list[Pair]:
    """The floors beside the same bare sides (see the module doc), or none (said so) on a
    server without Functions."""
    from bench.server_cost import get_floor, load_floor_library, write_floors

    if not load_floor_library(r, "server floors"):
        return []
    prefix = mem.settings.key_prefix
    floor_put, floor_lock = write_floors(r, prefix, body)
    floor_get = Side("floor.get", get_floor(r, prefix, NAMESPACE, kget))
    out = [
        ("put.floor", Side("floor.put", floor_put), bases["base.cas_xadd"]),
        ("get.floor", floor_get, bases["base.hgetall"]),
    ]
    if "base.lock" in bases:
        out.append(("lock.floor", Side("floor.lock", floor_lock), bases["base.lock"]))
    return out


def run_server(ctx: Ctx, *, rounds: int, calls: int, log: Callable[[str], None]) -> dict[str, Any]:
    r = ctx.raw()
    mem = SwarmMemory.from_url(ctx.url, agent="bench")
    out: dict[str, Any] = {"calls": calls, "rounds": rounds, "pairs": {}}
    try:
        for what, ours, base in pairs(ctx, mem, r):
            per: dict[str, list[dict[str, Any]]] = {ours.name: [], base.name: []}
            ratios: list[float] = []
            for i in range(rounds):
                order = (ours, base) if i % 2 == 0 else (base, ours)
                got = {s.name: measure(r, s, calls) for s in order}
                for name, m in got.items():
                    per[name].append(m)
                b = got[base.name]["us_per_op"]
                ratios.append(got[ours.name]["us_per_op"] / b if b > 0 else float("nan"))
                log(
                    f"  server round {i + 1}/{rounds} {what}: ours "
                    f"{got[ours.name]['us_per_op']:.1f} µs, bare {b:.1f} µs"
                )
            out["pairs"][what] = {
                "ours": ours.name,
                "base": base.name,
                "ours_us": spread([m["us_per_op"] for m in per[ours.name]]),
                "base_us": spread([m["us_per_op"] for m in per[base.name]]),
                "ours_top_level_calls_per_op": per[ours.name][-1]["top_level_calls_per_op"],
                "ratio": spread(ratios),
                "rows_last_round": {k: v[-1]["rows"] for k, v in per.items()},
            }
    finally:
        mem.close()
        r.close()
    return out


# The goals: ours ÷ bare server time per call, at most (and the floor's pair,
# "<op>.floor", measured beside it: the same bound, for reference).
GOALS = {"put": 2.0, "get": 5.0}

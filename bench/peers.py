"""The libraries people would otherwise use, measured in the same run where they install.

- redis-py's own ``Lock`` (SET NX PX + Lua release; no fencing token).
- python-redis-lock (``redis_lock.Lock``: Lua acquire/release + a signal list).
- pottery ``Redlock`` on one master, and ``RedisDict`` (a hash of JSON values).

A peer that is not installed is skipped with a printed line (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from bench.harness import Case, Ctx, Sample, encode, timed

Log = Callable[[str], None]


def _lock_cycles(label: str, get_lock: Callable[[], Any]) -> Callable[[int], Sample]:
    """``n`` uncontended acquire + release cycles of the lock ``get_lock()`` returns."""

    def cycle() -> None:
        lk = get_lock()
        if not lk.acquire(blocking=False):
            raise RuntimeError(f"{label}: already held")
        lk.release()

    return lambda n: timed(cycle, n)


def lock_cases(ctx: Ctx, log: Log) -> list[Case]:
    r = ctx.raw()
    lock = r.lock(ctx.fresh("rpylock"), timeout=10)
    cases = [
        Case("peer.redis-py.Lock", _lock_cycles("redis-py Lock", lambda: lock), vs=("base.lock",))
    ]
    try:
        import redis_lock
    except ImportError:
        log("peer python-redis-lock: not installed (pip install python-redis-lock)")
    else:
        name = ctx.fresh("prl")
        # A new Lock object per cycle, as its users write it.
        run = _lock_cycles("python-redis-lock", lambda: redis_lock.Lock(r, name, expire=10))
        cases.append(Case("peer.python-redis-lock", run, vs=("base.lock",)))
    try:
        from pottery import Redlock
    except ImportError:
        log("peer pottery: not installed (pip install pottery)")
    else:
        redlock = Redlock(key=ctx.fresh("redlock"), masters={r}, auto_release_time=10)
        run = _lock_cycles("pottery Redlock", lambda: redlock)
        cases.append(Case("peer.pottery.Redlock", run, vs=("base.lock",), note="one master"))
    cases[-1].close = r.close
    return cases


def dict_cases(ctx: Ctx, log: Log) -> list[Case]:
    """pottery ``RedisDict`` item set / get beside our put / get (same value)."""
    try:
        from pottery import RedisDict
    except ImportError:
        log("peer pottery RedisDict: not installed (pip install pottery)")
        return []
    r = ctx.raw()
    d: Any = RedisDict(redis=r, key=ctx.fresh("rdict"))
    d["get"] = ctx.value
    value = ctx.value

    def setitem() -> None:
        d["put"] = value

    def getitem() -> None:
        d["get"]

    # The bare operations RedisDict maps to: HSET / HGET of a JSON-encoded value.
    h = ctx.fresh("rdict-bare")
    r.hset(h, "get", encode(value))

    def hset() -> None:
        r.hset(h, "put", encode(value))

    def hget() -> None:
        json.loads(r.hget(h, "get"))

    return [
        Case("base.hset", lambda n: timed(hset, n), note="HSET field encode(value)"),
        Case("base.hget", lambda n: timed(hget, n), note="HGET field + json.loads"),
        Case(
            "peer.pottery.RedisDict.set",
            lambda n: timed(setitem, n),
            vs=("base.hset", "base.cas_xadd"),
            note="unversioned, no event",
        ),
        Case(
            "peer.pottery.RedisDict.get",
            lambda n: timed(getitem, n),
            vs=("base.hget", "base.hgetall"),
            close=r.close,
        ),
    ]

"""Test helpers: one sync-looking facade over both clients, keyspace snapshots."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import redis

from swarm_memory import (
    AsyncAgentContext,
    AsyncBundle,
    AsyncGraph,
    AsyncLease,
    AsyncLock,
    AsyncNamespace,
    AsyncOutcomes,
    AsyncSemanticIndex,
    AsyncSession,
    AsyncSubscription,
    AsyncSwarmMemory,
    AsyncTransaction,
    AsyncWatch,
)

T = TypeVar("T")

WRAPPED = (
    AsyncAgentContext,
    AsyncOutcomes,
    AsyncSession,
    AsyncSwarmMemory,
    AsyncGraph,
    AsyncBundle,
    AsyncSemanticIndex,
    AsyncNamespace,
    AsyncWatch,
    AsyncSubscription,
    AsyncLock,
    AsyncTransaction,
    AsyncLease,
)


async def _collect(agen: AsyncIterator[Any]) -> list[Any]:
    return [x async for x in agen]


class Facade:
    """Presents AsyncSwarmMemory / AsyncNamespace with the sync API, so one test body runs
    through both clients: coroutines are awaited on the test's loop, async iterators
    collected, and handles wrapped again. Exceptions pass through unchanged."""

    def __init__(self, target: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._target = target
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            if inspect.iscoroutine(result):
                result = self._loop.run_until_complete(result)
            if inspect.isasyncgen(result):
                return iter(self._loop.run_until_complete(_collect(result)))
            if isinstance(result, WRAPPED):
                return Facade(result, self._loop)
            return result

        return call

    def __enter__(self) -> Any:
        self._loop.run_until_complete(self._target.__aenter__())
        return self

    def __exit__(self, *exc: Any) -> None:
        self._loop.run_until_complete(self._target.__aexit__(*exc))


def snapshot(raw: redis.Redis | redis.RedisCluster, prefix: str) -> dict[bytes, Any]:
    """Every key under ``prefix`` with its full content, type-aware.

    Two pipelined rounds (the types, then the contents) after the SCAN: the bad-input
    contract snapshots the keyspace before and after each of its ~2,000 cases, and a
    round trip per key and per type cost them ~13 ms a snapshot on Cluster."""
    keys = list(raw.scan_iter(match=prefix + "*", count=1000))
    if not keys:
        return {}
    pipe = raw.pipeline() if isinstance(raw, redis.RedisCluster) else raw.pipeline(False)
    for key in keys:
        pipe.type(key)
    kinds = [k.decode() if isinstance(k, bytes) else k for k in pipe.execute()]
    readers: dict[str, Callable[[Any], Any]] = {
        "hash": pipe.hgetall,
        "zset": lambda k: pipe.zrange(k, 0, -1, withscores=True),
        "stream": pipe.xrange,
        "string": pipe.get,
        "list": lambda k: pipe.lrange(k, 0, -1),
        "set": pipe.smembers,
    }
    read = [(key, kind) for key, kind in zip(keys, kinds, strict=True) if kind in readers]
    for key, kind in read:
        readers[kind](key)
    out: dict[bytes, Any] = {key: (kind, None) for key, kind in zip(keys, kinds, strict=True)}
    for (key, kind), content in zip(read, pipe.execute(), strict=True):
        out[key] = (kind, sorted(content) if kind == "set" else content)
    return out


def must(value: T | None) -> T:
    """``value``, asserting it is there: a test's "present", which mypy understands too."""
    assert value is not None
    return value


def drain(watch: Any, n: int, timeout: float = 5.0) -> list[Any]:
    """The next ``n`` events of a watch (sync or facade), failing if any is late."""
    out: list[Any] = []
    for _ in range(n):
        ev = watch.get(timeout)
        assert ev is not None, f"only {len(out)} of {n} events arrived: {out}"
        out.append(ev)
    return out


# An entry's stored metadata: "m" packs these, in this order (lua/_lib.lua read_entry);
# entries stored before it hold them as fields of their own.
ENTRY_META = ("ver", "cr", "mr", "ct", "mt", "x", "by", "f")


def entry_meta_parts(m: bytes) -> list[bytes]:
    """The eight parts of a packed "m", its shorthands written out (lua/_lib.lua
    entry_meta: an empty mr is cr, an empty mt is ct, an empty format "json")."""
    parts = m.split(b" ", 7)
    assert len(parts) == 8, m
    for i, same_as in ((2, 1), (4, 3)):
        parts[i] = parts[i] or parts[same_as]
    parts[7] = parts[7] or b"json"
    return parts


def set_entry_field(raw: Any, key: str, field: str, value: str | bytes) -> None:
    """Set one of an entry's stored fields the way it is stored: inside the packed "m"
    when the entry has one (its shorthands written out), else as its own field ("v" and
    "eo" are always their own)."""
    m = raw.hget(key, "m")
    if field not in ENTRY_META or m is None:
        raw.hset(key, field, value)
        return
    parts = entry_meta_parts(m)
    parts[ENTRY_META.index(field)] = value.encode() if isinstance(value, str) else value
    raw.hset(key, "m", b" ".join(parts))


def to_legacy(raw: Any, key: str) -> None:
    """Rewrite a packed entry as entries were stored before "m": a field per item."""
    m = raw.hget(key, "m")
    assert m is not None, key
    raw.hset(key, mapping=dict(zip(ENTRY_META, entry_meta_parts(m), strict=True)))
    raw.hdel(key, "m")


def op_times(raw: Any, key: str) -> dict[bytes, list[float]]:
    """A namespace's op-id purge index, whatever its kind: op id -> the times (ms) it is
    listed with. A list ("<ms> <op id>" elements, lua/_lib.lua) since stop 22; a sorted
    set (op id -> ms) in namespaces from before, which keep it."""
    kind = raw.type(key)
    if kind in (b"zset", "zset"):
        return {m: [s] for m, s in raw.zrange(key, 0, -1, withscores=True)}
    out: dict[bytes, list[float]] = {}
    for element in raw.lrange(key, 0, -1):
        ms, _, op = element.partition(b" ")
        out.setdefault(op, []).append(float(ms))
    return out


def to_legacy_op_index(raw: Any, key: str) -> None:
    """Rewrite a namespace's op-id purge index as the sorted set it was before stop 22."""
    listed = op_times(raw, key)
    raw.delete(key)
    if listed:
        raw.zadd(key, {op: max(times) for op, times in listed.items()})

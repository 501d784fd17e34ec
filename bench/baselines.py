"""Bare redis-py (+ hiredis) baselines: what a hand-written client would send.

Every baseline encodes / decodes the JSON value like any client must (a few µs), so the
ratios measure what swarm_memory adds on top of the minimum, not JSON itself.

- ``base.get`` / ``base.hgetall``: one ``GET`` / ``HGETALL`` of an entry-shaped hash.
- ``base.cas_xadd``: a bare Lua compare-and-set that also appends to a stream — the
  minimum any versioned write with an event must cost (``CAS_XADD``).
- ``*.x100``: the same, 100 commands in one pipeline (transaction=False).
- ``base.async.*``: redis.asyncio, 50 tasks, one key each.
- ``base.lock``: ``SET NX PX`` + a Lua compare-and-delete release.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from bench.harness import Case, Ctx, Sample, encode, timed, timed_tasks

# Compare-and-set on a hash's "ver" field, then XADD: returns {1, new_ver} or, on a
# mismatch, {0, current_ver, current_value} (so a CAS loop needs no extra read).
CAS_XADD = """
local ver = tonumber(redis.call('HGET', KEYS[1], 'ver') or '0')
if ver ~= tonumber(ARGV[1]) then
  return {0, ver, redis.call('HGET', KEYS[1], 'v') or ''}
end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'ver', ver + 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', 100000, '*', 'k', KEYS[1], 'ver', ver + 1)
return {1, ver + 1}
"""

# Server-side read-modify-write of an integer, with a version bump and an event: the
# minimum of a contended increment that is versioned and observable.
RMW_XADD = """
local h = redis.call('HMGET', KEYS[1], 'v', 'ver')
local v = tonumber(h[1] or '0') + tonumber(ARGV[1])
local ver = tonumber(h[2] or '0') + 1
redis.call('HSET', KEYS[1], 'v', v, 'ver', ver)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', 100000, '*', 'k', KEYS[1], 'ver', ver)
return v
"""

RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# The fields swarm_memory keeps per entry, so HGETALL returns the same amount of data.
ENTRY_SHAPE = {
    "f": "json", "ver": 1, "cr": 1, "mr": 1, "ct": 1700000000000, "mt": 1700000000000,
    "by": "bench", "x": 0,
}  # fmt: skip

BATCH = 100
TASKS = 50


def _seed_entry(r: Any, key: str, value: bytes) -> None:
    r.hset(key, mapping={"v": value, **ENTRY_SHAPE})


class _Cas:
    """A single-writer CAS+XADD client: tracks the version it last wrote."""

    def __init__(self, r: Any, key: str, stream: str) -> None:
        self.r, self.key, self.stream = r, key, stream
        self.sha = r.script_load(CAS_XADD)
        self.ver = 0

    def put(self, value: Any) -> None:
        reply = self.r.evalsha(self.sha, 2, self.key, self.stream, self.ver, encode(value))
        if reply[0] != 1:
            raise RuntimeError(f"bare CAS lost: {reply!r}")
        self.ver = reply[1]


def single_cases(ctx: Ctx) -> list[Case]:
    """One client, one call at a time."""
    r = ctx.raw()
    data = encode(ctx.value).encode()
    kget, khash = ctx.fresh("get"), ctx.fresh("hash")
    r.set(kget, data)
    _seed_entry(r, khash, data)
    cas = _Cas(r, ctx.fresh("cas"), ctx.fresh("stream"))
    value = ctx.value

    def get() -> None:
        json.loads(r.get(kget))

    def hgetall() -> None:
        json.loads(r.hgetall(khash)[b"v"])

    return [
        Case("base.get", lambda n: timed(get, n), note="GET + json.loads"),
        Case("base.hgetall", lambda n: timed(hgetall, n), note="HGETALL (9 fields) + json.loads"),
        Case(
            "base.cas_xadd",
            lambda n: timed(lambda: cas.put(value), n),
            note="EVALSHA Lua CAS on 'ver' + HSET + XADD",
            close=r.close,
        ),
    ]


def batch_cases(ctx: Ctx) -> list[Case]:
    """The same, ``BATCH`` commands per pipeline round trip."""
    r = ctx.raw()
    data = encode(ctx.value).encode()
    keys = [ctx.fresh("bget") for _ in range(BATCH)]
    hashes = [ctx.fresh("bhash") for _ in range(BATCH)]
    stream = ctx.fresh("bstream")
    cas_keys = [ctx.fresh("bcas") for _ in range(BATCH)]
    versions = dict.fromkeys(cas_keys, 0)
    sha = r.script_load(CAS_XADD)
    pipe_seed = r.pipeline(transaction=False)
    for k, h in zip(keys, hashes, strict=True):
        pipe_seed.set(k, data)
        pipe_seed.hset(h, mapping={"v": data, **ENTRY_SHAPE})
    pipe_seed.execute()
    value = ctx.value

    def get_x100() -> None:
        pipe = r.pipeline(transaction=False)
        for k in keys:
            pipe.get(k)
        for raw in pipe.execute():
            json.loads(raw)

    def hgetall_x100() -> None:
        pipe = r.pipeline(transaction=False)
        for h in hashes:
            pipe.hgetall(h)
        for raw in pipe.execute():
            json.loads(raw[b"v"])

    def cas_x100() -> None:
        pipe = r.pipeline(transaction=False)
        for k in cas_keys:
            pipe.evalsha(sha, 2, k, stream, versions[k], encode(value))
        for k, reply in zip(cas_keys, pipe.execute(), strict=True):
            if reply[0] != 1:
                raise RuntimeError(f"bare CAS lost: {reply!r}")
            versions[k] = reply[1]

    return [
        Case("base.get.x100", lambda n: timed(get_x100, n), items=BATCH),
        Case("base.hgetall.x100", lambda n: timed(hgetall_x100, n), items=BATCH),
        Case("base.cas_xadd.x100", lambda n: timed(cas_x100, n), items=BATCH, close=r.close),
    ]


def async_cases(ctx: Ctx) -> list[Case]:
    """redis.asyncio, ``TASKS`` tasks each on its own key, one client (pool)."""
    import redis.asyncio

    data = encode(ctx.value).encode()
    hashes = [ctx.fresh("ahash") for _ in range(TASKS)]
    cas_keys = [ctx.fresh("acas") for _ in range(TASKS)]
    stream = ctx.fresh("astream")
    r = ctx.raw()
    sha = r.script_load(CAS_XADD)
    for h in hashes:
        _seed_entry(r, h, data)
    r.close()
    versions = dict.fromkeys(cas_keys, 0)
    value = ctx.value

    async def cas_task(a: Any, key: str, n: int) -> None:
        for _ in range(n):
            reply = await a.evalsha(sha, 2, key, stream, versions[key], encode(value))
            if reply[0] != 1:
                raise RuntimeError(f"bare CAS lost: {reply!r}")
            versions[key] = reply[1]

    async def get_task(a: Any, key: str, n: int) -> None:
        for _ in range(n):
            json.loads((await a.hgetall(key))[b"v"])

    def runner(task: Any, keys: list[str]) -> Any:
        async def main(n: int) -> Sample:
            a = redis.asyncio.Redis.from_url(ctx.url)
            try:
                return await timed_tasks(lambda k, count: task(a, k, count), keys, n)
            finally:
                await a.aclose()

        return lambda n: asyncio.run(main(n))

    return [
        Case("base.async.hgetall", runner(get_task, hashes), note=f"{TASKS} tasks"),
        Case("base.async.cas_xadd", runner(cas_task, cas_keys), note=f"{TASKS} tasks EVALSHA"),
    ]


def lock_case(ctx: Ctx) -> Case:
    """Bare lock: ``SET name token NX PX`` to acquire, Lua compare-and-delete to release."""
    r = ctx.raw()
    name = ctx.fresh("lock")
    release = r.script_load(RELEASE)

    def cycle() -> None:
        token = uuid.uuid4().hex
        if not r.set(name, token, nx=True, px=10_000):
            raise RuntimeError("bare lock: already held")
        if r.evalsha(release, 1, name, token) != 1:
            raise RuntimeError("bare lock: release failed")

    return Case(
        "base.lock", lambda n: timed(cycle, n), note="SET NX PX + Lua release", close=r.close
    )

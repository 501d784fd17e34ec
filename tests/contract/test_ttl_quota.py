"""TTL (per write and namespace default), the sweeper, and quotas (reject / evict-oldest)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from swarm_memory import QuotaExceeded


def _events(env, ns="team"):
    raw = env.raw.xrange(f"{env.prefix}:{{{ns}}}:events")
    return [(f[b"t"].decode(), f[b"k"].decode()) for _id, f in raw]


def test_ttl_per_write_expires_and_is_swept_from_every_index(env):
    mem = env.mem()
    mem.create_namespace("team", history=2)
    ns = mem.namespace("team")
    e = ns.put("short", 1, ttl=0.05)
    ns.put("short", 2, ttl=timedelta(milliseconds=50))
    ns.put("long", 1, ttl=3600)
    assert e.expires_at is not None and (e.expires_at - e.updated_at).total_seconds() == 0.05
    time.sleep(0.12)
    assert ns.get("short") is None  # expired reads as absent at once
    assert not ns.exists("short") and list(ns.keys()) == ["long"]
    ns.sweep()
    assert ("expire", "short") in _events(env)
    snap = env.snapshot()
    assert not [k for k in snap if k.endswith(b":e:short") or k.endswith(b":h:short")]
    for index in (b"idx", b"lru", b"exp"):
        members = snap.get(f"{env.prefix}:{{team}}:{index.decode()}".encode(), ("zset", []))[1]
        assert b"short" not in [m for m, _s in members]
    info = ns.info()
    assert info.keys == 1 and info.bytes == 1 and info.stats["expired"] == 1


def test_opportunistic_sweep_runs_on_ordinary_calls(env):
    mem = env.mem()
    mem.create_namespace("team")
    ns = mem.namespace("team")
    for i in range(5):
        ns.put(f"t{i}", i, ttl=0.03)
    time.sleep(0.08)
    ns.put("other", 1)  # the write's reply says expired entries are due; the client sweeps
    assert [t for t, _k in _events(env)].count("expire") == 5
    assert ns.info().keys == 1


def test_namespace_default_ttl_and_touch(env):
    mem = env.mem()
    mem.create_namespace("team", ttl=0.05)
    ns = mem.namespace("team")
    ns.put("a", 1)
    ns.put("b", 1, ttl=3600)
    assert ns.touch("a", 3600) is True
    assert ns.touch("missing", 10) is False
    assert ns.get("a").version == 1  # touch changes no version
    time.sleep(0.1)
    assert ns.get("a").value == 1 and ns.get("b").value == 1


def test_write_over_an_expired_entry_starts_a_new_incarnation(env):
    mem = env.mem()
    mem.create_namespace("team")
    ns = mem.namespace("team")
    first = ns.put("k", 1, ttl=0.03)
    time.sleep(0.06)
    e = ns.create("k", 2)  # create succeeds: the old entry has expired
    assert e.version == 1 and e.create_revision > first.create_revision
    assert ns.info().keys == 1


def test_max_keys_rejects_new_keys_but_not_updates(env):
    mem = env.mem()
    mem.create_namespace("team", max_keys=2)
    ns = mem.namespace("team")
    ns.put("a", 1)
    ns.put("b", 1)
    before = env.snapshot()
    with pytest.raises(QuotaExceeded) as exc:
        ns.put("c", 1)
    e = exc.value
    assert (e.limit_kind, e.limit, e.current, e.requested) == ("max_keys", 2, 2, 3)
    assert env.snapshot() == before
    assert ns.put("a", 2).version == 2  # updating at the limit is fine
    with pytest.raises(QuotaExceeded):
        ns.put_many({"a": 3, "c": 1})
    ns.delete("b")
    ns.put("c", 1)


def test_max_bytes_counts_encoded_sizes(env):
    mem = env.mem()
    mem.create_namespace("team", max_bytes=20)
    ns = mem.namespace("team")
    ns.put("a", "x" * 8)  # 10 bytes encoded
    ns.put("b", "y" * 8)
    with pytest.raises(QuotaExceeded) as exc:
        ns.put("a", "x" * 9)
    assert exc.value.limit_kind == "max_bytes" and exc.value.requested == 21
    ns.put("a", "x")  # shrinking is always fine
    assert ns.info().bytes == 13


def test_evict_oldest_makes_room_atomically(env):
    mem = env.mem()
    mem.create_namespace("team", max_keys=3, over_quota="evict-oldest")
    ns = mem.namespace("team")
    for k in "abc":
        ns.put(k, k)
    ns.put("a", "a2")  # a is now the most recently written
    ns.put("d", "d")
    assert sorted(ns.keys()) == ["a", "c", "d"]
    ns.put_many({"e": 1, "f": 1})  # least recently written first: c, then a
    assert sorted(ns.keys()) == ["d", "e", "f"]
    assert [k for t, k in _events(env) if t == "evict"] == ["b", "c", "a"]
    info = ns.info()
    assert info.keys == 3 and info.stats["evicted"] == 3


def test_evict_oldest_by_bytes_and_value_larger_than_quota(env):
    mem = env.mem()
    mem.create_namespace("team", max_bytes=30, over_quota="evict-oldest")
    ns = mem.namespace("team")
    for i in range(3):
        ns.put(f"k{i}", "x" * 8)  # 10 bytes each
    ns.put("big", "y" * 18)  # 20 bytes: two victims
    assert sorted(ns.keys()) == ["big", "k2"]
    with pytest.raises(QuotaExceeded):
        ns.put("huge", "z" * 40)
    assert sorted(ns.keys()) == ["big", "k2"]

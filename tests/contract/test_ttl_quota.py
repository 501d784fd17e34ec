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


# ----------------------------------------------- the eviction-order index (write.lua)
# Only an evict-oldest namespace keeps it; a switch to that policy rebuilds it from the
# entries' last-write revisions (lua/lru.lua), in batches of `clear_batch` names.
def _order(env, ns="team"):
    return [m.decode() for m in env.raw.zrange(f"{env.prefix}:{{{ns}}}:lru", 0, -1)]


def _meta(env, field, ns="team"):
    return env.raw.hget(f"{env.prefix}:{{{ns}}}:meta", field)


def test_a_reject_namespace_keeps_no_eviction_order_index(env):
    mem = env.mem()
    mem.create_namespace("team", max_keys=10)
    ns = mem.namespace("team")
    ns.put_many({"a": 1, "b": 2})
    ns.put("a", 3)
    ns.delete("b")
    assert not env.raw.exists(f"{env.prefix}:{{team}}:lru")
    mem.create_namespace("evicting", max_keys=10, over_quota="evict-oldest")
    mem.namespace("evicting").put_many({"x": 1, "y": 2})
    assert _order(env, "evicting") == ["x", "y"]


def test_an_update_drops_the_order_index_a_reject_namespace_stored_earlier(env):
    """Namespaces stored before the index was kept only under evict-oldest hold one in
    every namespace; their next update_namespace drops it there."""
    mem = env.mem()
    mem.create_namespace("team", max_keys=10)
    mem.namespace("team").put("a", 1)
    env.raw.zadd(f"{env.prefix}:{{team}}:lru", {"a": 2})  # as an earlier version kept it
    mem.update_namespace("team", history=2)
    assert not env.raw.exists(f"{env.prefix}:{{team}}:lru")


def test_switching_to_evict_oldest_orders_the_entries_written_before_it(env):
    mem = env.mem(clear_batch=2)  # the rebuild walks the key index two names a call
    mem.create_namespace("team", max_keys=5)
    ns = mem.namespace("team")
    for k in "edcba":
        ns.put(k, k)
    ns.put("d", "d2")  # oldest first now: e c b a d
    with pytest.raises(QuotaExceeded):
        ns.put("f", 1)
    info = mem.update_namespace("team", over_quota="evict-oldest")
    assert info.over_quota == "evict-oldest" and _meta(env, "lx") is None
    assert _order(env) == ["e", "c", "b", "a", "d"]
    ns.put("f", 1)
    ns.put_many({"g": 1, "h": 1})
    assert [k for t, k in _events(env) if t == "evict"] == ["e", "c", "b"]
    assert sorted(ns.keys()) == ["a", "d", "f", "g", "h"]
    # And back: leaving evict-oldest drops the index; quotas refuse again.
    mem.update_namespace("team", over_quota="reject")
    assert not env.raw.exists(f"{env.prefix}:{{team}}:lru") and _meta(env, "lx") is None
    with pytest.raises(QuotaExceeded):
        ns.put("i", 1)


def test_an_unfinished_rebuild_is_finished_by_the_write_that_needs_a_victim(env):
    """The state a switch leaves when the admin's client dies before rebuilding: "lx"
    set, the index holding only what writes added since. An over-quota write rebuilds it
    first (its own entries keep their newer revisions), then evicts the truly oldest."""
    mem = env.mem()
    mem.create_namespace("team", max_keys=4, over_quota="evict-oldest")
    ns = mem.namespace("team")
    for k in "abcd":
        ns.put(k, k)
    env.raw.delete(f"{env.prefix}:{{team}}:lru")
    env.raw.hset(f"{env.prefix}:{{team}}:meta", "lx", "12345")
    ns.put("a", "a2")  # a write since the switch: the index has it alone
    assert _order(env) == ["a"]
    ns.put("e", 1)
    assert [k for t, k in _events(env) if t == "evict"] == ["b"]
    assert _order(env) == ["c", "d", "a", "e"] and _meta(env, "lx") is None


def test_a_rebuild_starts_over_when_the_policy_is_switched_again_meanwhile(env):
    from swarm_memory import SwarmMemory
    from swarm_memory._ops.namespaces import rebuild_order

    mem = SwarmMemory.from_client(env.raw, agent="planner", settings=env.settings)
    mem.create_namespace("team", max_keys=10)
    ns = mem.namespace("team")
    for k in "abcdef":
        ns.put(k, k)
    env.raw.hset(f"{env.prefix}:{{team}}:meta", "lx", "1")  # as a switch leaves it
    slow = SwarmMemory.from_client(
        env.raw, agent="planner", settings=env.settings.model_copy(update={"clear_batch": 2})
    )

    switched = []

    def interrupted(flow):  # a second switch (off and on) after the rebuild's 2nd call
        effect, calls = next(flow), 0
        while True:
            reply = yield effect
            calls += 1
            if calls == 2:
                switched.append(calls)
                mem.update_namespace("team", over_quota="reject")
                mem.update_namespace("team", over_quota="evict-oldest")  # rebuilt, done
                env.raw.delete(f"{env.prefix}:{{team}}:lru")
                env.raw.hset(f"{env.prefix}:{{team}}:meta", "lx", "2")  # a new switch
            try:
                effect = flow.send(reply)
            except StopIteration as stop:
                return stop.value

    slow._driver.run(interrupted(rebuild_order(slow._ctx("team"))))
    assert switched == [2]  # the switch came mid-walk (6 names, 2 a call)
    assert _order(env) == list("abcdef") and _meta(env, "lx") is None

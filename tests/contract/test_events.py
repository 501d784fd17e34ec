"""The change feed: watch / subscribe / broadcast / audit / snapshot, every backend."""

from __future__ import annotations

import uuid

import pytest
import redis

from swarm_memory import EventsTrimmed, PermissionDenied, Settings, SwarmMemory
from swarm_memory.keys import NamespaceKeys
from tests.support import drain
from tests.unit.test_validation import ReversedJson


@pytest.fixture
def mem(env):
    m = env.mem("planner", watch_poll=0.2)
    m.create_namespace("team", history=3, permissions={"reader": "read"})
    return m


def test_watch_new_events_in_order_with_filters(env, mem):
    ns = mem.namespace("team")
    ns.put("before", 1)
    w = ns.watch("task-*")
    kinds = ns.watch(types={"delete", "broadcast"})
    ns.put("task-1", {"a": 1})
    ns.put_many({"task-2": 2, "other": 3, "task-3": 3})
    ns.delete("task-1")
    ns.broadcast({"msg": "hello"})
    got = drain(w, 5)
    assert [(e.type, e.key) for e in got] == [
        ("put", "task-1"),
        ("put", "task-2"),
        ("put", "task-3"),
        ("delete", "task-1"),
        ("broadcast", None),
    ]
    revs = [(e.revision, e.seq) for e in got]
    assert revs == sorted(revs) and got[1].revision == got[2].revision
    assert got[1].count == 3 and got[0].agent == "planner"
    assert w.get(0.2) is None  # "other" was filtered out
    assert [(e.type, e.key) for e in drain(kinds, 2)] == [
        ("delete", "task-1"),
        ("broadcast", None),
    ]
    w.close()
    kinds.close()


def test_small_values_ride_in_events_large_ones_are_fetched(env, mem):
    ns = mem.namespace("team")
    w = ns.watch()
    ns.put("small", {"n": 123456789012345678})
    ns.put("large", "x" * 1000)
    small, large = drain(w, 2)
    assert small.has_value and small.value == {"n": 123456789012345678}
    assert not large.has_value and large.value is None
    assert ns.get("large", version=large.version).value == "x" * 1000
    w.close()


def test_a_json_value_rides_without_a_format_field_another_format_with_its_own(env, mem):
    """The feed stores a carried value's "f" only when it is not "json" (publish_events
    in lua/_lib.lua, stop 24: a missing "f" reads as "json"); both read back whole from
    the stream, from a put and from a put_many's several events."""
    ns = mem.namespace("team")
    custom = SwarmMemory.from_client(
        env.raw, agent="planner", settings=env.settings, codec=ReversedJson()
    )
    ns.put("j", {"a": 1})
    custom.namespace("team").put("r", {"b": 2})
    ns.put_many({"j2": [1], "j3": "x"})
    custom.namespace("team").put_many({"r2": [2], "r3": "y"})
    stored = {
        fields[b"k"]: fields
        for _, fields in env.raw.xrange(NamespaceKeys.of(env.prefix, "team").events)
        if fields.get(b"t") == b"put"
    }
    for key in (b"j", b"j2", b"j3"):
        assert b"f" not in stored[key] and b"d" in stored[key]
    for key in (b"r", b"r2", b"r3"):
        assert stored[key][b"f"] == b"rjson"
    w = custom.namespace("team").watch(since=0)  # from the stream, not a doorbell
    values = {e.key: e.value for e in drain(w, 7) if e.type == "put"}
    w.close()
    custom.close()
    want = {"j": {"a": 1}, "r": {"b": 2}, "j2": [1], "j3": "x", "r2": [2], "r3": "y"}
    assert values == want


def test_replay_from_a_revision_and_resume_from_a_cursor(env, mem):
    ns = mem.namespace("team")
    ns.put("a", 1)
    ns.put_many({"b": 1, "c": 1, "d": 1})
    ns.delete("a")
    everything = ns.watch(since=0)
    got = drain(everything, 6)
    assert [e.type for e in got] == ["ns_create", "put", "put", "put", "put", "delete"]
    everything.close()
    # Resume in the middle of the put_many revision: the rest of it, then what follows.
    second = got[3]
    assert (second.key, second.seq, second.count) == ("c", 1, 3)
    resumed = ns.watch(since=second.cursor)
    assert [(e.type, e.key) for e in drain(resumed, 2)] == [("put", "d"), ("delete", "a")]
    resumed.close()
    after_rev = ns.watch(since=got[1].revision)  # everything after the revision of put a
    assert [e.key for e in drain(after_rev, 4)] == ["b", "c", "d", "a"]
    after_rev.close()


def test_every_kind_of_change_is_an_event(env):
    mem = env.mem("planner", watch_poll=0.2)
    mem.create_namespace("life", max_keys=2, over_quota="evict-oldest")
    ns = mem.namespace("life")
    w = ns.watch(since=0)
    ns.put("a", 1)
    ns.put("b", 1)
    ns.put("c", 1)  # evicts a
    ns.touch("b", 60)
    ns.put("t", 1, ttl=0.02)  # evicts b
    env.sleep(0.05)
    ns.sweep()
    mem.update_namespace("life", history=2)
    ns.grant({"w": "write"})
    ns.revoke(["w"])
    mem.clear_namespace("life")
    types = [e.type for e in drain(w, 14)]
    assert types == [
        "ns_create",
        "put",
        "put",
        "evict",
        "put",
        "touch",
        "evict",
        "put",
        "expire",
        "ns_update",
        "ns_grant",
        "ns_revoke",
        "delete",
        "ns_clear",
    ]
    w.close()


def test_trimmed_cursor_raises_never_a_silent_gap(env):
    mem = env.mem("planner", watch_poll=0.2)
    mem.create_namespace("short", max_events=5)
    ns = mem.namespace("short")
    for i in range(300):
        ns.put(f"k{i % 7}", i)
    with pytest.raises(EventsTrimmed) as exc:
        ns.watch(since=1)
    assert exc.value.requested == 2 and exc.value.oldest > 2
    recent = ns.watch(since=ns.info().revision - 2)
    assert len(drain(recent, 2)) == 2
    recent.close()


def test_permissions_on_the_feed_and_the_audit_log(env, mem):
    ns = mem.namespace("team")
    nobody = mem.as_agent("nobody")
    mem.update_namespace("team", default_permission="none")
    with pytest.raises(PermissionDenied) as exc:
        nobody.namespace("team").watch()
    assert exc.value.action == "watch" and exc.value.required == "read"
    with pytest.raises(PermissionDenied):
        nobody.namespace("team").audit()
    reader = mem.as_agent("reader").namespace("team")
    with pytest.raises(PermissionDenied) as exc:
        reader.broadcast("not allowed")
    assert exc.value.required == "write"
    w = reader.watch()
    ns.broadcast({"to": "all"})
    ev = w.get(5)
    assert ev.type == "broadcast" and ev.value == {"to": "all"} and ev.agent == "planner"
    w.close()


def test_audit_log_filters(env, mem):
    ns = mem.namespace("team")
    ns.put("a", 1)
    ns.delete("a")
    with pytest.raises(PermissionDenied):
        mem.as_agent("reader").namespace("team").put("x", 1)
    records = ns.audit()  # newest first
    assert [(r.agent, r.action, r.outcome) for r in records] == [
        ("reader", "put", "denied"),
        ("planner", "delete", "ok"),
        ("planner", "put", "ok"),
        ("planner", "ns_create", "ok"),
    ]
    assert records[1].revision == records[2].revision + 1
    by_reader = ns.audit(agent="reader")
    assert [(r.action, r.outcome) for r in by_reader] == [("put", "denied")]
    deletes = ns.audit(action="delete")
    assert [(r.agent, r.key, r.outcome) for r in deletes] == [("planner", "a", "ok")]
    assert len(ns.audit(limit=1)) == 1
    times = [r.time for r in ns.audit()]
    assert times == sorted(times, reverse=True)


def test_snapshot_then_watch_misses_nothing(env, mem):
    ns = mem.namespace("team")
    ns.put_many({"a": 1, "b": 2})
    snap = ns.snapshot()
    assert {k: e.value for k, e in snap.entries.items()} == {"a": 1, "b": 2}
    ns.put("c", 3)
    w = ns.watch(since=snap.revision)
    assert [e.key for e in drain(w, 1)] == ["c"]
    w.close()


def test_subscribe_survives_a_raising_callback(env, mem):
    ns = mem.namespace("team")
    seen, reported = [], []

    def callback(event):
        seen.append(event.key)
        if event.key == "boom":
            raise RuntimeError("callback bug")

    sub = ns.subscribe(callback, pattern="*", on_error=lambda exc, ev: reported.append(ev.key))
    for key in ("one", "boom", "two"):
        ns.put(key, 1)
    for _ in range(50):
        if len(seen) == 3:
            break
        env.sleep(0.05)
    assert seen == ["one", "boom", "two"]
    assert reported == ["boom"] and sub.errors == 1 and sub.delivered == 2
    sub.unsubscribe()
    ns.put("after", 1)
    env.sleep(0.3)
    assert seen == ["one", "boom", "two"]


def test_expiry_events_reach_watchers_without_other_traffic(env, mem):
    """The watcher's reads run the sweeper when entries are due: the delay of an
    ``expire`` event is bounded by the watch poll interval, not by other traffic."""
    ns = mem.namespace("team")
    ns.put("lease", 1, ttl=0.05)
    w = ns.watch(types={"expire"})
    ev = w.get(5)  # nothing else is written: only the watcher's own polling sweeps
    assert ev is not None and (ev.type, ev.key) == ("expire", "lease")
    w.close()


def test_big_batches_arrive_through_the_stream_read(env, mem):
    """A put_many too large to ride in the doorbell still reaches watchers whole."""
    ns = mem.namespace("team")
    w = ns.watch()
    ns.put_many({f"k{i:03d}": i for i in range(100)})
    got = drain(w, 100)
    assert [e.key for e in got] == [f"k{i:03d}" for i in range(100)]
    assert {e.count for e in got} == {100} and [e.seq for e in got] == list(range(100))
    w.close()


def test_which_keyless_events_a_key_pattern_admits(env):
    """watch("plan*") used to deliver ns_create (key None). A key pattern admits the key
    events of matching keys plus broadcast, ns_clear and ns_delete; ns_create/update/
    grant/revoke only come with "*" or when named in types."""
    mem = env.mem("planner", watch_poll=0.2)
    mem.create_namespace("team")
    ns = mem.namespace("team")
    plans = ns.watch("plan*", since=0)
    named = ns.watch("plan*", types={"put", "ns_grant"}, since=0)
    everything = ns.watch(since=0)
    ns.put("plan", 1)
    ns.put("other", 1)
    mem.update_namespace("team", history=2)
    ns.grant({"worker": "read"})
    ns.broadcast({"msg": "stop"})
    mem.clear_namespace("team")
    assert [(e.type, e.key) for e in drain(plans, 4)] == [
        ("put", "plan"),
        ("broadcast", None),
        ("delete", "plan"),
        ("ns_clear", None),
    ]
    assert plans.get(0.3) is None
    assert [(e.type, e.key) for e in drain(named, 2)] == [("put", "plan"), ("ns_grant", None)]
    assert [e.type for e in drain(everything, 9)] == [
        "ns_create", "put", "put", "ns_update", "ns_grant", "broadcast", "delete", "delete",
        "ns_clear",
    ]  # fmt: skip


def test_a_long_feed_is_trimmed_to_its_bound_every_16th_revision(redis_server):
    """The feed is trimmed (MAXLEN ~) by one XADD of a call (lua/_lib.lua,
    publish_events): with a bound of 1024 events or more, a one-event write trims on
    every 16th revision, so the stream holds at most 15 revisions' events past Redis's
    own "~" slack (whole stream nodes, 100 entries by default), and never fewer than the
    bound once it has that many; a call with many events trims at its last."""
    raw = redis.Redis(port=redis_server.port)
    prefix = f"trim{uuid.uuid4().hex[:8]}"
    mem = SwarmMemory.from_url(
        redis_server.url, agent="planner", settings=Settings(key_prefix=prefix)
    )
    mem.create_namespace("long", max_events=1024)
    ns = mem.namespace("long")
    events = NamespaceKeys.of(prefix, "long").events
    bound, slack = 1024, 100 + 15
    for i in range(1300):
        ns.put(f"k{i % 7}", i)
        if i % 50 == 49 or i >= 1290:
            assert raw.xlen(events) <= bound + slack, i
    assert bound <= raw.xlen(events) <= bound + slack
    ns.put_many({f"m{i}": i for i in range(150)})  # one revision of 150 events
    assert bound <= raw.xlen(events) <= bound + slack
    mem.close()
    raw.close()


def test_broadcast_op_records_are_purged_past_the_dedupe_window(env):
    """A broadcast records its op id (a replay answers with its first revision); those
    records are purged past the namespace's dedupe window as a write's are, every 8th
    revision, so a namespace only broadcasts use does not keep them all (it kept every
    one before stop 23)."""
    mem = env.mem("planner", dedupe_window=0.2)
    mem.create_namespace("chat")
    ns = mem.namespace("chat")
    keys = NamespaceKeys.of(env.prefix, "chat")
    for i in range(40):
        ns.broadcast({"n": i})
    assert env.raw.hlen(keys.ops) == 40
    env.sleep(0.3)
    for i in range(24):  # three purges of up to 64 records each
        ns.broadcast({"n": i})
    assert env.raw.hlen(keys.ops) <= 24 and env.raw.llen(keys.ops_time) <= 24
    rev = ns.broadcast({"n": "last"}, op_id="last-one")
    assert ns.broadcast({"n": "last"}, op_id="last-one") == rev  # a replay in the window

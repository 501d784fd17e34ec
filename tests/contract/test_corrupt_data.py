"""Data the library did not write (issue 12): every parser of stored or published data is
bounded and typed, and every script checks what it reads and the type of every key it
will write before its first write. A corrupt record is one CorruptData naming its Redis
key — never a hang, a runaway script, a raw IndexError/KeyError/ValueError, or a write
that half-applies; a bad feed entry or doorbell is reported and skipped.

Each test is one reproduction from the issue (found on redis-server 7.0.15), on every
backend and both clients. The timeouts turn a hang (the bug) into a failure."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from swarm_memory import CorruptData, InvalidOption, SwarmMemoryError
from swarm_memory.keys import NamespaceKeys, PresenceKeys
from tests.support import drain, op_times, set_entry_field, to_legacy, to_legacy_op_index

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def mem(env):
    m = env.mem("planner", watch_poll=0.2, socket_timeout=5.0)
    m.create_namespace("team", history=3)
    return m


@pytest.fixture
def keys(env) -> NamespaceKeys:
    return NamespaceKeys.of(env.prefix, "team")


def _corrupt(call: Callable[[], Any], key: str) -> CorruptData:
    with pytest.raises(CorruptData) as info:
        call()
    assert info.value.key == key, info.value
    assert info.value.problem and key in str(info.value)
    return info.value


# --------------------------------------------------------------------- lock records
def test_lock_record_with_a_negative_length_is_corrupt_data_not_a_hung_server(env, mem, keys):
    # Was: the Lua record parser read "-4" as a count and looped, growing memory, until
    # SCRIPT KILL; every client got BUSY meanwhile.
    ns = mem.namespace("team")
    env.raw.hset(keys.lock_records, "L0", "-4:")
    _corrupt(lambda: ns.lock("L0", wait=0).acquire(), keys.lock_records)
    assert env.raw.ping()
    ns.put("other", 1)  # the namespace's other keys are unaffected
    with ns.lock("L1", wait=0):
        pass


def test_listing_locks_with_a_corrupt_record_is_corrupt_data_not_a_hang(env, mem, keys):
    # Was: Python's unpack looped forever on "-3:" (ns.locks() never returned).
    ns = mem.namespace("team")
    ns.lock("L0", ttl=30, wait=0).acquire()
    env.raw.hset(keys.lock_records, "L0", "-3:")
    _corrupt(ns.locks, keys.lock_records)
    bad_records = (
        *(b"x", b"1:x", b"1:q1:a1:b2:991:1", b"1:x1:a1:b3:abc1:1", b"999999999999:x"),
        *(b"1:x1:a1:b2:992:1", b"1:x1:a1:b2:99:1"),  # a part past the end, one without a length
    )
    for bad in bad_records:
        env.raw.hset(keys.lock_records, "L0", bad)
        _corrupt(ns.locks, keys.lock_records)
        _corrupt(lambda: ns.lock("L0", wait=0).acquire(), keys.lock_records)


@pytest.mark.parametrize("counter", [b"soon", b"-5", b"1.5", b"007", b"99999999999999999999"])
def test_a_corrupt_fencing_counter_is_corrupt_data_naming_its_key(env, mem, keys, counter):
    """The counter beside the lock records (lua/_lib.lua LOCK_COUNTER), or meta's where
    it still is: a corrupt one refuses the acquire with nothing written."""
    ns = mem.namespace("team")
    with ns.lock("L0", wait=0):
        pass
    env.raw.hset(keys.lock_records, "\0lt", counter)
    _corrupt(lambda: ns.lock("L1", wait=0).acquire(), keys.lock_records)
    assert env.raw.hget(keys.lock_records, "L1") is None
    env.raw.hdel(keys.lock_records, "\0lt")
    env.raw.hset(keys.meta, "lt", counter)
    _corrupt(lambda: ns.lock("L1", wait=0).acquire(), keys.meta)
    assert env.raw.hget(keys.lock_records, "L1") is None


def test_an_index_naming_the_fencing_counter_leaves_it(env, mem, keys):
    """A lock index member named like the counter's field (only a hand-made index holds
    one) is pruned from the index without taking the counter with it."""
    ns = mem.namespace("team")
    with ns.lock("L0", wait=0) as lock:
        token = int(lock.token)
    env.raw.zadd(keys.locks, {"\0lt": 1})  # due long ago
    with ns.lock("L1", wait=0) as lock:
        assert int(lock.token) > token
    assert env.raw.zscore(keys.locks, "\0lt") is None
    assert env.raw.hget(keys.lock_records, "\0lt") is not None


def test_an_expired_corrupt_lock_record_is_pruned_not_blocking_other_locks(env, mem, keys):
    ns = mem.namespace("team")
    env.raw.hset(keys.lock_records, "old", "-4:")
    env.raw.zadd(keys.locks, {"old": 1})  # its lease ran out long ago
    with ns.lock("L1", wait=0) as lock:  # an acquire prunes expired records
        assert lock.token is not None
    assert env.raw.hget(keys.lock_records, "old") is None


def test_lock_mode_of_the_wrong_type_is_invalid_option(mem):
    # Was: TypeError (unhashable type: 'dict').
    with pytest.raises(InvalidOption):
        mem.namespace("team").lock("x", mode={})


# ----------------------------------------------------------------------- op records
def test_corrupt_op_record_is_corrupt_data_not_a_hang(env, mem, keys):
    # Was: the replay of OPG hung the client in Python's unpack.
    ns = mem.namespace("team")
    env.raw.hset(keys.ops, "OPG", "w1 - 5 5 1 0 1|w 1 1 1 0 1|-3:")
    _corrupt(lambda: ns.put("k1", {"i": 1}, op_id="OPG"), keys.ops)
    for bad in ("w1 - 5 5 9 0 0|", "w1 - x 5 1 0 0|w 1 1 1 0 1|", "w1 - 5 5 1 0 1|w 1 1 1 0 1|"):
        env.raw.hset(keys.ops, "OPG", bad)
        _corrupt(lambda: ns.put("k1", {"i": 1}, op_id="OPG"), keys.ops)
    assert ns.get("k1") is None  # nothing was written
    assert ns.put("k1", {"i": 1}, op_id="fresh").version == 1


# ---------------------------------------------------------------------------- entries
@pytest.mark.parametrize(
    "field, value",
    [
        ("ver", "abc"),  # was IndexError (a nil truncated the script's reply)
        ("ver", "inf"),
        ("mr", "1.5"),
        ("cr", "nan"),
        ("ct", "99999999999999999999"),  # past 2**53: not exact
        ("x", ""),
        ("v", "{bad"),  # was JSONDecodeError
        ("v", b"\xff\xfe\x00"),  # was UnicodeDecodeError
        ("v", "[" * 100_000 + "]" * 100_000),  # was RecursionError
        ("f", "no-such-codec"),
        ("f", "json+z"),  # "compressed", but not zlib data
        ("mt", "99999999999999999"),  # a time out of datetime's range
    ],
)
@pytest.mark.parametrize("layout", ["packed", "legacy"])
def test_a_corrupt_entry_field_is_corrupt_data_naming_the_entry(  # noqa: PLR0917
    env, mem, keys, field, value, layout
):
    ns = mem.namespace("team")
    ns.put("k1", {"i": 1})
    ns.put("k2", 2)
    if layout == "legacy":
        to_legacy(env.raw, keys.entry("k1"))
    set_entry_field(env.raw, keys.entry("k1"), field, value)
    for call in (
        lambda: ns.get("k1"),
        lambda: ns.get_many(["k2", "k1"]),
        lambda: ns.history("k1"),
        lambda: ns.get("k1", version=1),
    ):
        _corrupt(call, keys.entry("k1"))
    assert ns.get("k2").value == 2


def test_an_entry_without_its_version_is_corrupt_not_absent(env, mem, keys):
    # Was: get() returned None while keys() listed the key.
    ns = mem.namespace("team")
    ns.put("k1", 1)
    env.raw.hdel(keys.entry("k1"), "m")
    _corrupt(lambda: ns.get("k1"), keys.entry("k1"))
    _corrupt(lambda: ns.put("k1", 2), keys.entry("k1"))
    _corrupt(lambda: ns.exists("k1"), keys.entry("k1"))


def test_writes_over_a_corrupt_entry_change_nothing(env, mem, keys):
    ns = mem.namespace("team")
    ns.put("k1", 1)
    set_entry_field(env.raw, keys.entry("k1"), "ver", "x")
    before = env.snapshot()
    for call in (
        lambda: ns.put("k1", 2),
        lambda: ns.put_many({"k0": 0, "k1": 1}),
        lambda: ns.incr("k1"),
        lambda: ns.delete("k1"),
        lambda: ns.touch("k1", 30),
    ):
        _corrupt(call, keys.entry("k1"))
    assert env.snapshot() == before


def test_an_emptied_value_deletes_without_a_server_error(env, mem, keys):
    """Deleting an entry whose value was emptied outside the library: its size is 0 and
    the byte counter's HINCRBY got "-0", which Redis refuses halfway through the script
    (found by the corruption fuzz, seed 1)."""
    ns = mem.namespace("team")
    ns.put("k1", 1)
    env.raw.hset(keys.entry("k1"), "v", "")
    assert ns.delete("k1") is True
    assert ns.get("k1") is None and ns.info().keys == 0


def test_counters_redis_would_refuse_are_corrupt_before_anything_is_written(env, mem, keys):
    """A counter spelled "007" or "5.0" reads as a number in Lua but HINCRBY refuses it:
    the checks refuse it first, so the write fails whole, with nothing written."""
    ns = mem.namespace("team")
    ns.put("k1", 1)
    for spelling in ("007", "5.0", "+5", " 5"):
        env.raw.hset(keys.meta, "b", spelling)
        before = env.snapshot()
        _corrupt(lambda: ns.delete("k1"), keys.meta)
        assert env.snapshot() == before


def test_a_merge_into_a_stored_value_that_is_not_json_is_corrupt_data(env, mem, keys):
    ns = mem.namespace("team")
    mem.update_namespace("team", strategy="merge")
    ns.put("k1", {"a": 1})
    env.raw.hset(keys.entry("k1"), "v", '{"a":"unterminated')
    before = env.snapshot()
    _corrupt(lambda: ns.put("k1", {"b": 2}), keys.entry("k1"))
    assert env.snapshot() == before


# Texts that pass the flat merge's first check (a "{" first, then no backslash, no
# "\x01", "{", "[" or "]"; lua/_lib.lua flat_splice), or all of it but one, and
# not its skeleton: each must reach the member reading, which raises, and not be spliced
# into. Five of them the member reading took before stop 26 (a scalar running into a
# quote, text after the closing brace): it reads them as malformed now too.
NEAR_FLAT = [
    '{"a":1,}',
    '{"a":"b"x}',
    '{"a":1}}',
    '{"a":"b}',
    '{"a"}',
    '{"a":}',
    '{"a":1"b":2}',
    '{"a":1,"b":2',
    '{"a":1}x',
    '{,"a":1}',
    '{"a":1,\x00}',
    '{"a\x00":1,"b":2,}',
    "{}x",
    '{"a":"x"} ,',
    '{"a":1,\x00:2}',
    r'{"a":"x\\"}',
    "{M}",
    "{M,M}",
    '{"a":1,\x01:2}',
    '{"a":"x","b":1]}',
]


@pytest.mark.parametrize("text", NEAR_FLAT)
def test_a_merge_into_a_malformed_flat_object_is_corrupt_data(env, mem, keys, text):
    ns = mem.namespace("team")
    mem.update_namespace("team", strategy="merge")
    ns.put("k1", {"a": 1})
    env.raw.hset(keys.entry("k1"), "v", text.encode().decode("unicode_escape"))
    before = env.snapshot()
    _corrupt(lambda: ns.put("k1", {"b": 2}), keys.entry("k1"))
    _corrupt(lambda: ns.put("k1", {"a": None}), keys.entry("k1"))
    assert env.snapshot() == before


def test_corrupt_history_is_corrupt_data_naming_the_history(env, mem, keys):
    ns = mem.namespace("team")
    ns.put("k1", 1)
    ns.put("k1", 2)
    env.raw.hset(keys.history("k1"), "m1", "-3:")
    _corrupt(lambda: ns.history("k1"), keys.history("k1"))
    _corrupt(lambda: ns.get("k1", version=1), keys.history("k1"))
    env.raw.hset(keys.history("k1"), "mzz", "1:1")
    _corrupt(lambda: ns.history("k1"), keys.history("k1"))


def test_corrupt_namespace_settings_are_corrupt_data_naming_the_meta(env, mem, keys):
    # Writes read the settings packed in "cfg" (lua/_lib.lua namespace_cfg), info reads
    # the fields: each is checked where it is read.
    ns = mem.namespace("team")
    cfg = env.raw.hget(keys.meta, "cfg")
    assert cfg is not None and cfg.count(b",") == 8
    for bad in (cfg.replace(b",0,", b",soon,", 1), b"", b"a,b", cfg + b",x"):
        env.raw.hset(keys.meta, "cfg", bad)
        before = env.snapshot()
        _corrupt(lambda: ns.put("k", 1), keys.meta)
        assert env.snapshot() == before
    env.raw.hset(keys.meta, "cfg", cfg)
    env.raw.hset(keys.meta, "ttl", "soon")
    before = env.snapshot()
    _corrupt(ns.info, keys.meta)
    # A namespace stored before "cfg" existed: its writes read the fields one by one.
    env.raw.hdel(keys.meta, "cfg")
    before = env.snapshot()
    _corrupt(lambda: ns.put("k", 1), keys.meta)
    assert env.snapshot() == before
    env.raw.hset(keys.meta, "ttl", "0")
    assert ns.put("k", 1).version == 1
    env.raw.hset(keys.meta, "ttl", "0")
    env.raw.hset(keys.acl, "someone", "root")  # (an unknown level grants nothing: "none")
    _corrupt(ns.info, keys.meta)  # the info reply names the meta hash; the problem says why


def test_a_binary_name_in_the_index_is_corrupt_data_naming_the_index(env, mem, keys):
    ns = mem.namespace("team")
    ns.put("a", 1)
    env.raw.zadd(keys.index, {b"\xff\xfe": 0})
    _corrupt(lambda: list(ns.keys()), keys.index)


def test_garbage_presence_is_corrupt_data_naming_the_presence_hash(env, mem):
    # Was: ValueError from int(float(...)).
    mem.heartbeat()
    presence = PresenceKeys.of(env.prefix)
    env.raw.hset(presence.seen, "planner", "yesterday")
    _corrupt(mem.agents, presence.seen)


# ------------------------------------------------- keys of the wrong type (issue 12 §2)
def _calls(mem: Any) -> dict[str, Callable[[], Any]]:
    ns = mem.namespace("team")
    return {
        "put": lambda: ns.put("new", 1, op_id="OPX"),
        "put_many": lambda: ns.put_many({"a": 1, "b": 2}),
        "delete": lambda: ns.delete("k1"),
        "incr": lambda: ns.incr("n"),
        "broadcast": lambda: ns.broadcast("hi"),
        "lock": lambda: ns.lock("L", wait=0).acquire(),
        "grant": lambda: ns.grant({"w": "write"}),
        "clear": ns.clear,
    }


# (key, what it becomes, calls that must fail with nothing written)
WRONG_TYPES = [
    ("events", "string", ["put", "put_many", "delete", "incr", "broadcast", "grant", "clear"]),
    # A successful data write's audit record is its event (DESIGN.md decision 2): writes
    # never touch the audit stream; what it does keep must still fail cleanly.
    ("audit", "string", ["broadcast", "grant", "clear"]),
    ("audit", "hash", ["broadcast"]),
    ("stats", "zset", ["put", "incr", "broadcast", "lock"]),
    ("index", "string", ["put", "put_many", "keys"]),
    # Only an evict-oldest namespace keeps (and so checks) the eviction-order index: the
    # test switches "team" to it for this row; test_a_wrong_typed_order_index_... below.
    ("lru", "hash", ["put", "incr"]),
    ("expiry", "string", ["put", "get"]),
    ("ops_time", "hash", ["put", "broadcast"]),
    ("ops", "string", ["put", "broadcast"]),
    ("acl", "string", ["put", "get", "grant"]),
    # A read takes the namespace's default level from the ACL hash's marker while it has
    # one (ACL_MARK, lua/_lib.lua), never reading meta: see the test after this one.
    ("meta", "zset", ["put", "lock", "broadcast"]),
    ("history", "string", ["put", "history"]),
]


@pytest.mark.parametrize("name, kind, calls", WRONG_TYPES)
def test_a_key_of_the_wrong_type_fails_the_call_before_anything_is_written(  # noqa: PLR0917
    env, mem, keys, name, kind, calls
):
    # Was: put raised WRONGTYPE after the entry was written and the revision bumped, with
    # no op record, so replaying its op id wrote version 2.
    ns = mem.namespace("team")
    ns.put("k1", 1)  # history 3: the next put writes the history hash
    if name == "lru":
        mem.update_namespace("team", over_quota="evict-oldest")
    key = keys.history("k1") if name == "history" else getattr(keys, name)
    env.raw.delete(key)
    {
        "string": lambda: env.raw.set(key, "x"),
        "hash": lambda: env.raw.hset(key, "x", "y"),
        "zset": lambda: env.raw.zadd(key, {"x": 1}),
    }[kind]()
    table = _calls(mem) | {
        "get": lambda: ns.get("k1"),
        "keys": lambda: list(ns.keys()),
        "put": lambda: ns.put("k1", 2),
        "history": lambda: ns.history("k1"),
    }
    if name != "history":
        table["put"] = lambda: ns.put("new", 1, op_id="OPX")
    for call in calls:
        before = env.snapshot()
        _corrupt(table[call], key)
        assert env.snapshot() == before, call
    # After repair the op id was never used: its first (and only) application is now.
    env.raw.delete(key)
    if name == "meta":
        return  # the namespace is gone with its metadata
    if name == "acl":
        env.raw.hset(keys.acl, "planner", "admin")
    entry = ns.put("new", 1, op_id="OPX")
    assert entry.version == 1
    assert ns.put("new", 1, op_id="OPX").version == 1  # a replay: the first outcome


def test_a_read_goes_by_the_acl_marker_and_without_it_by_meta(env, mem, keys):
    """A read takes the default level from the ACL hash's marker ("#", lua/_lib.lua
    read_access) while it has one, and meta is not read: a meta of the wrong type is
    then no reason to fail it. A namespace without the marker (stored by an earlier
    version) is read by its meta as before, and the wrong type is CorruptData."""
    ns = mem.namespace("team")
    ns.put("k1", 1)
    saved = env.raw.dump(keys.meta)
    env.raw.delete(keys.meta)
    env.raw.zadd(keys.meta, {"x": 1})
    entry = ns.get("k1")
    assert entry is not None and entry.value == 1
    env.raw.hdel(keys.acl, "#")
    before = env.snapshot()
    _corrupt(lambda: ns.get("k1"), keys.meta)
    assert env.snapshot() == before
    env.raw.delete(keys.meta)
    env.raw.restore(keys.meta, 0, saved)
    assert ns.get("k1") is not None


def test_a_wrong_typed_order_index_is_not_read_or_written_outside_evict_oldest(env, mem, keys):
    """A "reject" namespace keeps no eviction-order index (write.lua): its writes and
    deletes neither read nor touch that key, whatever it holds; switching the namespace
    to evict-oldest replaces it with the rebuilt index."""
    ns = mem.namespace("team")
    ns.put("k1", 1)
    assert not env.raw.exists(keys.lru)
    env.raw.hset(keys.lru, "x", "y")
    ns.put("k1", 2)
    ns.put("k2", 1)
    ns.delete("k2")
    assert env.raw.hgetall(keys.lru) == {b"x": b"y"}
    mem.update_namespace("team", over_quota="evict-oldest")
    assert env.raw.type(keys.lru) == b"zset"
    assert env.raw.zrange(keys.lru, 0, -1) == [b"k1"]


def test_a_refused_event_undoes_the_writes_before_it_even_the_first_counter(env, mem):
    """A write bumps its stats counter and indexes its op id before the events' XADD
    (write.lua, 2b); when that XADD is refused both are undone. In a namespace that never
    counted a put, the undone counter is removed, not left at 0."""
    mem.create_namespace("fresh")
    ns = mem.namespace("fresh")
    fresh = NamespaceKeys.of(env.prefix, "fresh")
    assert env.raw.hget(fresh.stats, "put") is None
    env.raw.delete(fresh.events)
    env.raw.set(fresh.events, "x")
    before = env.snapshot()
    _corrupt(lambda: ns.put("a", 1, op_id="OPF"), fresh.events)
    assert env.snapshot() == before
    assert env.raw.hget(fresh.stats, "put") is None


@pytest.mark.parametrize("index", ["list", "zset"])
def test_an_undo_keeps_an_op_id_the_purge_index_already_held(env, mem, keys, index):
    """An op id whose record is gone but whose purge-index entry is left (corrupt data),
    reused by a write (or a lock release) that then fails on a corrupt counter: the undo
    removes only what the call added, so the index is as it was (the corruption fuzz
    found the entry removed). On both kinds of index: the list of namespaces since stop
    22 (the undo pops the element the call pushed) and the sorted set of older ones."""
    ns = mem.namespace("team")
    ns.put("k1", 1, op_id="OPU")
    lock = ns.lock("L", wait=0)
    lock.acquire()
    env.raw.hdel(keys.ops, "OPU")
    release_op = lock._st.owner + ":r"  # the op id of this lock's release (_ops/coord.py)
    if index == "zset":
        to_legacy_op_index(env.raw, keys.ops_time)
        env.raw.zadd(keys.ops_time, {release_op: 5})
    else:
        env.raw.rpush(keys.ops_time, f"5 {release_op}")
    for counter in ("put", "lock_release"):
        env.raw.hset(keys.stats, counter, "x")
    before = env.snapshot()
    _corrupt(lambda: ns.put("k1", 2, op_id="OPU"), keys.stats)
    _corrupt(lock.release, keys.stats)
    assert env.snapshot() == before
    env.raw.hset(keys.stats, "put", "1")
    env.raw.hset(keys.stats, "lock_release", "1")
    assert ns.put("k1", 2, op_id="OPU").version == 2  # applied now: its index entry is current
    lock.release()
    assert env.raw.type(keys.ops_time) in (index.encode(), index)  # a kind is kept
    times = op_times(env.raw, keys.ops_time)
    for op in ("OPU", release_op):
        assert max(times[op.encode()]) > 5, op
    assert ns.put("k1", 2, op_id="OPU").version == 2  # a replay: the first outcome


# (key, what it becomes): every key a lock release writes without reading it first
RELEASE_WRONG_TYPES = [
    ("ops_time", "hash"),
    ("stats", "zset"),
    ("eph", "string"),
    ("ops", "string"),
    ("locks", "string"),
    ("locks", "hash"),
]


@pytest.mark.parametrize("name, kind", RELEASE_WRONG_TYPES)
def test_a_release_refused_by_a_wrong_typed_key_writes_nothing(env, mem, keys, name, kind):
    """A release checks no key's type before it writes (lock.lua): its first writes (the
    op id's purge index, the stats counter, the lease tie, the op record, the expiry
    index) are each refused on a key of the wrong type, and the ones before undone, so a
    corrupt key fails the release with nothing written, and after repair the same
    release (its op id) applies once. Under a lease, so the lease tie is undone too."""
    lease = mem.lease(30)
    try:
        ns = mem.namespace("team")
        lock = ns.lock("L", wait=0)
        lock.acquire()
        # the counters and indexes hold something to undo to
        token2 = int(ns.lock("L2", wait=0).acquire())
        key = getattr(keys, name)
        kept = env.raw.dump(key)
        env.raw.delete(key)
        if kind == "string":
            env.raw.set(key, "x")
        elif kind == "hash":
            env.raw.hset(key, "x", "y")
        else:
            env.raw.zadd(key, {"x": 1})
        before = env.snapshot()
        _corrupt(lock.release, key)
        assert env.snapshot() == before
        env.raw.delete(key)
        if kept is not None:
            env.raw.restore(key, 0, kept)
        released = int(env.raw.hget(keys.stats, "lock_release") or 0)
        lock.release()
        assert env.raw.hget(keys.lock_records, "L") is None
        assert env.raw.zscore(keys.locks, "L") is None
        assert env.raw.zscore(keys.locks, "L2") is not None
        assert int(env.raw.hget(keys.stats, "lock_release")) == released + 1
        assert env.raw.zrange(keys.eph, 0, -1) == [f"planner\0lL2\0{token2}".encode()]
    finally:
        lease.stop(release=False)


def test_a_wrong_typed_lease_tie_set_fails_no_lock_rewrite_half_way(env, mem, keys):
    """A rewrite of a lock record drops its lapsed holds' lease ties under pcall
    (lua/_lib.lua untie_lapsed): a tie set of the wrong type leaves that drop undone and
    the acquire whole (its counter, its hold), never a raw error after its first write;
    the tie set itself stays corrupt data where it is read (a release's own tie)."""
    lease = mem.lease(30)
    try:
        ns = mem.namespace("team")
        ns.lock("L", ttl=0.1, mode="shared").acquire()  # tied, and soon lapsed
        # a live hold beside it, so no acquire's prune takes the record whole
        env.mem("aux").namespace("team").lock("L", ttl=30, mode="shared").acquire()
        time.sleep(0.2)
    finally:
        lease.stop(release=False)
    env.raw.delete(keys.eph)
    env.raw.set(keys.eph, "x")
    acquired = int(env.raw.hget(keys.stats, "lock_acquire"))
    worker = env.mem("worker").namespace("team")  # (a client of its own: no lease)
    lock = worker.lock("L", ttl=30, mode="shared", wait=0)
    lock.acquire()  # rewrites the record without the lapsed hold
    assert int(env.raw.hget(keys.stats, "lock_acquire")) == acquired + 1
    assert sorted(h.agent for info in ns.locks() for h in info.holders) == ["aux", "worker"]
    assert env.raw.get(keys.eph) == b"x"
    _corrupt(lock.release, keys.eph)


@pytest.mark.parametrize("index", ["list", "zset"])
def test_a_refused_write_purges_no_op_records_either(env, mem, index):
    """Every 8th revision a write purges op records past the dedupe window; a write
    refused by corrupt data at such a revision changes nothing, the purge included (it
    runs after the refusable writes; the corruption fuzz, seed 3, found it before them).
    On both kinds of purge index (a list since stop 22, a sorted set before)."""
    creator = env.mem("planner", dedupe_window=0.01)  # the window a namespace keeps
    creator.create_namespace("pw")
    ns = creator.namespace("pw")
    pw = NamespaceKeys.of(env.prefix, "pw")
    while int(env.raw.hget(pw.meta, "rev")) % 8 != 7:
        ns.put("k", 1)
    if index == "zset":
        to_legacy_op_index(env.raw, pw.ops_time)
    time.sleep(0.05)  # every record is past the window now
    listed = op_times(env.raw, pw.ops_time)
    assert listed
    env.raw.hset(pw.stats, "put", "x")
    before = env.snapshot()
    _corrupt(lambda: ns.put("k", 2), pw.stats)
    assert env.snapshot() == before
    env.raw.hset(pw.stats, "put", "1")
    e = ns.put("k", 2, op_id="OPP")  # revision 8n: purges, and keeps its own record
    assert int(env.raw.hget(pw.meta, "rev")) % 8 == 0 and e.value == 2
    after = op_times(env.raw, pw.ops_time)
    assert env.raw.hexists(pw.ops, "OPP") and b"OPP" in after
    assert env.raw.type(pw.ops_time) in (index.encode(), index)
    assert set(after) == {b"OPP"}  # the others were past the window: purged, records too
    assert env.raw.hkeys(pw.ops) == [b"OPP"]


def test_the_namespace_meta_hash_is_a_hash_table(env, mem, keys):
    """Every script reads fields of the meta hash: it is kept out of listpack encoding
    (ns.lua, META_ENCODING) so that each field is a lookup, not a scan."""
    # The field that does it, longer than hash-max-listpack-value (64 by default)...
    assert len(env.raw.hget(keys.meta, "enc")) > 64
    # ...and, on a real server, its effect (fakeredis has no listpack encoding).
    if env.backend != "fake":
        assert env.raw.object("encoding", keys.meta) in (b"hashtable", "hashtable")


def test_a_foreign_stream_entry_past_the_revision_fails_writes_before_anything(env, mem, keys):
    # An XADD with a larger id (even deleted again: Redis keeps the last id) would make
    # the write script's own XADD fail after its other writes.
    ns = mem.namespace("team")
    env.raw.xadd(keys.events, {"x": "y"}, id="99999999999-0")
    env.raw.xdel(keys.events, "99999999999-0")
    before = env.snapshot()
    for call in (lambda: ns.put("k", 1), lambda: ns.broadcast(1), ns.clear):
        _corrupt(call, keys.events)
        assert env.snapshot() == before


# ------------------------------------------------------------------- the change feed
def test_a_foreign_stream_entry_is_skipped_and_reported_not_a_silent_stop(env, mem, keys):
    # Was: watch(since=0) delivered nothing and logged KeyError: 'k' on every poll.
    ns = mem.namespace("team")
    ns.put("a", 1)
    env.raw.xadd(keys.events, {"x": "y"}, id="999999-0")
    env.raw.hset(keys.meta, "rev", 999999)
    w = ns.watch(since=0)
    ns.put("b", 2)
    got = drain(w, 3)
    assert [(e.type, e.key) for e in got] == [("ns_create", None), ("put", "a"), ("put", "b")]
    assert got[-1].revision == 1000000
    assert mem._event_hub().core.skipped["entry"] >= 1
    w.close()


def test_a_read_that_ends_on_a_foreign_entry_is_not_taken_for_a_rewind(env, mem, keys):
    """The history check compares the entry before the reader's position with the last
    event it read: after a skipped foreign entry there is none to compare, and the next
    read must go on (it raised HistoryRewound when the put came after that read)."""
    ns = mem.namespace("team")
    ns.put("a", 1)
    env.raw.xadd(keys.events, {"x": "y"}, id="999999-0")
    env.raw.hset(keys.meta, "rev", 999999)
    w = ns.watch(since=0)
    assert [(e.type, e.key) for e in drain(w, 2)] == [("ns_create", None), ("put", "a")]
    env.sleep(0.5)  # the hub reads past the foreign entry (a poll) before the next put
    ns.put("b", 2)
    assert [(e.type, e.key) for e in drain(w, 1)] == [("put", "b")]
    w.close()


def test_a_garbage_doorbell_is_reported_and_watchers_go_on(env, mem, keys):
    # Was: SPUBLISH bell '-3:' stalled every watcher of the process (Python's unpack).
    ns = mem.namespace("team")
    w = ns.watch()
    ns.put("a", 1)
    assert [e.key for e in drain(w, 1)] == ["a"]
    for payload in (b"-3:", b"2:99", b"1:51:1" + b"1:p" * 3, b"\xff" * 64):
        env.raw.spublish(keys.bell, payload)
    started = time.monotonic()
    ns.put("b", 2)
    assert [e.key for e in drain(w, 1)] == ["b"]
    assert time.monotonic() - started < 5
    deadline = time.monotonic() + 5
    while mem._event_hub().core.skipped["doorbell"] == 0 and time.monotonic() < deadline:
        env.sleep(0.05)
    assert mem._event_hub().core.skipped["doorbell"] >= 1
    w.close()


def test_corrupt_audit_records_are_corrupt_data(env, mem, keys):
    ns = mem.namespace("team")
    env.raw.xadd(keys.audit, {"x": "y"})
    _corrupt(ns.audit, keys.audit)


def test_every_error_here_is_a_swarm_memory_error():
    assert issubclass(CorruptData, SwarmMemoryError)


def test_a_corrupt_entry_fails_the_order_rebuild_naming_it(env, mem, keys):
    ns = mem.namespace("team")
    ns.put("k1", 1)
    ns.put("k2", 1)
    set_entry_field(env.raw, keys.entry("k2"), "mr", "-7")
    _corrupt(lambda: mem.update_namespace("team", over_quota="evict-oldest"), keys.entry("k2"))
    assert env.raw.hget(keys.meta, "lx") is not None  # unfinished, nothing half-added
    assert not env.raw.exists(keys.lru)
    set_entry_field(env.raw, keys.entry("k2"), "mr", "3")
    ns.put("k3", 1)  # writes go on meanwhile (the namespace has no quota to evict for)
    mem.update_namespace("team", over_quota="evict-oldest")
    assert env.raw.zrange(keys.lru, 0, -1) == [b"k1", b"k2", b"k3"]

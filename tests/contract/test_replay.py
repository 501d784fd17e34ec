"""Replays of an op id return the first outcome, field for field (DESIGN.md decision 6).

The write script keeps a compact op record (numbers per item, values only where the
first reply carried them) instead of the whole reply; these tests pin that a replay
rebuilt from it equals what the first call returned, for every item status the script
has (written, deleted, touched, absent, compared, evicted), and that the dedupe window
is purged without losing records still inside it.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from swarm_memory import OpIdReused
from swarm_memory._ops.args import MAX_OP_ID
from swarm_memory._ops.records import ItemRecord, _parse_packed_record, parse_op_record
from swarm_memory.keys import NamespaceKeys
from tests.support import op_times, to_legacy_op_index


@pytest.fixture
def mem(env: Any) -> Any:
    m = env.mem()
    m.create_namespace("team", history=5)
    return m


@pytest.fixture
def ns(mem: Any) -> Any:
    return mem.namespace("team")


def _twice(fn: Any) -> tuple[Any, Any]:
    return fn(), fn()


def test_replays_equal_the_first_outcome_for_every_write(ns: Any) -> None:
    ns.put("old", {"v": 0})
    ns.put("counter", 5)
    cases = {
        "put": lambda: ns.put("a", {"x": [1, 2.5, "é"]}, ttl=60, op_id="p"),
        "put_many": lambda: ns.put_many({"b": 1, "c": None, "old": {"v": 1}}, op_id="pm"),
        "create": lambda: ns.create("d", "claim", op_id="cr"),
        "incr": lambda: ns.incr("counter", 7, op_id="in"),  # value computed by the server
        "update": lambda: ns.update("old", lambda v: {"v": (v or {}).get("v", 0) + 1}, op_id="u"),
        "delete": lambda: ns.delete("b", op_id="de"),
        "delete_absent": lambda: ns.delete("nothing", op_id="da"),
        "touch": lambda: ns.touch("a", 120, op_id="to"),
        "touch_absent": lambda: ns.touch("nothing", 120, op_id="ta"),
        "rollback": lambda: ns.rollback("old", to_version=1, op_id="rb"),
    }
    for name, call in cases.items():
        first, again = _twice(call)
        assert again == first, name
    assert ns.get("counter").value == 12  # the replayed incr did not add twice


def test_transaction_replay_with_compares(ns: Any) -> None:
    ns.put("guard", 1)
    ns.put("gone", 1)

    def commit() -> Any:
        tx = ns.transaction().check("guard", 1).check_absent("free").put("k", {"n": 1})
        tx = tx.delete("gone")
        return tx.commit(op_id="tx")

    first, again = _twice(commit)
    assert again == first
    assert first.entries["gone"] is None and first.entries["k"].value == {"n": 1}


def test_evicted_names_survive_the_replay(env: Any) -> None:
    m = env.mem()
    m.create_namespace("q", max_keys=2, over_quota="evict-oldest")
    q = m.namespace("q")
    q.put("k1", 1)
    q.put("k2", 2)
    first, again = _twice(lambda: q.put("k3", 3, op_id="ev"))
    assert again == first
    assert q.get("k1") is None and q.get("k3").value == 3
    assert q.stats()["evicted"] == 1  # the replay evicted nothing more


def test_an_op_id_of_another_script_is_not_a_write_outcome(ns: Any) -> None:
    """A broadcast's op record ("<revision>") is not a write's: reusing its op id for a
    put is a different request."""
    ns.broadcast({"hello": 1}, op_id="shared")
    with pytest.raises(OpIdReused):
        ns.put("k", 1, op_id="shared")
    assert ns.get("k") is None


def _record_digest(env: Any, namespace: str, op_id: str) -> bytes:
    record = env.raw.hget(NamespaceKeys.of(env.prefix, namespace).ops, op_id)
    assert record is not None and record.startswith(b"w1 "), record
    return bytes(record.split(b" ")[1])


def test_a_generated_op_id_stores_no_digest_and_a_callers_own_does(
    env: Any, mem: Any, ns: Any
) -> None:
    """A write under an op id the client made stores "-" for its request digest (nothing
    else can carry that id); under the caller's own op id, its digest. Seen through the
    records the scripts wrote: put.lua's and write.lua's."""
    seen: list[Any] = []
    # (the op id: put.lua's and write.lua's second argument)
    mem.observe_scripts(
        lambda script, _k, args: seen.append(args[1]) if script in ("put", "write") else None
    )
    for call in (
        lambda: ns.put("g1", 1),  # put.lua
        lambda: ns.incr("g2"),  # put.lua
        lambda: ns.put_many({"g3": 1, "g4": 2}),  # write.lua
        lambda: ns.delete("g1"),  # write.lua
    ):
        seen.clear()
        call()
        (generated,) = {a.decode() if isinstance(a, bytes) else a for a in seen}
        assert _record_digest(env, "team", generated) == b"-"
    ns.put("own", 1, op_id="mine")
    digest = _record_digest(env, "team", "mine")
    assert len(digest) == 24 and digest != b"-"


def test_a_handed_out_op_id_replays_its_request_and_refuses_another(mem: Any, ns: Any) -> None:
    """The form a generated op id leaves the client in (OutcomeUnknown, NotReplicated:
    ``<id>~<request digest>``, made by hand_out) replays the first outcome for the same
    request and is OpIdReused, with nothing written, for any other; the bare id without
    its digest is refused too, as a caller's op id meeting a record of another request.
    (The errors that hand it out: tests/integration/test_retry.py and
    test_durability.py.)"""
    from swarm_memory._ops.args import hand_out
    from swarm_memory._ops.entries import Item, request_digest

    seen: list[Any] = []
    mem.observe_scripts(lambda script, _k, args: seen.append(args[1]) if script == "put" else None)
    first = ns.put("h", {"a": 1})
    generated = seen[-1].decode() if isinstance(seen[-1], bytes) else seen[-1]
    body = b'{"a":1}'
    digest = request_digest("planner", "put", [Item("P", "h", body, "json")])
    handed = hand_out(generated, digest)
    assert ns.put("h", {"a": 1}, op_id=handed) == first  # the replay: the first outcome
    revision = ns.info().revision
    for other in (
        lambda: ns.put("h", {"a": 2}, op_id=handed),  # another value
        lambda: ns.put("h2", {"a": 1}, op_id=handed),  # another key
        lambda: ns.put_many({"h": {"a": 1}}, op_id=handed),  # another call
        lambda: ns.put("h", {"a": 1}, op_id=generated),  # the id without its digest
    ):
        with pytest.raises(OpIdReused) as err:
            other()
        assert err.value.op_id in (handed, generated)
    assert ns.info().revision == revision and ns.get("h2") is None
    assert ns.get("h").version == first.version


def test_dedupe_window_is_purged_but_keeps_recent_records(env: Any) -> None:
    m = env.mem(dedupe_window=0.2)
    m.create_namespace("w")
    w = m.namespace("w")
    ops = NamespaceKeys.of(env.prefix, "w").ops
    old = [w.put(f"o{i}", i, op_id=f"old-{i}") for i in range(5)]
    time.sleep(0.3)
    for i in range(16):  # crosses at least one purge revision (every 8th)
        w.put(f"n{i}", i, op_id=f"new-{i}")
    held = {k.decode() for k in env.raw.hkeys(ops)}
    assert not any(k.startswith("old-") for k in held), "records past the window are purged"
    assert {f"new-{i}" for i in range(16)} <= held, "records inside the window are kept"
    # Past the window an op id is forgotten: the same call is a new write.
    assert w.put("o0", 0, op_id="old-0").version == old[0].version + 1


# Long enough for a loaded CI machine to make 20 writes inside it.
WINDOW = 1.0


def test_the_purge_index_is_a_list_purged_from_its_head(env: Any) -> None:
    """The op ids' purge index (lua/_lib.lua, K_OPST) is a list of "<ms> <op id>" in the
    order recorded: a purge reads its head, past the first 8 when all of them were
    stale, and stops at the first record inside the window. An element that does not
    parse names no record and is dropped; a record listed behind a newer one (the
    server's clock stepped back) waits for it, never purged early."""
    m = env.mem(dedupe_window=WINDOW)
    m.create_namespace("w")
    w = m.namespace("w")
    nk = NamespaceKeys.of(env.prefix, "w")
    for i in range(20):  # more than one purge reads at first (8)
        w.put(f"o{i}", i, op_id=f"old-{i}")
    assert env.raw.type(nk.ops_time) in (b"list", "list")
    listed = env.raw.lrange(nk.ops_time, 0, -1)
    assert [e.split(b" ")[1] for e in listed] == [f"old-{i}".encode() for i in range(20)]
    assert all(e.split(b" ")[0].isdigit() for e in listed)
    env.raw.lpush(nk.ops_time, b"\xff not a time", b"x" * 400, b"")  # foreign elements
    future = int(time.time() * 1000) + 3_600_000
    env.raw.rpush(nk.ops_time, f"{future} future-op", "1 behind-op")
    env.raw.hset(nk.ops, mapping={"future-op": "x", "behind-op": "x"})
    time.sleep(WINDOW + 0.1)
    for i in range(16):  # crosses two purge revisions (every 8th)
        w.put(f"n{i}", i, op_id=f"new-{i}")
    held = {k.decode() for k in env.raw.hkeys(nk.ops)}
    assert not any(k.startswith("old-") for k in held), "records past the window are purged"
    assert {f"new-{i}" for i in range(16)} | {"future-op", "behind-op"} <= held
    rest = env.raw.lrange(nk.ops_time, 0, -1)
    assert rest[:2] == [f"{future} future-op".encode(), b"1 behind-op"]
    assert [e.split(b" ")[1] for e in rest[2:]] == [f"new-{i}".encode() for i in range(16)]


def test_the_longest_op_id_is_purged_like_any_other(env: Any) -> None:
    """An op id of the most characters an op id may have, each of the widest UTF-8 (4
    bytes), is a purge-index element the purge reads as one of its own (lua/_lib.lua,
    OPS_ELEMENT_MAX): its record goes when the window has passed, never kept forever."""
    m = env.mem(dedupe_window=WINDOW)
    m.create_namespace("w")
    w = m.namespace("w")
    nk = NamespaceKeys.of(env.prefix, "w")
    widest = "\U0001f600" * MAX_OP_ID  # 4 bytes each in UTF-8
    w.put("k", 1, op_id=widest)
    assert env.raw.hexists(nk.ops, widest)
    time.sleep(WINDOW + 0.1)
    for i in range(16):  # crosses at least one purge revision (every 8th)
        w.put(f"n{i}", i, op_id=f"new-{i}")
    assert not env.raw.hexists(nk.ops, widest)
    assert [e.split(b" ", 1)[1] for e in env.raw.lrange(nk.ops_time, 0, -1)] == [
        f"new-{i}".encode() for i in range(16)
    ]


def test_a_namespace_with_the_older_sorted_set_index_keeps_it(env: Any) -> None:
    """Namespaces from before stop 22 hold their op ids' purge index as a sorted set:
    every script that records an op id (a write, a lock release, a broadcast, an agent
    memory write, a graph write) keeps writing it as one, replays still return the first
    outcome, and the purge still drops the records past the window."""
    m = env.mem(dedupe_window=WINDOW)
    m.create_namespace("w")
    m.create_graph("g")
    w = m.namespace("w")
    for name in ("w", "g"):
        nk = NamespaceKeys.of(env.prefix, name)
        m.namespace(name).put("seed", 0, op_id=f"seed-{name}")
        to_legacy_op_index(env.raw, nk.ops_time)
        assert env.raw.type(nk.ops_time) in (b"zset", "zset")
    nk = NamespaceKeys.of(env.prefix, "w")
    first = w.put("k", 1, op_id="p-1")
    assert w.put("k", 1, op_id="p-1") == first
    with w.lock("L", wait=0):
        pass
    w.broadcast("hi", op_id="b-1")
    w.outcomes("routing").record("fast", success=True, op_id="o-1")
    node = m.graph("g").add("fact", context="c", kind="k", op_id="g-1")
    assert m.graph("g").add("fact", context="c", kind="k", op_id="g-1") == node
    for name in ("w", "g"):
        key = NamespaceKeys.of(env.prefix, name).ops_time
        assert env.raw.type(key) in (b"zset", "zset"), name
    recorded = {m.decode() for m in op_times(env.raw, nk.ops_time)}
    assert {"seed-w", "p-1", "b-1", "o-1"} <= recorded
    assert any(op.endswith(":r") for op in recorded)  # the lock release
    assert b"g-1" in op_times(env.raw, NamespaceKeys.of(env.prefix, "g").ops_time)
    time.sleep(WINDOW + 0.1)
    for i in range(16):
        w.put(f"n{i}", i, op_id=f"new-{i}")
    held = {k.decode() for k in env.raw.hkeys(nk.ops)}
    assert held.isdisjoint({"seed-w", "p-1", "b-1", "o-1"}), "past the window: purged"
    assert {f"new-{i}" for i in range(16)} <= held
    assert env.raw.type(nk.ops_time) in (b"zset", "zset")


def test_records_of_earlier_versions_still_replay() -> None:
    """Op records written before the compact format (the whole packed reply) are read."""

    def net(parts: list[bytes]) -> bytes:
        return b"".join(b"%d:%s" % (len(p), p) for p in parts)

    item = [b"w", b"3", b"2", b"9", b"1700000000000", b"1700000000500", b"0", b"4", b"", b""]
    packed = net([b"ab" * 12, b"9", b"0", b"1", *item, b"1", b"victim"])
    for parsed in (parse_op_record(packed, False), _parse_packed_record(packed, False)):
        assert parsed is not None
        assert (parsed.revision, parsed.digest, parsed.evicted) == (9, "ab" * 12, ["victim"])
        assert parsed.items[0] == ItemRecord("w", *item[1:])
    assert parse_op_record(b"17", False) is None  # a broadcast's record
    assert parse_op_record(b"released", False) is None  # a lock release's record

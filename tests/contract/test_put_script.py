"""put through its own script, lua/put.lua (stop 28): one put of one key without a fence,
not ephemeral, and since stop 29 one incr of one key likewise. What it must keep of
write.lua: the same reply, the same stored entry, event, counters, indexes and op record
for every put and incr it takes on (so a replay is answered by either script), and
{"general", why} with nothing written wherever only write.lua will do, after which the
client sends the same call there (and, where the namespace is why, its next puts too, for
a while)."""

from __future__ import annotations

import inspect
import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from swarm_memory import CorruptData, FencingError, NotAnInteger
from swarm_memory._ops import entries
from swarm_memory._ops.effects import ScriptCall
from swarm_memory._ops.entries import Item, request_digest
from swarm_memory._ops.replies import unpack_put
from swarm_memory.keys import NamespaceKeys
from swarm_memory.scripts import load
from tests.conftest import BACKENDS
from tests.support import set_entry_field, to_legacy

pytestmark = pytest.mark.timeout(60)

# A server time in ms or µs (these years: 17..., 18...) differs run to run, and so does
# the sequence number of a stream id made of one ("*": the audit stream's). Times are
# matched without a word boundary after them: a packed text puts the next part's length
# right after (lua/_lib.lua, pack).
_TIME = re.compile(rb"\b1[78]\d{11}(?:\d{3})?")
_TIME_ID = re.compile(rb"^T-\d+$")


def _run(env: Any, mem: Any, call: ScriptCall) -> list[Any]:
    reply = mem._driver.perform(call)
    if inspect.iscoroutine(reply):  # the async client's driver, behind the test facade
        reply = env.loop.run_until_complete(reply)
    if isinstance(reply, bytes):  # put.lua's packed "ok": compared as the array it stands for
        assert call.script.name == "put", reply
        reply = unpack_put(reply)
        # (the item's version, expiry and size come as their text, as from an op record;
        # write.lua's table sends them as numbers)
        for i in (5, 10, 11):
            assert reply[i] == b"%d" % int(reply[i]), reply  # (as Redis spells an integer)
            reply[i] = int(reply[i])
    assert isinstance(reply, list)
    return reply


# A put ("P"), a create ("S", expected version 0) or an incr ("I", the value its amount):
# op, key, value, op id, expected version, TTL in ms.
Step = tuple[str, str, bytes, str, int | None, int | None]
_ACTION = {"P": "put", "S": "create", "I": "incr"}


def _calls(env: Any, ns: str, step: Step, fmt: str = "json") -> tuple[ScriptCall, ScriptCall]:
    """The call put.lua gets for this put or incr, and the call write.lua gets for it (as
    the client builds each: lua/put.lua's and lua/write.lua's headers)."""
    op, key, value, op_id, expected, ttl_ms = step
    action = _ACTION[op]
    nk = NamespaceKeys.of(env.prefix, ns)
    limits = "60000 10000 10000 1048576 1024"  # dedupe stream audit value event_value
    head = f"{op} {'' if expected is None else expected} {'' if ttl_ms is None else ttl_ms} {fmt}"
    item = Item(op, key, value, fmt, expected, ttl_ms)
    digest = request_digest("planner", action, [item])
    entry = [nk.entry(key), nk.history(key)]
    put = ScriptCall(
        load("put"),
        [*nk.put_fixed(), *entry],
        ["planner", op_id, limits, head, key, value, digest],
        op_id,
    )
    write = ScriptCall(
        load("write"),
        [*nk.write_fixed(), *entry],
        ["planner", op_id, limits, "1 0 0", action, digest, "0", "", head, key, value],
        op_id,
    )
    return put, write


def _norm(x: Any, ns: str) -> Any:
    """``x`` with the namespace's name and every server time taken out."""
    if isinstance(x, bytes):
        return _TIME_ID.sub(b"T-n", _TIME.sub(b"T", x.replace(ns.encode(), b"NS")))
    if isinstance(x, str):
        return _norm(x.encode(), ns)
    if isinstance(x, (int, float)) and 10**12 <= x < 10**16:
        return "T"
    if isinstance(x, (list, tuple)):
        return [_norm(y, ns) for y in x]
    if isinstance(x, dict):
        return {_norm(k, ns): _norm(v, ns) for k, v in x.items()}
    return x


def _written_out(meta: bytes) -> bytes:
    """An entry's packed metadata ("m") with its mod time written out where it equals its
    create time: lua/_lib.lua's entry_meta stores it as "" then, and two writes of a key
    within one millisecond in one namespace need not be in the other (a clean-clone CI
    run found one). The revisions, the same in both namespaces, stay as stored."""
    parts = meta.split(b" ")
    if len(parts) >= 6:
        parts[4] = parts[4] or parts[3]
    return b" ".join(parts)


def _state(env: Any, ns: str) -> dict[Any, Any]:
    nk = NamespaceKeys.of(env.prefix, ns)
    out = {}
    for key, (kind, stored) in env.snapshot().items():
        content = stored
        if key.startswith(nk.entry("").encode()) and kind == "hash" and b"m" in stored:
            content = {**stored, b"m": _written_out(stored[b"m"])}
        if key.startswith(nk.base.encode()):
            # A sorted set is its (member, score) pairs, compared in the members' order:
            # by score, the server times that _norm takes out would order it, and two
            # writes in the same millisecond tie in one namespace and not in the other.
            pairs = sorted(content, key=lambda pair: pair[0]) if kind == "zset" else content
            out[_norm(key, ns)] = _norm((kind, pairs), ns)
    return out


# (namespace settings, the puts and incrs)
Steps = list[Step]
_COMMON: Steps = [
    ("P", "a", b'{"n":1}', "op1", None, None),  # a new key
    ("P", "a", b'{"n":22}', "op2", None, None),  # a larger value
    ("P", "a", b'{"n":33}', "op3", None, None),  # the same size
    ("P", "b", b"[1,2]", "op4", None, 60_000),  # a TTL
    ("P", "a", b"7", "op5", 1, None),  # a stale expected version: conflict
    ("P", "a", b"7", "op6", 3, None),  # the current one
    ("P", "c", b"1", "op7", 0, None),  # create-if-absent
    ("P", "c", b"2", "op8", 0, None),  # ... present: conflict
    ("P", "a", b"7", "op6", 3, None),  # a replay: its first outcome
    ("P", "b", b"[1]", "op9", None, None),  # a TTL dropped by a plain put
    ("P", "d", b'"' + b"x" * 1500 + b'"', "op10", None, None),  # too long to ride along
    ("I", "n", b"5", "op11", None, None),  # a new counter
    ("I", "n", b"-12", "op12", None, None),  # an existing one, below zero
    ("I", "n", b"3", "op13", None, 60_000),  # a TTL
    ("I", "n", b"1", "op14", None, None),  # ... which the counter keeps
    ("I", "n", b"-12", "op12", None, None),  # a replay: its first outcome (the value too)
    ("I", "a", b"2", "op15", None, None),  # a put's integer counts
    ("I", "b", b"1", "op16", None, None),  # a list is no integer
    ("I", "n", b"9007199254740991", "op17", None, None),  # past 2**53 - 1
    ("I", "d", b"1", "op18", None, None),  # a string is no integer
    ("S", "e", b'{"c":1}', "op19", 0, None),  # a create
    ("S", "e", b'{"c":2}', "op20", 0, None),  # ... of a key that is there: conflict
    ("S", "f", b"[3]", "op21", 0, 60_000),  # a create with a TTL
    ("S", "e", b'{"c":1}', "op19", 0, None),  # a replay: its first outcome
]
# A merge namespace's puts (put.lua merges them since stop 32): into a new key, nested
# objects key by key, a null deleting at any depth, a patch of nulls onto nothing, a
# non-object patch replacing the value, a stale expected version, a replay (the merged
# value from the op record), a merge carried too long to ride along in its event.
_MERGE: Steps = [
    ("P", "m", b'{"a":1,"b":{"c":2,"d":[1]}}', "opm1", None, None),
    ("P", "m", b'{"b":{"c":null,"d":[2,3]},"e":"x"}', "opm2", None, None),
    ("P", "m", b'{"a":null}', "opm3", None, None),
    ("P", "m0", b'{"gone":null,"kept":{"x":null}}', "opm4", None, None),
    ("P", "m", b'{"b":{"c":null,"d":[2,3]},"e":"x"}', "opm2", None, None),
    ("P", "m", b'{"f":1}', "opm5", 2, None),
    ("P", "m", b'{"f":1}', "opm6", 3, 60_000),
    ("P", "m", b'{"long":"' + b"y" * 1500 + b'"}', "opm7", None, None),
    ("P", "m0", b"[1,2]", "opm8", None, None),
    ("P", "m0", b'{"after":"array"}', "opm9", None, None),
    ("P", "m", b'{"big":"' + b"w" * 5000 + b'"}', "opm10", None, None),  # answered unpacked
]
CASES: dict[str, tuple[dict[str, Any], Steps]] = {
    "merge": ({"strategy": "merge"}, [*_COMMON, *_MERGE]),
    "latest-wins": ({}, _COMMON),
    "history": ({"history": 2}, _COMMON),
    "default-ttl": ({"ttl": 30.0}, _COMMON),
    "first-wins": ({"strategy": "first-wins"}, _COMMON),
    "version": ({"strategy": "version"}, _COMMON),
    "custom": ({"strategy": "custom"}, _COMMON),
    "max-keys": ({"max_keys": 2}, _COMMON),
    "max-bytes": ({"max_bytes": 40}, _COMMON),
    "read-only": ({"default_permission": "read"}, [*_COMMON[:2], _COMMON[11], _COMMON[20]]),
}


# The scripts called directly: the async client would call the same ones (sync only).
SYNC_ENVS = [pytest.param((b, "sync"), id=f"{b}-sync") for b in BACKENDS]


@pytest.mark.parametrize("env", SYNC_ENVS, indirect=True)
@pytest.mark.parametrize("case", list(CASES))
def test_a_put_answers_and_stores_what_write_lua_does(env, case):
    """Every put of the case through put.lua in one namespace and through write.lua in
    another: the same replies, step by step, and the same keys with the same contents
    (namespace names and server times aside)."""
    settings, steps = CASES[case]
    # (read-only: another agent creates the namespaces, the caller may only read them,
    # and each put is a denial, counted and audited)
    creator = env.mem("owner" if "default_permission" in settings else "planner")
    for ns in ("via-put", "via-write"):
        creator.create_namespace(ns, **settings)
    mem = env.mem("planner")
    for step in steps:
        put, _ = _calls(env, "via-put", step)
        _, write = _calls(env, "via-write", step)
        got = _run(env, mem, put)
        assert got[0] != b"general", (case, step, got)
        want = _run(env, mem, write)
        assert _norm(got, "via-put") == _norm(want, "via-write"), (case, step)
    assert _state(env, "via-put") == _state(env, "via-write")


@pytest.mark.parametrize("env", SYNC_ENVS, indirect=True)
def test_a_put_answers_packed_unless_its_computed_value_is_long(env):
    """put.lua's "ok" is one string (_ops/replies.py unpack_put) unless the value it sends
    back (a merge's, an incr's) is longer than lua/_lib.lua's PACKED_VALUE_MAX: that goes
    out in the table, which packing would copy once more."""
    mem = env.mem("planner")
    mem.create_namespace("team", strategy="merge")
    big = b'{"b":"' + b"z" * 5000 + b'"}'
    small, _ = _calls(env, "team", ("P", "m", b'{"a":1}', "opk1", None, None))
    large, _ = _calls(env, "team", ("P", "m", big, "opk2", None, None))
    packed = mem._driver.perform(small)
    assert isinstance(packed, bytes) and packed.startswith(b"ok ") and packed.endswith(b'{"a":1}')
    table = mem._driver.perform(large)
    assert isinstance(table, list) and table[0] == b"ok" and b"z" * 5000 in table[12]
    assert mem.namespace("team").get("m").value == {"a": 1, "b": "z" * 5000}


@pytest.mark.parametrize("env", SYNC_ENVS, indirect=True)
def test_a_merge_only_the_client_can_make_is_answered_as_write_lua_answers_it(env):
    """A merge namespace's put of a patch in another format, or onto a value stored in
    another format: put.lua answers "merge_fallback" with write.lua's reason, having
    written nothing, and the client merges (test_merge.py: the fallbacks end to end)."""
    mem = env.mem("planner")
    for ns in ("via-put", "via-write"):
        mem.create_namespace(ns, strategy="merge")
        mem.namespace(ns).create("z", {"a": 1})
    for ns in ("via-put", "via-write"):  # "z" stored in another format than "json"
        set_entry_field(env.raw, NamespaceKeys.of(env.prefix, ns).entry("z"), "f", "json+z")
    state = {ns: _state(env, ns) for ns in ("via-put", "via-write")}
    for step, fmt, why in [
        (("P", "k", b"x", "opf1", None, None), "json+z", b"patch"),
        (("P", "z", b'{"b":2}', "opf2", None, None), "json", b"stored"),
    ]:
        put, _ = _calls(env, "via-put", step, fmt)
        _, write = _calls(env, "via-write", step, fmt)
        assert _run(env, mem, put) == _run(env, mem, write) == [b"merge_fallback", 1, why]
    assert {ns: _state(env, ns) for ns in ("via-put", "via-write")} == state


def test_a_merge_is_one_call_of_put_lua(env):
    mem = env.mem("planner")
    mem.create_namespace("team", strategy="merge", history=1)
    ns = mem.namespace("team")
    seen = _observed(mem)
    assert ns.put("k", {"a": 1, "b": {"c": 1}}).value == {"a": 1, "b": {"c": 1}}
    assert ns.put("k", {"b": {"c": None, "d": 2}}).value == {"a": 1, "b": {"d": 2}}
    e = ns.put("k", {"a": 3}, expected_version=2, op_id="opM")
    assert (e.value, e.version) == ({"a": 3, "b": {"d": 2}}, 3)
    assert ns.put("k", {"a": 3}, expected_version=2, op_id="opM") == e  # a replay
    assert seen == ["put"] * 4
    assert ns.get("k").value == e.value
    assert [h.version for h in ns.history("k")] == [3, 2]
    assert ns.history("k")[1].value == {"a": 1, "b": {"d": 2}}


def _observed(mem: Any) -> list[str]:
    seen: list[str] = []
    mem.observe_scripts(lambda name, keys, args: seen.append(name))
    return seen


def _nothing(env: Any, ns: Any) -> None:
    pass


def _put_and_expire(env: Any, ns: Any) -> None:
    ns.put("k", 1, ttl=0.05)
    time.sleep(0.12)


def _put_tied(env: Any, ns: Any) -> None:
    ns.put("k", 1, ephemeral=True)


def _put_field_by_field(env: Any, ns: Any) -> None:
    ns.put("k", 1)
    to_legacy(env.raw, NamespaceKeys.of(env.prefix, "team").entry("k"))


# (namespace settings, what comes before the put, why put.lua hands it on)
GENERAL: dict[str, tuple[dict[str, Any], Callable[[Any, Any], None], bytes]] = {
    "require_lock": ({"require_lock": True}, _nothing, b"namespace"),
    "evict-oldest": ({"max_keys": 5, "over_quota": "evict-oldest"}, _nothing, b"namespace"),
    "expired": ({}, _put_and_expire, b"entry"),
    "ephemeral": ({}, _put_tied, b"entry"),
    "legacy": ({}, _put_field_by_field, b"entry"),
}


@pytest.mark.parametrize("case", list(GENERAL))
def test_put_lua_hands_to_write_lua_what_only_write_lua_does(env, case):
    """put.lua answers {"general", why} having written nothing; put() then sends the same
    call to write.lua, which does what it always did."""
    settings, before, why = GENERAL[case]
    mem = env.mem("planner")
    mem.create_namespace("team", **settings)
    ns = mem.namespace("team")
    before(env, ns)
    state = env.snapshot()
    put, _ = _calls(env, "team", ("P", "k", b'{"b":2}', "opG", None, None))
    assert _run(env, mem, put) == [b"general", why]
    assert env.snapshot() == state  # nothing written, not even the op record
    ns = mem.namespace("team")  # a handle that has not met the namespace's puts yet
    seen = _observed(mem)
    if case == "require_lock":
        with pytest.raises(FencingError):
            ns.put("k", {"b": 2})
        assert seen == ["put", "write"]
        return
    entry = ns.put("k", {"b": 2}, op_id="opG")
    assert seen[:2] == ["put", "write"]
    assert set(seen[2:]) <= {"sweep"}  # (the expired entry's sweep hint)
    assert ns.get("k").value == entry.value
    assert entry.value == {"b": 2}
    # A replay of what write.lua applied: from the same record, by put.lua where the
    # entry was why, by write.lua straight away where the namespace was.
    del seen[:]
    assert ns.put("k", {"b": 2}, op_id="opG") == entry
    assert seen == (["write"] if why == b"namespace" else ["put"])


def test_a_namespace_whose_puts_are_write_luas_is_asked_again_after_general_puts(env, monkeypatch):
    monkeypatch.setattr(entries, "GENERAL_PUTS", 2)
    mem = env.mem("planner")
    mem.create_namespace("team", max_keys=10, over_quota="evict-oldest")
    ns = mem.namespace("team")
    seen = _observed(mem)
    for i in range(4):
        ns.put("k", {f"f{i}": i})
    assert seen == ["put", "write", "write", "write", "put", "write"]
    assert ns.get("k").value == {"f3": 3}
    # Switched back to refusing writes over the quota: put.lua again once the count has
    # run out.
    mem.update_namespace("team", over_quota="reject")
    del seen[:]
    for i in range(3):
        ns.put("k", i)
    assert seen == ["write", "write", "put"]
    assert ns.get("k").value == 2


def test_a_common_put_is_one_call_of_put_lua(env):
    mem = env.mem("planner")
    mem.create_namespace("team", history=1)
    ns = mem.namespace("team")
    seen = _observed(mem)
    ns.put("k", 1)
    ns.put("k", 2, ttl=5.0)
    ns.put("k", 3, expected_version=2)
    assert seen == ["put", "put", "put"]
    ns.create("c", 1)
    assert seen == ["put"] * 4
    # put_many, fences, ephemeral puts and creates, and CAS loops stay with write.lua.
    del seen[:]
    ns.put_many({"k": 4})
    ns.put("e", 1, ephemeral=True)
    ns.create("c2", 1, ephemeral=True)
    ns.update("k", lambda v: (v or 0) + 1)
    assert "put" not in seen
    assert seen.count("write") == 4


def test_a_common_incr_is_one_call_of_put_lua(env):
    mem = env.mem("planner")
    mem.create_namespace("team")
    ns = mem.namespace("team")
    seen = _observed(mem)
    assert ns.incr("n") == 1
    assert ns.incr("n", 41, ttl=5.0) == 42
    assert ns.incr("n", -50, op_id="opI") == -8
    assert ns.incr("n", -50, op_id="opI") == -8  # a replay, from its op record
    ns.put("s", "text")
    with pytest.raises(NotAnInteger) as info:
        ns.incr("s")
    assert info.value.key == "s"
    assert seen == ["put"] * 6
    got = ns.get("n")
    assert (got.value, got.version) == (-8, 3)
    assert got.expires_at is not None  # the TTL the second incr gave it, kept by the third
    # Fenced incrs stay with write.lua; a merge namespace's are put.lua's too (stop 32:
    # before, put.lua handed them on, and the handle's next calls went to write.lua).
    del seen[:]
    with ns.lock("n") as lock:
        assert ns.incr("n", 1, fence=lock.token) == -7
    assert seen == ["acquire", "write", "release"]
    mem.create_namespace("merged", strategy="merge")
    merged = mem.namespace("merged")
    del seen[:]
    assert merged.incr("c", 2) == 2
    assert merged.incr("c", 2) == 4
    assert seen == ["put", "put"]


@pytest.mark.parametrize("target", ["entry", "idx", "stats", "events", "ops", "opst", "hist"])
def test_a_corrupt_key_fails_a_put_as_corrupt_data_with_nothing_written(env, target):
    mem = env.mem("planner")
    mem.create_namespace("team", history=2)
    ns = mem.namespace("team")
    nk = NamespaceKeys.of(env.prefix, "team")
    if target == "hist":
        ns.put("k", 1)  # a replaced version goes to the history hash
    name = {
        "entry": nk.entry("k"),
        "idx": nk.index,
        "stats": nk.stats,
        "events": nk.events,
        "ops": nk.ops,
        "opst": nk.ops_time,
        "hist": nk.history("k"),
    }[target]
    env.raw.delete(name)
    env.raw.set(name, "not what the script expects")
    state = env.snapshot()
    with pytest.raises(CorruptData) as info:
        ns.put("k", {"x": 1})
    assert info.value.key == name, info.value
    assert env.snapshot() == state

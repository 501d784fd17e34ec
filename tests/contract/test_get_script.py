"""get / get_many through their own script, lua/get.lua (stop 22): what it must keep of
read.lua's get before it — the permission check (by the ACL marker, or by meta in a namespace
stored without it), expired entries read as absent, the sweep hint, corrupt data as
CorruptData naming the key — and the invariant it leans on to skip the expiry read:
every entry with an expiry is in the namespace's expiry index."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any

import pytest

from swarm_memory import CorruptData, NamespaceNotFound, PermissionDenied
from swarm_memory._ops.effects import ScriptCall
from swarm_memory._ops.replies import unpack_get
from swarm_memory.keys import NamespaceKeys
from swarm_memory.scripts import load
from tests.support import to_legacy

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def mem(env):
    m = env.mem("planner", socket_timeout=5.0)
    m.create_namespace("team", history=3)
    return m


@pytest.fixture
def keys(env) -> NamespaceKeys:
    return NamespaceKeys.of(env.prefix, "team")


def _get_reply(env: Any, mem: Any, keys: NamespaceKeys, *names: str) -> list[Any]:
    """The get script's own reply (no client parsing, no sweep after it)."""
    call_keys = [*keys.get_fixed(), *(keys.entry(n) for n in names)]
    args: list[str | bytes | int] = ["planner"]
    reply = mem._driver.perform(ScriptCall(load("get"), call_keys, args, None, True))
    if inspect.iscoroutine(reply):  # the async client's driver, behind the test facade
        reply = env.loop.run_until_complete(reply)
    if isinstance(reply, bytes):  # one stored entry: packed (the array it stands for)
        assert len(names) == 1, reply
        reply = unpack_get(reply)
    assert isinstance(reply, list)
    return reply


def _corrupt(call: Callable[[], Any], key: str) -> None:
    with pytest.raises(CorruptData) as info:
        call()
    assert info.value.key == key, info.value


def test_an_expired_entry_reads_absent_before_any_sweep(env, mem, keys):
    ns = mem.namespace("team")
    ns.put("short", 1, ttl=0.05)
    ns.put("plain", 2)
    time.sleep(0.12)
    # The script itself answers "absent" while the entry is still stored, and says a sweep
    # is due (1: entries past their expiry).
    assert _get_reply(env, mem, keys, "short") == [b"ok", 1, b""]
    reply = _get_reply(env, mem, keys, "plain", "short")
    assert reply[:2] == [b"ok", 1] and reply[3] == b"2" and reply[4:] == [b""]
    assert env.raw.exists(keys.entry("short")) == 1
    got = ns.get_many(["plain", "short"])
    assert got["short"] is None and got["plain"] is not None and got["plain"].value == 2
    assert ns.get("short") is None


@pytest.mark.parametrize("indexed", [False, True], ids=["no-expiry-index", "expiry-index"])
def test_the_get_of_one_stored_entry_answers_packed_what_the_array_holds(env, mem, keys, indexed):
    """One stored entry goes out packed, "ok <due> <len(m)> <m><v>" (one string, not a
    table: _ops/replies.py unpack_get); the same entry read beside an absent one goes out
    in the array, with the same metadata and value, byte for byte."""
    ns = mem.namespace("team")
    if indexed:
        ns.put("expiring", 1, ttl=3600)
    ns.put("k", {"text": "ok 0 12 3 4", "n": [1, 2]})
    call_keys = [*keys.get_fixed(), keys.entry("k")]
    raw = mem._driver.perform(ScriptCall(load("get"), call_keys, ["planner"], None, True))
    if inspect.iscoroutine(raw):
        raw = env.loop.run_until_complete(raw)
    assert isinstance(raw, bytes) and raw.startswith(b"ok 0 ")
    packed = _get_reply(env, mem, keys, "k")
    array = _get_reply(env, mem, keys, "k", "absent")
    assert packed == array[:4] and array[4:] == [b""]
    assert ns.get("k").value == {"text": "ok 0 12 3 4", "n": [1, 2]}


def test_a_long_value_is_got_in_the_array(env, mem, keys):
    """A value longer than lua/_lib.lua's PACKED_VALUE_MAX goes out in the array (packing
    would copy it once more); the client reads either."""
    ns = mem.namespace("team")
    ns.put("long", "v" * 5000)
    reply = mem._driver.perform(
        ScriptCall(load("get"), [*keys.get_fixed(), keys.entry("long")], ["planner"], None, True)
    )
    if inspect.iscoroutine(reply):
        reply = env.loop.run_until_complete(reply)
    assert isinstance(reply, list) and reply[0] == b"ok" and len(reply[3]) == 5002
    assert ns.get("long").value == "v" * 5000


def test_without_an_expiry_or_lease_index_no_sweep_is_due(env, mem, keys):
    ns = mem.namespace("team")
    ns.put("k", 1)
    assert env.raw.exists(keys.expiry, keys.lease) == 0
    reply = _get_reply(env, mem, keys, "k", "absent")
    assert reply[:2] == [b"ok", 0] and reply[3] == b"1" and reply[4:] == [b""]
    ns.put("later", 1, ttl=3600)  # an expiry index now, nothing due in it
    reply = _get_reply(env, mem, keys, "k", "later")
    assert reply[:2] == [b"ok", 0] and len(reply) == 6


def test_every_entry_with_an_expiry_is_in_the_expiry_index(env, mem, keys):
    """What get.lua leans on: without an expiry index, no entry of the namespace has an
    expiry. Each kind of write that gives, keeps or takes an expiry, then every stored
    entry is checked against the index (a new writer of expiries belongs in this list)."""
    mem.create_namespace("ttl-default", ttl=3600)
    ns, dflt = mem.namespace("team"), mem.namespace("ttl-default")
    ns.put("put", 1, ttl=3600)
    ns.put_many({"many1": 1, "many2": 2}, ttl=3600)
    ns.create("created", 1, ttl=3600)
    ns.put("touched", 1)
    assert ns.touch("touched", 3600) is True
    ns.put("incr", 1, ttl=3600)
    ns.incr("incr", 2)
    ns.put("updated", 1, ttl=3600)
    ns.update("updated", lambda v: v + 1)
    ns.put("rolled", 1, ttl=3600)
    ns.put("rolled", 2, ttl=3600)
    ns.rollback("rolled", to_version=1)
    ns.put("cleared", 1, ttl=3600)
    ns.put("cleared", 2)  # a plain put: no expiry any more
    ns.put("gone", 1, ttl=0.01)
    time.sleep(0.05)
    ns.sweep()
    dflt.put("default", 1)
    for name, nk in (("team", keys), ("ttl-default", NamespaceKeys.of(env.prefix, "ttl-default"))):
        indexed = {m.decode() for m in env.raw.zrange(nk.expiry, 0, -1)}
        for entry_key in env.raw.scan_iter(match=nk.base.replace("{", "[{]") + "e:*"):
            x = int(env.raw.hget(entry_key, "m").split(b" ")[5])
            key = entry_key.decode()[len(nk.base) + 2 :]
            assert (x > 0) == (key in indexed), (name, key, x)
    # (Not vacuous: these kept or got an expiry; an update or a rollback writes without one.)
    expiring = {"put", "many1", "many2", "created", "touched", "incr"}
    assert {m.decode() for m in env.raw.zrange(keys.expiry, 0, -1)} == expiring
    assert env.raw.zrange(NamespaceKeys.of(env.prefix, "ttl-default").expiry, 0, -1) == [b"default"]


@pytest.mark.parametrize("indexed", [False, True], ids=["no-expiry-index", "expiry-index"])
@pytest.mark.parametrize(
    "m",
    [
        b"garbage",
        b"",
        b"1 1 1 1 1",  # too few parts
        b"1 1 1 1 1 soon planner json",  # the expiry is no number
        b"1 1 1 1 1 0  json",  # no writer
    ],
)
def test_a_corrupt_packed_entry_is_corrupt_data_naming_it(env, mem, keys, indexed, m):
    """Without an expiry index the script sends "m" unread and the client's strict parse
    finds it corrupt; with one the script reads the expiry and does. Either way one
    CorruptData naming the entry's key."""
    ns = mem.namespace("team")
    if indexed:
        ns.put("expiring", 1, ttl=3600)
    ns.put("k1", 1)
    ns.put("k2", 2)
    env.raw.hset(keys.entry("k1"), "m", m)
    _corrupt(lambda: ns.get("k1"), keys.entry("k1"))
    _corrupt(lambda: ns.get_many(["k2", "k1"]), keys.entry("k1"))
    assert ns.get("k2").value == 2


@pytest.mark.parametrize("indexed", [False, True], ids=["no-expiry-index", "expiry-index"])
def test_a_packed_entry_without_its_value_is_corrupt_data(env, mem, keys, indexed):
    ns = mem.namespace("team")
    if indexed:
        ns.put("expiring", 1, ttl=3600)
    ns.put("k1", 1)
    env.raw.hdel(keys.entry("k1"), "v")
    _corrupt(lambda: ns.get("k1"), keys.entry("k1"))
    _corrupt(lambda: ns.get_many(["k1"]), keys.entry("k1"))


def test_an_entry_key_of_the_wrong_type_is_corrupt_data(env, mem, keys):
    ns = mem.namespace("team")
    env.raw.set(keys.entry("k1"), "x")
    _corrupt(lambda: ns.get("k1"), keys.entry("k1"))
    _corrupt(lambda: ns.get_many(["k2", "k1"]), keys.entry("k1"))


def test_an_entry_stored_field_by_field_is_read_and_sent_packed(env, mem, keys):
    ns = mem.namespace("team")
    ns.put("old", {"a": 1}, ttl=3600)
    ns.put("older", [1])
    ns.put("expired", 1, ttl=0.05)
    for name in ("old", "older", "expired"):
        to_legacy(env.raw, keys.entry(name))
    time.sleep(0.1)
    got = ns.get_many(["old", "older", "expired"])
    assert got["old"] is not None and got["old"].value == {"a": 1}
    assert got["old"].expires_at is not None
    assert got["older"] is not None and got["older"].value == [1]
    assert got["expired"] is None


def test_a_namespace_stored_without_the_acl_marker_reads_by_its_meta(env, mem, keys):
    """A namespace an earlier version created (no "#" in its ACL hash) is read by its
    meta: the default level, its state, and a denial is audited as before."""
    mem.create_namespace("legacy", default_permission="none", permissions={"planner": "admin"})
    legacy = mem.namespace("legacy")
    legacy.put("k", 1)
    nk = NamespaceKeys.of(env.prefix, "legacy")
    env.raw.hdel(nk.acl, "#")
    assert legacy.get("k").value == 1
    got = legacy.get_many(["k", "absent"])
    assert got["k"] is not None and got["k"].value == 1 and got["absent"] is None
    stranger = mem.as_agent("stranger").namespace("legacy")
    with pytest.raises(PermissionDenied) as info:
        stranger.get("k")
    assert (info.value.action, info.value.granted) == ("get", "none")
    with pytest.raises(PermissionDenied):
        stranger.get_many(["k"])
    denied = [r for r in legacy.audit(action="get") if r.agent == "stranger"]
    assert len(denied) == 2 and all(r.outcome == "denied" for r in denied)
    env.raw.hset(nk.meta, "dp", "read")  # the default level comes from meta here
    assert stranger.get("k").value == 1
    mem.delete_namespace("legacy")
    with pytest.raises(NamespaceNotFound):
        legacy.get("k")


def test_a_denied_get_is_counted_and_audited_with_the_marker(env, mem, keys):
    mem.create_namespace("closed", default_permission="none", permissions={"planner": "admin"})
    closed = mem.namespace("closed")
    closed.put("k", 1)
    stranger = mem.as_agent("stranger").namespace("closed")
    with pytest.raises(PermissionDenied):
        stranger.get("k")
    with pytest.raises(PermissionDenied):
        stranger.get_many(["k", "j"])
    denied = [r for r in closed.audit(action="get") if r.agent == "stranger"]
    assert len(denied) == 2 and all(r.outcome == "denied" for r in denied)
    assert closed.stats()["denied"] == 2


def test_what_get_lua_cannot_answer_it_leaves_to_read_lua_which_answers_the_same(env, mem, keys):
    """get.lua takes only the names its common path uses (stop 35: the ACL hash, the sweep
    hint's indexes, the entries). Without the ACL marker it answers "general" having
    written nothing, and read.lua's "get" (where _ops/entries.py sends the same get then)
    answers what get.lua answers with the marker: the same metadata and values."""
    ns = mem.namespace("team")
    ns.put("k", {"a": 1})
    ns.put("later", 2, ttl=3600)
    direct = _get_reply(env, mem, keys, "k", "absent", "later")
    assert direct[:2] == [b"ok", 0] and direct[4] == b"" and len(direct) == 7
    names = ["k", "absent", "later"]
    read_keys = [*keys.read_fixed(), *(x for n in names for x in (keys.entry(n), keys.history(n)))]
    call = ScriptCall(load("read"), read_keys, ["planner", 1000, "get"], None, True)
    via_read = mem._driver.perform(call)
    if inspect.iscoroutine(via_read):
        via_read = env.loop.run_until_complete(via_read)
    assert via_read == direct
    env.raw.hdel(keys.acl, "#")
    before = env.snapshot()
    assert _get_reply(env, mem, keys, "k") == [b"general"]
    assert env.snapshot() == before
    got = ns.get_many(names)
    assert got["k"] is not None and got["k"].value == {"a": 1} and got["absent"] is None
    assert got["later"] is not None and got["later"].value == 2

"""Entries: put/get/create/delete/exists/keys/get_many/put_many/update/incr/touch/history."""

from __future__ import annotations

import pytest

from swarm_memory import ConflictError, NotAnInteger, VersionNotFound
from tests.support import entry_meta_parts, must, to_legacy

PRECISE = {"big": 123456789012345678, "f": 0.30000000000000004, "empty": [], "obj": {}, "u": "é✓"}


@pytest.fixture
def ns(env):
    mem = env.mem()
    mem.create_namespace("team", history=5)
    return mem.namespace("team")


def test_put_get_roundtrip_is_exact(ns):
    e = ns.put("plan", PRECISE)
    assert (e.version, e.create_revision, e.mod_revision) == (1, 2, 2)
    got = ns.get("plan")
    assert got.value == PRECISE
    assert type(got.value["empty"]) is list and type(got.value["obj"]) is dict
    assert got.updated_by == "planner" and got.expires_at is None
    assert got.size == e.size > 0
    assert got.created_at == got.updated_at == e.updated_at


def test_versions_and_revisions_follow_the_etcd_model(ns):
    a1 = ns.put("a", 1)
    b1 = ns.put("b", 1)
    a2 = ns.put("a", 2)
    assert a2.version == 2 and a2.create_revision == a1.create_revision
    assert a1.mod_revision < b1.mod_revision < a2.mod_revision
    assert ns.info().revision == a2.mod_revision


def test_cas_with_expected_version(ns):
    e = ns.put("plan", {"steps": 3})
    ns.put("plan", {"steps": 4}, expected_version=e.version)
    with pytest.raises(ConflictError) as info:
        ns.put("plan", {"steps": 5}, expected_version=e.version)
    current = must(info.value.current)
    assert current.value == {"steps": 4} and current.version == 2
    assert info.value.expected == 1 and info.value.key == "plan" and info.value.namespace == "team"
    assert ns.get("plan").value == {"steps": 4}


def test_expected_version_zero_means_absent(ns):
    ns.put("k", 1, expected_version=0)
    with pytest.raises(ConflictError):
        ns.put("k", 2, expected_version=0)


def test_create_only_if_absent(ns):
    ns.create("claim", "me")
    with pytest.raises(ConflictError) as info:
        ns.create("claim", "you")
    assert must(info.value.current).value == "me"


def test_delete_and_exists(ns):
    e = ns.put("x", 1)
    assert ns.exists("x")
    with pytest.raises(ConflictError):
        ns.delete("x", expected_version=e.version + 1)
    assert ns.delete("x", expected_version=e.version) is True
    assert ns.delete("x") is False
    assert not ns.exists("x") and ns.get("x") is None
    again = ns.put("x", 2)
    assert again.version == 1  # a new incarnation, with a new create_revision
    assert again.create_revision > e.create_revision


def test_keys_glob_and_paging(env):
    mem = env.mem(page_size=7)
    mem.create_namespace("team")
    ns = mem.namespace("team")
    ns.put_many({f"task-{i:03d}": i for i in range(30)} | {"other": 1, "task[x]": 2})
    assert list(ns.keys("task-*")) == [f"task-{i:03d}" for i in range(30)]
    assert list(ns.keys("task-00?")) == [f"task-00{i}" for i in range(10)]
    assert list(ns.keys("task[[]*")) == ["task[x]"]
    assert len(list(ns.keys())) == 32


def test_get_many_and_put_many(ns):
    written = ns.put_many({"a": 1, "b": [1, 2], "c": None})
    assert {k: e.version for k, e in written.items()} == {"a": 1, "b": 1, "c": 1}
    assert len({e.mod_revision for e in written.values()}) == 1  # one revision: atomic
    got = ns.get_many(["c", "a", "missing", "a"])
    assert list(got) == ["c", "a", "missing"]
    assert got["a"].value == 1 and got["c"].value is None and got["missing"] is None


def test_put_many_is_all_or_nothing(ns):
    ns.put("b", "old")
    with pytest.raises(ConflictError) as info:
        ns.put_many({"a": 1, "b": 2}, expected_versions={"b": 7})
    assert info.value.key == "b"
    assert ns.get("a") is None and ns.get("b").value == "old"


def test_update_cas_loop(ns):
    for _ in range(5):
        ns.update("counter", lambda v: (v or 0) + 1)
    assert ns.get("counter").value == 5


def test_update_fn_exception_propagates_and_writes_nothing(ns):
    ns.put("k", 1)

    def boom(v):
        raise KeyError("nope")

    with pytest.raises(KeyError):
        ns.update("k", boom)
    assert ns.get("k").version == 1


def test_incr_is_exact_and_typed(ns):
    assert ns.incr("hits") == 1
    assert ns.incr("hits", 41) == 42
    assert ns.incr("hits", -50) == -8
    assert ns.get("hits").value == -8
    ns.put("big", 2**53 - 2)
    assert ns.incr("big") == 2**53 - 1
    with pytest.raises(NotAnInteger):
        ns.incr("big")
    ns.put("text", "seven")
    with pytest.raises(NotAnInteger):
        ns.incr("text")
    assert ns.get("big").value == 2**53 - 1


def test_history_get_version_and_rollback(ns):
    for i in range(1, 5):
        ns.put("plan", {"v": i})
    hist = ns.history("plan")
    assert [e.version for e in hist] == [4, 3, 2, 1]
    assert [e.value for e in hist] == [{"v": 4}, {"v": 3}, {"v": 2}, {"v": 1}]
    assert ns.get("plan", version=2).value == {"v": 2}
    rolled = ns.rollback("plan", to_version=2)
    assert rolled.version == 5 and rolled.value == {"v": 2}
    assert ns.get("plan").value == {"v": 2}
    with pytest.raises(VersionNotFound):
        ns.rollback("plan", to_version=99)
    assert ns.get("plan", version=99) is None


def test_history_depth_is_bounded(env):
    mem = env.mem()
    mem.create_namespace("h", history=2)
    ns = mem.namespace("h")
    for i in range(6):
        ns.put("k", i)
    assert [e.version for e in ns.history("k")] == [6, 5, 4]
    assert ns.get("k", version=3) is None


def test_lua_looking_strings_are_stored_inert(ns):
    evil = 'return redis.call("FLUSHALL") --]] " \\ end)('
    ns.put(evil, evil)
    assert ns.get(evil).value == evil
    assert ns.info().keys == 1


def test_compressed_values_roundtrip(env):
    mem = env.mem(compress_threshold=100)
    mem.create_namespace("z")
    ns = mem.namespace("z")
    value = {"text": "abc" * 1000}
    e = ns.put("doc", value)
    assert e.size < 3000  # stored compressed
    assert ns.get("doc").value == value


def test_an_entry_is_stored_packed_and_one_stored_field_by_field_still_works(env, ns):
    """An entry is a hash of its value and its metadata packed in "m" (lua/_lib.lua
    read_entry); one stored before that, a field per item, reads the same everywhere and
    its next write stores it packed."""
    key = f"{env.prefix}:{{team}}:e:a"
    e1 = ns.put("a", {"x": 1}, ttl=3600)
    assert set(env.raw.hgetall(key)) == {b"v", b"m"}
    ver, cr, mr, ct, mt, x, by, fmt = env.raw.hget(key, "m").split(b" ", 7)
    # A first version's mod revision and time are its create ones, and its format is
    # "json": each stored as the empty shorthand (lua/_lib.lua entry_meta).
    assert (int(ver), int(cr), mr, mt, by, fmt) == (
        1,
        e1.create_revision,
        b"",
        b"",
        b"planner",
        b"",
    )
    assert e1.mod_revision == e1.create_revision and e1.created_at == e1.updated_at
    assert int(ct) == round(e1.updated_at.timestamp() * 1000) and int(x) > int(ct)
    to_legacy(env.raw, key)
    got = ns.get("a")
    assert got is not None and (got.value, got.version, got.expires_at) == (
        {"x": 1},
        1,
        e1.expires_at,
    )
    assert got.created_at == e1.created_at and got.updated_by == "planner"
    assert ns.get_many(["a", "none"]) == {"a": got, "none": None}
    assert ns.exists("a") and ns.get("a", version=1) == got
    assert ns.touch("a", 60) is True  # rewrites it packed
    assert set(env.raw.hgetall(key)) == {b"v", b"m"}
    to_legacy(env.raw, key)
    e2 = ns.put("a", {"x": 2})
    assert (e2.version, e2.create_revision, e2.created_at) == (2, e1.create_revision, e1.created_at)
    assert set(env.raw.hgetall(key)) == {b"v", b"m"}
    assert [h.value for h in ns.history("a")] == [{"x": 2}, {"x": 1}]
    to_legacy(env.raw, key)
    assert ns.delete("a") is True and ns.get("a") is None and not env.raw.exists(key)


def test_entry_metadata_shorthands_and_the_text_written_out_read_the_same(env):
    """ "m" stores an empty part for a mod revision and time equal to the create ones and
    for the "json" format (lua/_lib.lua entry_meta, stop 24); anything else is written
    out, and an "m" with every part written out (as stored before) reads the same, on
    the get path (parsed by the client, with and without an expiry index) and on the
    write path (parsed by the scripts)."""
    mem = env.mem(compress_threshold=100)
    mem.create_namespace("z", history=5)
    ns = mem.namespace("z")
    key = f"{env.prefix}:{{z}}:e:"

    def parts(name: str) -> list[bytes]:
        return env.raw.hget(key + name, "m").split(b" ", 7)

    first = ns.put("a", {"x": 1})
    assert parts("a")[2] == parts("a")[4] == parts("a")[7] == b""
    second = ns.put("a", {"x": 2})  # a later version: its own mod revision
    stored = parts("a")
    assert int(stored[2]) == second.mod_revision != first.create_revision
    assert stored[4] in (b"", str(round(second.updated_at.timestamp() * 1000)).encode())
    big = ns.put("z", {"text": "abc" * 1000})  # compressed: not the "json" format
    assert parts("z")[7] not in (b"", b"json")
    lived = ns.put("t", {"x": 3}, ttl=3600)  # an expiry index: get.lua reads "m" itself
    assert parts("t")[2] == b""

    got = {name: ns.get(name) for name in ("a", "z", "t")}
    assert got["a"] == second and got["z"] == big and got["t"] == lived
    assert ns.get_many(["a", "z", "t"]) == got
    for name in ("a", "z", "t"):  # every part written out, as stored before stop 24
        env.raw.hset(key + name, "m", b" ".join(entry_meta_parts(env.raw.hget(key + name, "m"))))
        assert b"  " not in env.raw.hget(key + name, "m")
    assert {name: ns.get(name) for name in ("a", "z", "t")} == got
    assert ns.get_many(["a", "z", "t"]) == got
    again = ns.put("t", {"x": 4}, ttl=3600)  # the write script reads it written out
    assert (again.version, again.create_revision, again.created_at) == (
        2,
        lived.create_revision,
        lived.created_at,
    )
    assert [h.value for h in ns.history("t")] == [{"x": 4}, {"x": 3}]
    assert ns.touch("a", 60) is True and ns.get("a").version == 2

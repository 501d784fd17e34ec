"""Namespace lifecycle: create / info / list / update / clear / delete, and the key layout."""

from __future__ import annotations

import pytest

from swarm_memory import (
    NamespaceConfigMismatch,
    NamespaceExists,
    NamespaceNotFound,
    PermissionDenied,
)


def test_create_info_and_exist_ok(env):
    mem = env.mem()
    info = mem.create_namespace(
        "team",
        default_permission="read",
        permissions={"auditor": "read", "w": "write"},
        strategy="first-wins",
        ttl=60,
        max_keys=10,
        max_bytes=1000,
        history=3,
        over_quota="evict-oldest",
    )
    assert info.default_permission == "read" and info.strategy == "first-wins"
    assert info.permissions == {"auditor": "read", "w": "write", "planner": "admin"}
    assert (info.ttl, info.max_keys, info.max_bytes, info.history) == (60.0, 10, 1000, 3)
    assert info.over_quota == "evict-oldest" and info.created_by == "planner"
    with pytest.raises(NamespaceExists) as exc:
        mem.create_namespace("team")
    assert exc.value.namespace == "team"
    same = dict(
        default_permission="read",
        permissions={"auditor": "read"},
        strategy="first-wins",
        ttl=60,
        max_keys=10,
        max_bytes=1000,
        history=3,
        over_quota="evict-oldest",
    )
    again = mem.create_namespace("team", **same, exist_ok=True)  # the same settings: fine
    assert again.revision == info.revision and again.permissions == info.permissions


def test_exist_ok_with_other_settings_raises_and_changes_nothing(env):
    """The silent permission loss a new user hit: exist_ok=True used to return the stored
    namespace, ignoring a requested read-only auditor whose writes then succeeded."""
    mem = env.mem()
    mem.create_namespace("team", permissions={"auditor": "write"}, history=0)
    before = env.snapshot()
    with pytest.raises(NamespaceConfigMismatch) as exc:
        mem.create_namespace(
            "team", permissions={"auditor": "read"}, history=10, strategy="merge", exist_ok=True
        )
    err = exc.value
    assert isinstance(err, NamespaceExists) and err.namespace == "team"
    assert err.differences == {
        "strategy": ("latest-wins", "merge"),
        "history": (0, 10),
        "permissions['auditor']": ("write", "read"),
    }
    for field in ("strategy", "history", "permissions['auditor']", "update_namespace", "grant"):
        assert field in str(err)
    assert env.snapshot() == before  # nothing written
    # Grants made later to other agents are not a difference; the requested ones are.
    mem.namespace("team").grant({"worker": "read"})
    info = mem.create_namespace("team", permissions={"auditor": "write"}, exist_ok=True)
    assert info.permissions["worker"] == "read"


def test_missing_namespace(env):
    ns = env.mem().namespace("ghost")
    with pytest.raises(NamespaceNotFound):
        ns.get("x")
    with pytest.raises(NamespaceNotFound):
        ns.put("x", 1)
    assert env.snapshot() == {}


def test_list_namespaces_shows_only_readable(env):
    mem = env.mem()
    mem.create_namespace("open")
    mem.create_namespace("secret", default_permission="none")
    mem.create_namespace("shared", default_permission="none", permissions={"worker": "read"})
    assert mem.list_namespaces() == ["open", "secret", "shared"]
    assert mem.as_agent("worker").list_namespaces() == ["open", "shared"]


def test_update_namespace(env):
    mem = env.mem()
    mem.create_namespace("team")
    info = mem.update_namespace("team", strategy="version", max_keys=5, ttl=None)
    assert info.strategy == "version" and info.max_keys == 5 and info.ttl is None
    with pytest.raises(PermissionDenied) as exc:
        mem.as_agent("worker").update_namespace("team", max_keys=50)
    assert (exc.value.action, exc.value.required, exc.value.granted) == (
        "ns_update",
        "admin",
        "write",
    )
    assert mem.namespace_info("team").max_keys == 5


def test_clear_namespace_removes_every_entry_in_batches(env):
    mem = env.mem(clear_batch=7)
    mem.create_namespace("team", history=2)
    ns = mem.namespace("team")
    ns.put_many({f"k{i}": i for i in range(30)})
    ns.put("k1", "again")
    ns.put("t", 1, ttl=3600)
    assert mem.clear_namespace("team") == 31
    info = ns.info()
    assert info.keys == 0 and info.bytes == 0
    assert list(ns.keys()) == []
    leftover = {k for k in env.snapshot() if b":e:" in k or b":h:" in k}
    assert leftover == set()
    with pytest.raises(PermissionDenied):
        mem.as_agent("worker").clear_namespace("team")


def test_delete_namespace_removes_every_key(env):
    mem = env.mem(clear_batch=5)
    mem.create_namespace("team", history=2)
    mem.create_namespace("keep")
    mem.namespace("keep").put("x", 1)
    ns = mem.namespace("team")
    ns.put_many({f"k{i}": i for i in range(12)})
    ns.put("k1", 2)
    with pytest.raises(PermissionDenied):
        mem.as_agent("worker").delete_namespace("team")
    mem.delete_namespace("team")
    assert mem.list_namespaces() == ["keep"]
    assert not [k for k in env.snapshot() if b"{team}" in k]
    with pytest.raises(NamespaceNotFound):
        ns.get("k1")
    mem.create_namespace("team")  # the name is free again, starting afresh
    assert mem.namespace("team").put("k1", 1).version == 1


def test_every_key_of_a_namespace_shares_one_slot(env):
    """Decision 1, checked on the real keys the scripts created."""
    from redis.crc import key_slot

    mem = env.mem()
    mem.create_namespace("team", history=2)
    ns = mem.namespace("team")
    ns.put_many({"a{b}": 1, "{x}": 2, "ü": 3})
    ns.put("a{b}", 4)
    assert ns.get("a{b}").value == 4
    assert ns.exists("a{b}")
    keys = [k for k in env.snapshot() if b"{team}" in k]
    assert len(keys) > 8
    assert len({key_slot(k) for k in keys}) == 1
    assert env.guard.calls > 0 and set(env.guard.by_script) >= {"ns", "write", "get", "read"}


def test_retention_is_the_namespaces_not_each_writers(env):
    """stream_maxlen, audit_maxlen and dedupe_window are stored with the namespace when it
    is created (from the creator's settings) and read by every script, so a writer with
    other settings no longer changes them (it did: each call sent its own)."""
    creator = env.mem("planner", stream_maxlen=50, audit_maxlen=20, dedupe_window=0.05)
    creator.create_namespace("team", default_permission="read")
    info = creator.namespace_info("team")
    assert (info.max_events, info.audit_maxlen, info.dedupe_window) == (50, 20, 0.05)
    big = {"stream_maxlen": 100_000, "audit_maxlen": 100_000, "dedupe_window": 300.0}
    writer = env.mem("planner", **big).namespace("team")
    # The dedupe window is the namespace's 50 ms, not the writer's 300 s: a replay after
    # the record was purged (a purge runs every 8th revision) is a new write.
    assert writer.put("k", 1, op_id="op-x").version == 1
    env.sleep(0.2)
    for i in range(16):
        writer.put(f"filler-{i}", i)
    assert writer.put("k", 1, op_id="op-x").version == 2
    # The audit log keeps about the namespace's 20 records, not the writer's 100,000.
    stranger = env.mem("stranger", **big).namespace("team")
    for _ in range(300):
        with pytest.raises(PermissionDenied):
            stranger.put("x", 1)
    assert env.raw.xlen(f"{env.prefix}:{{team}}:audit") < 300
    # update_namespace changes them, like every other setting.
    creator.update_namespace("team", audit_maxlen=1000, dedupe_window=60)
    info = creator.namespace_info("team")
    assert (info.audit_maxlen, info.dedupe_window) == (1000, 60.0)


def test_a_namespace_stored_without_the_packed_cfg_works_and_gains_it_on_update(env):
    """Writes read the settings packed in the meta field "cfg" (lua/_lib.lua
    namespace_cfg); a namespace stored before it existed is read field by field until
    its next update stores it."""
    mem = env.mem()
    mem.create_namespace("old", ttl=3600, history=1)
    meta = f"{env.prefix}:{{old}}:meta"
    env.raw.hdel(meta, "cfg")
    ns = mem.namespace("old")
    e = ns.put("k", 1)
    assert e.expires_at is not None and ns.put("k", 2).version == 2
    assert [h.version for h in ns.history("k")] == [2, 1]
    mem.update_namespace("old", history=3, ttl=None)
    cfg = env.raw.hget(meta, "cfg")
    assert cfg is not None and cfg.split(b",")[2:6] == [b"0", b"0", b"0", b"3"]
    assert ns.put("k", 3).expires_at is None
    ns.put("k", 4)
    assert [h.version for h in ns.history("k")] == [4, 3, 2, 1]

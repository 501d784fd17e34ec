"""A successful write's audit record is its event (DESIGN.md decision 2, revised): writes
add nothing to the audit stream, and ns.audit() reads them from the feed, merged with the
audit stream's denials and admin records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from swarm_memory.errors import PermissionDenied

from ..conftest import Env


@pytest.fixture
def mem(env: Env) -> Any:
    m = env.mem("planner")
    m.create_namespace("team", permissions={"reader": "read"})
    return m


def test_writes_are_read_from_the_feed_with_their_call(env: Env, mem: Any) -> None:
    ns = mem.namespace("team")
    audit_key = f"{env.prefix}:{{team}}:audit"
    before = env.raw.xlen(audit_key)
    ns.put("a", 1)
    ns.incr("n")
    ns.create("c", 1)
    ns.put_many({"x": 1, "y": 2})
    ns.touch("a", ttl=60)
    ns.delete("missing")  # changes nothing: no revision, no event, no record
    ns.delete("a")
    assert env.raw.xlen(audit_key) == before  # nothing written there
    records = ns.audit()
    assert [(r.action, r.key, r.outcome) for r in records] == [
        ("delete", "a", "ok"),
        ("touch", "a", "ok"),
        ("put_many", "x", "ok"),
        ("create", "c", "ok"),
        ("incr", "n", "ok"),
        ("put", "a", "ok"),
        ("ns_create", None, "ok"),
    ]
    revisions = [r.revision for r in records[:-1]]
    assert revisions == sorted(revisions, reverse=True) and len(set(revisions)) == 6
    assert all(r.agent == "planner" and r.op_id is None for r in records[:-1])
    assert [r.key for r in ns.audit(action="incr")] == ["n"]
    assert len(ns.audit(limit=3)) == 3


def test_denials_and_admin_records_merge_in_time_order(env: Env, mem: Any) -> None:
    ns = mem.namespace("team")
    ns.put("a", 1)
    with pytest.raises(PermissionDenied):
        mem.as_agent("reader").namespace("team").put("x", 1)
    ns.grant({"w": "write"})
    ns.put("b", 2)
    ns.clear()
    actions = [(r.agent, r.action, r.outcome) for r in ns.audit()]
    # The clear's delete events are the audit stream's ns_clear record, shown once.
    assert actions[:5] == [
        ("planner", "ns_clear", "ok"),
        ("planner", "put", "ok"),
        ("planner", "ns_grant", "ok"),
        ("reader", "put", "denied"),
        ("planner", "put", "ok"),
    ]
    assert [r.action for r in ns.audit(agent="reader")] == ["put"]
    future = datetime.now(UTC) + timedelta(days=1)
    assert ns.audit(since=future) == []
    assert [r.action for r in ns.audit(until=future, action="put", limit=1)] == ["put"]


def test_read_and_lock_denials_keep_the_namespaces_audit_limit(env: Env) -> None:
    """Reads and lock calls read the namespace's stored audit limit only when they deny
    (lua/read.lua, lua/lock.lua): still the namespace's 20 records, not the caller's."""
    creator = env.mem("planner", audit_maxlen=20)
    creator.create_namespace("team", default_permission="none")
    stranger = env.mem("stranger", audit_maxlen=100_000).namespace("team")
    for i in range(300):
        with pytest.raises(PermissionDenied):
            stranger.get("k") if i % 2 else stranger.lock("L", wait=0).acquire()
    assert env.raw.xlen(f"{env.prefix}:{{team}}:audit") < 300
    records = creator.namespace("team").audit(agent="stranger", limit=300)
    assert {r.action for r in records} == {"get", "lock_acquire"}
    assert all(r.outcome == "denied" for r in records)

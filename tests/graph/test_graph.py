"""Memory graph contract: nodes, dedupe, links, bundles, neighbors, TTL, permissions,
events — on every backend, through both clients (the ``env`` matrix)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from swarm_memory import (
    InvalidInput,
    NodeConflict,
    NodeNotFound,
    PermissionDenied,
)
from swarm_memory.keys import GraphKeys
from tests.support import drain

PRECISE = {"big": 123456789012345678, "f": 0.30000000000000004, "empty": [], "obj": {}, "u": "é✓"}


@pytest.fixture
def mem(env):
    m = env.mem()
    m.create_graph("kb", link_kinds=["supports", "refutes", "next"])
    return m


@pytest.fixture
def g(mem):
    return mem.graph("kb")


def test_add_get_roundtrip_is_exact_and_the_caller_is_the_agent(g):
    n = g.add(PRECISE, context="task-1", kind="finding", confidence=0.75, tags=["b", "a"])
    assert n.created is True and n.agent == "planner" and n.version == 1
    got = g.get(n.id)
    assert got.content == PRECISE
    assert type(got.content["empty"]) is list and type(got.content["obj"]) is dict
    assert (got.context, got.kind, got.confidence, got.tags) == (
        "task-1",
        "finding",
        0.75,
        ("a", "b"),
    )
    assert got.created_at == n.created_at and got.expires_at is None
    assert g.get(n) == got


def test_the_same_fact_is_one_node_whoever_adds_it(env, mem, g):
    first = g.add({"x": 1, "y": [1, 2]}, context="c", kind="k")
    other = env.mem("worker").graph("kb").add({"y": [1, 2], "x": 1}, context="c", kind="k")
    assert other.id == first.id and other.created is False and other.agent == "planner"
    assert g.add({"x": 1, "y": [1, 2]}, context="c2", kind="k").id != first.id  # another context
    assert g.stats().nodes == 2


def test_update_is_versioned_and_a_stale_version_raises_with_the_current_node(g):
    n = g.add("v1", context="c", kind="k", confidence=0.5)
    n2 = g.update(n, expected_version=1, content="v2", confidence=0.9, tags=["t"])
    assert (n2.version, n2.content, n2.confidence, n2.tags) == (2, "v2", 0.9, ("t",))
    with pytest.raises(NodeConflict) as info:
        g.update(n, expected_version=1, content="v3")
    assert info.value.node.version == 2 and info.value.node.content == "v2"
    assert g.get(n).content == "v2"
    assert [x.id for x in g.recall(tags=["t"])] == [n.id]
    assert g.recall(context="c", min_confidence=0.95).nodes == []


def test_updating_into_another_nodes_fact_is_a_conflict(g):
    a = g.add("a", context="c", kind="k")
    b = g.add("b", context="c", kind="k")
    with pytest.raises(NodeConflict):
        g.update(b, content="a")
    assert g.get(b).content == "b"
    assert g.get(a).version == 1


def test_links_are_stored_both_ways_and_deleting_a_node_removes_them(env, g):
    a, b, c = (g.add(i, context="c", kind="k") for i in range(3))
    assert g.link(a, b, "supports", 0.5) is True
    assert g.link(a, b, "supports", 0.7) is False  # a new weight, same link
    g.link(c, a, "next")
    out = g.neighbors(a, direction="out")
    assert [(x.node.id, x.kind, x.weight, x.direction) for x in out] == [
        (b.id, "supports", 0.7, "out")
    ]
    assert [x.node.id for x in g.neighbors(a, direction="in")] == [c.id]
    assert {x.node.id for x in g.neighbors(c, depth=2, direction="out")} == {a.id, b.id}
    assert [x.node.id for x in g.neighbors(a, kind="next")] == [c.id]
    assert g.delete(a) is True and g.delete(a) is False
    assert g.neighbors(b) == [] and g.neighbors(c) == []
    keys = GraphKeys.of(env.prefix, "kb").fixed()
    adj, weights, index = keys[6], keys[7], keys[3]
    assert env.raw.zcard(adj) == 0 and env.raw.hlen(weights) == 0
    assert not [m for m in env.raw.zrange(index, 0, -1) if a.id.encode() in m]
    assert g.unlink(c, b, "next") is False


def test_links_need_both_nodes_and_a_declared_kind(env, g):
    a = g.add("a", context="c", kind="k")
    b = g.add("b", context="c", kind="k")
    g.delete(b)
    before = env.snapshot()
    with pytest.raises(NodeNotFound) as info:
        g.link(a, b, "supports")
    assert info.value.node_id == b.id
    with pytest.raises(InvalidInput) as bad:
        g.link(a, a, "causes")
    assert bad.value.field == "kind"
    assert env.snapshot() == before


def test_bundles_group_nodes_of_one_task_and_refuse_foreign_nodes(env, mem, g):
    a = g.add("a", context="c", kind="k")
    b = g.add("b", context="c", kind="k")
    bundle = g.bundle("task-7")
    assert bundle.add(a, b.id) == 2 and bundle.add(a) == 0
    assert [n.id for n in bundle.nodes()] == sorted([a.id, b.id])
    assert bundle.remove(b) == 1
    assert [n.id for n in bundle.nodes()] == [a.id]
    mem.create_graph("other")
    foreign = mem.graph("other").add("z", context="c", kind="k")
    before = env.snapshot()
    with pytest.raises(InvalidInput):
        bundle.add(foreign)
    with pytest.raises(NodeNotFound):
        bundle.add(a, foreign.id)
    assert env.snapshot() == before
    g.delete(a)
    assert bundle.nodes() == []


def test_an_expired_node_reads_as_absent_and_the_namespace_sweeper_removes_it(env, mem, g):
    keep = g.add("keep", context="c", kind="k")
    gone = g.add("gone", context="c", kind="k", ttl=0.05, tags=["x"])
    g.link(keep, gone, "supports")
    g.bundle("t").add(gone)
    env.sleep(0.1)
    assert g.get(gone) is None
    assert [n.id for n in g.recall(context="c")] == [keep.id]
    assert g.neighbors(keep) == []
    mem.namespace("kb").sweep()
    assert g.stats().nodes == 1
    keys = GraphKeys.of(env.prefix, "kb").fixed()
    assert env.raw.zcard(keys[6]) == 0 and env.raw.zcard(keys[8]) == 0
    assert not [m for m in env.raw.zrange(keys[3], 0, -1) if gone.id.encode() in m]
    feed = env.raw.xrange(mem.settings.key_prefix + ":{kb}:events")
    assert [e[1][b"k"] for e in feed if e[1][b"t"] == b"node_expire"] == [gone.id.encode()]


def test_graph_writes_append_events_to_the_namespace_feed(env, mem, g):
    rev = mem.namespace_info("kb").revision
    n = g.add({"a": 1}, context="c", kind="k")
    g.delete(n)
    snap = mem.namespace("kb").snapshot()
    assert snap.revision == rev + 2
    raw = env.raw.xrange(mem.settings.key_prefix + ":{kb}:events")
    types = [e[1][b"t"] for e in raw]
    assert types[-2:] == [b"node_add", b"node_delete"]


def test_an_op_id_replay_returns_the_first_outcome(g):
    first = g.add("x", context="c", kind="k", op_id="op-1")
    again = g.add("x", context="c", kind="k", op_id="op-1")
    assert again.id == first.id and again.created is True
    assert g.stats().nodes == 1


def test_permissions_are_checked_in_the_script(env, mem):
    mem.create_graph("locked", default_permission="none", permissions={"reader": "read"})
    n = mem.graph("locked").add("x", context="c", kind="k")
    reader = env.mem("reader").graph("locked")
    assert reader.get(n).content == "x"
    assert [x.id for x in reader.recall(context="c")] == [n.id]
    before = env.snapshot()
    with pytest.raises(PermissionDenied):
        reader.add("y", context="c", kind="k")
    with pytest.raises(PermissionDenied):
        reader.link(n, n, "any")
    stranger = env.mem("stranger").graph("locked")
    with pytest.raises(PermissionDenied):
        stranger.recall(context="c")
    with pytest.raises(PermissionDenied):
        stranger.get(n)
    after = env.snapshot()
    audit = [k for k in after if k.endswith(b":audit") or k.endswith(b":stats")]
    assert {k: v for k, v in after.items() if k not in audit} == {
        k: v for k, v in before.items() if k not in audit
    }


def test_deleting_the_namespace_removes_the_graph(env, mem, g):
    a = g.add("a", context="c", kind="k", ttl=60)
    g.link(a, g.add("b", context="c", kind="k"), "supports")
    mem.delete_namespace("kb")
    assert env.snapshot() == {}


def test_watchers_see_graph_events_with_small_contents(mem, g):
    ns = mem.namespace("kb")
    w = ns.watch(since=ns.info().revision)
    n = g.add({"found": [1, 2], "big": 123456789012345678}, context="c", kind="k")
    m = g.add("other", context="c", kind="k")
    g.link(n, m, "supports", 0.25)
    g.delete(m)
    events = drain(w, 4)
    w.close()
    assert [(e.type, e.key) for e in events] == [
        ("node_add", n.id),
        ("node_add", m.id),
        ("link", n.id),
        ("node_delete", m.id),
    ]
    assert events[0].value == {"found": [1, 2], "big": 123456789012345678}
    assert events[2].value == {"to": m.id, "kind": "supports", "weight": 0.25}
    assert events[0].agent == "planner"


def test_create_graph_again_with_exist_ok_keeps_or_changes_the_declared_kinds(env, mem, g):
    assert g.stats().link_kinds == ("next", "refutes", "supports")
    mem.create_graph("kb", exist_ok=True)  # no kinds given: what it declares stays
    assert g.stats().link_kinds == ("next", "refutes", "supports")
    mem.create_graph("kb", link_kinds=["causes"], exist_ok=True)
    assert g.stats().link_kinds == ("causes",)
    g.declare_link_kinds(None)
    assert g.stats().link_kinds is None
    a = g.add("a", context="c", kind="k")
    assert g.link(a, a, "anything") is True


def test_a_recall_page_may_be_short_when_few_candidates_match(g, monkeypatch):
    import swarm_memory._ops.graph as graph_ops

    monkeypatch.setattr(graph_ops, "SCAN_BUDGET", 2)
    monkeypatch.setattr(graph_ops, "PAGE_MAX_CALLS", 2)
    past = datetime(2020, 1, 1, tzinfo=UTC)
    wanted = g.add("old", context="c", kind="k")  # valid from forever, never invalid
    for i in range(9):
        g.add(i, context="c", kind="k", invalid_at=past)  # validity is not indexed
    now = datetime.now(UTC)
    page = g.recall(context="c", valid_at=now, limit=5)
    assert page.nodes == [] and page.cursor is not None  # 4 of 10 candidates read
    found = []
    while page.cursor is not None:
        page = g.recall(context="c", valid_at=now, limit=5, cursor=page.cursor)
        found += [n.id for n in page]
    assert found == [wanted.id]

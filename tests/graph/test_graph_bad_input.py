"""Memory graph bad input and corrupt data, on every backend and client.

Bad arguments raise a precise error before any script runs; what only the data can
refuse (a missing node, an undeclared link kind, another graph's node) raises after one
script call that writes nothing: the keyspace is unchanged either way. Stored graph data
that does not parse is CorruptData naming the Redis key it came from.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from swarm_memory import CorruptData, InvalidInput, NodeNotFound, QuotaExceeded
from swarm_memory.keys import GraphKeys

NAN, INF = float("nan"), float("inf")


@pytest.fixture
def mem(env):
    m = env.mem()
    m.create_graph("kb", link_kinds=["supports"])
    return m


@pytest.fixture
def g(mem):
    return mem.graph("kb")


@pytest.fixture
def keys(env):
    return dict(
        zip(
            ["gmeta", "nodes", "facts", "gix", "conf", "gexp", "adj", "weights", "bundles"],
            GraphKeys.of(env.prefix, "kb").fixed(),
            strict=True,
        )
    )


def _add(**kw: Any) -> dict[str, Any]:
    return {"content": {"a": 1}, "context": "c", "kind": "k", **kw}


BAD_ADDS = [
    _add(confidence=1.5),
    _add(confidence=-0.1),
    _add(confidence=NAN),
    _add(confidence=INF),
    _add(confidence="0.5"),
    _add(confidence=True),
    _add(context=""),
    _add(context=" padded"),
    _add(context="a\0b"),
    _add(context="x" * 129),
    _add(kind="new\nline"),
    _add(tags=[f"t{i}" for i in range(65)]),
    _add(tags=["x" * 65]),
    _add(tags="abc"),
    _add(tags=[1]),
    _add(content={"x": NAN}),
    _add(content=object()),
    _add(valid_from=datetime(2026, 1, 1)),  # naive
    _add(ttl=-1),
]


@pytest.mark.parametrize("kw", BAD_ADDS, ids=range(len(BAD_ADDS)))
def test_bad_node_input_is_refused_before_any_script(env, mem, g, kw):
    calls: list[str] = []
    mem.observe_scripts(lambda name, *_: calls.append(name))
    before = env.snapshot()
    args = dict(kw)
    content = args.pop("content")
    with pytest.raises(InvalidInput):
        g.add(content, **args)
    assert calls == [] and env.snapshot() == before


def test_bad_recall_link_and_neighbors_arguments(env, mem, g):
    n = g.add("x", context="c", kind="k")
    calls: list[str] = []
    mem.observe_scripts(lambda name, *_: calls.append(name))
    before = env.snapshot()
    bad = [
        lambda: g.recall(limit=0),
        lambda: g.recall(limit=1001),
        lambda: g.recall(cursor="nope"),
        lambda: g.recall(min_confidence=2),
        lambda: g.recall(since=datetime(2026, 1, 1)),
        lambda: g.recall(tags=["a"] * 0 + ["b" * 100]),
        lambda: g.neighbors(n, depth=0),
        lambda: g.neighbors(n, depth=5),
        lambda: g.neighbors(n, direction="up"),
        lambda: g.link(n, n, "supports", NAN),
        lambda: g.link(n, "not-an-id", "supports"),
        lambda: g.get("zzz"),
        lambda: g.update(n, expected_version=0),
        lambda: g.bundle(""),
    ]
    for call in bad:
        with pytest.raises(InvalidInput):
            call()
    assert calls == [] and env.snapshot() == before


def test_refusals_after_a_round_trip_change_nothing(env, mem, g):
    a = g.add("a", context="c", kind="k")
    gone = g.add("b", context="c", kind="k")
    g.delete(gone)
    mem.create_graph("other")
    foreign = mem.graph("other").add("f", context="c", kind="k")
    before = env.snapshot()
    with pytest.raises(NodeNotFound):
        g.link(a, gone, "supports")
    with pytest.raises(NodeNotFound):
        g.link(a, foreign.id, "supports")
    with pytest.raises(InvalidInput) as info:
        g.link(a, a, "refutes")
    assert info.value.field == "kind"
    with pytest.raises(NodeNotFound):
        g.bundle("t").add(a, foreign.id)
    with pytest.raises(InvalidInput):
        g.bundle("t").add(foreign)
    with pytest.raises(NodeNotFound):
        g.neighbors(gone)
    with pytest.raises(NodeNotFound):
        g.update(gone, content="z")
    assert env.snapshot() == before


def _corrupt(call, key: str) -> None:
    with pytest.raises(CorruptData) as info:
        call()
    assert info.value.key == key, info.value


def test_a_corrupt_node_record_is_corrupt_data_naming_the_nodes_hash(env, g, keys):
    n = g.add("x", context="c", kind="k")
    for junk in (b"zz", b"99999:short", b"2:n1", b"2:n9" + b"1:1" * 16):
        env.raw.hset(keys["nodes"], n.id, junk)
        _corrupt(lambda: g.get(n), keys["nodes"])
        _corrupt(lambda: g.recall(context="c"), keys["nodes"])
        before = env.snapshot()
        _corrupt(lambda: g.delete(n), keys["nodes"])
        assert env.snapshot() == before


def test_a_graph_key_of_the_wrong_type_fails_the_write_with_nothing_written(env, g, keys):
    env.raw.delete(keys["adj"])
    env.raw.set(keys["adj"], "junk")
    before = env.snapshot()
    _corrupt(lambda: g.add("x", context="c", kind="k"), keys["adj"])
    assert env.snapshot() == before


def test_corrupt_links_and_orphan_index_entries_are_named(env, g, keys):
    a = g.add("a", context="c", kind="k")
    env.raw.zadd(keys["adj"], {a.id.encode() + b"\0>\0supports": 0})  # no target
    _corrupt(lambda: g.neighbors(a), keys["adj"])
    _corrupt(lambda: g.delete(a), keys["adj"])
    env.raw.zadd(keys["gix"], {b"t\0%015d\0" % (a.created_ms + 1) + b"f" * 24: 0})
    _corrupt(g.recall, keys["gix"])


def test_time_filters_take_aware_datetimes(g):
    n = g.add("x", context="c", kind="k")
    assert [x.id for x in g.recall(since=n.created_at, until=n.created_at)] == [n.id]
    assert g.recall(since=datetime(2999, 1, 1, tzinfo=UTC)).nodes == []


def test_links_per_node_are_bounded_so_removing_a_node_is_bounded(env, g, keys):
    a = g.add("a", context="c", kind="k")
    b = g.add("b", context="c", kind="k")
    # 10,000 links of a's, planted directly (adding them one by one takes too long here).
    members = {a.id.encode() + b"\0>\0supports\0" + b"%024x" % i: 0 for i in range(10_000)}
    for chunk in range(0, 10_000, 2_000):
        part = dict(list(members.items())[chunk : chunk + 2_000])
        part.update({k.replace(b">", b"<", 1): 0 for k in part})
        env.raw.zadd(keys["adj"], part)
    before = env.snapshot()
    with pytest.raises(QuotaExceeded) as info:
        g.link(a, b, "supports")
    assert info.value.limit_kind == "links_per_node" and info.value.limit == 10_000
    assert env.snapshot() == before

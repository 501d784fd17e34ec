"""SwarmStore / AsyncSwarmStore: behaviour on every backend, bad input, TTL, versions,
semantic search kept fresh across clients, and a differential Hypothesis test against
LangGraph's InMemoryStore.

Deliberate differences from InMemoryStore (the differential test does not compare them):
- ``created_at`` is kept across updates (InMemoryStore resets it on every put).
- ``search`` without a query returns the newest update first (``updated_at`` descending,
  as LangGraph's Postgres store); InMemoryStore returns insertion order.
- ``list_namespaces`` lists namespaces that were written to (until deleted); InMemoryStore
  also lists a namespace a ``get`` merely looked into.
- ``$gt``-style filters on a missing or non-numeric value do not match (InMemoryStore raises).
- Items are ``VersionedItem`` with ``.version``; ``put(..., expected_version=)``.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langgraph.store.base import InvalidNamespaceError
from langgraph.store.memory import InMemoryStore

from swarm_memory import ConflictError, InvalidInput
from swarm_memory.langgraph import AsyncSwarmStore, SwarmStore, VersionedItem
from swarm_memory.testing import fake_memory
from tests.langgraph.conftest import Backend

DIMS = 16


def embed(texts: list[str]) -> list[list[float]]:
    """A deterministic toy embedding: texts sharing words are close."""
    out = []
    for text in texts:
        vec = [0.0] * DIMS
        for word in text.lower().split():
            vec[hashlib.sha256(word.encode()).digest()[0] % DIMS] += 1.0
        out.append(vec)
    return out


INDEX: Any = {"dims": DIMS, "embed": embed, "fields": ["text"]}


def test_items_round_trip_with_versions_and_created_at(backend: Backend) -> None:
    store = SwarmStore(backend.memory())
    ns = ("users", "u-1", "memories")
    store.put(ns, "pref", {"food": "pizza", "n": 1})
    first = store.get(ns, "pref")
    assert isinstance(first, VersionedItem)
    assert (first.value, first.version, first.namespace) == ({"food": "pizza", "n": 1}, 1, ns)
    store.put(ns, "pref", {"food": "sushi", "n": 2})
    second = store.get(ns, "pref")
    assert isinstance(second, VersionedItem) and second.version == 2
    assert second.created_at == first.created_at  # kept across updates
    assert second.updated_at >= first.updated_at
    store.delete(ns, "pref")
    assert store.get(ns, "pref") is None
    assert store.get(("nobody",), "x") is None


def test_expected_version_refuses_a_lost_update(backend: Backend) -> None:
    """Two agents read version 1, both think, both write: exactly one lands."""
    a = SwarmStore(backend.memory("agent-a"))
    b = SwarmStore(backend.memory("agent-b", settings=a.memory.settings))
    ns = ("team", "facts")
    assert a.put_versioned(ns, "fact", {"v": 0}, expected_version=0) == 1
    with pytest.raises(ConflictError):
        b.put(ns, "fact", {"v": "again"}, expected_version=0)  # only if absent
    seen_a, seen_b = a.get(ns, "fact"), b.get(ns, "fact")
    assert isinstance(seen_a, VersionedItem) and isinstance(seen_b, VersionedItem)
    a.put(ns, "fact", {"v": "a"}, expected_version=seen_a.version)
    with pytest.raises(ConflictError) as lost:
        b.put(ns, "fact", {"v": "b"}, expected_version=seen_b.version)
    assert lost.value.current is not None and lost.value.current.value["v"] == {"v": "a"}
    item = a.get(ns, "fact")
    assert item is not None and item.value == {"v": "a"}


def test_search_filters_offsets_and_namespaces(backend: Backend) -> None:
    store = SwarmStore(backend.memory())
    for i in range(6):
        store.put(("docs", f"g{i % 2}"), f"d{i}", {"n": i, "meta": {"kind": "ab"[i % 2]}})
    store.put(("other",), "x", {"n": 100})
    keys = lambda items: sorted(i.key for i in items)  # noqa: E731
    assert keys(store.search(("docs",), limit=100)) == [f"d{i}" for i in range(6)]
    assert keys(store.search(("docs", "g1"))) == ["d1", "d3", "d5"]
    assert keys(store.search(("docs",), filter={"n": {"$gte": 2, "$lt": 5}})) == ["d2", "d3", "d4"]
    assert keys(store.search(("docs",), filter={"n": {"$ne": 0}, "meta": {"kind": "a"}})) == [
        "d2",
        "d4",
    ]
    assert keys(store.search(("docs",), filter={"n": {"$gt": 4}})) == ["d5"]
    assert keys(store.search(("docs",), filter={"n": {"$lte": 0}})) == ["d0"]
    assert keys(store.search(("docs",), filter={"n": {"$eq": 3}})) == ["d3"]
    page1 = store.search(("docs",), limit=4)
    page2 = store.search(("docs",), limit=4, offset=4)
    assert len(page1) == 4 and len(page2) == 2
    assert keys(page1 + page2) == [f"d{i}" for i in range(6)]
    assert store.list_namespaces() == [("docs", "g0"), ("docs", "g1"), ("other",)]
    assert store.list_namespaces(prefix=("docs",)) == [("docs", "g0"), ("docs", "g1")]
    assert store.list_namespaces(suffix=("g1",)) == [("docs", "g1")]
    assert store.list_namespaces(prefix=("*", "g0")) == [("docs", "g0")]
    assert store.list_namespaces(max_depth=1) == [("docs",), ("other",)]
    assert store.list_namespaces(limit=1, offset=1) == [("docs", "g1")]


def test_namespace_labels_map_reversibly(backend: Backend) -> None:
    store = SwarmStore(backend.memory())
    odd = [("ünï", "space here"), ("a:b/c", "x=y"), ("long" * 40, "tail")]
    for ns in odd:
        store.put(ns, "k k", {"ns": list(ns)})
    assert sorted(store.list_namespaces()) == sorted(odd)
    for ns in odd:
        item = store.get(ns, "k k")
        assert item is not None and item.namespace == ns and item.key == "k k"


def test_bad_input_is_refused_before_anything_is_written(backend: Backend) -> None:
    mem = backend.memory()
    store = SwarmStore(mem)
    for bad in [(), ("a.b",), ("",), ("langgraph", "x"), ("ok", 3)]:
        with pytest.raises(InvalidNamespaceError):
            store.put(bad, "k", {"v": 1})  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        store.put(("ok",), "k", {"v": object()})  # not JSON
    with pytest.raises(InvalidInput):
        store.put(("ok",), "k", {"v": "x" * (2 << 20)})  # above max_value_bytes
    with pytest.raises(InvalidInput):
        store.put(("ok",), "k", {"v": 1}, ttl=-1)
    with pytest.raises(InvalidInput):
        store.search(("ok",), filter={"v": {"$regex": "x"}})
    assert store.list_namespaces() == []  # not even the namespace was created
    assert store.search(("ok",)) == []


def test_ttl_expired_items_are_never_returned_and_reads_refresh(backend: Backend) -> None:
    store = SwarmStore(backend.memory(), ttl={"default_ttl": 1 / 60, "refresh_on_read": True})
    ns = ("sessions",)
    store.put(ns, "short", {"v": 1}, ttl=0.6 / 60)  # 0.6 s
    store.put(ns, "kept", {"v": 2})  # default: 1 s, refreshed by reads
    store.put(ns, "forever", {"v": 3}, ttl=None)
    for _ in range(4):
        time.sleep(0.3)
        assert store.get(ns, "kept") is not None  # each read restarts its 1 s
    assert store.get(ns, "short") is None
    assert sorted(i.key for i in store.search(ns)) == ["forever", "kept"]
    time.sleep(1.2)
    assert [i.key for i in store.search(ns, refresh_ttl=False)] == ["forever"]
    store.sweep_ttl()
    assert store.get(ns, "forever") is not None


def test_semantic_search_ranks_by_cosine_and_sees_other_clients_writes(backend: Backend) -> None:
    writer = SwarmStore(backend.memory("writer"), index=INDEX)
    reader = SwarmStore(backend.memory("reader", settings=writer.memory.settings), index=INDEX)
    ns = ("kb",)
    writer.put(ns, "pizza", {"text": "pizza with cheese"})
    writer.put(ns, "rocket", {"text": "rocket launch to orbit"})
    writer.put(ns, "plain", {"other": 1}, index=False)
    hits = reader.search(ns, query="cheese pizza", limit=3)
    assert hits[0].key == "pizza" and hits[0].score is not None
    assert hits[-1].key == "plain" and hits[-1].score is None  # unscored items fill the page
    # The reader's cache follows the writer's changes through the namespace's feed.
    writer.put(ns, "pasta", {"text": "cheese pasta pizza"})
    writer.delete(ns, "pizza")
    keys = [h.key for h in reader.search(ns, query="cheese pizza", limit=2)]
    assert keys[0] == "pasta" and "pizza" not in keys
    writer.put(ns, "rocket", {"text": "cheese pizza"})
    assert reader.search(ns, query="cheese pizza", limit=1)[0].key == "rocket"
    reader.close()
    writer.close()


async def test_async_store_matches_the_sync_one(abackend: Backend) -> None:
    store = AsyncSwarmStore(abackend.async_memory(), index=INDEX)
    ns = ("a", "b")
    await store.aput(ns, "k", {"text": "hello world", "n": 1})
    await store.aput(ns, "j", {"text": "goodbye", "n": 2})
    item = await store.aget(ns, "k")
    assert item is not None and item.value["n"] == 1
    hits = await store.asearch(("a",), query="hello", limit=1)
    assert hits[0].key == "k"
    assert [i.key for i in await store.asearch(ns, filter={"n": {"$gt": 1}})] == ["j"]
    assert await store.alist_namespaces() == [ns]
    with pytest.raises(ConflictError):
        await store.aput(ns, "k", {"n": 3}, expected_version=7)
    await store.adelete(ns, "k")
    assert await store.aget(ns, "k") is None
    await store.aclose()


# ------------------------------------------------------------------ differential test
NAMESPACES = [("a",), ("a", "b"), ("a", "c"), ("d",)]
KEYS = ["k1", "k2", "k3"]
values = st.fixed_dictionaries(
    {"n": st.integers(-3, 3), "s": st.sampled_from(["x", "y"])},
    optional={"m": st.fixed_dictionaries({"q": st.integers(0, 2)})},
)
filters = st.one_of(
    st.none(),
    st.builds(lambda v: {"s": v}, st.sampled_from(["x", "y"])),
    st.builds(
        lambda op, v: {"n": {op: v}},
        st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte"]),
        st.integers(-3, 3),
    ),
    st.builds(lambda v: {"m": {"q": v}}, st.integers(0, 2)),
)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.sampled_from(NAMESPACES), st.sampled_from(KEYS), values),
        st.tuples(st.just("delete"), st.sampled_from(NAMESPACES), st.sampled_from(KEYS)),
        st.tuples(st.just("get"), st.sampled_from(NAMESPACES), st.sampled_from(KEYS)),
        st.tuples(st.just("search"), st.sampled_from([(), ("a",), ("a", "b"), ("d",)]), filters),
        st.tuples(
            st.just("list"),
            st.sampled_from([None, ("a",), ("*", "b")]),
            st.sampled_from([None, ("b",)]),
            st.sampled_from([None, 1]),
        ),
    ),
    max_size=25,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(ops)
def test_store_agrees_with_in_memory_store(steps: list[tuple[Any, ...]]) -> None:
    ours, oracle = SwarmStore(fake_memory("diff")), InMemoryStore()
    live: set[tuple[str, ...]] = set()
    for step in steps:
        kind = step[0]
        if kind == "put":
            _, ns, key, value = step
            ours.put(ns, key, value)
            oracle.put(ns, key, value)
        elif kind == "delete":
            _, ns, key = step
            ours.delete(ns, key)
            oracle.delete(ns, key)
        elif kind == "get":
            _, ns, key = step
            got, want = ours.get(ns, key), oracle.get(ns, key)
            assert (got.value if got else None) == (want.value if want else None)
        elif kind == "search":
            _, prefix, flt = step
            found = ours.search(prefix, filter=flt, limit=100)
            expected = oracle.search(prefix, filter=flt, limit=100)
            assert sorted((i.namespace, i.key, repr(i.value)) for i in found) == sorted(
                (i.namespace, i.key, repr(i.value)) for i in expected
            )
        else:
            _, prefix, suffix, depth = step
            listed = ours.list_namespaces(prefix=prefix, suffix=suffix, max_depth=depth)
            oracle_listed = oracle.list_namespaces(prefix=prefix, suffix=suffix, max_depth=depth)
            live = {ns for ns, d in oracle._data.items() if d}
            full = [ns for ns in ours.list_namespaces(prefix=prefix, suffix=suffix) if ns in live]
            if depth is None:
                assert [ns for ns in listed if ns in live] == [
                    ns for ns in oracle_listed if ns in live
                ]
            else:
                assert set(oracle_listed) >= {ns[:depth] for ns in full}
    ours.close()

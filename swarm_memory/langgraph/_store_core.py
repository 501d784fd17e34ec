"""The store's flows, written once for ``SwarmStore`` and ``AsyncSwarmStore`` (see ``_flow``).

Layout: one swarm_memory namespace per LangGraph namespace tuple, named reversibly
(``<prefix>.t.users.123.memories``: labels cannot contain ".", so the join is reversible;
hex or hashed names for other text, see ``_names``). An item is the entry ``i/<key>``:
``{"v": value, "t": ttl minutes | None, "e": {field path: vector}}``; its version,
``created_at`` (kept across updates) and ``updated_at`` are the entry's own. A batch's
writes to one namespace are one transaction (one script call); reads run first, as in
InMemoryStore. Semantic search: client-side cosine (numpy) over a per-namespace cache of
the vectors, brought up to date before each search from the namespace's change feed.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from langgraph.store.base import (
    GetOp,
    IndexConfig,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    ensure_embeddings,
    get_text_at_path,
    tokenize_path,
)

from swarm_memory.errors import EventsTrimmed, InvalidInput, NamespaceExists, NamespaceNotFound
from swarm_memory.langgraph import _names as names
from swarm_memory.langgraph._flow import Call, Flow, Gather, Handles, Tx
from swarm_memory.models import Entry

ITEM = "i/"
_TUPLE_KEY = names.TID_KEY
_DRAIN_WAIT = 2.0  # seconds a search waits for the feed to reach the revision it read


class VersionedItem(Item):
    """An :class:`~langgraph.store.base.Item` with its entry ``version`` (1 on create,
    +1 per update): pass it back as ``put(..., expected_version=)``."""

    __slots__ = ("version",)

    def __init__(self, *, version: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.version = version

    def dict(self) -> dict[str, Any]:
        return {**super().dict(), "version": self.version}


class VersionedSearchItem(SearchItem):
    """A search result with its entry ``version``."""

    __slots__ = ("version",)

    def __init__(self, *, version: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.version = version

    def dict(self) -> dict[str, Any]:
        return {**super().dict(), "version": self.version}


def validate_labels(namespace: object, *, allow_empty: bool = False, root: bool = True) -> None:
    """As LangGraph: a tuple of non-empty str labels without "." or NUL, not rooted at
    "langgraph" (raises InvalidNamespaceError, a ValueError)."""
    if not isinstance(namespace, tuple):
        raise InvalidNamespaceError(f"namespace must be a tuple of str, got {namespace!r:.80}")
    if not namespace and not allow_empty:
        raise InvalidNamespaceError("Namespace cannot be empty.")
    for label in namespace:
        if not isinstance(label, str):
            raise InvalidNamespaceError(
                f"Invalid namespace label {label!r} in {namespace}: labels must be strings"
            )
        if label == "*" and allow_empty:
            continue
        if not label or "." in label or "\x00" in label:
            raise InvalidNamespaceError(
                f"Invalid namespace label {label!r} in {namespace}: labels must be non-empty "
                "and contain no '.' or NUL"
            )
    if root and namespace and namespace[0] == "langgraph":
        raise InvalidNamespaceError(
            f'Root label for namespace cannot be "langgraph". Got: {namespace}'
        )


def item_key(key: object) -> str:
    if not isinstance(key, str):
        raise InvalidInput(f"key must be a str, not {type(key).__name__}", field="key", value=key)
    return ITEM + names.q(key)


def _compare(item_value: Any, filter_value: Any) -> bool:
    if isinstance(filter_value, dict):
        if any(k.startswith("$") for k in filter_value):
            return all(_operator(item_value, k, v) for k, v in filter_value.items())
        if not isinstance(item_value, dict):
            return False
        return all(_compare(item_value.get(k), v) for k, v in filter_value.items())
    if isinstance(filter_value, list | tuple):
        return (
            isinstance(item_value, list | tuple)
            and len(item_value) == len(filter_value)
            and all(_compare(a, b) for a, b in zip(item_value, filter_value, strict=True))
        )
    return bool(item_value == filter_value)


_ORDERED = {
    "$gt": lambda a, b: a > b,
    "$gte": lambda a, b: a >= b,
    "$lt": lambda a, b: a < b,
    "$lte": lambda a, b: a <= b,
}


def _operator(value: Any, operator: str, operand: Any) -> bool:
    if operator == "$eq":
        return bool(value == operand)
    if operator == "$ne":
        return bool(value != operand)
    compare = _ORDERED.get(operator)
    if compare is None:
        raise InvalidInput(
            f"unsupported filter operator {operator!r}; use $eq $ne $gt $gte $lt $lte",
            field="filter",
            value=operator,
        )
    # A missing or non-numeric value never matches an ordering (InMemoryStore raises).
    try:
        return bool(compare(float(value), float(operand)))
    except (TypeError, ValueError):
        return False


def _check_filter(flt: object) -> None:
    if flt is None:
        return
    if not isinstance(flt, dict):
        raise InvalidInput("filter must be a dict", field="filter", value=flt)
    for key, value in flt.items():
        if isinstance(key, str) and key.startswith("$") and key not in _ORDERED | _EQUALITY:
            raise InvalidInput(
                f"unsupported filter operator {key!r}; use $eq $ne $gt $gte $lt $lte",
                field="filter",
                value=key,
            )
        if isinstance(value, dict):
            _check_filter(value)


_EQUALITY = {"$eq": None, "$ne": None}


def matches(condition: MatchCondition, ns: tuple[str, ...]) -> bool:
    path = tuple(condition.path)
    if len(ns) < len(path):
        return False
    pairs = (
        zip(ns, path, strict=False)
        if condition.match_type == "prefix"
        else zip(reversed(ns), reversed(path), strict=False)
    )
    return all(p in ("*", k) for k, p in pairs)


@dataclass
class _Cached:
    """A namespace's items with vectors, as of ``revision``; ``watch`` follows on."""

    revision: int
    items: dict[str, tuple[Entry, list[list[float]]]]
    watch: Any = None


@dataclass
class StoreCore:
    prefix: str
    handles: Handles
    index: IndexConfig | None
    ttl: TTLConfig | None
    embeddings: Any = None
    fields: list[tuple[str, Any]] = field(default_factory=list)
    known: set[str] = field(default_factory=set)
    cache: dict[str, _Cached] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.index:
            if not self.index.get("dims"):
                raise InvalidInput("index needs dims", field="index", value=self.index)
            self.embeddings = ensure_embeddings(self.index.get("embed"))
            self.fields = [
                (p, tokenize_path(p) if p != "$" else p) for p in self.index.get("fields") or ["$"]
            ]

    # ------------------------------------------------------------ names
    def ns_name(self, namespace: tuple[str, ...]) -> tuple[str, bool]:
        return names.encode_name(self.prefix, ".".join(namespace))

    def ensure(self, namespace: tuple[str, ...], force: bool = False) -> Flow[str]:
        name, hashed = self.ns_name(namespace)
        if force or name not in self.known:
            with contextlib.suppress(NamespaceExists):
                yield Call(
                    None,
                    "create_namespace",
                    (name,),
                    {"default_permission": "admin", "exist_ok": True},
                )
            if hashed:
                yield Call(name, "put", (_TUPLE_KEY, list(namespace)))
            self.known.add(name)
        return name

    def namespaces(self) -> Flow[list[tuple[tuple[str, ...], str]]]:
        listed: list[str] = yield Call(None, "list_namespaces")
        out = []
        for name in listed:
            if not names.owns(self.prefix, name):
                continue
            text = names.decode_name(self.prefix, name)
            if text is not None:
                out.append((tuple(text.split(".")), name))
            elif names.is_hashed(self.prefix, name):
                with contextlib.suppress(NamespaceNotFound):
                    entry = yield Call(name, "get", (_TUPLE_KEY,))
                    if entry is not None:
                        out.append((tuple(entry.value), name))
        return out

    # ------------------------------------------------------------ items
    def _item(self, namespace: tuple[str, ...], entry: Entry) -> Item:
        return VersionedItem(
            namespace=namespace,
            key=names.uq(entry.key[len(ITEM) :]),
            value=entry.value["v"],
            created_at=entry.created_at,
            updated_at=entry.updated_at,
            version=entry.version,
        )

    def _search_item(
        self, namespace: tuple[str, ...], entry: Entry, score: float | None
    ) -> SearchItem:
        return VersionedSearchItem(
            namespace=namespace,
            key=names.uq(entry.key[len(ITEM) :]),
            value=entry.value["v"],
            created_at=entry.created_at,
            updated_at=entry.updated_at,
            version=entry.version,
            score=score,
        )

    def _refresh(self, name: str, entries: Iterable[Entry], refresh: bool | None) -> list[Call]:
        wanted = refresh if refresh is not None else (self.ttl or {}).get("refresh_on_read", True)
        if not wanted:
            return []
        return [
            Call(name, "touch", (e.key, e.value["t"] * 60.0))
            for e in entries
            if e.value.get("t") is not None
        ]

    # ------------------------------------------------------------ batch
    def batch(self, ops: Sequence[Op]) -> Flow[list[Result]]:
        results: list[Result] = [None] * len(ops)
        writes: dict[tuple[tuple[str, ...], str], PutOp] = {}
        for op in ops:
            if isinstance(op, GetOp):
                validate_labels(op.namespace)
            elif isinstance(op, SearchOp):
                validate_labels(op.namespace_prefix, allow_empty=True, root=False)
            elif isinstance(op, PutOp):
                validate_labels(op.namespace)
                item_key(op.key)
            elif isinstance(op, ListNamespacesOp):
                for cond in op.match_conditions or ():
                    validate_labels(tuple(cond.path), allow_empty=True, root=False)
            else:
                raise InvalidInput(f"unknown store op {type(op).__name__}", field="ops", value=op)
        for i, op in enumerate(ops):
            if isinstance(op, GetOp):
                results[i] = yield from self.get(op)
            elif isinstance(op, SearchOp):
                results[i] = yield from self.search(op)
            elif isinstance(op, ListNamespacesOp):
                results[i] = yield from self.list_namespaces(op)
            elif isinstance(op, PutOp):
                writes[(op.namespace, op.key)] = op
        if writes:
            yield from self.apply(writes.values())
        return results

    def get(self, op: GetOp) -> Flow[Item | None]:
        name, _ = self.ns_name(op.namespace)
        try:
            entry = yield Call(name, "get", (item_key(op.key),))
        except NamespaceNotFound:
            return None
        if entry is None:
            return None
        for call in self._refresh(name, [entry], op.refresh_ttl):
            with contextlib.suppress(NamespaceNotFound):
                yield call
        return self._item(op.namespace, entry)

    def _record(self, op: PutOp, vectors: dict[str, list[float]]) -> dict[str, Any]:
        ttl = op.ttl if op.ttl is not None else None
        if ttl is not None and (
            isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > 0
        ):
            raise InvalidInput("ttl must be positive minutes or None", field="ttl", value=ttl)
        if not isinstance(op.value, Mapping):
            raise InvalidInput(
                f"store values are dicts, not {type(op.value).__name__}",
                field="value",
                value=type(op.value).__name__,
            )
        return {"v": dict(op.value), "t": ttl, "e": vectors}

    def _texts(self, op: PutOp) -> list[tuple[str, str]]:
        if not self.embeddings or op.value is None or op.index is False:
            return []
        paths = (
            self.fields
            if op.index is None
            else [(p, tokenize_path(p) if p != "$" else p) for p in op.index]
        )
        out: list[tuple[str, str]] = []
        for path, tokens in paths:
            texts = get_text_at_path(op.value, tokens)
            if len(texts) > 1:
                out.extend((f"{path}.{i}", t) for i, t in enumerate(texts))
            elif texts:
                out.append((path, texts[0]))
        return out

    def apply(
        self,
        ops: Iterable[PutOp],
        expected: Mapping[tuple[tuple[str, ...], str], int] | None = None,
    ) -> Flow[dict[tuple[tuple[str, ...], str], Entry | None]]:
        ops = list(ops)
        texts = {(op.namespace, op.key): self._texts(op) for op in ops}
        flat = [t for pairs in texts.values() for _, t in pairs]
        vectors: list[list[float]] = []
        if flat:
            vectors = yield Call(
                None,
                "embed_documents",
                (flat,),
                obj=self.embeddings,
                async_method="aembed_documents",
            )
        by_ns: dict[tuple[str, ...], dict[str, tuple[Any, float | None, None]]] = {}
        deletes: dict[tuple[str, ...], dict[str, None]] = {}
        checks: dict[tuple[str, ...], dict[str, int]] = {}
        pos = 0
        for op in ops:
            k = item_key(op.key)
            if expected and (op.namespace, op.key) in expected:
                checks.setdefault(op.namespace, {})[k] = expected[(op.namespace, op.key)]
            if op.value is None:
                deletes.setdefault(op.namespace, {})[k] = None
                continue
            pairs = texts[(op.namespace, op.key)]
            vecs = {path: list(map(float, vectors[pos + j])) for j, (path, _) in enumerate(pairs)}
            pos += len(pairs)
            record = self._record(op, vecs)
            ttl = record["t"] * 60.0 if record["t"] is not None else None
            by_ns.setdefault(op.namespace, {})[k] = (record, ttl, None)
        out: dict[tuple[tuple[str, ...], str], Entry | None] = {}
        for namespace in {*by_ns, *deletes, *checks}:
            puts = by_ns.get(namespace, {})
            tx = Tx(
                self.ns_name(namespace)[0],
                checks.get(namespace, {}),
                puts,
                deletes.get(namespace, {}),
            )
            # The transaction first: a bad value fails before anything (the namespace
            # included) is created; a missing namespace is made only for puts.
            try:
                result = yield tx
            except NamespaceNotFound:
                if not puts:
                    continue
                yield from self.ensure(namespace, force=True)
                result = yield tx
            name = tx.namespace
            for k, entry in result.entries.items():
                out[(namespace, names.uq(k[len(ITEM) :]))] = entry
                self._apply_cached(name, k, entry)
        return out

    def _apply_cached(self, name: str, key: str, entry: Entry | None) -> None:
        cached = self.cache.get(name)
        if cached is None:
            return
        if entry is None:
            cached.items.pop(key, None)
        else:
            cached.items[key] = (entry, list(entry.value.get("e", {}).values()))

    # ------------------------------------------------------------ search
    def search(self, op: SearchOp) -> Flow[list[SearchItem]]:
        if op.limit < 0 or op.offset < 0:
            raise InvalidInput("limit and offset must be >= 0", field="limit", value=op.limit)
        _check_filter(op.filter)
        listed = yield from self.namespaces()
        n = len(op.namespace_prefix)
        targets = sorted((ns, name) for ns, name in listed if ns[:n] == tuple(op.namespace_prefix))
        semantic = bool(op.query and self.embeddings)
        query_vec: list[float] = []
        if semantic:
            query_vec = yield Call(
                None,
                "embed_query",
                (op.query,),
                obj=self.embeddings,
                async_method="aembed_query",
            )
        candidates: list[tuple[tuple[str, ...], str, Entry, list[list[float]]]] = []
        for ns, name in targets:
            if semantic:
                items = yield from self._cached(name)
            else:
                try:
                    snap = yield Call(name, "snapshot", (ITEM + "*",))
                except NamespaceNotFound:
                    continue
                items = {k: (e, []) for k, e in snap.entries.items()}
            for entry, vecs in items.values():
                if not op.filter or all(
                    _compare(entry.value["v"].get(k), v) for k, v in op.filter.items()
                ):
                    candidates.append((ns, name, entry, vecs))
        if semantic:
            kept = yield from self._recheck(_rank(query_vec, candidates, op.offset, op.limit))
        else:
            candidates.sort(key=lambda c: (-c[2].updated_at.timestamp(), c[0], c[2].key))
            kept = [(c, None) for c in candidates[op.offset : op.offset + op.limit]]
        refresh: list[Call] = []
        for (_, name, entry, _), _score in kept:
            refresh.extend(self._refresh(name, [entry], op.refresh_ttl))
        if refresh:
            yield Gather(tuple(refresh))
        return [self._search_item(c[0], c[2], score) for c, score in kept]

    def _cached(self, name: str) -> Flow[dict[str, tuple[Entry, list[list[float]]]]]:
        """The namespace's items with vectors, brought up to its current revision."""
        try:
            info = yield Call(name, "info")
        except NamespaceNotFound:
            yield from self._drop_cache(name)
            return {}
        cached = self.cache.get(name)
        if cached is not None and cached.revision < info.revision:
            fresh = yield from self._drain(name, cached, info.revision)
            if not fresh:
                yield from self._drop_cache(name)
                cached = None
        if cached is None:
            snap = yield Call(name, "snapshot", (ITEM + "*",))
            cached = _Cached(
                snap.revision,
                {k: (e, list(e.value.get("e", {}).values())) for k, e in snap.entries.items()},
            )
            cached.watch = yield Call(name, "watch", ("*",), {"since": snap.revision})
            self.cache[name] = cached
        return dict(cached.items)

    def _recheck(
        self, kept: list[tuple[Any, float | None]]
    ) -> Flow[list[tuple[Any, float | None]]]:
        """Re-read the chosen items (one call per namespace): the server decides expiry,
        and the values returned are current."""
        by_name: dict[str, list[str]] = {}
        for (_, name, entry, _), _ in kept:
            by_name.setdefault(name, []).append(entry.key)
        calls = tuple(Call(name, "get_many", (keys,)) for name, keys in by_name.items())
        results = (yield Gather(calls)) if calls else []
        fresh: dict[tuple[str, str], Entry | None] = {}
        for name, result in zip(by_name, results, strict=True):
            if isinstance(result, BaseException):
                if isinstance(result, NamespaceNotFound):
                    continue
                raise result
            fresh.update({(name, k): e for k, e in result.items()})
        out = []
        for (ns, name, entry, vecs), score in kept:
            now = fresh.get((name, entry.key))
            if now is not None:
                out.append(((ns, name, now, vecs), score))
        return out

    def _drain(self, name: str, cached: _Cached, revision: int) -> Flow[bool]:
        changed: set[str] = set()
        waited = 0.0
        while cached.revision < revision:
            try:
                event = yield Call(None, "get", (), {"timeout": 0.05}, obj=cached.watch)
            except EventsTrimmed:
                return False
            if event is None:
                waited += 0.05
                if waited >= _DRAIN_WAIT:
                    return False
                continue
            cached.revision = max(cached.revision, event.revision)
            if event.type in ("ns_clear", "ns_delete"):
                return False
            if event.key and event.key.startswith(ITEM):
                changed.add(event.key)
        if changed:
            got = yield Call(name, "get_many", (sorted(changed),))
            for key, entry in got.items():
                self._apply_cached(name, key, entry)
        return True

    def _drop_cache(self, name: str) -> Flow[None]:
        cached = self.cache.pop(name, None)
        if cached is not None and cached.watch is not None:
            with contextlib.suppress(Exception):
                yield Call(None, "close", obj=cached.watch)

    def close(self) -> Flow[None]:
        for name in list(self.cache):
            yield from self._drop_cache(name)

    # ------------------------------------------------------------ namespaces
    def list_namespaces(self, op: ListNamespacesOp) -> Flow[list[tuple[str, ...]]]:
        listed = yield from self.namespaces()
        found = [ns for ns, _ in listed]
        if op.match_conditions:
            found = [ns for ns in found if all(matches(c, ns) for c in op.match_conditions)]
        if op.max_depth is not None:
            found = sorted({ns[: op.max_depth] for ns in found})
        else:
            found = sorted(found)
        return found[op.offset : op.offset + op.limit]

    def sweep(self) -> Flow[int]:
        """Remove expired items now (reads never return them anyway); returns how many."""
        listed = yield from self.namespaces()
        removed = 0
        for _, name in listed:
            with contextlib.suppress(NamespaceNotFound):
                result = yield Call(name, "sweep")
                removed += len(result.expired)
        return removed


def _rank(
    query: list[float],
    candidates: list[tuple[tuple[str, ...], str, Entry, list[list[float]]]],
    offset: int,
    limit: int,
) -> list[tuple[tuple[tuple[str, ...], str, Entry, list[list[float]]], float | None]]:
    """Max-pooled cosine over each item's vectors, best first; items without vectors
    fill the page after the scored ones (as InMemoryStore does)."""
    import numpy as np  # noqa: PLC0415 - the [langgraph] extra; only semantic search needs it

    owners = [i for i, c in enumerate(candidates) for _ in c[3]]
    scoreless = [c for c in candidates if not c[3]]
    scores: dict[int, float] = {}
    if owners:
        matrix = np.asarray([v for c in candidates for v in c[3]], dtype=np.float32)
        q = np.asarray(query, dtype=np.float32)
        norms = np.linalg.norm(matrix, axis=1) * (np.linalg.norm(q) or 1.0)
        sims = (matrix @ q) / np.where(norms == 0, 1.0, norms)
        for owner, sim in zip(owners, sims.tolist(), strict=True):
            if not math.isnan(sim) and (owner not in scores or sim > scores[owner]):
                scores[owner] = sim
    ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
    kept: list[tuple[Any, float | None]] = [
        (candidates[i], s) for i, s in ranked[offset : offset + limit]
    ]
    if len(kept) < limit:
        kept.extend((c, None) for c in scoreless[: limit - len(kept)])
    return kept

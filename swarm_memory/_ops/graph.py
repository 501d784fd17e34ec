"""Memory graph flows: every call one run of ``lua/graph.lua`` on the graph's namespace.

The arguments are checked here before anything reaches Redis (a bad call leaves the
keyspace unchanged); the script checks what only the data can tell (nodes exist, the
link kind is declared, versions, permissions) and writes data, indexes and events
together. Writes carry an op id: a retried call returns its first outcome.

Recall (``recall``) is served from the indexes. Each script call counts the candidates of
every index the filters name (ZLEXCOUNT: O(log N) each) and scans the narrowest in
(created, id) order, newest first, checking the other filters on each node it reads; it
reads at most ``SCAN_BUDGET`` index entries per call and returns a cursor to go on from.
A call costs O(f log N + min(m, SCAN_BUDGET)), f the number of filters and m the
narrowest index's candidates: never a full scan when one index narrows it. One recall
makes at most PAGE_MAX_CALLS calls, so a page may come back short with a cursor.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from swarm_memory import errors
from swarm_memory._ops.args import op_id_arg, ttl_arg
from swarm_memory._ops.effects import Context, Flow, ScriptCall
from swarm_memory._ops.graph_args import (
    MAX_TAG_BYTES,
    confidence_arg,
    content_arg,
    ids_arg,
    int_arg,
    label_arg,
    node_id_arg,
    opt,
    pack,
    tags_arg,
    time_arg,
    weight_arg,
)
from swarm_memory._ops.graph_records import node_from_raw
from swarm_memory._ops.namespaces import create_namespace, graph_keys, sweep_quietly
from swarm_memory._ops.records import Fields, decoding, text, unpack
from swarm_memory._ops.replies import GRAPH, Failure
from swarm_memory.graph import (
    Direction,
    GraphStats,
    Neighbor,
    Node,
    Ranking,
    RecallPage,
    check_ranking,
    rank,
)
from swarm_memory.models import NamespaceInfo
from swarm_memory.scripts import load

MAX_KINDS = 256  # declared link kinds
MAX_LIMIT = 1000
SCAN_BUDGET = 1000  # index entries one recall call reads at most
# Script calls one recall makes at most: a page may come back short (even empty) with a
# cursor when the filters match few of the narrowest index's entries (SCAN-like).
PAGE_MAX_CALLS = 16
RANK_MAX_CALLS = 64
MAX_DEPTH = 4
NEIGHBOR_BUDGET = 2000  # links one neighbors call reads at most
BUNDLE_PAGE = 500
_STATS_NUMBERS = 5  # nodes links bundled expiring configured
NEIGHBOR_FIELDS = 7  # id depth direction kind weight via record
_CURSOR = re.compile(r"(\d{15})\.([0-9a-f]{24})")


# ------------------------------------------------------------------------ calls
Arg = str | bytes | int


def _call(
    ctx: Context, action: str, args: list[Arg], op_id: str = "", digest: str = ""
) -> ScriptCall:
    s = ctx.settings
    head: list[Arg] = [
        ctx.agent,
        action,
        op_id,
        digest,
        int(s.dedupe_window * 1000),
        s.stream_maxlen,
        s.audit_maxlen,
        s.event_value_max,
    ]
    return ScriptCall(
        load("graph"), graph_keys(ctx), [*head, *args], op_id or None, readonly=action in _READS
    )


# The graph script's read actions return before any write (a denial's audit aside, see
# ScriptCall.readonly), so an agent whose keys are read-only (%R~) can make them.
_READS = frozenset({"get", "stats", "recall", "neighbors", "bundle_list"})


def _digest(agent: str, action: str, args: list[Arg]) -> str:
    h = hashlib.blake2b(digest_size=12)
    for part in (agent, action, *args):
        b = part if isinstance(part, bytes) else str(part).encode("utf-8")
        h.update(b"%d:" % len(b))
        h.update(b)
    return h.hexdigest()


def _write(
    ctx: Context,
    action: str,
    args: list[Arg],
    op_id: str | None,
    key: str | None,
    *,
    expected: int | None = None,
    digest_args: list[Arg] | None = None,
) -> Flow[Fields]:
    """One graph write; a replayed op id answers its first outcome (or OpIdReused)."""
    op = op_id_arg(op_id)
    digest = _digest(ctx.agent, action, args if digest_args is None else digest_args)
    level = "admin" if action == "config" else "write"
    fail = Failure(ctx, "graph_" + action, level, key, [_Expected(key or "", expected)])
    f = GRAPH.check((yield _call(ctx, action, args, op, digest)), fail)
    if f.tag == b"dup":
        record, due = f.next(), f.number()
        with decoding(ctx.keys.ops, **ctx.err()):
            parts = unpack(record)
            if parts[:1] != [b"g1"]:
                parts = []
        if len(parts) < len(("g1", "digest")) or text(parts[1]) != digest:
            raise errors.OpIdReused(
                f"op id {op!r} was already used for a different request",
                op_id=op,
                **ctx.err(key=key),
            )
        fields = Fields(parts, 2)
    else:
        items = f.rest()
        due, fields = int(items[-1]), Fields(items[:-1])
    if due:
        yield from sweep_quietly(ctx)
    return fields


class _Expected:
    """What an error about the written node needs (replies.Failure items)."""

    def __init__(self, key: str, expected: int | None) -> None:
        self.key = key
        self.expected = expected


def _read(ctx: Context, action: str, args: list[Arg], key: str | None = None) -> Flow[Fields]:
    fail = Failure(ctx, "graph_" + action, "read", key)
    f = GRAPH.check((yield _call(ctx, action, args)), fail)
    due = f.number()
    if due:
        yield from sweep_quietly(ctx)
    return f


# ------------------------------------------------------------------------ flows
def create_graph(
    ctx: Context, link_kinds: Iterable[str] | None, options: dict[str, Any]
) -> Flow[NamespaceInfo]:
    """Create the namespace the graph lives in, then store its declared link kinds. With
    ``exist_ok``, an existing graph is reconfigured only when ``link_kinds`` is given and
    differs from what it declares (admin)."""
    kinds = _kinds_arg(link_kinds)
    info = yield from create_namespace(ctx, **options)
    current, configured = yield from _stats(ctx)
    wanted = tuple(kinds) if kinds is not None else None
    if not configured or (kinds is not None and current.link_kinds != wanted):
        yield from _write(ctx, "config", [pack(kinds) if kinds is not None else b""], None, None)
    return info


def declare_kinds(ctx: Context, link_kinds: Iterable[str] | None) -> Flow[None]:
    """Set (or with None, drop) the graph's declared link kinds (admin)."""
    kinds = _kinds_arg(link_kinds)
    yield from _write(ctx, "config", [pack(kinds) if kinds is not None else b""], None, None)


def _kinds_arg(link_kinds: Iterable[str] | None) -> list[str] | None:
    if link_kinds is None:
        return None
    if isinstance(link_kinds, str | bytes) or not isinstance(link_kinds, Iterable):
        raise errors.InvalidInput(
            "link_kinds must be a collection of str", field="link_kinds", value=link_kinds
        )
    kinds = sorted({label_arg(k, "link kind", MAX_TAG_BYTES) for k in link_kinds})
    if not 1 <= len(kinds) <= MAX_KINDS:
        raise errors.InvalidInput(
            f"1..{MAX_KINDS} link kinds", field="link_kinds", value=len(kinds)
        )
    return kinds


def add(
    ctx: Context,
    content: Any,
    *,
    context: str,
    kind: str,
    confidence: float,
    tags: Iterable[str],
    valid_from: datetime | None,
    invalid_at: datetime | None,
    ttl: float | timedelta | None,
    op_id: str | None,
) -> Flow[Node]:
    ctx_text, kind_text = label_arg(context, "context"), label_arg(kind, "kind")
    conf, tag_list = confidence_arg(confidence), tags_arg(tags)
    vf, ia = time_arg(valid_from, "valid_from"), time_arg(invalid_at, "invalid_at")
    ttl_ms = ttl_arg(ttl, ctx.settings)
    data, chash = content_arg(ctx, content)
    node_id = secrets.token_hex(12)
    rest: list[Arg] = [
        ctx_text,
        kind_text,
        conf,
        pack(tag_list),
        opt(vf),
        opt(ia),
        opt(ttl_ms),
        chash,
        data,
    ]
    f = yield from _write(ctx, "add", [node_id, *rest], op_id, node_id, digest_args=rest)
    created, _rev, got_id, raw = f.number(), f.number(), f.string(), f.next()
    return node_from_raw(ctx, got_id, raw, created=bool(created))


def get(ctx: Context, node: Node | str) -> Flow[Node | None]:
    found = yield from get_many(ctx, [node])
    return found[0]


def get_many(ctx: Context, nodes: Iterable[Node | str]) -> Flow[list[Node | None]]:
    ids = ids_arg(ctx, nodes)
    f = yield from _read(ctx, "get", list(ids))
    f.next()  # server time
    out: list[Node | None] = []
    for node_id in ids:
        raw = f.next()
        out.append(node_from_raw(ctx, node_id, raw) if raw != b"" else None)
    return out


class _Unset:
    """A field :func:`update` leaves as it is."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


def update(
    ctx: Context,
    node: Node | str,
    *,
    expected_version: int | None,
    content: Any = UNSET,
    context: Any = UNSET,
    kind: Any = UNSET,
    confidence: Any = UNSET,
    tags: Any = UNSET,
    valid_from: Any = UNSET,
    invalid_at: Any = UNSET,
    ttl: Any = UNSET,
    op_id: str | None = None,
) -> Flow[Node]:
    """Change the given fields (``ttl=None``: no expiry). Raises NodeConflict (version, or
    the new fact is another node's), NodeNotFound."""
    node_id = node_id_arg(ctx, node)
    if expected_version is not None:
        int_arg(expected_version, "expected_version", 1, 2**53 - 1)
    fields: list[Arg] = []
    if context is not UNSET:
        fields += ["context", label_arg(context, "context")]
    if kind is not UNSET:
        fields += ["kind", label_arg(kind, "kind")]
    if confidence is not UNSET:
        fields += ["conf", confidence_arg(confidence)]
    if tags is not UNSET:
        fields += ["tags", pack(tags_arg(tags))]
    if valid_from is not UNSET:
        fields += ["vf", opt(time_arg(valid_from, "valid_from"))]
    if invalid_at is not UNSET:
        fields += ["ia", opt(time_arg(invalid_at, "invalid_at"))]
    if ttl is not UNSET:
        fields += ["ttl", ttl_arg(ttl, ctx.settings) or 0]
    if content is not UNSET:
        data, chash = content_arg(ctx, content)
        fields += ["content", data, "chash", chash]
    args: list[Arg] = [node_id, opt(expected_version), *fields]
    f = yield from _write(ctx, "update", args, op_id, node_id, expected=expected_version)
    _changed, _rev, got_id, raw = f.number(), f.number(), f.string(), f.next()
    return node_from_raw(ctx, got_id, raw)


def delete(
    ctx: Context, node: Node | str, *, expected_version: int | None, op_id: str | None
) -> Flow[bool]:
    node_id = node_id_arg(ctx, node)
    if expected_version is not None:
        int_arg(expected_version, "expected_version", 1, 2**53 - 1)
    args: list[Arg] = [node_id, opt(expected_version)]
    f = yield from _write(ctx, "delete", args, op_id, node_id, expected=expected_version)
    return bool(f.number())


def link(
    ctx: Context,
    a: Node | str,
    b: Node | str,
    kind: str,
    weight: float,
    *,
    op_id: str | None,
    remove: bool = False,
) -> Flow[bool]:
    """Link a --kind--> b (both directions stored, in one script that checks both nodes
    exist); ``remove``: unlink. True if it changed anything."""
    ida, idb = node_id_arg(ctx, a, "a"), node_id_arg(ctx, b, "b")
    k = label_arg(kind, "kind", MAX_TAG_BYTES)
    w = "" if remove else weight_arg(weight)
    payload = json.dumps({"to": idb, "kind": k, **({} if remove else {"weight": float(w)})})
    f = yield from _write(
        ctx, "unlink" if remove else "link", [ida, idb, k, w, payload], op_id, ida
    )
    return bool(f.number())


def recall(
    ctx: Context,
    *,
    agent: str | None,
    context: str | None,
    kind: str | None,
    tags: Iterable[str] | None,
    since: datetime | None,
    until: datetime | None,
    min_confidence: float | None,
    limit: int,
    cursor: str | None,
    ranking: Ranking | None,
    valid_at: datetime | None = None,
) -> Flow[RecallPage]:
    """Nodes matching every filter given (``valid_at``: valid_from <= it < invalid_at,
    an unset end open), newest first, ``limit`` at most, from ``cursor`` on (see the
    module doc for the cost); at most PAGE_MAX_CALLS script calls, so a page may be
    short with a cursor still to follow. With ``ranking``: the newest ``ranking.candidates``
    matches, ordered by :func:`swarm_memory.graph.score`, top ``limit`` (not paged:
    cursor None)."""
    filters: list[Arg] = [
        label_arg(agent, "agent") if agent is not None else "",
        label_arg(context, "context") if context is not None else "",
        label_arg(kind, "kind") if kind is not None else "",
        pack(tags_arg(tags) if tags is not None else []),
        opt(time_arg(since, "since", ceil=True)),
        opt(time_arg(until, "until")),
        confidence_arg(min_confidence, "min_confidence") if min_confidence is not None else "",
    ]
    int_arg(limit, "limit", 1, MAX_LIMIT)
    valid = opt(time_arg(valid_at, "valid_at"))
    at = _cursor_arg(cursor)
    if ranking is not None:
        check_ranking(ranking)
        want = ranking.candidates
    else:
        want = limit
    nodes: list[Node] = []
    index, now = "", 0
    for _call_no in range(RANK_MAX_CALLS if ranking is not None else PAGE_MAX_CALLS):
        ask = min(want - len(nodes), MAX_LIMIT)
        f = yield from _read(ctx, "recall", [*filters, ask, at, SCAN_BUDGET, valid])
        now, index, nxt = f.number(), f.string(), f.string()
        with decoding(ctx.keys.base + "g:n", **ctx.err()):
            while len(f):
                node_id = f.string()
                nodes.append(node_from_raw(ctx, node_id, f.next()))
        at = nxt
        if not at or len(nodes) >= want:
            break
    if ranking is not None:
        ranked = rank(nodes, now, ranking)[:limit]
        return RecallPage([n for _, n in ranked], None, index, [s for s, _ in ranked])
    return RecallPage(nodes, _cursor_out(at), index)


def _cursor_arg(cursor: object) -> str:
    if cursor is None:
        return ""
    m = _CURSOR.fullmatch(cursor) if isinstance(cursor, str) else None
    if m is None:
        raise errors.InvalidInput(
            "cursor must come from a RecallPage", field="cursor", value=cursor
        )
    return m.group(1) + "\0" + m.group(2)


def _cursor_out(raw: str) -> str | None:
    return raw.replace("\0", ".") if raw else None


def neighbors(
    ctx: Context,
    node: Node | str,
    *,
    kind: str | None,
    depth: int,
    direction: Direction,
    limit: int,
) -> Flow[list[Neighbor]]:
    """Nodes within ``depth`` links (breadth first, each once, nearest first), at most
    ``limit``; reads at most NEIGHBOR_BUDGET links per call."""
    node_id = node_id_arg(ctx, node)
    k = label_arg(kind, "kind", MAX_TAG_BYTES) if kind is not None else ""
    int_arg(depth, "depth", 1, MAX_DEPTH)
    int_arg(limit, "limit", 1, MAX_LIMIT)
    if direction not in ("out", "in", "both"):
        raise errors.InvalidInput(
            "direction must be out, in or both", field="direction", value=direction
        )
    args: list[Arg] = [node_id, k, direction, depth, limit, NEIGHBOR_BUDGET]
    f = yield from _read(ctx, "neighbors", args, node_id)
    f.next()  # server time
    f.next()  # truncated: the budget or limit cut the walk short
    out: list[Neighbor] = []
    with decoding(ctx.keys.base + "g:adj", **ctx.err()):
        while len(f):
            other, d, dir_, k2, w, via, raw = f.take(NEIGHBOR_FIELDS)
            out.append(
                Neighbor(
                    node=node_from_raw(ctx, text(other), raw),
                    depth=int(d),
                    direction="out" if dir_ == b">" else "in",
                    kind=text(k2),
                    weight=float(w) if w else 0.0,
                    via=text(via),
                )
            )
    return out


def bundle_change(
    ctx: Context, name: str, nodes: Iterable[Node | str], *, remove: bool, op_id: str | None
) -> Flow[int]:
    """Add nodes to (or remove them from) bundle ``name``; all or nothing. Returns how
    many memberships changed. Raises NodeNotFound for a node not in this graph."""
    bundle = label_arg(name, "bundle")
    ids = ids_arg(ctx, nodes)
    f = yield from _write(
        ctx, "bundle", [bundle, "remove" if remove else "add", *ids], op_id, bundle
    )
    return f.number()


def bundle_page(ctx: Context, name: str, after: str) -> Flow[tuple[list[Node], str]]:
    bundle = label_arg(name, "bundle")
    f = yield from _read(ctx, "bundle_list", [bundle, after, BUNDLE_PAGE], bundle)
    f.next()
    nxt = f.string()
    out = []
    while len(f):
        node_id = f.string()
        out.append(node_from_raw(ctx, node_id, f.next()))
    return out, nxt


def bundle_nodes(ctx: Context, name: str) -> Flow[list[Node]]:
    """The live nodes of bundle ``name``, by id (paged underneath)."""
    out: list[Node] = []
    after = ""
    while True:
        page, after = yield from bundle_page(ctx, name, after)
        out += page
        if not after:
            return out


def stats(ctx: Context) -> Flow[GraphStats]:
    stats, _configured = yield from _stats(ctx)
    return stats


def _stats(ctx: Context) -> Flow[tuple[GraphStats, bool]]:
    f = yield from _read(ctx, "stats", [])
    f.next()
    nodes, links, bundled, expiring, configured = (f.number() for _ in range(_STATS_NUMBERS))
    with decoding(ctx.keys.base + "g:meta", **ctx.err()):
        raw = f.next()
        kinds = tuple(text(k) for k in unpack(raw)) if raw else None
    return GraphStats(nodes, links, bundled, expiring, kinds), bool(configured)

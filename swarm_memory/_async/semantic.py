"""AsyncSemanticIndex: semantic recall over one memory graph with the caller's ``embed``.

A client-side cache of node vectors, kept fresh by the namespace's change feed: the first
search takes the feed's position, then loads the graph's nodes (newest first, up to
``max_nodes``) and embeds them; every later search first reads the feed from that
position and applies what changed (``node_add`` / ``node_update``: re-read and re-embed;
``node_delete`` / ``node_expire``: dropped). A feed that was trimmed past the cache's
position reloads everything. Vectors never go to Redis; the graph's permissions apply
(reading the nodes and the feed needs read permission).

``graph.semantic(embed)`` makes one. ``embed(text) -> sequence of floats`` receives a
node's text (:func:`node_text`) or the query.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from swarm_memory import errors
from swarm_memory._ops import events as _events
from swarm_memory._ops import graph as _graph
from swarm_memory._ops import graph_args as _gargs
from swarm_memory._ops.effects import Context, Flow
from swarm_memory.graph import Node

Embed = Callable[[str], Sequence[float]]
FEED_PAGE = 500
_CHANGED = frozenset({"node_add", "node_update"})
_GONE = frozenset({"node_delete", "node_expire"})


def node_text(node: Node) -> str:
    """What a node is embedded as: its kind, context, tags and content JSON."""
    return " ".join(
        [node.kind, node.context, *node.tags, json.dumps(node.content, ensure_ascii=False)]
    )


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity (0 when either vector is zero)."""
    dot = math.fsum(x * y for x, y in zip(a, b, strict=True))
    na = math.sqrt(math.fsum(x * x for x in a))
    nb = math.sqrt(math.fsum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


def _vector(embed: Embed, text: str) -> list[float]:
    vec = [float(x) for x in embed(text)]
    if not vec or not all(math.isfinite(x) for x in vec):
        raise errors.InvalidInput(
            "embed must return a non-empty sequence of finite numbers",
            field="embed",
            value=len(vec),
        )
    return vec


class AsyncSemanticIndex:
    """Cosine recall over a graph's nodes (``graph.semantic(embed)``); see the module doc."""

    def __init__(
        self, run: Callable[[Flow[Any]], Any], ctx: Context, embed: Embed, *, max_nodes: int
    ) -> None:
        if not callable(embed):
            raise errors.InvalidInput("embed must be callable", field="embed", value=embed)
        self._run = run
        self._ctx = ctx
        self._embed = embed
        self._max_nodes = max_nodes
        self._cursor: str | None = None
        self._nodes: dict[str, tuple[Node, list[float]]] = {}

    def __len__(self) -> int:
        return len(self._nodes)

    def cached(self) -> int:
        """How many nodes the cache holds (as of the last refresh)."""
        return len(self._nodes)

    async def refresh(self) -> int:
        """Bring the cache up to date with the feed; returns how many nodes changed."""
        if self._cursor is None:
            return await self._reload()
        changed: set[str] = set()
        gone: set[str] = set()
        while True:
            try:
                page = await self._run(_events.read_events(self._ctx, self._cursor, FEED_PAGE))
            except errors.EventsTrimmed:
                return await self._reload()
            for ev in page.events:
                if ev.key and ev.type in _CHANGED:
                    changed.add(ev.key)
                    gone.discard(ev.key)
                elif ev.key and ev.type in _GONE:
                    gone.add(ev.key)
                    changed.discard(ev.key)
            self._cursor = page.next
            if len(page.events) < FEED_PAGE:
                break
        for node_id in gone:
            self._nodes.pop(node_id, None)
        ids = sorted(changed)
        for i in range(0, len(ids), _gargs.MAX_IDS):
            found = await self._run(_graph.get_many(self._ctx, ids[i : i + _gargs.MAX_IDS]))
            for node_id, node in zip(ids[i : i + _gargs.MAX_IDS], found, strict=True):
                if node is None:
                    self._nodes.pop(node_id, None)
                else:
                    self._nodes[node_id] = (node, _vector(self._embed, node_text(node)))
        return len(changed) + len(gone)

    async def _reload(self) -> int:
        first = await self._run(_events.read_events(self._ctx, None, 1))
        self._cursor = first.next
        self._nodes = {}
        cursor: str | None = None
        while len(self._nodes) < self._max_nodes:
            page = await self._run(
                _graph.recall(
                    self._ctx,
                    agent=None,
                    context=None,
                    kind=None,
                    tags=None,
                    since=None,
                    until=None,
                    min_confidence=None,
                    limit=min(_graph.MAX_LIMIT, self._max_nodes - len(self._nodes)),
                    cursor=cursor,
                    ranking=None,
                )
            )
            for node in page.nodes:
                self._nodes[node.id] = (node, _vector(self._embed, node_text(node)))
            cursor = page.cursor
            if cursor is None:
                break
        return len(self._nodes)

    async def search(
        self,
        query: str,
        *,
        k: int = 10,
        context: str | None = None,
        kind: str | None = None,
        agent: str | None = None,
        tags: Iterable[str] | None = None,
        min_confidence: float | None = None,
    ) -> list[tuple[float, Node]]:
        """The ``k`` cached nodes most similar to ``query`` (cosine of the embeddings) among
        those matching the filters, best first; ties by id. Refreshes from the feed first."""
        if not isinstance(query, str):
            raise errors.InvalidInput("query must be a str", field="query", value=query)
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= _graph.MAX_LIMIT:
            raise errors.InvalidInput(f"k must be 1..{_graph.MAX_LIMIT}", field="k", value=k)
        want = set(_gargs.tags_arg(tags)) if tags is not None else set()
        await self.refresh()
        q = _vector(self._embed, query)
        scored = []
        for node, vec in self._nodes.values():
            if context is not None and node.context != context:
                continue
            if kind is not None and node.kind != kind:
                continue
            if agent is not None and node.agent != agent:
                continue
            if not want <= set(node.tags):
                continue
            if min_confidence is not None and node.confidence < min_confidence:
                continue
            if len(vec) != len(q):
                raise errors.InvalidInput(
                    "embed returned vectors of different lengths", field="embed", value=len(q)
                )
            scored.append((cosine(q, vec), node))
        scored.sort(key=lambda p: (-p[0], p[1].id))
        return scored[:k]

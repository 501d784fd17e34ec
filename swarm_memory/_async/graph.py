"""AsyncGraph and AsyncBundle: the memory graph of one namespace, as one agent.

Thin shells over the flows in ``_ops/graph.py`` (every call one atomic, permission-checked
run of ``lua/graph.lua``). Get one with ``mem.graph(name)`` after ``mem.create_graph(name)``.
The models (:class:`~swarm_memory.graph.Node`, ...) and the ranking live in
``swarm_memory/graph.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from swarm_memory._async.semantic import AsyncSemanticIndex, Embed
from swarm_memory._ops import graph as _graph
from swarm_memory._ops import graph_args as _gargs
from swarm_memory._ops.effects import Context, Flow
from swarm_memory._ops.graph import UNSET
from swarm_memory.graph import Direction, GraphStats, Neighbor, Node, Ranking, RecallPage


class AsyncGraph:
    """A memory graph (the graph of namespace ``name``), as the calling agent.

    Nodes carry an agent (the caller), a context, a kind, JSON content, a confidence in
    [0, 1], tags and an optional validity window and TTL; links are typed and weighted.
    Reads need read permission in the namespace, writes need write.
    """

    def __init__(self, run: Callable[[Flow[Any]], Any], ctx: Context) -> None:
        self._run = run
        self._ctx = ctx

    @property
    def name(self) -> str:
        return self._ctx.namespace

    @property
    def agent(self) -> str:
        return self._ctx.agent

    async def add(
        self,
        content: Any,
        *,
        context: str,
        kind: str = "fact",
        confidence: float = 1.0,
        tags: Iterable[str] = (),
        valid_from: datetime | None = None,
        invalid_at: datetime | None = None,
        ttl: float | timedelta | None = None,
        op_id: str | None = None,
    ) -> Node:
        """Add a node written by this agent. The same fact (kind, context and content, key
        order aside) is one node: adding it again returns the stored node with
        ``created=False``. Raises InvalidInput, PermissionDenied, OutcomeUnknown."""
        node: Node = await self._run(
            _graph.add(
                self._ctx,
                content,
                context=context,
                kind=kind,
                confidence=confidence,
                tags=tags,
                valid_from=valid_from,
                invalid_at=invalid_at,
                ttl=ttl,
                op_id=op_id,
            )
        )
        return node

    async def get(self, node: Node | str) -> Node | None:
        """The node, or None if absent or expired."""
        found: Node | None = await self._run(_graph.get(self._ctx, node))
        return found

    async def get_many(self, nodes: Iterable[Node | str]) -> list[Node | None]:
        found: list[Node | None] = await self._run(_graph.get_many(self._ctx, nodes))
        return found

    async def update(
        self,
        node: Node | str,
        *,
        expected_version: int | None = None,
        content: Any = UNSET,
        context: Any = UNSET,
        kind: Any = UNSET,
        confidence: Any = UNSET,
        tags: Any = UNSET,
        valid_from: Any = UNSET,
        invalid_at: Any = UNSET,
        ttl: Any = UNSET,
        op_id: str | None = None,
    ) -> Node:
        """Change the fields given (``ttl=None``: no expiry from now on; the others as in
        :meth:`add`). Raises NodeConflict (``.node``: the node as it is) when
        ``expected_version`` does not match or the new fact is another node's,
        NodeNotFound, InvalidInput."""
        updated: Node = await self._run(
            _graph.update(
                self._ctx,
                node,
                expected_version=expected_version,
                content=content,
                context=context,
                kind=kind,
                confidence=confidence,
                tags=tags,
                valid_from=valid_from,
                invalid_at=invalid_at,
                ttl=ttl,
                op_id=op_id,
            )
        )
        return updated

    async def delete(
        self, node: Node | str, *, expected_version: int | None = None, op_id: str | None = None
    ) -> bool:
        """Delete the node with its links, index entries and bundle memberships. True if
        it was there. Raises NodeConflict on a version mismatch."""
        done: bool = await self._run(
            _graph.delete(self._ctx, node, expected_version=expected_version, op_id=op_id)
        )
        return done

    async def link(
        self,
        a: Node | str,
        b: Node | str,
        kind: str,
        weight: float = 1.0,
        *,
        op_id: str | None = None,
    ) -> bool:
        """Link ``a --kind--> b`` (stored both ways; linking again sets the weight). True if
        the link is new. Raises NodeNotFound, InvalidInput (a kind the graph does not
        declare), QuotaExceeded (links per node)."""
        done: bool = await self._run(_graph.link(self._ctx, a, b, kind, weight, op_id=op_id))
        return done

    async def unlink(
        self, a: Node | str, b: Node | str, kind: str, *, op_id: str | None = None
    ) -> bool:
        """Remove ``a --kind--> b``; True if it existed."""
        done: bool = await self._run(
            _graph.link(self._ctx, a, b, kind, 0.0, op_id=op_id, remove=True)
        )
        return done

    async def recall(
        self,
        *,
        agent: str | None = None,
        context: str | None = None,
        kind: str | None = None,
        tags: Iterable[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        min_confidence: float | None = None,
        limit: int = 50,
        cursor: str | None = None,
        rank: Ranking | None = None,
        valid_at: datetime | None = None,
    ) -> RecallPage:
        """Nodes matching every filter given (``tags``: all of them; ``since``/``until``:
        creation time, inclusive; ``valid_at``: valid_from <= it < invalid_at, an unset
        end open), newest first, served from the indexes; pass
        ``page.cursor`` for the next page. ``rank``: order by the documented score
        instead (see :class:`~swarm_memory.graph.Ranking`)."""
        page: RecallPage = await self._run(
            _graph.recall(
                self._ctx,
                agent=agent,
                context=context,
                kind=kind,
                tags=tags,
                since=since,
                until=until,
                min_confidence=min_confidence,
                limit=limit,
                cursor=cursor,
                ranking=rank,
                valid_at=valid_at,
            )
        )
        return page

    async def neighbors(
        self,
        node: Node | str,
        *,
        kind: str | None = None,
        depth: int = 1,
        direction: Direction = "both",
        limit: int = 100,
    ) -> list[Neighbor]:
        """Nodes within ``depth`` (1..4) links, nearest first, each once. Raises
        NodeNotFound if ``node`` is absent."""
        found: list[Neighbor] = await self._run(
            _graph.neighbors(
                self._ctx, node, kind=kind, depth=depth, direction=direction, limit=limit
            )
        )
        return found

    def bundle(self, name: str) -> AsyncBundle:
        """The bundle of task ``name`` (one task, one bundle); nothing is sent yet."""
        _gargs.label_arg(name, "bundle")
        return AsyncBundle(self._run, self._ctx, name)

    def semantic(self, embed: Embed, *, max_nodes: int = 10000) -> AsyncSemanticIndex:
        """Semantic recall with your ``embed(text) -> vector``: cosine over a client cache
        of the graph's nodes (up to ``max_nodes``, newest first), kept fresh by the
        namespace's change feed. Nothing is sent until the first search."""
        _gargs.int_arg(max_nodes, "max_nodes", 1, 1_000_000)
        return AsyncSemanticIndex(self._run, self._ctx, embed, max_nodes=max_nodes)

    async def stats(self) -> GraphStats:
        found: GraphStats = await self._run(_graph.stats(self._ctx))
        return found

    async def declare_link_kinds(self, kinds: Iterable[str] | None) -> None:
        """Set the link kinds this graph accepts (None: any); admin."""
        await self._run(_graph.declare_kinds(self._ctx, kinds))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, agent={self.agent!r})"


class AsyncBundle:
    """The nodes of one task (``graph.bundle(task)``): add, remove, list."""

    def __init__(self, run: Callable[[Flow[Any]], Any], ctx: Context, name: str) -> None:
        self._run = run
        self._ctx = ctx
        self.name = name

    async def add(self, *nodes: Node | str, op_id: str | None = None) -> int:
        """Add nodes of this graph (all or none); returns how many were new. Raises
        NodeNotFound (a node absent here), InvalidInput (a Node of another graph)."""
        n: int = await self._run(
            _graph.bundle_change(self._ctx, self.name, nodes, remove=False, op_id=op_id)
        )
        return n

    async def remove(self, *nodes: Node | str, op_id: str | None = None) -> int:
        n: int = await self._run(
            _graph.bundle_change(self._ctx, self.name, nodes, remove=True, op_id=op_id)
        )
        return n

    async def nodes(self) -> list[Node]:
        """The bundle's live nodes, by id."""
        found: list[Node] = await self._run(_graph.bundle_nodes(self._ctx, self.name))
        return found

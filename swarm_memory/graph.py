"""The memory graph's public models and its ranking, I/O free.

A graph lives in a namespace (``mem.create_graph(name)`` / ``mem.graph(name)``): its nodes,
links, indexes and bundles are keys under that namespace's hash tag, written by one
atomic script per call (``lua/graph.lua``). The client handles are ``Graph`` (sync) and
``AsyncGraph``; this module holds what they return and the recall score.

Ranking (:func:`score`) is a deterministic function of the node, the server time of the
recall and the query: no randomness, no clock of the caller.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from swarm_memory.errors import InvalidInput

Direction = Literal["out", "in", "both"]


@dataclass(frozen=True, slots=True)
class Node:
    """One memory node. Times come from the Redis server clock (UTC).

    ``agent`` is the agent that added it (never changes); ``updated_by`` the last writer.
    ``created`` is True when this call created it, False when ``add`` found the same fact
    (kind, context, content) already stored and returned that node; None on reads.
    """

    id: str
    graph: str
    agent: str
    context: str
    kind: str
    content: Any
    confidence: float
    tags: tuple[str, ...]
    version: int
    created_at: datetime
    updated_at: datetime
    updated_by: str
    expires_at: datetime | None
    valid_from: datetime | None
    invalid_at: datetime | None
    create_revision: int
    mod_revision: int
    content_hash: str
    created_ms: int
    created: bool | None = None


@dataclass(frozen=True, slots=True)
class Neighbor:
    """A node reached from another by a link: ``via`` --kind--> ``node`` when
    ``direction`` is "out", the reverse when "in"; ``depth`` links from the start."""

    node: Node
    depth: int
    direction: Literal["out", "in"]
    kind: str
    weight: float
    via: str


@dataclass(frozen=True, slots=True)
class RecallPage:
    """One page of :meth:`Graph.recall`: ``nodes`` newest first (or by score when ranked),
    and the ``cursor`` of the next page (None: this was the last). ``index`` names the
    index the server scanned for the last call ("t" time, "a" agent, "c" context,
    "k" kind, "g" tag, "conf" confidence)."""

    nodes: list[Node]
    cursor: str | None
    index: str = ""
    scores: list[float] = field(default_factory=list)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def __getitem__(self, i: int) -> Node:
        return self.nodes[i]


@dataclass(frozen=True, slots=True)
class GraphStats:
    """Sizes of one graph: live and not-yet-swept nodes, links, bundle memberships,
    nodes with an expiry; and the link kinds it declares."""

    nodes: int
    links: int
    bundle_members: int
    expiring: int
    link_kinds: tuple[str, ...] | None = None  # None: any kind


# ----------------------------------------------------------------------------- ranking
@dataclass(frozen=True, slots=True)
class Ranking:
    """How :meth:`Graph.recall` orders matches when ``rank`` is given.

    ``score = w_confidence * confidence + w_recency * 0.5 ** (age / half_life)
    + w_text * text_score``, where age is the seconds since the node was last updated
    (server time of the recall) and ``text_score`` the share of the query's words found
    in the node's text (content JSON, context, kind and tags; lower-cased words of
    letters and digits). Ties go to the newer node, then the larger id. The newest
    ``candidates`` matches of the filters are ranked (bounded work)."""

    half_life: float = 86400.0
    query: str | None = None
    w_confidence: float = 0.4
    w_recency: float = 0.4
    w_text: float = 0.2
    candidates: int = 500


MAX_CANDIDATES = 10000
_WORD = re.compile(r"[^\W_]+")


def words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text)}


def text_score(node: Node, query: str) -> float:
    """Share of the query's distinct words present in the node's text (0 with no words)."""
    wanted = words(query)
    if not wanted:
        return 0.0
    have = words(
        " ".join(
            [json.dumps(node.content, ensure_ascii=False), node.context, node.kind, *node.tags]
        )
    )
    return len(wanted & have) / len(wanted)


def score(node: Node, now_ms: int, ranking: Ranking) -> float:
    """The documented recall score of ``node`` at server time ``now_ms``."""
    updated_ms = round(node.updated_at.timestamp() * 1000)
    age = max(0.0, (now_ms - updated_ms) / 1000)
    recency = math.pow(0.5, age / ranking.half_life)
    total = ranking.w_confidence * node.confidence + ranking.w_recency * recency
    if ranking.query:
        total += ranking.w_text * text_score(node, ranking.query)
    return total


def rank(nodes: Sequence[Node], now_ms: int, ranking: Ranking) -> list[tuple[float, Node]]:
    """``nodes`` by score, best first; ties newest first, then by id (descending)."""
    scored = [(score(n, now_ms, ranking), n) for n in nodes]
    scored.sort(key=lambda p: (-p[0], -p[1].created_ms, _desc(p[1].id)))
    return scored


def _desc(text: str) -> tuple[int, ...]:
    return tuple(-b for b in text.encode())


def check_ranking(ranking: Ranking) -> Ranking:
    if not isinstance(ranking, Ranking):
        raise InvalidInput("rank must be a Ranking", field="rank", value=type(ranking).__name__)
    for name in ("half_life", "w_confidence", "w_recency", "w_text"):
        v = getattr(ranking, name)
        if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
            raise InvalidInput(f"rank.{name} must be a finite number >= 0", field=name, value=v)
    if ranking.half_life <= 0:
        raise InvalidInput("rank.half_life must be > 0", field="half_life", value=ranking.half_life)
    if not isinstance(ranking.candidates, int) or not 1 <= ranking.candidates <= MAX_CANDIDATES:
        raise InvalidInput(
            "rank.candidates must be 1..10000", field="candidates", value=ranking.candidates
        )
    if ranking.query is not None and not isinstance(ranking.query, str):
        raise InvalidInput("rank.query must be a str", field="query", value=ranking.query)
    return ranking

"""``swarm-memory graph create|add|recall|neighbors|bundle``: the memory graph of a
namespace (see the README's "Memory graph")."""

from __future__ import annotations

from typing import Any

import click

from swarm_memory.cli.base import (
    CliError,
    ExitCode,
    config,
    emit,
    jsonable,
    output_option,
    parse_json,
    short,
    table,
)
from swarm_memory.graph import Direction, Node, Ranking


def _rows(nodes: list[Node]) -> list[list[Any]]:
    return [
        [
            n.id,
            n.agent,
            n.context,
            n.kind,
            f"{n.confidence:g}",
            ",".join(n.tags),
            short(n.content),
        ]
        for n in nodes
    ]


_COLUMNS = ["id", "agent", "context", "kind", "confidence", "tags", "content"]


@click.group("graph")
def graph_group() -> None:
    """The memory graph of a namespace: nodes, links, recall, bundles."""


@graph_group.command("create")
@click.argument("graph")
@click.option("--link-kind", "link_kinds", multiple=True, help="A link kind it accepts (repeat).")
@click.option("--exist-ok", is_flag=True, help="No error if the namespace exists.")
@output_option
def graph_create(*, graph: str, link_kinds: tuple[str, ...], exist_ok: bool) -> None:
    """Create namespace GRAPH for a memory graph (you become its admin)."""
    info = config().memory().create_graph(graph, link_kinds=link_kinds or None, exist_ok=exist_ok)
    emit(jsonable(info), lambda: f"created graph {graph!r}")


@graph_group.command("add")
@click.argument("graph")
@click.argument("content")
@click.option("--context", required=True, help="The task context.")
@click.option("--kind", default="fact", show_default=True)
@click.option("--confidence", type=float, default=1.0, show_default=True, help="In [0, 1].")
@click.option("--tag", "tags", multiple=True, help="A tag (repeat).")
@click.option("--ttl", type=float, default=None, help="Seconds until it expires.")
@click.option("--link", "links", multiple=True, help="KIND:NODE_ID — link the new node to it.")
@output_option
def graph_add(
    *,
    graph: str,
    content: str,
    context: str,
    kind: str,
    confidence: float,
    tags: tuple[str, ...],
    ttl: float | None,
    links: tuple[str, ...],
) -> None:
    """Add a node with CONTENT (JSON) as the configured agent; the same fact already
    stored is returned instead ("created": false). --link runs after the add: a
    refused link (exit 2 or 3) leaves the node added."""
    targets = []
    for spec in links:
        link_kind, sep, target = spec.partition(":")
        if not sep or not link_kind or not target:
            raise CliError(ExitCode.USAGE, f"--link {spec!r}: expected KIND:NODE_ID")
        targets.append((link_kind, target))
    g = config().memory().graph(graph)
    node = g.add(
        parse_json(content, "content"),
        context=context,
        kind=kind,
        confidence=confidence,
        tags=tags,
        ttl=ttl,
    )
    for link_kind, target in targets:
        g.link(node, target, link_kind)
    emit(jsonable(node), lambda: table(None, _COLUMNS, _rows([node])))


@graph_group.command("recall")
@click.argument("graph")
@click.option("--agent", "agent_filter", default=None, help="Added by this agent.")
@click.option("--context", default=None)
@click.option("--kind", default=None)
@click.option("--tag", "tags", multiple=True, help="Has this tag (repeat: all of them).")
@click.option("--min-confidence", type=float, default=None)
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--cursor", default=None, help="The cursor a previous page printed.")
@click.option("--query", default=None, help="Rank by the documented score with these words.")
@output_option
def graph_recall(
    *,
    graph: str,
    agent_filter: str | None,
    context: str | None,
    kind: str | None,
    tags: tuple[str, ...],
    min_confidence: float | None,
    limit: int,
    cursor: str | None,
    query: str | None,
) -> None:
    """Nodes matching every filter, newest first (or ranked with --query)."""
    page = (
        config()
        .memory()
        .graph(graph)
        .recall(
            agent=agent_filter,
            context=context,
            kind=kind,
            tags=tags or None,
            min_confidence=min_confidence,
            limit=limit,
            cursor=cursor,
            rank=Ranking(query=query) if query else None,
        )
    )
    data = {"nodes": jsonable(page.nodes), "cursor": page.cursor}

    def render() -> Any:
        title = f"{len(page.nodes)} nodes" + (
            f" (next: --cursor {page.cursor})" if page.cursor else ""
        )
        return table(title, _COLUMNS, _rows(page.nodes))

    emit(data, render)


@graph_group.command("neighbors")
@click.argument("graph")
@click.argument("node")
@click.option("--kind", default=None, help="Only links of this kind.")
@click.option("--depth", type=int, default=1, show_default=True)
@click.option("--direction", type=click.Choice(["out", "in", "both"]), default="both")
@output_option
def graph_neighbors(
    *, graph: str, node: str, kind: str | None, depth: int, direction: Direction
) -> None:
    """Nodes within DEPTH links of NODE (exit 3 if NODE is absent)."""
    g = config().memory().graph(graph)
    found = g.neighbors(node, kind=kind, depth=depth, direction=direction)

    def render() -> Any:
        rows = [[x.depth, x.direction, x.kind, f"{x.weight:g}", *_rows([x.node])[0]] for x in found]
        return table(f"{len(found)} neighbors", ["depth", "dir", "link", "weight", *_COLUMNS], rows)

    emit(jsonable(found), render)


@graph_group.command("bundle")
@click.argument("graph")
@click.argument("task")
@click.option("--add", "to_add", multiple=True, help="A node id to add (repeat).")
@click.option("--remove", "to_remove", multiple=True, help="A node id to remove (repeat).")
@output_option
def graph_bundle(
    *, graph: str, task: str, to_add: tuple[str, ...], to_remove: tuple[str, ...]
) -> None:
    """Add / remove nodes of TASK's bundle, then list it."""
    bundle = config().memory().graph(graph).bundle(task)
    if to_add:
        bundle.add(*to_add)
    if to_remove:
        bundle.remove(*to_remove)
    nodes = bundle.nodes()
    emit(
        jsonable(nodes),
        lambda: table(f"bundle {task!r}: {len(nodes)} nodes", _COLUMNS, _rows(nodes)),
    )

"""Removing checkpoints (``prune``, ``delete_for_runs``) and the small builders the
checkpointer's writes share: a transaction of puts, and LangGraph's channel versions."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from swarm_memory.langgraph import _names as names
from swarm_memory.langgraph._flow import Flow, Tx, chunks
from swarm_memory.models import Entry

if TYPE_CHECKING:
    from swarm_memory.langgraph._checkpoint_core import CheckpointCore

PAGE = 100  # entries per transaction in bulk operations


def remove_checkpoints(
    core: CheckpointCore,
    thread_id: str,
    entries: Mapping[str, Entry],
    doomed: set[tuple[str, str]],
) -> Flow[None]:
    """Delete checkpoints ``doomed`` ((ns, id)) with their writes, the blobs no kept
    checkpoint references, and move each head to the newest kept checkpoint."""
    kept: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
    deletes: list[str] = []
    touched: set[str] = set()
    for key, entry in entries.items():
        parsed = names.parse_checkpoint_key(key)
        if parsed is None:
            wparsed = names.parse_write_key(key)
            if wparsed is not None and wparsed in doomed:
                deletes.append(key)
            continue
        if parsed in doomed:
            deletes.append(key)
            touched.add(parsed[0])
        else:
            kept.setdefault(parsed[0], []).append((parsed[1], entry.value))
    referenced = {k for recs in kept.values() for _, rec in recs for k in rec["b"]}
    for key in entries:
        blob_ns = names.parse_blob_ns(key)
        if blob_ns in touched and key not in referenced:
            deletes.append(key)
    heads: dict[str, Any] = {}
    for ns in touched:
        hk = names.head_key(ns)
        if kept.get(ns):
            cid, rec = max(kept[ns], key=lambda item: item[0])
            heads[hk] = {"id": cid, "r": rec}
        else:
            deletes.append(hk)
        core.heads.pop((thread_id, ns), None)
    for page in chunks(deletes, PAGE):

        def build(name: str, fence: int | None, page: list[str] = page) -> Tx:
            return Tx(name, {}, {}, {k: fence for k in page})

        yield from core.write(thread_id, build)
    if heads:
        yield from core.write(thread_id, lambda name, fence: puts(name, heads, fence))


def puts(
    name: str, values: Mapping[str, Any], fence: int | None, extra: Mapping[str, Any] | None = None
) -> Tx:
    puts: dict[str, Any] = {k: (v, None, fence) for k, v in values.items()}
    puts.update(extra or {})
    return Tx(name, {}, puts)


def next_version(current: str | int | None) -> str:
    """As InMemorySaver: ``<32-digit counter>.<16-digit random>``, strictly increasing."""
    if current is None:
        current_v = 0
    elif isinstance(current, int):
        current_v = current
    else:
        current_v = int(current.split(".")[0])
    return f"{current_v + 1:032}.{random.random():016}"

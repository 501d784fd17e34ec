"""Decoding of the memory graph's stored records (lua/graph.lua's NODE), bounded.

Kept apart from the flows (``_ops/graph.py``) so the reply tables (``replies.py``) can
decode the node a conflict reports without importing the flows.
"""

from __future__ import annotations

from typing import NamedTuple

from swarm_memory._ops.effects import Context
from swarm_memory._ops.records import Fields, MalformedReply, decoding, text, unpack
from swarm_memory.codec import JsonCodec
from swarm_memory.graph import Node
from swarm_memory.keys import GraphKeys
from swarm_memory.models import ms_to_datetime

MAX_TAGS = 64  # lua/graph.lua MAX_TAGS
RECORD_TAG = b"n1"
# A node's content is JSON whatever the client's value codec: written (graph_args) and
# read (node_from_raw) by this one.
CONTENT_CODEC = JsonCodec()


class NodeRecord(NamedTuple):
    """lua/graph.lua's node record, field by field."""

    tag: bytes
    version: bytes
    agent: bytes
    context: bytes
    kind: bytes
    confidence: bytes
    tags: bytes
    valid_from: bytes
    invalid_at: bytes
    expires_ms: bytes
    created_ms: bytes
    updated_ms: bytes
    create_revision: bytes
    mod_revision: bytes
    updated_by: bytes
    content_hash: bytes
    content: bytes


def nodes_key(ctx: Context) -> str:
    return GraphKeys.of(ctx.settings.key_prefix, ctx.namespace).fixed()[1]


def _opt_time(raw: bytes) -> int | None:
    return int(raw) if raw else None


def node_from_raw(ctx: Context, node_id: str, raw: bytes, created: bool | None = None) -> Node:
    """A stored node record as a :class:`Node`; CorruptData naming the nodes hash when it
    does not parse."""
    with decoding(nodes_key(ctx), **ctx.err()):
        rec = Fields(unpack(raw, len(NodeRecord._fields) + 1)).record(NodeRecord)
        if rec.tag != RECORD_TAG:
            raise MalformedReply(f"node {node_id} is not a node record")
        vf, ia, x = _opt_time(rec.valid_from), _opt_time(rec.invalid_at), int(rec.expires_ms)
        created_ms = int(rec.created_ms)
        return Node(
            id=node_id,
            graph=ctx.namespace,
            agent=text(rec.agent),
            context=text(rec.context),
            kind=text(rec.kind),
            content=CONTENT_CODEC.decode(rec.content),
            confidence=float(rec.confidence),
            tags=tuple(text(t) for t in unpack(rec.tags, MAX_TAGS)),
            version=int(rec.version),
            created_at=ms_to_datetime(created_ms),
            updated_at=ms_to_datetime(int(rec.updated_ms)),
            updated_by=text(rec.updated_by),
            expires_at=ms_to_datetime(x) if x > 0 else None,
            valid_from=ms_to_datetime(vf) if vf is not None else None,
            invalid_at=ms_to_datetime(ia) if ia is not None else None,
            create_revision=int(rec.create_revision),
            mod_revision=int(rec.mod_revision),
            content_hash=text(rec.content_hash),
            created_ms=created_ms,
            created=created,
        )

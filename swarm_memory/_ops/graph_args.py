"""Argument checks of the memory graph's flows (``_ops/graph.py``): everything is checked
here, before anything reaches Redis, so a bad call leaves the keyspace unchanged."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from swarm_memory import errors
from swarm_memory._ops.effects import Context
from swarm_memory._ops.graph_records import CONTENT_CODEC, MAX_TAGS
from swarm_memory.codec import check_depth
from swarm_memory.graph import Node

MAX_LABEL_BYTES = 128  # context, kind, bundle names
MAX_TAG_BYTES = 64
MAX_IDS = 1000  # nodes per get / bundle call
_ID = re.compile(r"[0-9a-f]{24}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def label_arg(value: object, field: str, max_bytes: int = MAX_LABEL_BYTES) -> str:
    """Context, kind, tag and bundle names: 1..max_bytes UTF-8 bytes of printable text
    (no control characters: NUL separates index fields), no outer whitespace."""
    if not isinstance(value, str):
        raise errors.InvalidInput(f"{field} must be a str", field=field, value=type(value).__name__)
    if not value or value != value.strip() or not value.isprintable():
        raise errors.InvalidInput(
            f"{field} must be non-empty printable text without outer whitespace",
            field=field,
            value=value[:80],
        )
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate
        size = max_bytes + 1
    if size > max_bytes:
        raise errors.InvalidInput(
            f"{field} must be at most {max_bytes} UTF-8 bytes (no lone surrogates)",
            field=field,
            value=value[:80],
        )
    return value


def tags_arg(tags: object) -> list[str]:
    if isinstance(tags, str | bytes) or not isinstance(tags, Iterable):
        raise errors.InvalidInput("tags must be a collection of str", field="tags", value=tags)
    out = sorted({label_arg(t, "tag", MAX_TAG_BYTES) for t in tags})
    if len(out) > MAX_TAGS:
        raise errors.InvalidInput(
            f"at most {MAX_TAGS} tags per node (got {len(out)})", field="tags", value=len(out)
        )
    return out


def confidence_arg(value: object, field: str = "confidence") -> str:
    """A float in [0, 1] as exact text (repr round-trips: Redis and Lua parse the same
    double)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)) or not 0.0 <= float(value) <= 1.0:  # type: ignore[arg-type]
        raise errors.InvalidInput(
            f"{field} must be a number in [0, 1] (not NaN)", field=field, value=value
        )
    return repr(float(value))  # type: ignore[arg-type]


def weight_arg(value: object) -> str:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)):  # type: ignore[arg-type]
        raise errors.InvalidInput("weight must be a finite number", field="weight", value=value)
    return repr(float(value))  # type: ignore[arg-type]


def time_arg(value: object, field: str, *, ceil: bool = False) -> int | None:
    """A timezone-aware datetime as whole ms since the epoch (None passes)."""
    if value is None:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise errors.InvalidInput(
            f"{field} must be a timezone-aware datetime", field=field, value=value
        )
    if ceil:
        return -((_EPOCH - value) // _MS)
    return (value - _EPOCH) // _MS


def opt(value: int | None) -> str:
    return "" if value is None else str(value)


def node_id_arg(ctx: Context, node: object, field: str = "node") -> str:
    """A node of this graph, given as a :class:`Node` or its id."""
    if isinstance(node, Node):
        if node.graph != ctx.namespace:
            raise errors.InvalidInput(
                f"node {node.id} belongs to graph {node.graph!r}, not {ctx.namespace!r}",
                field=field,
                value=node.id,
                **ctx.err(),
            )
        return node.id
    if not isinstance(node, str) or not _ID.fullmatch(node):
        raise errors.InvalidInput(
            f"{field} must be a Node or a node id (24 hex digits)", field=field, value=node
        )
    return node


def ids_arg(ctx: Context, nodes: object) -> list[str]:
    if isinstance(nodes, str | Node) or not isinstance(nodes, Iterable):
        nodes = [nodes]
    ids = list(dict.fromkeys(node_id_arg(ctx, n, "nodes") for n in nodes))
    if not 1 <= len(ids) <= MAX_IDS:
        raise errors.InvalidInput(f"1..{MAX_IDS} nodes per call", field="nodes", value=len(ids))
    return ids


def int_arg(value: object, field: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise errors.InvalidInput(
            f"{field} must be an int in {low}..{high}", field=field, value=value
        )
    return value


def content_arg(ctx: Context, content: object) -> tuple[bytes, str]:
    """The content as JSON text (stored as is, never decoded by Lua: DESIGN.md decision
    9) and its hash: blake2b of the canonical form (sorted keys), so the same fact is the
    same hash whatever the key order it was written in."""
    try:
        check_depth(content, ctx.settings.max_depth)
        data = CONTENT_CODEC.encode(content)
        canonical = json.dumps(
            content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except errors.InvalidInput:
        raise
    except (TypeError, ValueError, RecursionError) as exc:
        raise errors.InvalidValue(
            f"content must be JSON (no NaN/inf): {exc}", field="content", value=type(content)
        ) from exc
    if len(data) > ctx.settings.max_value_bytes:
        raise errors.InvalidValue(
            f"content is {len(data)} bytes, above max_value_bytes", field="content", value=len(data)
        )
    digest = hashlib.blake2b(canonical.encode("utf-8"), digest_size=16).hexdigest()
    return data, digest


def pack(parts: Iterable[str | bytes]) -> bytes:
    """Netstrings, as lua/_lib.lua's pack (lengths in bytes)."""
    out = []
    for p in parts:
        b = p.encode("utf-8") if isinstance(p, str) else p
        out.append(b"%d:%s" % (len(b), b))
    return b"".join(out)

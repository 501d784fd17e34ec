"""Reversible names: LangGraph threads and store namespaces onto swarm_memory namespaces,
and checkpoint parts onto entry keys.

swarm_memory namespace names allow ``[A-Za-z0-9._:@/+=-]`` (128 characters at most);
LangGraph thread ids and namespace labels are any text. A name that fits is used as it is
(``<prefix>.t.<thread id>``); others are hex-encoded (``<prefix>.x.<hex>``); names too long
for either are hashed (``<prefix>.h.<sha256>``), and the original is kept in an entry of
the namespace itself (``TID_KEY``) so listing can still name it. Entry keys quote every
component (``urllib.parse.quote``, nothing kept but ``A-Za-z0-9_.-~``), so no component can
carry a separator or a glob character into a ``keys()`` pattern.
"""

from __future__ import annotations

import hashlib
import json
import re
from urllib.parse import quote, unquote

from swarm_memory.errors import InvalidName

MAX_NAMESPACE = 128
_RAW = re.compile(r"[A-Za-z0-9._:@/+=-]+")
_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")

TID_KEY = "tid"  # hashed names only: the original thread id / namespace tuple
ALIVE_KEY = "alive"  # the thread's TTL marker: written with every put / put_writes
OWNER_LOCK = "owner"  # the fenced lock of ownership mode


def validate_prefix(prefix: object, field: str = "prefix") -> str:
    if not isinstance(prefix, str) or _PREFIX.fullmatch(prefix) is None:
        raise InvalidName(
            f"{field} {prefix!r:.40} must be 1-32 of A-Z a-z 0-9 _ - (starting alphanumeric)",
            field=field,
            value=prefix,
        )
    return prefix


def encode_name(prefix: str, text: str) -> tuple[str, bool]:
    """(namespace name, hashed?) for ``text`` under ``prefix``."""
    raw = f"{prefix}.t.{text}"
    if _RAW.fullmatch(text) and len(raw) <= MAX_NAMESPACE:
        return raw, False
    hexed = f"{prefix}.x.{text.encode('utf-8', 'surrogatepass').hex()}"
    if len(hexed) <= MAX_NAMESPACE:
        return hexed, False
    return f"{prefix}.h.{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()}", True


def decode_name(prefix: str, name: str) -> str | None:
    """The text ``name`` encodes; None if it is hashed (read ``TID_KEY``) or not ours."""
    if name.startswith(f"{prefix}.t."):
        return name[len(prefix) + 3 :]
    if name.startswith(f"{prefix}.x."):
        try:
            return bytes.fromhex(name[len(prefix) + 3 :]).decode("utf-8", "surrogatepass")
        except ValueError:
            return None
    return None


def is_hashed(prefix: str, name: str) -> bool:
    return name.startswith(f"{prefix}.h.")


def owns(prefix: str, name: str) -> bool:
    return name.startswith((f"{prefix}.t.", f"{prefix}.x.", f"{prefix}.h."))


def q(text: str) -> str:
    return quote(text, safe="")


def uq(text: str) -> str:
    return unquote(text)


# ---------------------------------------------------------------- checkpointer keys
def head_key(ns: str) -> str:
    """The latest checkpoint of a checkpoint namespace: {"id": ..., "r": record}."""
    return f"h/{q(ns)}"


# Parts of each key family, "/"-separated: kind, then the escaped fields.
CHECKPOINT_PARTS = len(("c", "ns", "checkpoint_id"))
BLOB_PARTS = len(("b", "ns", "channel", "version"))
WRITE_PARTS = len(("w", "ns", "checkpoint_id", "task_id", "idx"))


def checkpoint_key(ns: str, checkpoint_id: str) -> str:
    return f"c/{q(ns)}/{q(checkpoint_id)}"


def checkpoint_pattern(ns: str | None) -> str:
    return "c/*" if ns is None else f"c/{q(ns)}/*"


def parse_checkpoint_key(key: str) -> tuple[str, str] | None:
    parts = key.split("/")
    if len(parts) != CHECKPOINT_PARTS or parts[0] != "c":
        return None
    return uq(parts[1]), uq(parts[2])


def blob_key(ns: str, channel: str, version: object) -> str:
    # json.dumps keeps 1 and "1" apart, as InMemorySaver's dict keys do.
    return f"b/{q(ns)}/{q(channel)}/{q(json.dumps(version))}"


def blob_pattern(ns: str | None) -> str:
    return "b/*" if ns is None else f"b/{q(ns)}/*"


def write_key(ns: str, checkpoint_id: str, task_id: str, idx: int) -> str:
    return f"w/{q(ns)}/{q(checkpoint_id)}/{q(task_id)}/{idx}"


def writes_pattern(ns: str, checkpoint_id: str | None = None) -> str:
    if checkpoint_id is None:
        return f"w/{q(ns)}/*"
    return f"w/{q(ns)}/{q(checkpoint_id)}/*"


def parse_write_key(key: str) -> tuple[str, str] | None:
    """(checkpoint ns, checkpoint id) of a write key."""
    parts = key.split("/")
    if len(parts) != WRITE_PARTS or parts[0] != "w":
        return None
    return uq(parts[1]), uq(parts[2])


def parse_blob_ns(key: str) -> str | None:
    parts = key.split("/")
    if len(parts) != BLOB_PARTS or parts[0] != "b":
        return None
    return uq(parts[1])

"""I/O-free flows: every public operation as a generator of effects.

A flow validates its input, yields :class:`ScriptCall` / :class:`Command` / :class:`Sleep`
effects, receives the replies, and returns the result. It never touches a socket, so
the sync and async clients share every decision here and differ only in how
``_drive.py`` performs the effects (the httpx/httpcore layout).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import math
import os
import random
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from swarm_memory import errors
from swarm_memory.codec import JSON_FORMAT, Encoded, ValueCodec
from swarm_memory.keys import NamespaceKeys, registry_key, validate_key, validate_namespace
from swarm_memory.merge import merge_patch
from swarm_memory.models import (
    AuditRecord,
    Entry,
    Event,
    FailedCompare,
    FencingToken,
    NamespaceInfo,
    Snapshot,
    SweepResult,
    level_rank,
    ms_to_datetime,
    validate_level,
    validate_over_quota,
    validate_strategy,
)
from swarm_memory.scripts import Script, load
from swarm_memory.settings import Settings

T = TypeVar("T")

MAX_EXACT = 2**53 - 1
MAX_BATCH = 10_000


# ------------------------------------------------------------------------------ effects
@dataclass(frozen=True, slots=True)
class ScriptCall:
    script: Script
    keys: list[str]
    args: list[str | bytes | int]
    op_id: str | None  # set for writes: the reply may be lost, the op id makes a retry safe


@dataclass(frozen=True, slots=True)
class Command:
    args: tuple[str | bytes | int | float, ...]
    write: bool = False


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class Listen:
    """Subscribe to a (shard) channel; the driver returns a handle for :class:`WaitBell`.
    Drivers close every handle a flow left open when the flow ends, however it ends."""

    channel: str


@dataclass(frozen=True, slots=True)
class WaitBell:
    """Wait up to ``seconds`` for a message equal to ``message`` on a :class:`Listen`
    handle. Returns True if it came; a broken subscription just waits out the time (the
    caller polls: a doorbell is only a hint)."""

    handle: Any
    message: bytes
    seconds: float


@dataclass(frozen=True, slots=True)
class Unlisten:
    handle: Any


@dataclass(frozen=True, slots=True)
class CallUser:
    """Call the caller's own function (a ``get_or_set`` factory): the driver calls it,
    awaits it if it is a coroutine (async client), and throws whatever it raises back
    into the flow, so the flow can clean up (release a lock) before it propagates."""

    fn: Callable[[], Any]


Effect = ScriptCall | Command | Sleep | Listen | WaitBell | Unlisten | CallUser
Flow = Generator[Effect, Any, T]


@dataclass(frozen=True, slots=True)
class Incoming:
    """What a ``custom``-strategy resolver gets besides the current entry."""

    key: str
    value: Any
    agent: str


Resolver = Callable[[Entry | None, Incoming], Any]


@dataclass(eq=False)
class AgentSession:
    """Per-identity lease state: the lease ttl its ephemeral writes and lease-tied locks
    use, and the namespaces where it holds something tied to its lease (heartbeats renew
    the lease there)."""

    lease_ttl: float
    namespaces: set[str] = field(default_factory=set)
    leased: bool = False  # True once lease()/heartbeat() ran: new locks get tied to it

    def ttl_ms(self) -> int:
        return max(1, int(self.lease_ttl * 1000))


def bind_lease(ctx: Context) -> int:
    """The lease (ms) a write or lock of this call ties to the agent — and, as a side
    effect, the namespace is recorded in the session so that heartbeats renew it there."""
    if ctx.session is None:
        return max(1, int(ctx.settings.lease_ttl * 1000))
    ctx.session.namespaces.add(ctx.namespace)
    return ctx.session.ttl_ms()


@dataclass(frozen=True, slots=True)
class Context:
    """Everything a flow needs: who, where, and how to encode."""

    namespace: str
    agent: str
    settings: Settings
    codec: ValueCodec
    resolver: Resolver | None = None
    session: AgentSession | None = None  # the identity's lease state (shared, mutable)

    @property
    def keys(self) -> NamespaceKeys:
        return NamespaceKeys.of(self.settings.key_prefix, self.namespace)

    def key(self, key: object) -> str:
        return validate_key(key, self.settings.max_key_bytes)

    def err(self, **kw: Any) -> dict[str, Any]:
        return {"namespace": self.namespace, "agent": self.agent, **kw}


# ---------------------------------------------------------------------------- arguments
def new_op_id() -> str:
    # 128 random bits (as many as uuid4 has) in 22 base64 characters (A-Z a-z 0-9 . _:
    # no "-", so an id never reads as a command-line option) rather than 32 hex digits:
    # the id is stored twice per write for the dedupe window (op record hash + purge
    # zset) and once in the audit record, and at 22 characters each copy fits a 32-byte
    # allocation instead of a 48-byte one.
    return base64.b64encode(os.urandom(16), altchars=b"._")[:22].decode()


def op_id_arg(op_id: object) -> str:
    if op_id is None:
        return new_op_id()
    if not isinstance(op_id, str) or not 1 <= len(op_id) <= 128 or not op_id.isprintable():
        raise errors.InvalidInput(
            "op_id must be 1..128 printable characters", field="op_id", value=op_id
        )
    return op_id


def version_arg(version: object, field: str = "expected_version") -> int | None:
    """``None`` or a plain int in [0, 2**53). Rejects bools, strings like ``"0x10"``, floats."""
    if version is None:
        return None
    if isinstance(version, bool) or not isinstance(version, int):
        raise errors.InvalidVersion(
            f"{field} must be an int, not {type(version).__name__}", field=field, value=version
        )
    if not 0 <= version <= MAX_EXACT:
        raise errors.InvalidVersion(
            f"{field} must be between 0 and 2**53-1", field=field, value=version
        )
    return version


def fence_arg(fence: object, key: str, max_key_bytes: int) -> tuple[str, int] | None:
    """``None``, a :class:`FencingToken` (checked against its own lock), or a plain int
    token of the lock named like the key. Rejects bools, strings and out-of-range ints."""
    if fence is None:
        return None
    if isinstance(fence, FencingToken):
        token = version_arg(int(fence), "fence")
        lock = validate_key(fence.lock, max_key_bytes)
    else:
        if isinstance(fence, bool) or not isinstance(fence, int):
            raise errors.InvalidInput(
                "fence must be a lock's token (lock.token) or an int token of the key's lock",
                field="fence",
                value=fence,
            )
        token, lock = version_arg(fence, "fence"), key
    if not token:
        raise errors.InvalidInput("fence tokens are positive", field="fence", value=fence)
    return (lock, token)


def _bool_arg(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise errors.InvalidInput(f"{field} must be True or False", field=field, value=value)
    return value


def _fences_arg(
    ctx: Context, keys: list[str], fence: object, fences: Mapping[str, Any] | None
) -> dict[str, tuple[str, int]]:
    if fences is not None and not isinstance(fences, Mapping):
        raise errors.InvalidInput("fences must be a {key: token} mapping", field="fences")
    out: dict[str, tuple[str, int]] = {}
    for k in keys:
        given = (fences or {}).get(k, fence)
        fenced = fence_arg(given, k, ctx.settings.max_key_bytes)
        if fenced:
            out[k] = fenced
    for k in fences or {}:
        if k not in keys:
            raise errors.InvalidInput(
                f"fences names {k!r}, which is not being written", field="fences", value=k
            )
    return out


def ttl_arg(ttl: object, settings: Settings, field: str = "ttl") -> int | None:
    """Seconds (int/float) or timedelta -> whole milliseconds; ``None`` passes through."""
    if ttl is None:
        return None
    if isinstance(ttl, timedelta):
        seconds = ttl.total_seconds()
    elif isinstance(ttl, int | float) and not isinstance(ttl, bool):
        seconds = float(ttl)
    else:
        raise errors.InvalidTTL(
            f"{field} must be seconds or a timedelta, not {type(ttl).__name__}",
            field=field,
            value=ttl,
        )
    if not math.isfinite(seconds) or seconds <= 0:
        raise errors.InvalidTTL(f"{field} must be positive and finite", field=field, value=ttl)
    if seconds > settings.max_ttl:
        raise errors.InvalidTTL(
            f"{field} of {seconds:g}s is above the maximum of {settings.max_ttl:g}s",
            field=field,
            value=ttl,
        )
    ms = round(seconds * 1000)
    if ms < 1:
        raise errors.InvalidTTL(f"{field} must be at least 1 ms", field=field, value=ttl)
    return ms


def limit_arg(value: object, field: str) -> int:
    """Optional non-negative limit (None -> 0 = unlimited)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_EXACT:
        raise errors.InvalidInput(
            f"{field} must be a positive int or None", field=field, value=value
        )
    return value


def amount_arg(amount: object) -> int:
    if isinstance(amount, bool) or not isinstance(amount, int) or abs(amount) > MAX_EXACT:
        raise errors.InvalidInput(
            "amount must be an int with |amount| < 2**53", field="amount", value=amount
        )
    return amount


def _opt(value: int | None) -> str:
    return "" if value is None else str(value)


def _s(raw: bytes | str | int) -> str:
    if isinstance(raw, bytes):
        return raw.decode("utf-8")
    return str(raw)


def unpack(packed: bytes) -> list[bytes]:
    """Inverse of ``pack`` in lua/_lib.lua (netstrings)."""
    out: list[bytes] = []
    pos, end = 0, len(packed)
    while pos < end:
        colon = packed.index(b":", pos)
        size = int(packed[pos:colon])
        out.append(packed[colon + 1 : colon + 1 + size])
        pos = colon + 1 + size
    return out


# ------------------------------------------------------------------------ reply parsing
ENTRY_WIDTH = 9  # ver cr mr ct mt x by f v   (a lone "" means absent)


def _times(created_ms: Any, updated_ms: Any) -> tuple[datetime, datetime]:
    # An entry written once was created when it was updated: one conversion serves both.
    updated = ms_to_datetime(int(updated_ms))
    return (updated if created_ms == updated_ms else ms_to_datetime(int(created_ms))), updated


def _entry(ctx: Context, key: str, f: list[Any]) -> Entry:
    x = int(f[5])
    created, updated = _times(f[3], f[4])
    return Entry(
        key=key,
        value=ctx.codec.decode(f[8], _s(f[7])),
        version=int(f[0]),
        create_revision=int(f[1]),
        mod_revision=int(f[2]),
        created_at=created,
        updated_at=updated,
        updated_by=_s(f[6]),
        expires_at=ms_to_datetime(x) if x > 0 else None,
        size=len(f[8]),
    )


def _entries(ctx: Context, keys: list[str], flat: list[Any]) -> dict[str, Entry | None]:
    out: dict[str, Entry | None] = {}
    pos = 0
    for key in keys:
        if flat[pos] == b"":
            out[key] = None
            pos += 1
        else:
            out[key] = _entry(ctx, key, flat[pos : pos + ENTRY_WIDTH])
            pos += ENTRY_WIDTH
    return out


def _denied(ctx: Context, reply: list[Any], action: str, required: str, key: str | None) -> None:
    granted = _s(reply[1])
    raise errors.PermissionDenied(
        f"agent {ctx.agent!r} has {granted!r} in namespace {ctx.namespace!r}; "
        f"{action} needs {required!r}",
        action=action,
        required=required,
        granted=granted,
        **ctx.err(key=key),
    )


def _common(ctx: Context, reply: list[Any], action: str, required: str, key: str | None) -> None:
    tag = reply[0]
    if tag == b"nons":
        raise errors.NamespaceNotFound(
            f"namespace {ctx.namespace!r} does not exist", **ctx.err(key=key)
        )
    if tag == b"denied":
        _denied(ctx, reply, action, required, key)


@dataclass(frozen=True, slots=True)
class Item:
    op: str  # P S D I T (see lua/write.lua)
    key: str
    value: bytes = b""
    fmt: str = ""
    expected: int | None = None
    ttl_ms: int | None = None
    source: Any = None  # the caller's value, kept for the returned Entry
    fence: tuple[str, int] | None = None  # (lock name, token) that must be held to write


@dataclass(frozen=True, slots=True)
class ItemResult:
    status: str  # w (written) d (deleted) t (touched) a (absent)
    fields: list[bytes]


@dataclass(frozen=True, slots=True)
class WriteResult:
    revision: int
    sweep_due: bool
    items: list[ItemResult]
    evicted: list[str]
    replayed: bool
    digest: str


class _MergeFallback(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


def _item_entry(ctx: Context, item: Item, r: ItemResult) -> Entry:
    f = r.fields
    # When the server computed the value (merge, incr) it sends it back: decode that.
    value = ctx.codec.decode(f[8], _s(f[9])) if f[8] else item.source
    x = int(f[6])
    created, updated = _times(f[4], f[5])
    return Entry(
        key=item.key,
        value=value,
        version=int(f[1]),
        create_revision=int(f[2]),
        mod_revision=int(f[3]),
        created_at=created,
        updated_at=updated,
        updated_by=ctx.agent,
        expires_at=ms_to_datetime(x) if x > 0 else None,
        size=int(f[7]),
    )


def _parse_ok(reply: list[Any]) -> WriteResult:
    """The write script's reply: ``ok rev sweep_due n_items (10 fields per item)...
    n_evicted name...`` as a plain array (numbers arrive as integers)."""
    n = int(reply[3])
    items = [ItemResult(_s(reply[4 + i * 10]), reply[4 + i * 10 : 14 + i * 10]) for i in range(n)]
    pos = 4 + n * 10
    evicted = [_s(x) for x in reply[pos + 1 : pos + 1 + int(reply[pos])]]
    return WriteResult(int(reply[1]), reply[2] != 0, items, evicted, False, "")


def parse_op_record(record: bytes, sweep_due: bool) -> WriteResult | None:
    """The first outcome of a replayed op id, rebuilt from its op record (the compact
    format lua/write.lua stores, or the packed reply earlier versions stored). None for
    a record this request cannot have written (another script's, e.g. a broadcast)."""
    try:
        if record.startswith(b"w1 "):
            return _parse_compact_record(record, sweep_due)
        if record[:1].isdigit() and b":" in record:
            return _parse_packed_record(record, sweep_due)
    except (ValueError, IndexError):
        pass
    return None


def _parse_compact_record(record: bytes, sweep_due: bool) -> WriteResult:
    # "w1 <digest|-> <rev> <now> <n_items> <n_evicted> <n_values>|<item>|...|<packed tail>"
    head, _, rest = record.partition(b"|")
    _tag, digest, rev, now, n_items, _n_evicted, n_values = head.split(b" ")
    n, nv = int(n_items), int(n_values)
    parts = rest.split(b"|", n)
    tail = unpack(parts[n]) if len(parts) > n and parts[n] else []
    values = {int(tail[3 * j]): (tail[3 * j + 1], tail[3 * j + 2]) for j in range(nv)}
    items = []
    for i, raw in enumerate(parts[:n], 1):
        f: list[Any] = raw.split(b" ")
        if f[0] == b"w":  # w ver cr ct x size: mr is the record's rev, mt its time
            value, fmt = values.get(i, (b"", b""))
            f = [f[0], f[1], f[2], rev, f[3], now, f[4], f[5], value, fmt]
        elif len(f) == 8:  # status ver cr mr ct mt x size
            f += [b"", b""]
        else:
            raise ValueError("malformed op record item")
        items.append(ItemResult(_s(f[0]), f))
    evicted = [_s(x) for x in tail[3 * nv :]]
    digest_s = "" if digest == b"-" else _s(digest)
    return WriteResult(int(rev), sweep_due, items, evicted, True, digest_s)


def _parse_packed_record(record: bytes, sweep_due: bool) -> WriteResult:
    # The whole first reply, netstring-packed: digest rev due n_items fields... n_evicted names...
    flat = unpack(record)
    n = int(flat[3])
    items = [
        ItemResult(_s(flat[4 + i * 10]), flat[4 + i * 10 : 4 + (i + 1) * 10]) for i in range(n)
    ]
    pos = 4 + n * 10
    evicted = [_s(x) for x in flat[pos + 1 : pos + 1 + int(flat[pos])]]
    return WriteResult(int(flat[1]), sweep_due, items, evicted, True, _s(flat[0]))


def request_digest(agent: str, action: str, items: list[Item]) -> str:
    """Fingerprint of a plain write, stored with its op record: replaying the op id with
    a *different* request is an error, not a silent "success" of something else."""
    # "<len>:<part>" for every part (len in characters; the value's in bytes), hashed in
    # one call: the same digest as hashing part by part, built with one format per item.
    chunks = [f"{len(agent)}:{agent}{len(action)}:{action}".encode()]
    for it in items:
        fence = f"{it.fence[0]}\0{it.fence[1]}" if it.fence else ""
        e, t = _opt(it.expected), _opt(it.ttl_ms)
        chunks.append(
            f"{len(it.op)}:{it.op}{len(it.key)}:{it.key}{len(it.fmt)}:{it.fmt}"
            f"{len(e)}:{e}{len(t)}:{t}{len(fence)}:{fence}{len(it.value)}:".encode()
        )
        chunks.append(it.value)
    return hashlib.blake2b(b"".join(chunks), digest_size=12).hexdigest()


# ------------------------------------------------------------------------------ writing
def _write(
    ctx: Context,
    items: list[Item],
    action: str,
    op_id: str,
    *,
    echo: bool = False,
    ephemeral: bool = False,
) -> Flow[WriteResult]:
    """Run the write script; resolve evict-oldest victims; raise typed errors.

    Plain writes carry a request digest; CAS loops (``echo=True``) carry none, since their
    attempts differ, and have the written values echoed so that replays report them.
    """
    s = ctx.settings
    nk = ctx.keys
    keys = nk.fixed()
    args: list[str | bytes | int] = [
        ctx.agent,
        op_id,
        int(s.dedupe_window * 1000),
        s.stream_maxlen,
        s.audit_maxlen,
        s.max_value_bytes,
        len(items),
        0,
        action,
        "" if echo else request_digest(ctx.agent, action, items),
        "1" if echo else "0",
        s.event_value_max,
        _opt(bind_lease(ctx)) if ephemeral else "",
        sum(1 for it in items if it.fence),
    ]
    names = set()
    for it in items:
        keys += [nk.entry(it.key), nk.history(it.key)]
        args += [it.op, it.key, it.value, it.fmt, _opt(it.expected), _opt(it.ttl_ms)]
        names.add(it.key)
    for i, it in enumerate(items, 1):
        if it.fence:
            args += [i, it.fence[0], it.fence[1]]
    victims: list[str] = []
    for _round in range(64):
        call_keys = keys + [k for v in victims for k in (nk.entry(v), nk.history(v))]
        args[7] = len(victims)
        reply = yield ScriptCall(load("write"), call_keys, args + list(victims), op_id)
        tag = reply[0]
        if tag in (b"ok", b"dup"):
            replay = parse_op_record(reply[1], reply[2] != 0) if tag == b"dup" else None
            if tag == b"dup" and (replay is None or replay.digest != args[9]):
                raise errors.OpIdReused(
                    f"op id {op_id!r} was already used for a different request; "
                    "an op id names one request (its replays must be identical)",
                    op_id=op_id,
                    **ctx.err(key=items[0].key if items else None),
                )
            result = replay or _parse_ok(reply)
            if result.sweep_due:
                yield from _sweep_quietly(ctx)
            return result
        if tag == b"victims":
            wanted = max(int(reply[1]), 1)
            oldest = yield Command(("ZRANGE", nk.lru, 0, wanted + len(items) + 7))
            victims = [_s(v) for v in oldest if _s(v) not in names][:wanted]
            continue
        _raise_write(ctx, reply, items, action)
    raise errors.ServerError("could not settle evict-oldest victims", **ctx.err())


def _raise_write(ctx: Context, reply: list[Any], items: list[Item], action: str) -> None:
    tag = reply[0]
    indexed = tag not in (b"nons", b"denied", b"quota", b"txn_conflict")
    key = items[int(reply[1]) - 1].key if indexed else None
    _common(ctx, reply, action, "write", key or (items[0].key if items else None))
    if tag == b"conflict":
        item = items[int(reply[1]) - 1]
        current = None if reply[2] == b"" else _entry(ctx, item.key, reply[2:])
        if item.expected is not None:
            why = f"expected version {item.expected}, found " + (
                f"version {current.version}" if current else "no entry"
            )
        else:
            why = "the key exists and the strategy is first-wins"
        raise errors.ConflictError(
            f"write to {item.key!r} lost: {why}",
            current=current,
            expected=item.expected,
            **ctx.err(key=item.key),
        )
    if tag == b"txn_conflict":
        failed: list[FailedCompare] = []
        pos = 2
        for _ in range(int(reply[1])):
            item = items[int(reply[pos]) - 1]
            if reply[pos + 1] == b"":
                current, pos = None, pos + 2
            else:
                current, pos = _entry(ctx, item.key, reply[pos + 1 : pos + 10]), pos + 10
            failed.append(FailedCompare(item.key, item.expected or 0, current))
        names = ", ".join(repr(f.key) for f in failed)
        raise errors.TransactionConflict(
            f"transaction not committed: compares failed on {names}",
            failed=failed,
            current=failed[0].current,
            expected=failed[0].expected,
            **ctx.err(key=failed[0].key),
        )
    if tag == b"fenced":
        lock, token, latest, reason = _s(reply[2]), int(reply[3]), int(reply[4]), _s(reply[5])
        why = {
            "stale": f"a newer token ({latest}) was issued",
            "not_held": "that token's lease is not held (expired, released, or never issued)",
            "required": f"namespace {ctx.namespace!r} requires the key's lock token",
            "wrong_lock": "with require_lock the fence must be the key's own lock",
        }.get(reason, reason)
        raise errors.FencingError(
            f"write to {key!r} fenced with token {token} of lock {lock!r} refused: {why}",
            lock=lock,
            token=token,
            latest=latest,
            reason=reason,
            **ctx.err(key=key),
        )
    if tag == b"version_required":
        strategy = _s(reply[2])
        err = errors.VersionRequired(
            f"namespace {ctx.namespace!r} uses strategy {strategy!r}: "
            "every write must give expected_version",
            current=None,
            **ctx.err(key=key),
        )
        err.strategy = strategy  # type: ignore[attr-defined]
        raise err
    if tag == b"quota":
        kind, limit, current_n, requested = _s(reply[1]), *map(int, reply[2:5])
        raise errors.QuotaExceeded(
            f"namespace {ctx.namespace!r} {kind} is {limit}; "
            f"this write would take it from {current_n} to {requested}",
            limit_kind=kind,
            limit=limit,
            current=current_n,
            requested=requested,
            **ctx.err(key=items[0].key if items else None),
        )
    if tag == b"merge_fallback":
        raise _MergeFallback(_s(reply[2]))
    if tag == b"not_integer":
        raise errors.NotAnInteger(
            f"{key!r} does not hold an integer with |n| < 2**53 (or the sum leaves that range)",
            **ctx.err(key=key),
        )
    if tag == b"too_large":
        raise errors.InvalidValue(
            f"merged value of {key!r} would be {int(reply[2])} bytes, above the limit",
            field="value",
            value=int(reply[2]),
            **ctx.err(key=key),
        )
    raise errors.ServerError(f"unexpected reply {tag!r} from the write script", **ctx.err())


def _encode(ctx: Context, value: Any, allow_compress: bool = True) -> Encoded:
    return ctx.codec.encode(value, allow_compress=allow_compress)


def _sweep_quietly(ctx: Context) -> Flow[None]:
    """Opportunistic sweep after a reply said expired entries are due; never fails the
    operation that triggered it."""
    with contextlib.suppress(errors.SwarmMemoryError):
        yield from sweep(ctx, max_rounds=2)


def put(
    ctx: Context,
    key: str,
    value: Any,
    *,
    expected_version: int | None = None,
    ttl: float | timedelta | None = None,
    op_id: str | None = None,
    fence: int | None = None,
    ephemeral: bool = False,
) -> Flow[Entry]:
    k = ctx.key(key)
    entries = yield from put_many(
        ctx,
        {k: value},
        expected_versions={k: expected_version},
        ttl=ttl,
        op_id=op_id,
        fence=fence,
        ephemeral=ephemeral,
        action="put",
    )
    return entries[k]


def put_many(
    ctx: Context,
    values: Mapping[str, Any],
    *,
    expected_versions: Mapping[str, int | None] | None = None,
    ttl: float | timedelta | None = None,
    op_id: str | None = None,
    fence: int | None = None,
    fences: Mapping[str, int] | None = None,
    ephemeral: bool = False,
    action: str = "put_many",
) -> Flow[dict[str, Entry]]:
    """All-or-nothing: every key is written under the namespace strategy, or none is.

    ``fence`` applies one lock token to every key; ``fences`` gives a token per key."""
    if not isinstance(values, Mapping):
        raise errors.InvalidInput("values must be a mapping", field="values", value=type(values))
    if not 1 <= len(values) <= MAX_BATCH:
        raise errors.InvalidInput(
            f"put_many takes 1..{MAX_BATCH} keys", field="values", value=len(values)
        )
    expected = dict(expected_versions or {})
    for k in expected:
        if k not in values:
            raise errors.InvalidInput(
                f"expected_versions names {k!r}, which is not being written",
                field="expected_versions",
                value=k,
            )
    ttl_ms = ttl_arg(ttl, ctx.settings)
    op = op_id_arg(op_id)
    eph = _bool_arg(ephemeral, "ephemeral")
    fence_of = _fences_arg(ctx, list(values), fence, fences)
    prepared = [
        (ctx.key(k), v, version_arg(expected.get(k)), _encode(ctx, v)) for k, v in values.items()
    ]

    def items_for(compress: bool) -> list[Item]:
        out = []
        for k, v, ev, enc in prepared:
            e = enc if compress or not enc.fmt.endswith("+z") else _encode(ctx, v, False)
            out.append(Item("P", k, e.data, e.fmt, ev, ttl_ms, v, fence_of.get(k)))
        return out

    items = items_for(True)
    try:
        try:
            result = yield from _write(ctx, items, action, op, ephemeral=eph)
        except _MergeFallback as fb:
            if fb.reason != "patch" or ctx.codec.codec.name != JSON_FORMAT:
                raise
            items = items_for(False)
            result = yield from _write(ctx, items, action, op, ephemeral=eph)
    except _MergeFallback:
        # Stored values the server cannot merge (compressed, other codec): merge here,
        # as one CAS batch so the whole call stays all-or-nothing.
        patches = {it.key: it.source for it in items}
        pinned = {it.key: it.expected for it in items if it.expected is not None}
        return (
            yield from _batch_cas(
                ctx,
                list(patches),
                lambda k, cur: merge_patch(None if cur is None else cur.value, patches[k]),
                ttl_ms=ttl_ms,
                op_id=op,
                action=action,
                pinned=pinned,
                fences=fence_of,
                ephemeral=eph,
            )
        )
    except errors.VersionRequired as exc:
        if getattr(exc, "strategy", None) != "custom" or ctx.resolver is None:
            raise
        resolver = ctx.resolver
        incoming = {it.key: it.source for it in items}

        def resolve(k: str, cur: Entry | None) -> Any:
            try:
                return resolver(cur, Incoming(k, incoming[k], ctx.agent))
            except Exception as err:
                raise errors.ResolverError(
                    f"custom resolver raised {type(err).__name__}: {err}", **ctx.err(key=k)
                ) from err

        return (
            yield from _batch_cas(
                ctx,
                list(incoming),
                resolve,
                ttl_ms=ttl_ms,
                op_id=op,
                action=action,
                wrap_bad_values=True,
                fences=fence_of,
                ephemeral=eph,
            )
        )
    return {it.key: _item_entry(ctx, it, r) for it, r in zip(items, result.items, strict=True)}


def create(
    ctx: Context,
    key: str,
    value: Any,
    *,
    ttl: float | timedelta | None = None,
    op_id: str | None = None,
    fence: int | None = None,
    ephemeral: bool = False,
) -> Flow[Entry]:
    """Write only if absent; ConflictError(current=...) otherwise."""
    k = ctx.key(key)
    eph = _bool_arg(ephemeral, "ephemeral")
    fenced = fence_arg(fence, k, ctx.settings.max_key_bytes)
    enc = _encode(ctx, value)
    item = Item("S", k, enc.data, enc.fmt, 0, ttl_arg(ttl, ctx.settings), value, fenced)
    result = yield from _write(ctx, [item], "create", op_id_arg(op_id), ephemeral=eph)
    return _item_entry(ctx, item, result.items[0])


def _batch_cas(
    ctx: Context,
    keys: list[str],
    compute: Callable[[str, Entry | None], Any],
    *,
    ttl_ms: int | None,
    op_id: str,
    action: str,
    pinned: Mapping[str, int] | None = None,
    wrap_bad_values: bool = False,
    fences: Mapping[str, tuple[str, int]] | None = None,
    ephemeral: bool = False,
) -> Flow[dict[str, Entry]]:
    """Client-side compare-and-set loop over one or more keys, written atomically.

    Every attempt reuses ``op_id``: a lost conflict is not recorded by the server, and the
    first applied attempt is, so a replay still returns the first outcome.
    """
    s = ctx.settings
    current = yield from get_many(ctx, keys)
    for attempt in range(1, s.update_max_attempts + 1):
        items = []
        for k in keys:
            cur = current[k]
            have = cur.version if cur else 0
            if pinned and k in pinned and pinned[k] != have:
                raise errors.ConflictError(
                    f"write to {k!r} lost: expected version {pinned[k]}, found {have}",
                    current=cur,
                    expected=pinned[k],
                    **ctx.err(key=k),
                )
            new_value = compute(k, cur)
            try:
                enc = _encode(ctx, new_value)
            except errors.InvalidValue as exc:
                if not wrap_bad_values:
                    raise
                raise errors.ResolverError(
                    f"custom resolver returned an unusable value: {exc.message}",
                    **ctx.err(key=k),
                ) from exc
            fenced = fences.get(k) if fences else None
            items.append(Item("S", k, enc.data, enc.fmt, have, ttl_ms, new_value, fenced))
        started = time.monotonic()
        try:
            result = yield from _write(ctx, items, action, op_id, echo=True, ephemeral=ephemeral)
        except errors.ConflictError as exc:
            if isinstance(exc, errors.VersionRequired) or pinned:
                raise
            assert exc.key is not None
            # The reply carries the winner: retry against it at once, no extra read.
            # After repeated conflicts, a random pause breaks the contenders' lockstep: in
            # units of this client's own attempt time, doubling per conflict, capped by
            # update_backoff_max (a fixed 20 ms scale idled a loser for many attempt-times
            # while the others wrote). After a pause the winner's entry is stale (retrying
            # against it would lose every time: starvation), so re-read.
            if s.update_backoff_max and attempt > 2:
                took = time.monotonic() - started
                cap = min(s.update_backoff_max, took * 2 ** min(attempt - 3, 10))
                yield Sleep(random.uniform(0, cap))
                current = yield from get_many(ctx, keys)
            else:
                current[exc.key] = exc.current
            continue
        return {it.key: _item_entry(ctx, it, r) for it, r in zip(items, result.items, strict=True)}
    raise errors.RetryLimitExceeded(
        f"gave up on {keys[0]!r} after {s.update_max_attempts} conflicting attempts",
        attempts=s.update_max_attempts,
        current=current[keys[0]],
        **ctx.err(key=keys[0]),
    )


def update(
    ctx: Context,
    key: str,
    fn: Callable[[Any], Any],
    *,
    ttl: float | timedelta | None = None,
    op_id: str | None = None,
    fence: int | None = None,
) -> Flow[Entry]:
    """Read-modify-write with ``fn(current_value_or_None)``, retried on conflict.

    ``fn`` may run several times; exceptions it raises propagate unchanged and nothing
    is written.
    """
    k = ctx.key(key)
    if not callable(fn):
        raise errors.InvalidInput("fn must be callable", field="fn", value=type(fn))
    fenced = fence_arg(fence, k, ctx.settings.max_key_bytes)
    result = yield from _batch_cas(
        ctx,
        [k],
        lambda _k, cur: fn(None if cur is None else cur.value),
        ttl_ms=ttl_arg(ttl, ctx.settings),
        op_id=op_id_arg(op_id),
        action="update",
        fences={k: fenced} if fenced else None,
    )
    return result[k]


def delete(
    ctx: Context,
    key: str,
    *,
    expected_version: int | None = None,
    op_id: str | None = None,
    fence: int | None = None,
) -> Flow[bool]:
    k = ctx.key(key)
    fenced = fence_arg(fence, k, ctx.settings.max_key_bytes)
    item = Item("D", k, expected=version_arg(expected_version), fence=fenced)
    result = yield from _write(ctx, [item], "delete", op_id_arg(op_id))
    return result.items[0].status == "d"


def incr(
    ctx: Context,
    key: str,
    amount: int = 1,
    *,
    ttl: float | timedelta | None = None,
    op_id: str | None = None,
    fence: int | None = None,
) -> Flow[int]:
    """Atomic server-side add on an integer value (absent counts as 0); |n| < 2**53."""
    k = ctx.key(key)
    item = Item(
        "I",
        k,
        str(amount_arg(amount)).encode(),
        JSON_FORMAT,
        None,
        ttl_arg(ttl, ctx.settings),
        fence=fence_arg(fence, k, ctx.settings.max_key_bytes),
    )
    result = yield from _write(ctx, [item], "incr", op_id_arg(op_id))
    return int(result.items[0].fields[8])


def touch(
    ctx: Context, key: str, ttl: float | timedelta, *, op_id: str | None = None
) -> Flow[bool]:
    """Set a new expiry (from now) without changing the value or version."""
    ttl_ms = ttl_arg(ttl, ctx.settings)
    if ttl_ms is None:
        raise errors.InvalidTTL("touch needs a ttl", field="ttl", value=None)
    result = yield from _write(
        ctx, [Item("T", ctx.key(key), ttl_ms=ttl_ms)], "touch", op_id_arg(op_id)
    )
    return result.items[0].status == "t"


def rollback(ctx: Context, key: str, *, to_version: int, op_id: str | None = None) -> Flow[Entry]:
    """Write version ``to_version``'s value as a new version (history is never rewritten)."""
    k = ctx.key(key)
    want = version_arg(to_version, "to_version")
    op = op_id_arg(op_id)
    old = yield from get(ctx, k, version=want)
    if old is None:
        raise errors.VersionNotFound(
            f"version {want} of {k!r} is not kept", version=want or 0, **ctx.err(key=k)
        )
    result = yield from _batch_cas(
        ctx, [k], lambda _k, _cur: old.value, ttl_ms=None, op_id=op, action="rollback"
    )
    return result[k]


# ------------------------------------------------------------------------------ reading
def _read(
    ctx: Context, action: str, keys: list[str], extra: list[str | bytes | int]
) -> Flow[list[Any]]:
    nk = ctx.keys
    call_keys = nk.fixed() + [x for k in keys for x in (nk.entry(k), nk.history(k))]
    args: list[str | bytes | int] = [ctx.agent, ctx.settings.audit_maxlen, action, *extra]
    reply = yield ScriptCall(load("read"), call_keys, args, None)
    _common(ctx, reply, action, "read", keys[0] if len(keys) == 1 else None)
    if reply[1] != 0:
        yield from _sweep_quietly(ctx)
    return list(reply[2:])


def get(ctx: Context, key: str, *, version: int | None = None) -> Flow[Entry | None]:
    k = ctx.key(key)
    v = version_arg(version, "version")
    if v is None:
        flat = yield from _read(ctx, "get", [k], [])
        return _entries(ctx, [k], flat)[k]
    flat = yield from _read(ctx, "version", [k], [v])
    if flat[0] == b"":
        return None
    if len(flat) == ENTRY_WIDTH:
        return _entry(ctx, k, flat)
    return _history_entry(ctx, k, int(flat[0]), flat[1], flat[2])


def _history_entry(ctx: Context, key: str, version: int, meta: bytes, value: bytes) -> Entry:
    cr, mr, ct, mt, x, by, fmt = unpack(meta)
    return _entry(ctx, key, [version, cr, mr, ct, mt, x, by, fmt, value])


def get_many(ctx: Context, keys: Iterable[str]) -> Flow[dict[str, Entry | None]]:
    if isinstance(keys, str | bytes):
        raise errors.InvalidInput("get_many takes a list of keys, not one str", field="keys")
    names = list(dict.fromkeys(ctx.key(k) for k in keys))
    if len(names) > MAX_BATCH:
        raise errors.InvalidInput(f"get_many takes at most {MAX_BATCH} keys", field="keys")
    if not names:
        return {}
    flat = yield from _read(ctx, "get", names, [])
    return _entries(ctx, names, flat)


def exists(ctx: Context, key: str) -> Flow[bool]:
    k = ctx.key(key)
    flat = yield from _read(ctx, "exists", [k], [])
    return bool(flat[0] == 1)


def history(ctx: Context, key: str) -> Flow[list[Entry]]:
    """Kept versions, newest first (the current one included); [] when absent."""
    k = ctx.key(key)
    flat = yield from _read(ctx, "history", [k], [])
    if flat[0] == b"":
        return []
    out = [_entry(ctx, k, flat[:ENTRY_WIDTH])]
    fields = dict(zip(flat[ENTRY_WIDTH::2], flat[ENTRY_WIDTH + 1 :: 2], strict=True))
    versions = sorted((int(f[1:]) for f in fields if f.startswith(b"m")), reverse=True)
    for ver in versions:
        out.append(_history_entry(ctx, k, ver, fields[b"m%d" % ver], fields[b"v%d" % ver]))
    return out


def _glob_prefix(pattern: str) -> str:
    for i, ch in enumerate(pattern):
        if ch in "*?[\\":
            return pattern[:i]
    return pattern


def key_page(ctx: Context, pattern: str, after: str | None) -> Flow[tuple[list[str], str | None]]:
    """One page of live key names matching ``pattern`` (fnmatch glob), in byte order.

    Returns the names and the cursor for the next page (None at the end). Paging walks
    the namespace's own sorted index by lexicographic range; it never runs KEYS or SCAN.
    """
    import fnmatch  # noqa: PLC0415 - only listing needs it

    if not isinstance(pattern, str) or "\x00" in pattern:
        raise errors.InvalidInput("pattern must be a str without NUL", field="pattern")
    prefix = _glob_prefix(pattern)
    start = ("(" + after) if after is not None else ("[" + prefix if prefix else "-")
    # UTF-8 never contains byte 0xFF, so prefix + 0xFF bounds every name with that prefix.
    upto: bytes = b"(" + prefix.encode() + b"\xff" if prefix else b"+"
    flat = yield from _read(ctx, "page", [], [start, upto, ctx.settings.page_size])
    last = _s(flat[0]) if flat[0] else None
    names = [_s(n) for n in flat[1:]]
    matched = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    return matched, last


# ---------------------------------------------------------------------------- sweeping
def sweep(ctx: Context, *, max_rounds: int = 1000) -> Flow[SweepResult]:
    """Remove expired entries from every index, with an ``expire`` event each."""
    nk = ctx.keys
    s = ctx.settings
    candidates: list[str] = []
    expired: list[str] = []
    for _ in range(max_rounds):
        keys = nk.fixed() + [x for k in candidates for x in (nk.entry(k), nk.history(k))]
        args: list[str | bytes | int] = [ctx.agent, s.audit_maxlen, s.stream_maxlen, s.sweep_batch]
        reply = yield ScriptCall(load("sweep"), keys, [*args, *candidates], new_op_id())
        _common(ctx, reply, "sweep", "read", None)
        n = int(reply[1])
        expired += [_s(x) for x in reply[3 : 3 + n]]
        candidates = [_s(x) for x in reply[3 + n :]]
        if not candidates:
            lost = (yield from _reap(ctx, max_rounds)) if reply[2] else []
            return SweepResult(expired, more=False, lost_agents=lost)
    return SweepResult(expired, more=True)


def _reap(ctx: Context, max_rounds: int) -> Flow[list[str]]:
    """The sweeper's second half: agents whose lease here ran out lose their ephemeral
    entries and lock holds (lua/reap.lua). Returns the agents found gone."""
    nk = ctx.keys
    s = ctx.settings
    dead, names, lost = "", list[str](), list[str]()
    for _ in range(max_rounds):
        keys = nk.fixed() + [x for k in names for x in (nk.entry(k), nk.history(k))]
        args: list[str | bytes | int] = [ctx.agent, s.audit_maxlen, s.stream_maxlen, s.sweep_batch]
        reply = yield ScriptCall(load("reap"), keys, [*args, dead, *names], new_op_id())
        _common(ctx, reply, "sweep", "read", None)
        if int(reply[2]):
            lost.append(dead)
        dead, names = _s(reply[3]), [_s(x) for x in reply[4:]]
        if not dead:
            break
    return lost


# -------------------------------------------------------------------------- namespaces
_FIELD_OF = {
    "default_permission": "dp",
    "strategy": "strat",
    "ttl": "ttl",
    "max_keys": "mk",
    "max_bytes": "mb",
    "history": "hd",
    "over_quota": "oq",
    "max_events": "em",
    "require_lock": "rl",
}


def _config_fields(settings: Settings, options: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for name, value in options.items():
        text: str
        if name not in _FIELD_OF:
            raise errors.InvalidOption(f"unknown namespace option {name!r}", field=name)
        if name == "default_permission":
            text = validate_level(value, "default_permission")
        elif name == "strategy":
            text = validate_strategy(value)
        elif name == "over_quota":
            text = validate_over_quota(value)
        elif name == "ttl":
            text = str(ttl_arg(value, settings) or 0)
        elif name == "require_lock":
            text = "1" if _bool_arg(value, "require_lock") else "0"
        elif name == "history":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10_000:
                raise errors.InvalidInput(
                    "history must be an int between 0 and 10000", field="history", value=value
                )
            text = str(value)
        else:
            text = str(limit_arg(value, name))
        out += [_FIELD_OF[name], text]
    return out


def _ns_call(ctx: Context, action: str, extra: list[str]) -> Flow[list[Any]]:
    s = ctx.settings
    args: list[str | bytes | int] = [ctx.agent, s.audit_maxlen, s.stream_maxlen, action, *extra]
    op_id = new_op_id() if action != "info" else None
    reply = yield ScriptCall(load("ns"), ctx.keys.fixed(), args, op_id)
    required = "read" if action == "info" else "admin"
    _common(ctx, reply, "ns_" + action, required, None)
    if reply[0] == b"last_admin":
        raise errors.LastAdminError(
            f"namespace {ctx.namespace!r} must keep at least one admin",
            action="ns_" + action,
            required="admin",
            granted="admin",
            **ctx.err(),
        )
    return list(reply)


def create_namespace(
    ctx: Context,
    *,
    default_permission: str = "write",
    permissions: Mapping[str, str] | None = None,
    strategy: str = "latest-wins",
    ttl: float | timedelta | None = None,
    max_keys: int | None = None,
    max_bytes: int | None = None,
    history: int = 0,
    over_quota: str = "reject",
    max_events: int | None = None,
    require_lock: bool = False,
    exist_ok: bool = False,
) -> Flow[NamespaceInfo]:
    from swarm_memory.keys import validate_agent  # noqa: PLC0415

    validate_namespace(ctx.namespace)
    config = {
        "default_permission": default_permission,
        "strategy": strategy,
        "ttl": ttl,
        "max_keys": max_keys,
        "max_bytes": max_bytes,
        "history": history,
        "over_quota": over_quota,
        "max_events": max_events,
        "require_lock": require_lock,
    }
    fields = _config_fields(ctx.settings, config)
    if strategy == "merge" and ctx.codec.codec.name != JSON_FORMAT:
        raise errors.InvalidOption(
            "the merge strategy needs the JSON codec", field="strategy", value=strategy
        )
    if permissions is not None and not isinstance(permissions, Mapping):
        raise errors.InvalidInput(
            "permissions must be an {agent: level} mapping", field="permissions", value=permissions
        )
    acl: list[str] = []
    for agent, level in (permissions or {}).items():
        acl += [validate_agent(agent), validate_level(level)]
    reply = yield ScriptCall(
        load("ns"),
        ctx.keys.fixed(),
        [
            ctx.agent,
            ctx.settings.audit_maxlen,
            ctx.settings.stream_maxlen,
            "create",
            "",
            *fields,
            "--",
            *acl,
        ],
        new_op_id(),
    )
    if reply[0] == b"deleting":
        raise errors.NamespaceExists(
            f"namespace {ctx.namespace!r} is being deleted; finish delete_namespace first",
            **ctx.err(),
        )
    if reply[0] == b"exists" and not exist_ok:
        raise errors.NamespaceExists(f"namespace {ctx.namespace!r} exists", **ctx.err())
    # The registry lives outside the namespace slot, so it is a separate single-key
    # command (decision 1). ZADD NX is idempotent; create with exist_ok repairs it.
    yield Command(("ZADD", registry_key(ctx.settings.key_prefix), "NX", 0, ctx.namespace), True)
    info = yield from namespace_info(ctx)
    if reply[0] == b"exists":
        _check_same_config(ctx, info, config, dict(zip(acl[::2], acl[1::2], strict=True)))
    return info


def _check_same_config(
    ctx: Context, info: NamespaceInfo, config: Mapping[str, Any], acl: Mapping[str, str]
) -> None:
    """``exist_ok=True`` on an existing namespace: every requested setting must be the
    stored one, or the caller would go on believing in settings (a read-only auditor, a
    history depth) that are not there. Requested permissions are compared agent by agent;
    grants made since creation to other agents are not a difference."""
    stored = _config_fields(ctx.settings, {name: getattr(info, name) for name in config})
    requested = _config_fields(ctx.settings, config)
    differences: dict[str, tuple[Any, Any]] = {}
    for i, name in enumerate(config):
        if stored[2 * i + 1] != requested[2 * i + 1]:
            differences[name] = (getattr(info, name), config[name])
    for agent, level in acl.items():
        have = info.permissions.get(agent)
        if have != level:
            differences[f"permissions[{agent!r}]"] = (have, level)
    if differences:
        listed = "; ".join(
            f"{name} is {have!r}, requested {want!r}" for name, (have, want) in differences.items()
        )
        raise errors.NamespaceConfigMismatch(
            f"namespace {ctx.namespace!r} exists with other settings: {listed}. Nothing was "
            "changed; change settings with update_namespace() and permissions with grant()",
            differences=differences,
            **ctx.err(),
        )


def namespace_info(ctx: Context) -> Flow[NamespaceInfo]:
    reply = yield from _ns_call(ctx, "info", [])
    meta = _pairs(reply[1])
    acl = {k: validate_level(v) for k, v in _pairs(reply[2]).items()}
    stats = {k: int(v) for k, v in _pairs(reply[3]).items()}
    ttl_ms = int(meta["ttl"])
    return NamespaceInfo(
        name=ctx.namespace,
        default_permission=validate_level(meta["dp"]),
        permissions=acl,
        strategy=validate_strategy(meta["strat"]),
        ttl=ttl_ms / 1000 if ttl_ms else None,
        max_keys=int(meta["mk"]) or None,
        max_bytes=int(meta["mb"]) or None,
        history=int(meta["hd"]),
        over_quota=validate_over_quota(meta["oq"]),
        max_events=int(meta.get("em", "0")) or None,
        revision=int(meta["rev"]),
        keys=int(meta["n"]),
        bytes=int(meta["b"]),
        created_at=ms_to_datetime(int(meta["ct"])),
        created_by=meta["cb"],
        stats=stats,
        require_lock=meta.get("rl") == "1",
    )


def _pairs(flat: list[bytes]) -> dict[str, str]:
    return {_s(flat[i]): _s(flat[i + 1]) for i in range(0, len(flat), 2)}


def update_namespace(ctx: Context, options: Mapping[str, Any]) -> Flow[NamespaceInfo]:
    fields = _config_fields(ctx.settings, options)
    if options.get("strategy") == "merge" and ctx.codec.codec.name != JSON_FORMAT:
        raise errors.InvalidOption("the merge strategy needs the JSON codec", field="strategy")
    yield from _ns_call(ctx, "update", fields)
    return (yield from namespace_info(ctx))


def grant(ctx: Context, permissions: Mapping[str, str]) -> Flow[None]:
    from swarm_memory.keys import validate_agent  # noqa: PLC0415

    if not isinstance(permissions, Mapping) or not permissions:
        raise errors.InvalidInput(
            "grant takes a non-empty {agent: level} mapping", field="permissions"
        )
    pairs: list[str] = []
    for agent, level in permissions.items():
        pairs += [validate_agent(agent), validate_level(level)]
    yield from _ns_call(ctx, "grant", pairs)


def revoke(ctx: Context, agents: Iterable[str]) -> Flow[None]:
    from swarm_memory.keys import validate_agent  # noqa: PLC0415

    if isinstance(agents, str):
        raise errors.InvalidInput(
            "revoke takes a list of agent names", field="agents", value=agents
        )
    names = [validate_agent(a) for a in agents]
    if not names:
        raise errors.InvalidInput("revoke takes at least one agent", field="agents")
    yield from _ns_call(ctx, "revoke", names)


def _purge(ctx: Context, mode: str) -> Flow[int]:
    nk = ctx.keys
    s = ctx.settings
    names: list[str] = []
    removed = 0
    while True:
        keys = nk.fixed() + [x for k in names for x in (nk.entry(k), nk.history(k))]
        args: list[str | bytes | int] = [
            ctx.agent,
            s.audit_maxlen,
            s.stream_maxlen,
            mode,
            s.clear_batch,
        ]
        reply = yield ScriptCall(load("purge"), keys, [*args, *names], new_op_id())
        _common(ctx, reply, "ns_" + mode, "admin", None)
        removed += int(reply[1])
        if reply[0] == b"dropped":
            return removed
        names = [_s(x) for x in reply[2:]]
        if not names and mode == "clear":
            return removed


def clear_namespace(ctx: Context) -> Flow[int]:
    """Delete every entry (admin). Each batch is atomic; the whole is not (see docs)."""
    return (yield from _purge(ctx, "clear"))


def delete_namespace(ctx: Context) -> Flow[None]:
    """Mark the namespace deleted (atomically: no read or write succeeds after this),
    then remove its keys in batches, then unlist it. Re-running finishes a partial delete."""
    try:
        yield from _ns_call(ctx, "delete", [])
    except errors.NamespaceNotFound:
        state = yield Command(("HGET", ctx.keys.meta, "state"))
        if state != b"deleting":
            raise
    yield from _purge(ctx, "delete")
    yield Command(("ZREM", registry_key(ctx.settings.key_prefix), ctx.namespace), True)


def list_namespaces(ctx_for: Callable[[str], Context], prefix: str) -> Flow[list[str]]:
    """Names of namespaces this agent may read (checked by the info script per name)."""
    names = yield Command(("ZRANGE", registry_key(prefix), 0, -1))
    visible = []
    for raw in names:
        name = _s(raw)
        try:
            yield from _ns_call(ctx_for(name), "info", [])
        except (errors.PermissionDenied, errors.NamespaceNotFound):
            continue
        visible.append(name)
    return visible


def stats(ctx: Context) -> Flow[dict[str, int]]:
    info = yield from namespace_info(ctx)
    return {"keys": info.keys, "bytes": info.bytes, "revision": info.revision, **info.stats}


__all__ = ["level_rank"]


# ------------------------------------------------------------------------------ events
FIRST_CURSOR = "1-0"


def next_cursor(revision: int, seq: int, count: int) -> str:
    """Stream id of the event after (revision, seq): entries know their revision's size."""
    return f"{revision + 1}-0" if seq >= count - 1 else f"{revision}-{seq + 1}"


def since_arg(since: object) -> str | None:
    """``None``/"now" -> None (start at the current end); an int revision r -> after r;
    an Event's cursor string -> right after that event."""
    if since is None or since == "now":
        return None
    if isinstance(since, bool) or not isinstance(since, int | str):
        raise errors.InvalidInput(
            "since must be a revision (int), an Event cursor (str) or 'now'",
            field="since",
            value=since,
        )
    if isinstance(since, int):
        version_arg(since, "since")
        return f"{since + 1}-0"
    parts = since.split("-")
    if len(parts) != 2 or not all(p.isdigit() and len(p) <= 16 for p in parts):
        raise errors.InvalidInput("not an event cursor", field="since", value=since)
    return since


def _event(ctx: Context, entry: list[Any]) -> Event:
    raw_id, raw_fields = entry
    sid = _s(raw_id)
    rev_s, seq_s = sid.split("-")
    f = {_s(raw_fields[i]): raw_fields[i + 1] for i in range(0, len(raw_fields), 2)}
    revision, seq, count = int(rev_s), int(seq_s), int(f.get("n", b"1"))
    key = _s(f["k"]) or None
    has_value = "d" in f
    return Event(
        revision=revision,
        type=_s(f["t"]),
        key=key,
        version=int(f["v"]) or None,
        agent=_s(f["a"]),
        time=ms_to_datetime(int(f["ms"])),
        cursor=next_cursor(revision, seq, count),
        seq=seq,
        count=count,
        has_value=has_value,
        value=ctx.codec.decode(f["d"], _s(f["f"])) if has_value else None,
    )


def doorbell_events(ctx: Context, payload: bytes) -> tuple[int, list[Event]]:
    """The revision and events a doorbell carries (see publish_events in _lib.lua)."""
    parts = unpack(payload)
    revision, count = int(parts[0]), int(parts[1])
    agent, ms = parts[-2], parts[-1]
    events = []
    for seq in range(count):
        t, k, v, d, f, has = parts[2 + 6 * seq : 8 + 6 * seq]
        fields = [b"t", t, b"k", k, b"v", v, b"a", agent, b"ms", ms, b"n", b"%d" % count]
        if has == b"1":
            fields += [b"d", d, b"f", f]
        events.append(_event(ctx, [b"%d-%d" % (revision, seq), fields]))
    return revision, events


@dataclass(frozen=True, slots=True)
class EventPage:
    revision: int  # the namespace revision when read
    events: list[Event]
    next: str  # cursor to read from next


def _events_call(
    ctx: Context, action: str, extra: list[str | bytes | int], op_id: str | None
) -> Flow[list[Any]]:
    s = ctx.settings
    args: list[str | bytes | int] = [
        ctx.agent,
        s.audit_maxlen,
        s.stream_maxlen,
        int(s.dedupe_window * 1000),
        action,
        *extra,
    ]
    reply = yield ScriptCall(load("events"), ctx.keys.fixed(), args, op_id)
    _common(
        ctx,
        reply,
        "watch" if action == "read" else action,
        "write" if action == "broadcast" else "read",
        None,
    )
    return list(reply)


def read_events(ctx: Context, start: str | None, count: int) -> Flow[EventPage]:
    """One page of the feed from stream id ``start`` (None: just find the current end)."""
    reply = yield from _events_call(ctx, "read", [start or "now", count], None)
    if reply[0] == b"trimmed":
        oldest = int(_s(reply[1]).split("-")[0])
        requested = int((start or "0-0").split("-")[0])
        raise errors.EventsTrimmed(
            f"events from revision {requested} of {ctx.namespace!r} were trimmed; "
            f"the oldest kept is {oldest}",
            requested=requested,
            oldest=oldest,
            **ctx.err(),
        )
    revision = int(reply[1])
    entries = reply[2]
    if start is None:
        nxt = _event(ctx, entries[0]).cursor if entries else FIRST_CURSOR
        return EventPage(revision, [], nxt)
    events = [_event(ctx, e) for e in entries]
    if len(reply) > 3 and reply[3] != 0 and len(events) < count:
        yield from _sweep_quietly(ctx)  # expired entries are due: their events come next read
    return EventPage(revision, events, events[-1].cursor if events else start)


def broadcast(ctx: Context, message: Any, *, op_id: str | None = None) -> Flow[int]:
    """Append a ``broadcast`` event carrying ``message`` (write permission); its revision."""
    enc = _encode(ctx, message, allow_compress=False)
    op = op_id_arg(op_id)
    reply = yield from _events_call(ctx, "broadcast", [op, enc.data, enc.fmt], op)
    return int(reply[1])


def _ms_bound(value: object, field: str, default: str) -> str:
    if value is None:
        return default
    if isinstance(value, datetime):
        return str(int(value.timestamp() * 1000))
    raise errors.InvalidInput(f"{field} must be a datetime or None", field=field, value=value)


def audit(
    ctx: Context,
    *,
    agent: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
) -> Flow[list[AuditRecord]]:
    """Newest-first audit records, filtered server-side (read permission)."""
    from swarm_memory.keys import validate_agent  # noqa: PLC0415

    who = validate_agent(agent) if agent is not None else ""
    if action is not None and (not isinstance(action, str) or not action.isidentifier()):
        raise errors.InvalidInput("action must be an action name", field="action", value=action)
    n = limit_arg(limit, "limit")
    extra: list[str | bytes | int] = [
        _ms_bound(since, "since", "-"),
        _ms_bound(until, "until", "+"),
        who,
        action or "",
        n,
    ]
    reply = yield from _events_call(ctx, "audit", extra, None)
    out = []
    for raw_id, raw_fields in reply[2]:
        f = {_s(raw_fields[i]): _s(raw_fields[i + 1]) for i in range(0, len(raw_fields), 2)}
        out.append(
            AuditRecord(
                time=ms_to_datetime(int(_s(raw_id).split("-")[0])),
                agent=f["a"],
                action=f["act"],
                key=f.get("k") or None,
                op_id=f.get("op") or None,
                outcome=f["out"],
                revision=int(f.get("r", "0")),
            )
        )
    return out


def snapshot(ctx: Context, pattern: str = "*") -> Flow[Snapshot]:
    """The current entries matching ``pattern`` and a revision to watch from: read the
    revision first, then the entries, so nothing between is missed (events up to the
    entries' own versions may repeat — skip those not newer than the entry held)."""
    page = yield from read_events(ctx, None, 1)
    entries: dict[str, Entry] = {}
    after: str | None = None
    while True:
        names, after = yield from key_page(ctx, pattern, after)
        for i in range(0, len(names), 500):
            got = yield from get_many(ctx, names[i : i + 500])
            entries.update({k: e for k, e in got.items() if e is not None})
        if after is None:
            break
    return Snapshot(revision=int(page.next.split("-")[0]) - 1, entries=entries)

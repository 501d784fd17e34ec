"""Entry flows: put / put_many / create / update / delete / incr / touch / rollback
(every one a call of ``lua/write.lua``), get / get_many (``lua/get.lua``), and exists /
history / key listing (``lua/read.lua``).

``write`` is the one way to the write script: it settles evict-oldest victims, turns a
replayed op id into its first outcome (or OpIdReused), and raises the errors of
``replies.WRITE``. ``batch_cas`` is the client-side compare-and-set loop behind
``update``, ``rollback``, the ``custom`` strategy and merges the server cannot do.
"""

from __future__ import annotations

import fnmatch
import hashlib
import random
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any, NamedTuple

from swarm_memory import errors
from swarm_memory._ops import records
from swarm_memory._ops.args import (
    REQUEST_DIGEST_BYTES,
    amount_arg,
    bool_arg,
    callable_arg,
    expected_versions_arg,
    fence_arg,
    fences_arg,
    hand_out,
    handed_out,
    key_pattern_arg,
    keys_arg,
    op_id_arg,
    ttl_arg,
    values_arg,
    version_arg,
)
from swarm_memory._ops.effects import (
    Command,
    Context,
    Flow,
    Incoming,
    ScriptCall,
    Sleep,
    bind_lease,
)
from swarm_memory._ops.namespaces import rebuild_order, sweep_quietly
from swarm_memory._ops.records import Fields, ItemRecord, WriteResult, parse_op_record, text
from swarm_memory._ops.replies import GET, PUT, READ, WRITE, Failure, MergeFallback
from swarm_memory.codec import JSON_FORMAT, Encoded
from swarm_memory.merge import merge_patch
from swarm_memory.models import Entry
from swarm_memory.scripts import load

MAX_VICTIM_ROUNDS = 64  # evict-oldest: rounds of "these victims are not enough"
_FREE_RETRIES = 2  # CAS conflicts retried at once, before backing off
_VICTIM_SLACK = 7  # extra names read per round: some may be keys this write touches


class Item(NamedTuple):
    """One item of a write-script call. (A named tuple: built in ~0.25 µs, a frozen
    dataclass's ``__init__`` took ~0.9 µs, once per written key.)"""

    op: str  # P (put) S (set if version) D (delete) I (incr) T (touch) C (compare)
    key: str
    value: bytes = b""
    fmt: str = ""
    expected: int | None = None
    ttl_ms: int | None = None
    source: Any = None  # the caller's value, kept for the returned Entry
    fence: tuple[str, int] | None = None  # (lock name, token) that must be held to write


def _opt(value: int | None) -> str:
    return "" if value is None else str(value)


def item_entry(ctx: Context, item: Item, rec: ItemRecord) -> Entry:
    return records.item_entry(ctx, item.key, item.source, rec)


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
    return hashlib.blake2b(b"".join(chunks), digest_size=REQUEST_DIGEST_BYTES).hexdigest()


# ------------------------------------------------------------------------------ writing
def write(
    ctx: Context,
    items: list[Item],
    action: str,
    op_id: str,
    *,
    echo: bool = False,
    ephemeral: bool = False,
    generated: bool = False,
) -> Flow[WriteResult]:
    """Run the write script (lua/put.lua first for one plain put, incr or create); resolve
    evict-oldest victims; raise typed errors.

    Plain writes carry a request digest; CAS loops (``echo=True``) carry none, since their
    attempts differ, and have the written values echoed so that replays report them.
    ``generated``: ``op_id`` is one this call made (``op_id_arg(None)``), not the
    caller's. No other request can carry its 128 fresh random bits and the call's own
    retries resend the same arguments, so it carries no digest either (its record stores
    "-"): the digest cost a put ~9 % of its client instructions (docs/performance.md,
    "Tried and taken back: no request digest under an op id the client made", stop 32,
    and "The digest made only when the op id leaves", stop 36). The id leaves the client
    only in OutcomeUnknown or NotReplicated, which ask for a replay under it: there it
    goes out as ``hand_out(id, digest)``, the digest made then, and a replay under that
    form is checked against it here, before anything is sent.
    """
    first, given = (items[0].key if items else None), op_id
    own = None if generated else handed_out(op_id)
    if own is not None:
        op_id = own[0]
    digest = (
        "" if generated or echo else _digest(ctx, items, action, own=own, given=given, first=first)
    )
    try:
        nk = ctx.keys
        if _one_put(items, action, echo, ephemeral):
            it, general = items[0], ctx.general_puts
            if general[0] > 0:  # (a hint: a race between threads costs a round trip at most)
                general[0] -= 1
            else:
                # One put, incr or create: lua/put.lua, write.lua's work for it without the
                # general machinery, the same answers and op record. It answers "general"
                # (having written nothing) where only write.lua will do: then the same call
                # goes there, and where that is the namespace's doing, this context's next
                # GENERAL_PUTS puts.
                reply = yield ScriptCall(
                    load("put"),
                    [*nk.put_fixed(), nk.entry(it.key), nk.history(it.key)],
                    [ctx.agent, op_id, ctx.write_limits, _head(it), it.key, it.value, digest],
                    op_id,
                )
                f = PUT.passed(reply)
                if f is None:
                    f = PUT.check(reply, Failure(ctx, action, "write", first, items))
                if f.tag != b"general":
                    return (yield from _settle(ctx, f, op_id, digest, first))
                if f.string() == "namespace":
                    general[0] = GENERAL_PUTS
        fenced = [(i, it.fence) for i, it in enumerate(items, 1) if it.fence]
        keys = nk.write_fixed()
        body: list[str | bytes | int] = []
        for it in items:
            keys += [nk.entry(it.key), nk.history(it.key)]
            body += [_head(it), it.key, it.value]
        for i, (lock, token) in fenced:
            body += [i, lock, token]
        victims: list[str] = []
        for _round in range(MAX_VICTIM_ROUNDS):
            head: list[str | bytes | int] = [
                ctx.agent,
                op_id,
                ctx.write_limits,  # packed (lua/write.lua, int_fields in _lib.lua)
                f"{len(items)} {len(victims)} {len(fenced)}",
                action,
                digest,
                "1" if echo else "0",
                _opt(bind_lease(ctx)) if ephemeral else "",
            ]
            call_keys = (
                keys + [k for v in victims for k in (nk.entry(v), nk.history(v))]
                if victims
                else keys
            )
            reply = yield ScriptCall(load("write"), call_keys, [*head, *body, *victims], op_id)
            f = WRITE.passed(reply)
            if f is None:
                f = WRITE.check(reply, Failure(ctx, action, "write", first, items))
            if f.tag == b"lru":  # evict-oldest since a switch: its order index is unfinished
                yield from rebuild_order(ctx)
                continue
            if f.tag == b"victims":
                wanted = max(f.number(), 1)
                oldest = yield Command(("ZRANGE", nk.lru, 0, wanted + len(items) + _VICTIM_SLACK))
                names = {it.key for it in items}
                victims = [text(v) for v in oldest if text(v) not in names][:wanted]
                continue
            return (yield from _settle(ctx, f, op_id, digest, first))
        raise errors.ServerError("could not settle evict-oldest victims", **ctx.err())
    except (errors.OutcomeUnknown, errors.NotReplicated) as exc:
        # (a replay under the handed-out form shows that form again)
        if exc.op_id != op_id or not (own or (generated and not echo)):
            raise
        shown = given if own else hand_out(op_id, request_digest(ctx.agent, action, items))
        raise _showing(exc, shown) from exc.__cause__


def _digest(
    ctx: Context,
    items: list[Item],
    action: str,
    *,
    own: tuple[str, str] | None,
    given: str,
    first: str | None,
) -> str:
    """The digest a plain write under the caller's op id sends: its request's, or under
    a handed-out op id none (as the first request's record has it), once the request is
    found to be that one's."""
    digest = request_digest(ctx.agent, action, items)
    if own is None:
        return digest
    if digest != own[1]:
        raise _reused(ctx, given, first)
    return ""


def _reused(ctx: Context, op_id: str, first: str | None) -> errors.OpIdReused:
    return errors.OpIdReused(
        f"op id {op_id!r} was already used for a different request; "
        "an op id names one request (its replays must be identical)",
        op_id=op_id,
        **ctx.err(key=first),
    )


def _showing(
    exc: errors.OutcomeUnknown | errors.NotReplicated, shown: str
) -> errors.SwarmMemoryError:
    """``exc`` with the op id the caller replays under (``hand_out``) in place of the id
    sent."""
    where = {"namespace": exc.namespace, "key": exc.key, "agent": exc.agent}
    if isinstance(exc, errors.NotReplicated):
        return errors.NotReplicated(
            exc.message, op_id=shown, required=exc.required, acked=exc.acked, **where
        )
    message = exc.message.replace(repr(exc.op_id), repr(shown))
    return errors.OutcomeUnknown(message, op_id=shown, **where)


# After lua/put.lua says a namespace's puts are write.lua's (a lock requirement,
# evict-oldest; a merge strategy until stop 32, now merged by put.lua too), a context
# sends this many puts straight to write.lua before it asks put.lua again (the namespace
# may have changed): such a namespace's put costs one round trip, not two, and a
# namespace switched back to a plain order gets put.lua again after at most this many
# puts. Either script gives the same answer.
GENERAL_PUTS = 256


# What lua/put.lua takes: the call's action and its one item's op (put.lua names the
# action by the op).
_PUT_LUA_OPS = {"put": "P", "incr": "I", "create": "S"}


def _one_put(items: list[Item], action: str, echo: bool, ephemeral: bool) -> bool:
    """Is this call what lua/put.lua takes: one put(), incr() or create() of one key, no
    fence, not ephemeral (and no CAS loop's, which echoes its values)?"""
    if len(items) != 1 or echo or ephemeral:
        return False
    return _PUT_LUA_OPS.get(action) == items[0].op and items[0].fence is None


def _head(it: Item) -> str:
    # An item's op, expected version, TTL and format in one argument (lua/write.lua,
    # lua/put.lua: each argument costs the server ~0.6-1.2k instructions).
    return f"{it.op} {_opt(it.expected)} {_opt(it.ttl_ms)} {it.fmt}"


def _settle(
    ctx: Context, f: Fields, op_id: str, digest: str, first: str | None
) -> Flow[WriteResult]:
    """A write's "ok" or "dup" answer (write.lua's or put.lua's) as its result; a replay
    of the op id with another request is OpIdReused."""
    if f.tag == b"dup":
        record, due = f.next(), f.next() != 0
        with records.decoding(ctx.keys.ops, **ctx.err()):
            result = parse_op_record(record, due)
        if result is None or result.digest != digest:
            raise _reused(ctx, op_id, first)
    else:
        result = records.write_ok(f)
    if result.sweep_due:
        yield from sweep_quietly(ctx)
    return result


def _encode(ctx: Context, value: Any, allow_compress: bool = True) -> Encoded:
    return ctx.codec.encode(value, allow_compress=allow_compress)


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
    # One key: put_many's checks in its order (key, ttl, op id, ephemeral, fence,
    # version, value), without building and re-checking its mappings.
    k = ctx.key(key)
    ttl_ms = ttl_arg(ttl, ctx.settings)
    op = op_id_arg(op_id)
    eph = bool_arg(ephemeral, "ephemeral")
    fenced = fence_arg(fence, k, ctx.settings.max_key_bytes)
    prepared = [(k, value, version_arg(expected_version), _encode(ctx, value))]
    fence_of = {k: fenced} if fenced else {}
    entries = yield from _put_prepared(
        ctx,
        prepared,
        ttl_ms=ttl_ms,
        op=op,
        eph=eph,
        fence_of=fence_of,
        action="put",
        generated=op_id is None,
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
    values = values_arg(values)
    expected = expected_versions_arg(expected_versions, values)
    ttl_ms = ttl_arg(ttl, ctx.settings)
    op = op_id_arg(op_id)
    eph = bool_arg(ephemeral, "ephemeral")
    fence_of = fences_arg(list(values), fence, fences, ctx.settings.max_key_bytes)
    prepared = [
        (ctx.key(k), v, version_arg(expected.get(k)), _encode(ctx, v)) for k, v in values.items()
    ]
    return (
        yield from _put_prepared(
            ctx,
            prepared,
            ttl_ms=ttl_ms,
            op=op,
            eph=eph,
            fence_of=fence_of,
            action=action,
            generated=op_id is None,
        )
    )


def _put_prepared(
    ctx: Context,
    prepared: list[tuple[str, Any, int | None, Encoded]],
    *,
    ttl_ms: int | None,
    op: str,
    eph: bool,
    fence_of: Mapping[str, tuple[str, int]],
    action: str,
    generated: bool,
) -> Flow[dict[str, Entry]]:
    """put / put_many once their arguments are checked: ``prepared`` holds (key, value,
    expected version, encoded value) per key."""

    def items_for(compress: bool) -> list[Item]:
        out = []
        for k, v, ev, enc in prepared:
            e = enc if compress or not enc.fmt.endswith("+z") else _encode(ctx, v, False)
            out.append(Item("P", k, e.data, e.fmt, ev, ttl_ms, v, fence_of.get(k)))
        return out

    items = items_for(True)
    try:
        try:
            result = yield from write(ctx, items, action, op, ephemeral=eph, generated=generated)
        except MergeFallback as fb:
            if fb.reason != "patch" or ctx.codec.codec.name != JSON_FORMAT:
                raise
            items = items_for(False)
            result = yield from write(ctx, items, action, op, ephemeral=eph, generated=generated)
    except MergeFallback:
        # Stored values the server cannot merge (compressed, other codec): merge here,
        # as one CAS batch so the whole call stays all-or-nothing.
        patches = {it.key: it.source for it in items}
        pinned = {it.key: it.expected for it in items if it.expected is not None}
        return (
            yield from batch_cas(
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
        if exc.strategy != "custom" or ctx.resolver is None:
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
            yield from batch_cas(
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
    return {it.key: item_entry(ctx, it, r) for it, r in zip(items, result.items, strict=True)}


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
    eph = bool_arg(ephemeral, "ephemeral")
    fenced = fence_arg(fence, k, ctx.settings.max_key_bytes)
    enc = _encode(ctx, value)
    item = Item("S", k, enc.data, enc.fmt, 0, ttl_arg(ttl, ctx.settings), value, fenced)
    result = yield from write(
        ctx, [item], "create", op_id_arg(op_id), ephemeral=eph, generated=op_id is None
    )
    return item_entry(ctx, item, result.items[0])


def batch_cas(
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
            result = yield from write(ctx, items, action, op_id, echo=True, ephemeral=ephemeral)
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
            if s.update_backoff_max and attempt > _FREE_RETRIES:
                took = time.monotonic() - started
                cap = min(s.update_backoff_max, took * 2 ** min(attempt - _FREE_RETRIES - 1, 10))
                yield Sleep(random.uniform(0, cap))
                current = yield from get_many(ctx, keys)
            else:
                current[exc.key] = exc.current
            continue
        return {it.key: item_entry(ctx, it, r) for it, r in zip(items, result.items, strict=True)}
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
    callable_arg(fn, "fn")
    fenced = fence_arg(fence, k, ctx.settings.max_key_bytes)
    result = yield from batch_cas(
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
    result = yield from write(ctx, [item], "delete", op_id_arg(op_id), generated=op_id is None)
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
    result = yield from write(ctx, [item], "incr", op_id_arg(op_id), generated=op_id is None)
    return int(result.items[0].value)


def touch(
    ctx: Context, key: str, ttl: float | timedelta, *, op_id: str | None = None
) -> Flow[bool]:
    """Set a new expiry (from now) without changing the value or version."""
    ttl_ms = ttl_arg(ttl, ctx.settings)
    if ttl_ms is None:
        raise errors.InvalidTTL("touch needs a ttl", field="ttl", value=None)
    item = Item("T", ctx.key(key), ttl_ms=ttl_ms)
    result = yield from write(ctx, [item], "touch", op_id_arg(op_id), generated=op_id is None)
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
    result = yield from batch_cas(
        ctx, [k], lambda _k, _cur: old.value, ttl_ms=None, op_id=op, action="rollback"
    )
    return result[k]


# ------------------------------------------------------------------------------ reading
def _read(
    ctx: Context, action: str, keys: list[str], extra: list[str | bytes | int]
) -> Flow[Fields]:
    """One read-script call; its fields after the sweep flag (a due sweep is run)."""
    nk = ctx.keys
    call_keys = nk.read_fixed() + [x for k in keys for x in (nk.entry(k), nk.history(k))]
    args: list[str | bytes | int] = [ctx.agent, ctx.settings.audit_maxlen, action, *extra]
    reply = yield ScriptCall(load("read"), call_keys, args, None, readonly=True)
    f = READ.passed(reply)
    if f is None:
        f = READ.check(reply, Failure(ctx, action, "read", keys[0] if len(keys) == 1 else None))
    if f.next() != 0:
        yield from sweep_quietly(ctx)
    return f


def _get(ctx: Context, keys: list[str]) -> Flow[Fields]:
    """One get-script call (``lua/get.lua``: only the key names a get's common path uses,
    not the read script's); its fields after the sweep flag (a due sweep is run). Where
    get.lua answers "general" (a denial, an identity refusal, a namespace without its ACL
    marker, or none), the same get goes to read.lua, which answers it the same way."""
    nk = ctx.keys
    call_keys = nk.get_fixed()
    call_keys.extend(map(nk.entry, keys))
    reply = yield ScriptCall(load("get"), call_keys, [ctx.agent], None, readonly=True)
    f = GET.passed(reply)
    if f is None:
        f = GET.check(reply, Failure(ctx, "get", "read", keys[0] if len(keys) == 1 else None))
    if f.tag == b"general":
        return (yield from _read(ctx, "get", keys, []))
    if f.next() != 0:
        yield from sweep_quietly(ctx)
    return f


def get(ctx: Context, key: str, *, version: int | None = None) -> Flow[Entry | None]:
    k = ctx.key(key)
    v = version_arg(version, "version")
    if v is None:
        f = yield from _get(ctx, [k])
        found = records.packed_entry(ctx, k, f)  # records.entries, for one key
        f.end()
        return found
    f = yield from _read(ctx, "version", [k], [v])
    return records.version_entry(ctx, k, f)


def get_many(ctx: Context, keys: Iterable[str]) -> Flow[dict[str, Entry | None]]:
    names = keys_arg(keys, ctx.settings.max_key_bytes)
    if not names:
        return {}
    f = yield from _get(ctx, names)
    return records.entries(ctx, names, f)


def exists(ctx: Context, key: str) -> Flow[bool]:
    k = ctx.key(key)
    f = yield from _read(ctx, "exists", [k], [])
    return bool(f.next() == 1)


def history(ctx: Context, key: str) -> Flow[list[Entry]]:
    """Kept versions, newest first (the current one included); [] when absent."""
    k = ctx.key(key)
    f = yield from _read(ctx, "history", [k], [])
    return records.history(ctx, k, f)


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
    pattern = key_pattern_arg(pattern)
    prefix = _glob_prefix(pattern)
    start = ("(" + after) if after is not None else ("[" + prefix if prefix else "-")
    # UTF-8 never contains byte 0xFF, so prefix + 0xFF bounds every name with that prefix.
    upto: bytes = b"(" + prefix.encode() + b"\xff" if prefix else b"+"
    f = yield from _read(ctx, "page", [], [start, upto, ctx.settings.page_size])
    with records.decoding(ctx.keys.index, **ctx.err()):  # names someone else put there
        raw_last = f.next()
        last = text(raw_last) if raw_last else None
        matched = [n for n in f.strings() if fnmatch.fnmatchcase(n, pattern)]
    return matched, last

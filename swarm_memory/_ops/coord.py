"""Coordination flows: fenced locks, agent leases and presence, heartbeats,
transactions, and single-flight ``get_or_set`` (``lua/acquire.lua``, ``lua/release.lua``,
``lua/lock.lua`` for the other lock actions, ``lua/presence.lua``, and ``lua/write.lua`` for
commits).

Waiting for a lock subscribes to the namespace's lock doorbell (:class:`Listen`) and
retries on every ring for that lock, and at least every ``lock_poll`` seconds (a
doorbell is only a hint, DESIGN.md decision 5). The lock, lease and transaction handles
that run these flows are the shells' (``lock.py``). The lock and presence scripts'
reply shapes (a lock record's holders, the presence list) are decoded here.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from swarm_memory import errors
from swarm_memory._ops.args import (
    callable_arg,
    fence_arg,
    lock_ttl_arg,
    namespaces_arg,
    new_op_id,
    op_id_arg,
    ttl_arg,
    version_arg,
    wait_arg,
)
from swarm_memory._ops.effects import (
    AgentSession,
    CallUser,
    Context,
    Flow,
    Listen,
    ScriptCall,
    Unlisten,
    WaitBell,
    bind_lease,
)
from swarm_memory._ops.entries import Item, get, item_entry, put, write
from swarm_memory._ops.namespaces import sweep
from swarm_memory._ops.records import Fields, MalformedReply, decoding, text, unpack
from swarm_memory._ops.replies import ACQUIRE, LOCK, PRESENCE, RELEASE, Failure, MergeFallback
from swarm_memory.codec import JSON_FORMAT
from swarm_memory.keys import PresenceKeys
from swarm_memory.models import (
    AgentInfo,
    Entry,
    FencingToken,
    LockHolder,
    LockInfo,
    TxResult,
    ms_to_datetime,
)
from swarm_memory.scripts import load
from swarm_memory.settings import Settings


# ---------------------------------------------------------------------- reply shapes
class Acquired(NamedTuple):
    """The lock script's "ok" to an acquire."""

    token: Any
    expires_ms: Any
    now_ms: Any


class Held(NamedTuple):
    """The lock script's "held": someone else holds the lock."""

    holder: Any
    expires_ms: Any
    now_ms: Any
    latest: Any


class HolderRecord(NamedTuple):
    """One holder in a stored lock record (``write_lock`` in lua/_lib.lua)."""

    owner: bytes
    agent: bytes
    expires_ms: bytes
    token: bytes


class LockEntry(NamedTuple):
    """One lock of the lock script's "list" reply."""

    name: bytes
    record: bytes


def lock_info(name: str, record: bytes, server_now: int) -> LockInfo | None:
    """A lock record (``mode HolderRecord...``) as LockInfo, holders whose lease ran out
    left out (a stored record can still list them until its next write); None when
    nobody holds it."""
    if not record:
        return None
    f = Fields(unpack(record))
    raw_mode = f.next()
    if raw_mode not in (b"s", b"x"):
        raise MalformedReply(f"lock {name!r} has mode {raw_mode!r:.20}")
    mode = "shared" if raw_mode == b"s" else "exclusive"
    stored = f.records(HolderRecord)
    if not stored:
        raise MalformedReply(f"lock {name!r} has a record without holders")
    holders = tuple(
        LockHolder(text(h.agent), int(h.token), ms_to_datetime(int(h.expires_ms)))
        for h in stored
        if int(h.expires_ms) > server_now
    )
    if not holders:
        return None
    newest = max(holders, key=lambda h: h.token)
    return LockInfo(name, mode, newest.agent, newest.token, newest.expires_at, holders)  # type: ignore[arg-type]


def lock_list(f: Fields) -> list[LockInfo]:
    """The lock script's "list" reply: ``now (name record)...``, by name."""
    server_now = f.number()
    infos = [lock_info(text(e.name), e.record, server_now) for e in f.records(LockEntry)]
    return sorted((i for i in infos if i is not None), key=lambda i: i.name)


class PresenceRecord(NamedTuple):
    agent: bytes
    expires_ms: bytes
    seen_ms: bytes


def _presence_list(f: Fields, alive: bool) -> list[AgentInfo]:
    """The presence script's "list" reply: ``now (agent expires_ms seen_ms)...``."""
    now = f.number()
    out = []
    for p in f.records(PresenceRecord):
        expires = int(float(text(p.expires_ms)))
        info = AgentInfo(
            agent=text(p.agent),
            last_seen=ms_to_datetime(int(float(text(p.seen_ms)))),
            expires_at=ms_to_datetime(expires),
            alive=expires > now,
        )
        if info.alive or not alive:
            out.append(info)
    return sorted(out, key=lambda a: a.agent)


_NEEDS = {
    "extend": "write",
    "force": "admin",
    "list": "read",
    "beat": "read",
    "leave": "read",
}


def _lock_call(
    ctx: Context, action: str, extra: list[str | bytes | int], op_id: str | None, key: str | None
) -> Flow[Fields]:
    """One of lua/lock.lua's actions (acquire and release are scripts of their own)."""
    s = ctx.settings
    args: list[str | bytes | int] = [ctx.agent, s.audit_maxlen, s.stream_maxlen, action, *extra]
    reply = yield ScriptCall(load("lock"), ctx.keys.lock_fixed(), args, op_id, action == "list")
    # The Failure (what an error names) only when the reply is one.
    f = LOCK.passed(reply)
    return (
        f
        if f is not None
        else LOCK.check(reply, Failure(ctx, "lock_" + action, _NEEDS[action], key))
    )


# ------------------------------------------------------------------------------ locks
# The end of the owner id of a hold taken without a lease (lua/reap.lua reads it: the
# same text there). new_op_id's alphabet has no ":", so no older client's id ends so.
UNLEASED = ":n"


@dataclass
class LockState:
    """One lock handle's acquisition: mutable, owned by a Lock object."""

    name: str
    mode: str  # "x" exclusive | "s" shared
    ttl_ms: int
    owner: str = ""  # unique per acquisition: a retried acquire returns the same token
    token: FencingToken | None = None
    expires_ms: int = 0  # server clock
    held_until: float = 0.0  # local monotonic clock, conservative (from before the call)


def acquire(ctx: Context, st: LockState, wait: float | None) -> Flow[FencingToken]:
    """Acquire or raise LockTimeout. Waiters wake on the lock doorbell, else poll."""
    session = ctx.session
    tie = str(bind_lease(ctx)) if session is not None and session.leased else ""
    # A hold taken without a lease says so in its owner id (UNLEASED, never the end of an
    # older client's id): a lease tie an older client made names only the agent and lock,
    # and the reaper, following such a tie, spares the holds that say it (lua/reap.lua).
    st.owner = new_op_id() if tie else new_op_id() + UNLEASED
    deadline = None if wait is None else time.monotonic() + wait
    handle: Any = None
    # (Acquire and release yield their script call themselves: a delegating generator per
    # call cost ~0.3 µs of a lock's acquire + release.)
    call = ScriptCall(
        load("acquire"),
        ctx.keys.acquire_fixed(),
        [ctx.agent, ctx.settings.audit_maxlen, st.name, st.owner, st.ttl_ms, st.mode, tie],
        st.owner,
    )
    while True:
        sent = time.monotonic()
        reply = yield call
        f = ACQUIRE.passed(reply)
        if f is None:
            f = ACQUIRE.check(reply, Failure(ctx, "lock_acquire", "write", st.name))
        if f.tag == b"ok":
            got = f.record(Acquired)
            st.token = FencingToken(int(got.token), st.name)
            st.expires_ms = int(got.expires_ms)
            st.held_until = sent + st.ttl_ms / 1000
            if handle is not None:
                yield Unlisten(handle)
            return st.token
        with decoding(ctx.keys.lock_records, **ctx.err()):
            held = f.record(Held)
            holder, until, server_now = text(held.holder), int(held.expires_ms), int(held.now_ms)
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            if handle is not None:
                yield Unlisten(handle)
            raise errors.LockTimeout(
                f"lock {st.name!r} is held by {holder!r}; gave up after {wait:g}s",
                holder=holder,
                expires_at=ms_to_datetime(until),
                **ctx.err(key=st.name),
            )
        if handle is None:
            # Subscribe, then try again at once: a release between the failed attempt and
            # the subscription would otherwise be missed until the next poll.
            handle = yield Listen(ctx.keys.lock_bell)
            continue
        pause = min(ctx.settings.lock_poll, max((until - server_now) / 1000, 0.001))
        if deadline is not None:
            pause = min(pause, max(deadline - now, 0.0))
        yield WaitBell(handle, st.name.encode(), pause)


def release(ctx: Context, st: LockState) -> Flow[None]:
    """Release this acquisition. Raises LockNotOwned if its lease is gone."""
    op = st.owner + ":r"
    # The expiry and token this acquisition holds: the script then knows the record in
    # full and compares it instead of parsing it (lua/release.lua).
    held_x, held_token = "", ""
    if st.token is not None:
        held_x, held_token = str(st.expires_ms), str(int(st.token))
    args: list[str | bytes | int] = [
        ctx.agent, ctx.write_limits, st.name, st.owner, op, held_x, held_token,
    ]  # fmt: skip
    try:
        reply = yield ScriptCall(load("release"), ctx.keys.release_fixed(), args, op)
        if RELEASE.passed(reply) is None:
            RELEASE.check(reply, Failure(ctx, "lock_release", "write", st.name))
    except errors.LockNotOwned:
        st.held_until = 0.0
        raise
    st.held_until = 0.0


def extend(ctx: Context, st: LockState, ttl_ms: int) -> Flow[int]:
    """Renew the lease to ``ttl_ms`` from now; returns the new expiry (server ms).
    Raises LockNotOwned if the lease is gone."""
    sent = time.monotonic()
    try:
        f = yield from _lock_call(ctx, "extend", [st.name, st.owner, ttl_ms], new_op_id(), st.name)
    except errors.LockNotOwned:
        st.held_until = 0.0
        raise
    st.expires_ms = f.number()
    st.held_until = sent + ttl_ms / 1000
    return st.expires_ms


def force_release(ctx: Context, name: str) -> Flow[bool]:
    """Admin: drop every holder of ``name`` (an ``unlock`` event). True if it was held."""
    n = ctx.key(name)
    f = yield from _lock_call(ctx, "force", [n], new_op_id(), n)
    return f.number() > 0


def list_locks(ctx: Context, limit: int = 1000) -> Flow[list[LockInfo]]:
    """Locks held now (read permission), by name."""
    f = yield from _lock_call(ctx, "list", [limit], None, None)
    with decoding(ctx.keys.lock_records, **ctx.err()):
        return lock_list(f)


# ------------------------------------------------------------------------ agent leases
def lease_beat(ctx: Context, ttl_ms: int) -> Flow[int]:
    """Renew this agent's lease in the namespace; returns its expiry (server ms)."""
    f = yield from _lock_call(ctx, "beat", [ttl_ms], new_op_id(), None)
    return f.number()


def lease_leave(ctx: Context) -> Flow[None]:
    """End this agent's lease here now; the sweep that follows removes what it held."""
    yield from _lock_call(ctx, "leave", [], new_op_id(), None)


def _presence_call(prefix: str, args: list[str | bytes | int], op_id: str | None) -> Flow[Fields]:
    keys = PresenceKeys.of(prefix).fixed()
    reply = yield ScriptCall(load("presence"), keys, args, op_id, args[0] == "list")
    return PRESENCE.check(reply, None)


def presence_beat(prefix: str, agent: str, ttl_ms: int, retention_ms: int) -> Flow[int]:
    args: list[str | bytes | int] = ["beat", agent, ttl_ms, retention_ms]
    f = yield from _presence_call(prefix, args, new_op_id())
    return f.number()


def presence_leave(prefix: str, agent: str) -> Flow[None]:
    yield from _presence_call(prefix, ["leave", agent, 0, 0], new_op_id())


def presence_list(prefix: str, agent: str, alive: bool) -> Flow[list[AgentInfo]]:
    # The caller's name too: every script checks it against the Redis user (identity).
    f = yield from _presence_call(prefix, ["list", agent, 0, 0], None)
    with decoding(PresenceKeys.of(prefix).seen):
        return _presence_list(f, alive)


def heartbeat(
    agent: str,
    settings: Settings,
    session: AgentSession,
    ctx_for: Callable[[str], Context],
    ttl_ms: int,
) -> Flow[int]:
    """One heartbeat: presence, then the lease in every namespace where this identity
    holds something tied to it. Returns the presence expiry (server ms)."""
    retention_ms = int(settings.presence_retention * 1000)
    expires = yield from presence_beat(settings.key_prefix, agent, ttl_ms, retention_ms)
    for name in sorted(session.namespaces):
        with contextlib.suppress(errors.NamespaceNotFound, errors.PermissionDenied):
            yield from lease_beat(ctx_for(name), ttl_ms)
    return expires


def leave_all(
    agent: str, settings: Settings, session: AgentSession, ctx_for: Callable[[str], Context]
) -> Flow[None]:
    """End the lease everywhere now and sweep, so what it held goes at once (events)."""
    yield from presence_leave(settings.key_prefix, agent)
    for name in sorted(session.namespaces):
        with contextlib.suppress(errors.NamespaceNotFound, errors.PermissionDenied):
            ctx = ctx_for(name)
            yield from lease_leave(ctx)
            yield from sweep(ctx)


def lease_ttl_ms(
    session: AgentSession, settings: Settings, ttl: object, namespaces: Iterable[str] | None
) -> int:
    """Validate, record the identity's lease ttl and namespaces, and return ttl in ms."""
    ms = ttl_arg(ttl, settings)
    names = namespaces_arg(namespaces)
    if ms is not None:
        session.lease_ttl = ms / 1000
    session.namespaces.update(names)
    session.leased = True
    return session.ttl_ms()


# ------------------------------------------------------------------------ transactions
@dataclass
class TxPlan:
    """What a transaction collected: compares (key -> expected version, 0 = absent) and
    writes (key -> ("P", value, ttl) or ("D",)), in the order given."""

    compares: dict[str, int] = field(default_factory=dict)
    writes: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    fences: dict[str, tuple[str, int]] = field(default_factory=dict)


def tx_compare(ctx: Context, plan: TxPlan, key: str, version: object) -> None:
    k = ctx.key(key)
    v = version_arg(version, "version")
    if v is None:
        raise errors.InvalidVersion("a compare needs a version (0 = absent)", field="version")
    if k in plan.compares and plan.compares[k] != v:
        raise errors.InvalidInput(
            f"{k!r} already has a different compare", field="version", value=version
        )
    plan.compares[k] = v


def tx_write(
    ctx: Context, plan: TxPlan, op: str, key: str, value: Any, *, ttl: object, fence: object
) -> None:
    k = ctx.key(key)
    if k in plan.writes:
        raise errors.InvalidInput(
            f"{k!r} is already written by this transaction (one put or delete per key)",
            field="key",
            value=k,
        )
    if op == "P":
        enc = ctx.codec.encode(value, allow_compress=False)
        plan.writes[k] = ("P", value, ttl_arg(ttl, ctx.settings), enc)
    else:
        plan.writes[k] = ("D",)
    fenced = fence_arg(fence, k, ctx.settings.max_key_bytes)
    if fenced:
        plan.fences[k] = fenced


def commit(ctx: Context, plan: TxPlan, op_id: str | None = None) -> Flow[TxResult]:
    """All compares hold and every write applies, in one script, or nothing changes:
    TransactionConflict names every failed compare."""
    if not plan.writes:
        raise errors.InvalidInput("a transaction needs at least one put or delete", field="ops")
    items: list[Item] = []
    for k, w in plan.writes.items():
        expected = plan.compares.get(k)
        fence = plan.fences.get(k)
        if w[0] == "P":
            _op, value, ttl_ms, enc = w
            items.append(Item("P", k, enc.data, enc.fmt, expected, ttl_ms, value, fence))
        else:
            items.append(Item("D", k, expected=expected, fence=fence))
    for k, v in plan.compares.items():
        if k not in plan.writes:
            items.append(Item("C", k, expected=v))
    try:
        result = yield from write(
            ctx, items, "transaction", op_id_arg(op_id), generated=op_id is None
        )
    except MergeFallback as fb:
        # Puts are sent uncompressed, so only a stored value the server cannot merge
        # (compressed, another codec) lands here.
        raise errors.InvalidOption(
            f"a transaction cannot merge into a value stored {fb.reason} "
            f"(compressed or not {JSON_FORMAT}); use put() for that key",
            field="strategy",
        ) from None
    entries: dict[str, Any] = {}
    for it, r in zip(items, result.items, strict=True):
        if it.op == "P":
            entries[it.key] = item_entry(ctx, it, r)
        elif it.op == "D":
            entries[it.key] = None
    return TxResult(result.revision, entries)


# ------------------------------------------------------------------------ single flight
def _release_quietly(ctx: Context, st: LockState) -> Flow[None]:
    # A lease that ran out meanwhile is fine here: the fenced put refused a late write.
    with contextlib.suppress(errors.LockNotOwned):
        yield from release(ctx, st)


def get_or_set(
    ctx: Context,
    key: str,
    factory: Any,
    *,
    ttl: Any,
    lock_ttl: Any,
    wait: object,
) -> Flow[Entry]:
    """The entry at ``key``; if absent, the one caller holding the lock named ``key``
    runs ``factory()`` and writes its value fenced, while the others wait on that lock
    and then read the result. A factory that raises writes nothing (its exception
    propagates after the lock is released), so the next waiter tries."""
    k = ctx.key(key)
    callable_arg(factory, "factory")
    ttl_arg(ttl, ctx.settings)  # bad input fails before anything is sent
    st_ttl, limit = lock_ttl_arg(lock_ttl, ctx.settings), wait_arg(wait)
    while True:
        found = yield from get(ctx, k)
        if found is not None:
            return found
        st = LockState(k, "x", st_ttl)
        yield from acquire(ctx, st, limit)
        try:
            found = yield from get(ctx, k)  # the winner may have written it meanwhile
            if found is None:
                value = yield CallUser(factory)
                found = yield from put(ctx, k, value, ttl=ttl, fence=st.token)
        except GeneratorExit:
            raise
        except BaseException:
            yield from _release_quietly(ctx, st)
            raise
        yield from _release_quietly(ctx, st)
        return found

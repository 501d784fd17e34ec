"""I/O-free flows for coordination: fenced locks, agent leases and presence, transactions.

Like ``_ops``, every flow only yields effects; the sync and async shells (``lock.py``,
``client.py``, ``aio.py``) run them through their driver. Waiting for a lock subscribes to
the namespace's lock doorbell (:class:`Listen`) and retries on every ring for that lock,
and at least every ``lock_poll`` seconds (a doorbell is only a hint, DESIGN.md decision 5).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from swarm_memory import errors
from swarm_memory._ops import (
    CallUser,
    Context,
    Flow,
    Item,
    Listen,
    ScriptCall,
    Unlisten,
    WaitBell,
    _common,
    _encode,
    _item_entry,
    _MergeFallback,
    _opt,
    _s,
    _write,
    bind_lease,
    fence_arg,
    get,
    new_op_id,
    op_id_arg,
    put,
    ttl_arg,
    unpack,
    version_arg,
)
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

_NEEDS = {
    "acquire": "write",
    "release": "write",
    "extend": "write",
    "force": "admin",
    "list": "read",
    "beat": "read",
    "leave": "read",
}
MODES = {"exclusive": "x", "shared": "s"}


def _lock_call(
    ctx: Context, action: str, extra: list[str | bytes | int], op_id: str | None, key: str | None
) -> Flow[list[Any]]:
    s = ctx.settings
    args: list[str | bytes | int] = [ctx.agent, s.audit_maxlen, s.stream_maxlen, action, *extra]
    reply = yield ScriptCall(load("lock"), ctx.keys.fixed(), args, op_id)
    _common(ctx, reply, "lock_" + action, _NEEDS[action], key)
    return list(reply)


def lock_ttl_arg(ttl: object, ctx: Context) -> int:
    ms = ttl_arg(ttl, ctx.settings)
    if ms is None:
        raise errors.InvalidTTL("a lock needs a ttl (its lease)", field="ttl", value=None)
    return ms


def wait_arg(wait: object) -> float | None:
    """``None`` = wait as long as it takes; 0 = one attempt; else seconds."""
    if wait is None:
        return None
    if isinstance(wait, timedelta):
        wait = wait.total_seconds()
    if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait < 1e9:
        raise errors.InvalidInput(
            "wait must be None, 0 or a non-negative number of seconds", field="wait", value=wait
        )
    return float(wait)


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
    st.owner = new_op_id()
    session = ctx.session
    tie = _opt(bind_lease(ctx)) if session is not None and session.leased else ""
    deadline = None if wait is None else time.monotonic() + wait
    handle: Any = None
    while True:
        sent = time.monotonic()
        reply = yield from _lock_call(
            ctx, "acquire", [st.name, st.owner, st.ttl_ms, st.mode, tie], st.owner, st.name
        )
        if reply[0] == b"ok":
            st.token = FencingToken(int(reply[1]), st.name)
            st.expires_ms = int(reply[2])
            st.held_until = sent + st.ttl_ms / 1000
            if handle is not None:
                yield Unlisten(handle)
            return st.token
        holder, until, server_now = _s(reply[1]), int(reply[2]), int(reply[3])
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
    reply = yield from _lock_call(ctx, "release", [st.name, st.owner, op], op, st.name)
    st.held_until = 0.0
    if reply[0] == b"not_owned":
        holder = _s(reply[1]) or None
        raise errors.LockNotOwned(
            f"lock {st.name!r} is not held by this acquisition (lease expired or released)"
            + (f"; {holder!r} holds it now" if holder else ""),
            holder=holder,
            **ctx.err(key=st.name),
        )


def extend(ctx: Context, st: LockState, ttl_ms: int) -> Flow[int]:
    """Renew the lease to ``ttl_ms`` from now; returns the new expiry (server ms)."""
    sent = time.monotonic()
    reply = yield from _lock_call(ctx, "extend", [st.name, st.owner, ttl_ms], new_op_id(), st.name)
    if reply[0] == b"not_owned":
        st.held_until = 0.0
        holder = _s(reply[1]) or None
        raise errors.LockNotOwned(
            f"cannot extend lock {st.name!r}: this acquisition's lease is gone"
            + (f"; {holder!r} holds it now" if holder else ""),
            holder=holder,
            **ctx.err(key=st.name),
        )
    st.expires_ms = int(reply[1])
    st.held_until = sent + ttl_ms / 1000
    return st.expires_ms


def force_release(ctx: Context, name: str) -> Flow[bool]:
    """Admin: drop every holder of ``name`` (an ``unlock`` event). True if it was held."""
    n = ctx.key(name)
    reply = yield from _lock_call(ctx, "force", [n], new_op_id(), n)
    return int(reply[1]) > 0


def _lock_info(name: str, record: bytes, server_now: int) -> LockInfo | None:
    """A lock record as LockInfo, holders whose lease ran out left out (a stored record
    can still list them until its next write); None when nobody holds it."""
    if not record:
        return None
    f = unpack(record)
    mode = "shared" if f[0] == b"s" else "exclusive"
    holders = tuple(
        LockHolder(_s(f[j + 1]), int(f[j + 3]), ms_to_datetime(int(f[j + 2])))
        for j in range(1, len(f) - 3, 4)
        if int(f[j + 2]) > server_now
    )
    if not holders:
        return None
    newest = max(holders, key=lambda h: h.token)
    return LockInfo(name, mode, newest.agent, newest.token, newest.expires_at, holders)  # type: ignore[arg-type]


def list_locks(ctx: Context, limit: int = 1000) -> Flow[list[LockInfo]]:
    """Locks held now (read permission), by name."""
    reply = yield from _lock_call(ctx, "list", [limit], None, None)
    server_now = int(reply[1])
    infos = (_lock_info(_s(reply[j]), reply[j + 1], server_now) for j in range(2, len(reply), 2))
    return sorted((i for i in infos if i is not None), key=lambda i: i.name)


# ------------------------------------------------------------------------ agent leases
def lease_beat(ctx: Context, ttl_ms: int) -> Flow[int]:
    """Renew this agent's lease in the namespace; returns its expiry (server ms)."""
    reply = yield from _lock_call(ctx, "beat", [ttl_ms], new_op_id(), None)
    return int(reply[1])


def lease_leave(ctx: Context) -> Flow[None]:
    """End this agent's lease here now; the sweep that follows removes what it held."""
    yield from _lock_call(ctx, "leave", [], new_op_id(), None)


def presence_beat(prefix: str, agent: str, ttl_ms: int, retention_ms: int) -> Flow[int]:
    keys = PresenceKeys.of(prefix).fixed()
    reply = yield ScriptCall(
        load("presence"), keys, ["beat", agent, ttl_ms, retention_ms], new_op_id()
    )
    return int(reply[1])


def presence_leave(prefix: str, agent: str) -> Flow[None]:
    keys = PresenceKeys.of(prefix).fixed()
    yield ScriptCall(load("presence"), keys, ["leave", agent, 0, 0], new_op_id())


def presence_list(prefix: str, alive: bool) -> Flow[list[AgentInfo]]:
    keys = PresenceKeys.of(prefix).fixed()
    reply = yield ScriptCall(load("presence"), keys, ["list", "", 0, 0], None)
    now = int(reply[1])
    out = []
    for j in range(2, len(reply), 3):
        expires = int(float(_s(reply[j + 1])))
        info = AgentInfo(
            agent=_s(reply[j]),
            last_seen=ms_to_datetime(int(float(_s(reply[j + 2])))),
            expires_at=ms_to_datetime(expires),
            alive=expires > now,
        )
        if info.alive or not alive:
            out.append(info)
    return sorted(out, key=lambda a: a.agent)


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
        plan.writes[k] = ("P", value, ttl_arg(ttl, ctx.settings), _encode(ctx, value, False))
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
            enc = w[3]
            items.append(Item("P", k, enc.data, enc.fmt, expected, w[2], w[1], fence))
        else:
            items.append(Item("D", k, expected=expected, fence=fence))
    for k, v in plan.compares.items():
        if k not in plan.writes:
            items.append(Item("C", k, expected=v))
    try:
        result = yield from _write(ctx, items, "transaction", op_id_arg(op_id))
    except _MergeFallback as fb:
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
            entries[it.key] = _item_entry(ctx, it, r)
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
    if not callable(factory):
        raise errors.InvalidInput("factory must be callable", field="factory", value=factory)
    ttl_arg(ttl, ctx.settings)  # bad input fails before anything is sent
    st_ttl, limit = lock_ttl_arg(lock_ttl, ctx), wait_arg(wait)
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

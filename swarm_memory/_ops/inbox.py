"""Inbox flows: per-agent direct messages with at-least-once delivery.

Every agent has one inbox: a Redis stream under its own hash tag (``keys.InboxKeys``),
read through one consumer group. All Redis work is one script, ``lua/inbox.lua``; these
flows check their input (``args.py``), yield its calls (and :class:`Sleep` while they
wait), and read the replies (``replies.INBOX``). The sync and async shells are in
``swarm_memory/inbox.py``.

Delivery: a message is handed to one consumer of the owner's group and stays pending
until acknowledged. If it is not acknowledged within ``idle`` seconds (the consumer
died or stalled), the next read of any consumer of that inbox takes it over and
delivers it again (``Message.deliveries`` counts). Acknowledging deletes it.

Lifecycle: only a send creates an inbox's keys; each send, read or ack restarts their
retention clock (``Settings.inbox_retention``), and the owner may delete them at once.
Listing walks an index of owners (``keys.inbox_index_key``), a sorted set outside every
inbox's slot: no script can update it with the inbox (decision 1), so these flows keep
it with single-key commands, ordered so that an inbox that exists is never left out:

* a send that created the inbox adds its owner *after* the script (so the entry cannot
  be removed between the two by a delete or a listing that saw no inbox yet);
* whoever removes an entry (a delete, or a listing that found the inbox gone: expired)
  removes it and *then* looks again, and puts it back if a send re-created the inbox
  meanwhile; so a send racing a removal either lands after the removal or is seen;
* the owner's ``inbox()`` adds its owner if the inbox exists: that repairs a client
  dying between a send's script and its index update (and indexes inboxes made by an
  earlier version).

The index may hold owners whose inbox expired; a listing removes those on the page it
reads (bounded work per page), and never reports them.

Lanes (authenticated mode, where an agent's ACL user may touch only its own inbox): a
send to another agent goes into the sender's lane in the recipient's slot
(``lua/lane.lua``, ``keys.InboxKeys.lane``) and names the sender in the inbox's senders
set; the owner's reads move the lanes they are given into the stream (``from`` = the
lane's sender) and reply the senders still listed, which the next read drains (at once
when new). A lane message gets its stream id when it is moved, so the id a send returns
is its lane's. A message the owner cannot read is acknowledged away and reported once
(``_drop_poison``): a sender cannot block an inbox.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import secrets
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from swarm_memory import errors
from swarm_memory._ops.args import (
    agent_arg,
    correlation_arg,
    message_id_arg,
    new_op_id,
    op_id_arg,
    timeout_arg,
)
from swarm_memory._ops.effects import Command, Flow, InboxContext, ScriptCall, Sleep
from swarm_memory._ops.records import (
    DECODE_ERRORS,
    Fields,
    StreamEntry,
    corrupt,
    decoding,
    pairs,
    text,
    unpack,
)
from swarm_memory._ops.replies import INBOX, LANE, InboxFailure, corrupt_inbox
from swarm_memory.keys import InboxKeys
from swarm_memory.models import InboxInfo, Message, ms_to_datetime
from swarm_memory.scripts import load

GROUP = "agent"  # the one consumer group of every inbox: its owner's
CONSUMER_GC_MS = 3_600_000  # forget consumers that hold nothing and were idle this long
POLL_FIRST = 0.005  # seconds between polls while waiting: starts small, doubles ...
POLL_MAX = 0.1  # ... up to this
_MAX_MESSAGE_FIELDS = 32  # a stored message has 6 fields (12 names and values): bound it


# ------------------------------------------------------------------------ reply shapes
class SentRecord(NamedTuple):
    """A send's op record (packed): what a replay of its op id returns."""

    id: bytes
    sent_ms: bytes
    digest: bytes


class InboxRead(NamedTuple):
    """The inbox script's "ok" to a read: where the next redelivery scan starts, the
    messages taken over (with their delivery counts), and the new ones."""

    cursor: Any
    claimed: list[Any]
    deliveries: list[Any]
    fresh: list[Any]
    senders: list[Any]  # whose lanes may hold more (lua/inbox.lua), for the next read
    new: Any  # 1: this read's lane moves made the inbox (to be indexed)


class InboxCounts(NamedTuple):
    """The inbox script's "ok" to an info."""

    length: Any
    pending: Any
    active_ms: Any
    expires_ms: Any


def default_consumer() -> str:
    """A consumer name unique to this process and object: ``<host>-<pid>-<random>``."""
    return f"{socket.gethostname()[:64]}-{os.getpid()}-{secrets.token_hex(4)}"


@dataclass(slots=True)
class InboxState:
    """What one consumer of an inbox keeps between calls, shared by every ``Inbox`` made
    for that consumer name (so ``request`` and ``receive`` see one buffer).

    ``buffer``: messages read from Redis (so pending for this consumer) but not handed
    out yet, in delivery order. ``cursor``: where the next redelivery scan starts.
    """

    owner: str
    consumer: str
    buffer: dict[str, Message] = field(default_factory=dict)
    cursor: str = "0-0"
    opened: bool = False
    lanes: list[str] = field(default_factory=list)  # senders whose lanes the next read drains


def _digest(data: bytes, *parts: str) -> str:
    """Fingerprint of a send, kept with its op record: replaying an op id with another
    message raises OpIdReused instead of reporting the first message as this one."""
    h = hashlib.blake2b(digest_size=12)
    for part in parts:
        h.update(b"%d:%s" % (len(part), part.encode()))
    h.update(b"%d:" % len(data) + data)
    return h.hexdigest()


# ------------------------------------------------------------------------------- calls
def _call(
    ctx: InboxContext,
    owner: str,
    action: str,
    extra: list[str | bytes | int],
    op_id: str | None = None,
    *,
    lanes: list[str] | tuple[str, ...] = (),
) -> Flow[Fields]:
    args: list[str | bytes | int] = [action, ctx.agent, owner, GROUP, ctx.retention_ms, *extra]
    keys = ctx.keys(owner, lanes)
    reply = yield ScriptCall(load("inbox"), keys, args, op_id, action == "info")
    if not isinstance(reply, list) or not reply:
        raise corrupt_inbox(ctx, owner, f"the inbox script answered {reply!r:.80}")
    return INBOX.check(reply, InboxFailure(ctx, owner, action))


def _message(ctx: InboxContext, owner: str, entry: list[Any], deliveries: int) -> Message:
    try:
        raw = StreamEntry._make(entry)
        if len(raw.fields) > _MAX_MESSAGE_FIELDS:
            raise ValueError("oversized field list")
        f = pairs(raw.fields)
        body, fmt = f["d"], text(f["f"])
        msg = Message(
            id=message_id_arg(text(raw.id)),
            sender=text(f["from"]),
            to=owner,
            body=None,
            sent_at=ms_to_datetime(int(f["ms"])),
            reply_to=text(f["rt"]) or None,
            correlation_id=text(f["cid"]) or None,
            deliveries=deliveries,
        )
    except (KeyError, ValueError, TypeError, OverflowError, errors.InvalidInput) as exc:
        raise corrupt_inbox(ctx, owner, f"unreadable message {entry!r:.80}: {exc}") from None
    # The codec's own errors: _poll reports (and removes) a message that does not decode.
    return dataclasses.replace(msg, body=ctx.codec.decode(body, fmt))


def _entry_id(entry: Any) -> str | None:
    try:
        return message_id_arg(text(entry[0]))
    except (errors.InvalidInput, *DECODE_ERRORS):
        return None


def _drop_poison(ctx: InboxContext, owner: str, poison: list[tuple[str | None, str]]) -> Flow[None]:
    """Messages this client cannot read (malformed, a body its codec does not decode, an
    unknown codec): acknowledged (deleted), so that they do not come back after ``idle``
    and block the inbox, then reported once as CorruptData naming them. The messages read
    with them stay buffered for the next ``receive``."""
    ids = [i for i, _ in poison if i is not None]
    if ids:
        yield from _call(ctx, owner, "ack", list(ids))
    what = "; ".join(f"{i}: {why:.200}" for i, why in poison[:5])
    raise corrupt_inbox(
        ctx, owner, f"{len(poison)} unreadable message(s) removed from the inbox ({what})"
    )


def _index_owner(ctx: InboxContext, owner: str) -> Flow[None]:
    yield Command(("ZADD", ctx.index, 0, owner), True)


def open_inbox(ctx: InboxContext, state: InboxState) -> Flow[None]:
    """Check that the caller owns the inbox and forget its idle consumers (once per
    state). Creates nothing; an inbox that exists is (re)added to the index."""
    if not state.opened:
        f = yield from _call(ctx, state.owner, "open", [CONSUMER_GC_MS])
        state.opened = True
        if f.rest() == [1]:  # the inbox exists
            yield from _index_owner(ctx, state.owner)


def send(
    ctx: InboxContext,
    to_agent: str,
    message: Any,
    *,
    reply_to: str | None = None,
    correlation_id: str | None = None,
    op_id: str | None = None,
) -> Flow[Message]:
    """Append ``message`` to ``to_agent``'s inbox; a replayed op id returns the first."""
    to = agent_arg(to_agent)
    rt = agent_arg(reply_to) if reply_to is not None else ""
    cid = correlation_arg(correlation_id) or ""
    enc = ctx.codec.encode(message)
    op = op_id_arg(op_id)
    s = ctx.settings
    digest = _digest(enc.data, ctx.agent, to, enc.fmt, rt, cid)
    extra: list[str | bytes | int] = [
        op,
        int(s.dedupe_window * 1000),
        s.inbox_maxlen,
        enc.data,
        enc.fmt,
        rt,
        cid,
        digest,
    ]
    if ctx.lanes and to != ctx.agent:
        f = yield from _lane_send(ctx, to, extra)
    else:
        try:
            f = yield from _call(ctx, to, "send", extra, op)  # "ok" or "dup" (raises "full")
        except errors.PermissionDenied as exc:
            # Redis refused this user the recipient's keys: an agent's own ACL user
            # (authenticated mode, learnt here before the client's first script) sends
            # through its lane.
            if exc.required != "acl" or to == ctx.agent:
                raise
            f = yield from _lane_send(ctx, to, extra)
    packed = f.next()
    if f.tag == b"ok" and f.rest() == [1]:
        # This send made the inbox: list it. After the script, never before (module
        # docstring). If this fails, the send stands; the owner's inbox() repairs it.
        yield from _index_owner(ctx, to)
    try:
        sent = Fields(unpack(packed)).record(SentRecord)
        sent_at = ms_to_datetime(int(sent.sent_ms))
    except (ValueError, TypeError, OverflowError) as exc:
        raise corrupt_inbox(ctx, to, f"unreadable op record {packed!r:.80}", ops=True) from exc
    if f.tag == b"dup" and text(sent.digest) != digest:
        raise errors.OpIdReused(
            f"op id {op!r} was already used for a different message to {to!r}",
            op_id=op,
            agent=ctx.agent,
        )
    return Message(
        id=text(sent.id),
        sender=ctx.agent,
        to=to,
        body=message,
        sent_at=sent_at,
        reply_to=rt or None,
        correlation_id=cid or None,
        deliveries=0,
    )


def _lane_send(ctx: InboxContext, to: str, extra: list[str | bytes | int]) -> Flow[Fields]:
    """A send into this agent's lane of ``to``'s inbox (lua/lane.lua): its fields are
    the send action's (``extra``); the reply's are a send's, without the "new" flag."""
    keys = InboxKeys.of(ctx.settings.key_prefix, to).lane_keys(ctx.agent)
    op_id = str(extra[0])
    args: list[str | bytes | int] = [ctx.agent, ctx.retention_ms, *extra]
    reply = yield ScriptCall(load("lane"), keys, args, op_id)
    if not isinstance(reply, list) or not reply:
        raise corrupt_inbox(ctx, to, f"the lane script answered {reply!r:.80}")
    return LANE.check(reply, InboxFailure(ctx, to, "send"))


def reply(
    ctx: InboxContext, to_message: Message, message: Any, *, op_id: str | None = None
) -> Flow[Message]:
    """Send ``message`` to ``to_message.reply_to`` under its correlation id (its id when
    it has none)."""
    if not isinstance(to_message, Message):
        raise errors.InvalidInput(
            "reply needs the Message being answered", field="message", value=to_message
        )
    if to_message.reply_to is None:
        raise errors.InvalidInput(
            f"message {to_message.id} from {to_message.sender!r} asks for no reply "
            "(reply_to is None)",
            field="reply_to",
            value=None,
        )
    cid = to_message.correlation_id or to_message.id
    return (yield from send(ctx, to_message.reply_to, message, correlation_id=cid, op_id=op_id))


def _poll(ctx: InboxContext, state: InboxState, idle_ms: int, batch: int) -> Flow[None]:
    """One read into the buffer: messages left pending (by any consumer, this one too)
    longer than ``idle_ms`` first, then new ones. A message already buffered keeps its
    place."""
    yield from open_inbox(ctx, state)
    owner = state.owner
    for _ in range(2):  # once more at once when the read names lanes it did not drain
        drained = state.lanes
        extra: list[str | bytes | int] = [state.consumer, batch, idle_ms, state.cursor, *drained]
        f = yield from _call(ctx, owner, "read", extra, lanes=drained)
        got = f.record(InboxRead)
        state.cursor = text(got.cursor)
        delivered = [*zip(got.claimed, got.deliveries, strict=True), *((e, 1) for e in got.fresh)]
        poison: list[tuple[str | None, str]] = []
        for entry, n in delivered:
            try:
                msg = _message(ctx, owner, entry, int(n))
            except (errors.CorruptData, errors.InvalidOption, *DECODE_ERRORS) as exc:
                poison.append((_entry_id(entry), f"{type(exc).__name__}: {exc}"))
                continue
            state.buffer[msg.id] = msg
        if poison:
            yield from _drop_poison(ctx, owner, poison)
        with decoding(InboxKeys.of(ctx.settings.key_prefix, owner).senders):
            state.lanes = [agent_arg(text(name)) for name in got.senders]
        if got.new == 1:
            yield from _index_owner(ctx, owner)
        if not set(state.lanes) - set(drained):
            break


class _Waiter:
    """Sleep lengths of a wait bounded by ``timeout`` (None: forever): short at first,
    growing to POLL_MAX, never past the deadline (a pub/sub doorbell may replace this)."""

    def __init__(self, timeout: float | None) -> None:
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.delay = POLL_FIRST

    def next_wait(self) -> float | None:
        """The next sleep, or None once the deadline has passed."""
        wait = self.delay
        self.delay = min(self.delay * 2, POLL_MAX)
        if self.deadline is None:
            return wait
        remaining = self.deadline - time.monotonic()
        return min(wait, remaining) if remaining > 0 else None

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline


def receive(
    ctx: InboxContext, state: InboxState, timeout: float | None, idle_ms: int, batch: int
) -> Flow[Message | None]:
    """The next message (buffered first), waiting up to ``timeout``; None if none came."""
    waiter = _Waiter(timeout)
    while True:
        if state.buffer:
            return state.buffer.pop(next(iter(state.buffer)))
        yield from _poll(ctx, state, idle_ms, batch)
        if state.buffer:
            continue
        wait = waiter.next_wait()
        if wait is None:
            return None
        yield Sleep(wait)


def ack(ctx: InboxContext, state: InboxState, messages: tuple[Message | str, ...]) -> Flow[int]:
    """Acknowledge (and delete) messages; returns how many were still pending.

    A ``Message`` is acknowledged in the inbox it was delivered to (``.to``), so nobody
    but that inbox's owner can acknowledge it; a bare id refers to this inbox.
    """
    by_owner: dict[str, list[str]] = {}
    for m in messages:
        if isinstance(m, Message):
            owner, mid = agent_arg(m.to), message_id_arg(m.id)
        else:
            owner, mid = state.owner, message_id_arg(m)
        by_owner.setdefault(owner, []).append(mid)
    total = 0
    for owner, ids in by_owner.items():
        f = yield from _call(ctx, owner, "ack", list(ids))
        total += f.number()
        if owner == state.owner:
            for mid in ids:
                state.buffer.pop(mid, None)
    return total


def request(
    ctx: InboxContext,
    state: InboxState,
    to_agent: str,
    message: Any,
    *,
    timeout: float,
    idle_ms: int,
    batch: int,
    op_id: str | None = None,
) -> Flow[Message]:
    """Send with ``reply_to`` = the caller and a fresh correlation id, then wait for the
    reply carrying it; acknowledge and return that reply.

    Other messages read meanwhile stay in this consumer's buffer, unacknowledged, and
    ``receive`` hands them out afterwards in order: none is lost or skipped. The op id
    doubles as the correlation id, so replaying a request after ``OutcomeUnknown`` waits
    for the same reply.
    """
    wait_for = timeout_arg(timeout, allow_none=False)
    op = op_id_arg(op_id) if op_id is not None else new_op_id()
    sent = yield from send(
        ctx, to_agent, message, reply_to=state.owner, correlation_id=op, op_id=op
    )
    waiter = _Waiter(wait_for)
    while True:
        for msg in state.buffer.values():
            # A request to oneself arrives here too: it is not its own reply.
            if msg.correlation_id == op and (msg.to, msg.id) != (sent.to, sent.id):
                yield from ack(ctx, state, (msg,))
                return msg
        if waiter.expired():
            raise errors.RequestTimeout(
                f"no reply from {sent.to!r} to message {sent.id} within {wait_for:g}s",
                correlation_id=op,
                request=sent,
                agent=ctx.agent,
            )
        size = len(state.buffer)
        yield from _poll(ctx, state, idle_ms, batch)
        if len(state.buffer) == size:
            wait = waiter.next_wait()
            if wait is not None:
                yield Sleep(wait)


# ------------------------------------------------------------------------- lifecycle
def _info(ctx: InboxContext, owner: str) -> Flow[InboxInfo | None]:
    f = yield from _call(ctx, owner, "info", [])
    if f.tag == b"none":
        return None
    try:
        if f.tag != b"ok":
            raise ValueError(f"unexpected reply tag {f.tag!r}")
        counts = f.record(InboxCounts)
        f.end()
        active_ms, expires_ms = int(counts.active_ms or 0), int(counts.expires_ms)
        return InboxInfo(
            owner=owner,
            length=int(counts.length),
            pending=int(counts.pending),
            last_active=ms_to_datetime(active_ms) if active_ms else None,
            expires_at=ms_to_datetime(expires_ms) if expires_ms else None,
        )
    except (ValueError, TypeError, OverflowError) as exc:
        raise corrupt_inbox(ctx, owner, f"unreadable inbox info: {exc}") from None


def inbox_info(ctx: InboxContext, owner: str | None) -> Flow[InboxInfo | None]:
    """Counters of ``owner``'s inbox (default: the caller's); None if it has none.
    Anyone may look: it shows no message."""
    return (yield from _info(ctx, agent_arg(owner if owner is not None else ctx.agent)))


def _unindex(ctx: InboxContext, owner: str) -> Flow[InboxInfo | None]:
    """Remove ``owner`` from the index, then look again: a send that re-created the
    inbox meanwhile may have indexed it before the removal, so put it back. Returns
    the inbox if it exists after all."""
    yield Command(("ZREM", ctx.index, owner), True)
    again = yield from _info(ctx, owner)
    if again is not None:
        yield from _index_owner(ctx, owner)
    return again


def inbox_page(ctx: InboxContext, after: str | None) -> Flow[tuple[list[InboxInfo], str | None]]:
    """One page of inboxes by owner name, after ``after``; and the cursor of the next page
    (None at the end). One ``info`` call per indexed owner; owners whose inbox is gone
    (expired) leave the index here; those whose keys Redis refuses this connection's
    user (authenticated mode: another agent's) are left out. Never KEYS or SCAN."""
    size = ctx.settings.page_size
    start = "-" if after is None else "(" + after
    names = yield Command(("ZRANGEBYLEX", ctx.index, start, "+", "LIMIT", 0, size))
    if not isinstance(names, list) or len(names) > size:
        raise corrupt(ctx.index, "unreadable reply")
    infos: list[InboxInfo] = []
    for raw in names:
        try:
            owner = agent_arg(text(raw))
        except (errors.InvalidName, UnicodeDecodeError):
            raise corrupt(ctx.index, f"member {raw!r:.80} is not an agent name") from None
        try:
            info = yield from _info(ctx, owner)
        except errors.PermissionDenied as exc:
            if exc.required != "acl":
                raise
            continue  # Redis refused this user the owner's keys: not its to see
        if info is None:
            info = yield from _unindex(ctx, owner)
        if info is not None:
            infos.append(info)
    return infos, (text(names[-1]) if len(names) == size else None)


def delete_inbox(ctx: InboxContext, owner: str | None, states: Iterable[InboxState]) -> Flow[bool]:
    """Delete ``owner``'s inbox (default: the caller's) with every message in it, and
    unlist it; only its owner may (PermissionDenied). True if it existed. Buffers of the
    caller's consumers (``states``) are emptied: their messages are gone."""
    target = agent_arg(owner if owner is not None else ctx.agent)
    f = yield from _call(ctx, target, "delete", [])
    existed = bool(f.next() == 1)
    for state in states:
        if state.owner == target:
            state.buffer.clear()
            state.cursor = "0-0"
            state.opened = False
    yield from _unindex(ctx, target)
    return existed

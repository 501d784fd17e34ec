"""Event-feed flows: read a page of the namespace's event stream, broadcast, the audit
log, and a snapshot to start watching from (``lua/events.lua``).

The watch machinery (cursors per subscriber, doorbells, fan-out) is the shells'
(``swarm_memory/events.py``); these flows are the Redis calls it makes. The decoders of
stream entries (events, audit records) and doorbell payloads are here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from swarm_memory import errors
from swarm_memory._ops.args import (
    agent_arg,
    audit_action_arg,
    limit_arg,
    op_id_arg,
    time_bound_arg,
)
from swarm_memory._ops.effects import Context, Flow, ScriptCall
from swarm_memory._ops.entries import get_many, key_page
from swarm_memory._ops.namespaces import sweep_quietly
from swarm_memory._ops.records import (
    DECODE_ERRORS,
    Fields,
    MalformedReply,
    StreamEntry,
    decoding,
    pairs,
    text,
    unpack,
)
from swarm_memory._ops.replies import EVENTS, Failure
from swarm_memory.codec import JSON_FORMAT, ValueCodec
from swarm_memory.models import AuditRecord, Entry, Event, Snapshot, ms_to_datetime
from swarm_memory.scripts import load

SNAPSHOT_BATCH = 500  # keys per get_many while taking a snapshot


# ---------------------------------------------------------------------- reply shapes
FIRST_CURSOR = "1-0"


def next_cursor(revision: int, seq: int, count: int) -> str:
    """Stream id of the event after (revision, seq): entries know their revision's size."""
    return f"{revision + 1}-0" if seq >= count - 1 else f"{revision}-{seq + 1}"


def event(codec: ValueCodec, raw: Sequence[Any]) -> Event:
    """An event stream entry ``[id, [name, value, ...]]``."""
    e = StreamEntry._make(raw)
    sid = text(e.id)
    rev_s, seq_s = sid.split("-")
    f = pairs(e.fields)
    revision, seq, count = int(rev_s), int(seq_s), int(f.get("n", b"1"))
    has_value = "d" in f
    return Event(
        revision=revision,
        type=text(f["t"]),
        key=text(f["k"]) or None,
        version=int(f["v"]) or None,
        agent=text(f["a"]),
        time=ms_to_datetime(int(f["ms"])),
        cursor=next_cursor(revision, seq, count),
        seq=seq,
        count=count,
        has_value=has_value,
        # (no "f": the "json" format, which publish_events in _lib.lua does not store)
        value=codec.decode(f["d"], text(f["f"]) if "f" in f else JSON_FORMAT)
        if has_value
        else None,
    )


# A doorbell carries at most 64 events of 6 parts, plus 4 (publish_events in _lib.lua);
# a little room for parts a newer script may append (ignored, like the old decoder did).
_BELL_EVENT = 6  # type key version value fmt has_value
_BELL_FIXED = 4  # rev count ... agent ms
_BELL_PARTS_MAX = 64 * _BELL_EVENT + _BELL_FIXED + 16


def decode_doorbell(codec: ValueCodec, payload: bytes) -> tuple[int, list[Event]]:
    """The revision and events a doorbell carries (see publish_events in _lib.lua):
    ``rev count (type key version value fmt has_value)*count agent ms``.

    The hot path of every watcher: the events are built straight from the parts (no
    stream-entry field list in between), with the checks :func:`event` makes (numbers,
    UTF-8, the codec's); the shape is checked first: at least one event, and ``count``
    events plus the tail present (a corrupt payload raises, bounded by ``unpack``)."""
    parts = unpack(payload, _BELL_PARTS_MAX)
    if len(parts) < _BELL_FIXED:
        raise MalformedReply(f"a doorbell of {len(parts)} parts")
    revision, count = int(parts[0]), int(parts[1])
    tail = 2 + _BELL_EVENT * count
    if count < 1 or len(parts) < tail + 2:
        raise MalformedReply(f"a doorbell of {len(parts)} parts for {count} events")
    agent = parts[tail].decode("utf-8")
    when = ms_to_datetime(int(parts[tail + 1]))
    last = count - 1
    out = []
    for seq in range(count):
        at = 2 + _BELL_EVENT * seq
        etype, key, version, value, fmt, has_value = parts[at : at + _BELL_EVENT]
        carried = has_value == b"1"
        out.append(
            Event(
                revision=revision,
                type=etype.decode("utf-8"),
                key=key.decode("utf-8") or None,
                version=int(version) or None,
                agent=agent,
                time=when,
                cursor=f"{revision + 1}-0" if seq >= last else f"{revision}-{seq + 1}",
                seq=seq,
                count=count,
                has_value=carried,
                value=codec.decode(value, fmt.decode("utf-8")) if carried else None,
            )
        )
    return revision, out


def audit_record(raw: Sequence[Any]) -> AuditRecord:
    e = StreamEntry._make(raw)
    f = {k: text(v) for k, v in pairs(e.fields).items()}
    return AuditRecord(
        time=ms_to_datetime(int(text(e.id).split("-")[0])),
        agent=f["a"],
        action=f["act"],
        key=f.get("k") or None,
        op_id=f.get("op") or None,
        outcome=f["out"],
        revision=int(f.get("r", "0")),
    )


@dataclass(frozen=True, slots=True)
class EventPage:
    revision: int  # the namespace revision when read
    events: list[Event]
    next: str  # cursor to read from next
    # Stream entries that are no event this library wrote: (stream id, problem). The
    # cursor has moved past them; the feed reports them (log, metric) and goes on.
    skipped: tuple[tuple[str, str], ...] = ()


def _past(raw: Any) -> str:
    """The cursor just after a stream entry that is no event: "<rev>-<seq + 1>" (the next
    read starts there, whatever follows)."""
    sid = text(raw[0])
    rev_s, _, seq_s = sid.partition("-")
    if not (rev_s.isdigit() and seq_s.isdigit()):
        raise MalformedReply(f"stream id {sid!r:.40}")
    return f"{int(rev_s)}-{int(seq_s) + 1}"


def decode_page(
    codec: ValueCodec, entries: Sequence[Any], start: str
) -> tuple[list[Event], str, list[tuple[str, str]]]:
    """Events of a page of stream entries, the cursor after them, and the entries skipped
    because they do not decode (bounded: one pass over what was read)."""
    events: list[Event] = []
    skipped: list[tuple[str, str]] = []
    cursor = start
    for raw in entries:
        try:
            ev = event(codec, raw)
        except DECODE_ERRORS as exc:
            cursor = _past(raw)
            skipped.append((text(raw[0]), f"{type(exc).__name__}: {exc}"[:200]))
            continue
        events.append(ev)
        cursor = ev.cursor
    return events, cursor, skipped


def doorbell_events(ctx: Context, payload: bytes) -> tuple[int, list[Event]]:
    """The revision and events a doorbell carries (see publish_events in _lib.lua)."""
    return decode_doorbell(ctx.codec, payload)


def _events_call(
    ctx: Context, action: str, extra: list[str | bytes | int], op_id: str | None
) -> Flow[Fields]:
    s = ctx.settings
    args: list[str | bytes | int] = [
        ctx.agent,
        s.audit_maxlen,
        s.stream_maxlen,
        int(s.dedupe_window * 1000),
        action,
        *extra,
    ]
    readonly = action in ("read", "audit")
    reply = yield ScriptCall(load("events"), ctx.keys.fixed(), args, op_id, readonly)
    denied_action = "watch" if action == "read" else action
    required = "write" if action == "broadcast" else "read"
    return EVENTS.check(reply, Failure(ctx, denied_action, required))


def read_events(
    ctx: Context, start: str | None, count: int, prev_ms: int | None = None
) -> Flow[EventPage]:
    """One page of the feed from stream id ``start`` (None: just find the current end).
    ``prev_ms``: the time of the last event the reader got, so that a history rewound
    under it (revisions lost and reused) raises HistoryRewound instead of passing."""
    extra: list[str | bytes | int] = [start or "now", count]
    if prev_ms is not None:
        extra.append(prev_ms)
    f = yield from _events_call(ctx, "read", extra, None)
    if f.tag == b"rewound":
        head = f.number()
        requested = int((start or "0-0").split("-")[0])
        raise errors.HistoryRewound(
            f"the history of {ctx.namespace!r} was rewound: this reader is at revision "
            f"{requested - 1}, but the namespace lost revisions (a crash or failover that "
            f"lost acknowledged writes; the head is now {head}) and may reuse their "
            "numbers. Re-read the state (snapshot) and watch from there",
            requested=requested,
            head=head,
            **ctx.err(),
        )
    if f.tag == b"trimmed":
        oldest = int(f.string().split("-")[0])
        requested = int((start or "0-0").split("-")[0])
        raise errors.EventsTrimmed(
            f"events from revision {requested} of {ctx.namespace!r} were trimmed; "
            f"the oldest kept is {oldest}",
            requested=requested,
            oldest=oldest,
            **ctx.err(),
        )
    revision, entries = f.number(), f.next()
    with decoding(ctx.keys.events, **ctx.err()):  # only a reply this script cannot send
        if not isinstance(entries, list):
            raise MalformedReply("the events reply has no entry list")
        if start is None:
            nxt = decode_page(ctx.codec, entries[:1], FIRST_CURSOR)[1] if entries else FIRST_CURSOR
            return EventPage(revision, [], nxt)
        events, cursor, skipped = decode_page(ctx.codec, entries, start)
    sweep_due = f.next() if len(f) else 0
    if sweep_due != 0 and len(entries) < count:
        yield from sweep_quietly(ctx)  # expired entries are due: their events come next read
    return EventPage(revision, events, cursor, tuple(skipped))


def broadcast(ctx: Context, message: Any, *, op_id: str | None = None) -> Flow[int]:
    """Append a ``broadcast`` event carrying ``message`` (write permission); its revision
    ("ok", or "dup" for a replayed op id: the first one's)."""
    enc = ctx.codec.encode(message, allow_compress=False)
    op = op_id_arg(op_id)
    f = yield from _events_call(ctx, "broadcast", [op, enc.data, enc.fmt], op)
    revision = f.number()
    if revision < 0:  # the op id's record is another request's (not a broadcast's)
        raise errors.OpIdReused(
            f"op id {op!r} was already used for a different request", op_id=op, **ctx.err()
        )
    return revision


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
    who = agent_arg(agent) if agent is not None else ""
    what, n = audit_action_arg(action), limit_arg(limit, "limit")
    extra: list[str | bytes | int] = [
        time_bound_arg(since, "since", "-"),
        time_bound_arg(until, "until", "+"),
        who,
        what,
        n,
    ]
    f = yield from _events_call(ctx, "audit", extra, None)
    _revision, found = f.next(), f.next()
    with decoding(ctx.keys.audit, **ctx.err()):
        return [audit_record(e) for e in found]


def snapshot(ctx: Context, pattern: str = "*") -> Flow[Snapshot]:
    """The current entries matching ``pattern`` and a revision to watch from: read the
    revision first, then the entries, so nothing between is missed (events up to the
    entries' own versions may repeat — skip those not newer than the entry held)."""
    page = yield from read_events(ctx, None, 1)
    entries: dict[str, Entry] = {}
    after: str | None = None
    while True:
        names, after = yield from key_page(ctx, pattern, after)
        for i in range(0, len(names), SNAPSHOT_BATCH):
            got = yield from get_many(ctx, names[i : i + SNAPSHOT_BATCH])
            entries.update({k: e for k, e in got.items() if e is not None})
        if after is None:
            break
    return Snapshot(revision=int(page.next.split("-")[0]) - 1, entries=entries)

"""Agent-memory flows (DESIGN.md decision 11), all on one namespace:

* contexts: an agent's working context is the entry ``_context/<agent>``, saved through
  the write script (CAS with ``expected_version``); resuming reads it and the
  namespace's feed after its ``mod_revision`` (``lua/events.lua``);
* sessions (``lua/agent.lua``): open with a TTL, close, list, and an append-only
  decision log per session;
* outcome logs: ``_ops/outcomes.py``, through :func:`agent_call` here.
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime
from typing import Any

from swarm_memory import errors
from swarm_memory._ops import entries as _entries
from swarm_memory._ops import events as _events
from swarm_memory._ops.args import limit_arg, op_id_arg, since_arg, ttl_arg, version_arg
from swarm_memory._ops.effects import Context, Flow, ScriptCall
from swarm_memory._ops.records import (
    Fields,
    MalformedReply,
    StreamEntry,
    decoding,
    pairs,
    text,
)
from swarm_memory._ops.replies import AGENT, Failure
from swarm_memory.agent_models import (
    Decision,
    DecisionPage,
    Resumed,
    SessionInfo,
    SessionSummary,
)
from swarm_memory.keys import _name_arg
from swarm_memory.models import Entry, ms_to_datetime
from swarm_memory.scripts import load

CONTEXT_PREFIX = "_context/"
SESSION_PREFIX = "_session/"
MAX_TEXT = 4096  # rationale / outcome link characters
MAX_PAGE = 10_000
_MAX_ID_DIGITS = 20  # each half of a stream id


# ------------------------------------------------------------------------- arguments


def session_id_arg(name: object) -> str:
    return _name_arg(name, "session")


def text_arg(value: object, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise errors.InvalidInput(
            f"{field} must be a str of at most {MAX_TEXT} characters", field=field, value=value
        )
    return value


def page_arg(limit: object) -> int:
    n = limit_arg(limit, "limit")
    if not 1 <= n <= MAX_PAGE:
        raise errors.InvalidInput(f"limit must be 1..{MAX_PAGE}", field="limit", value=limit)
    return n


def digest_of(*parts: str | bytes) -> str:
    h = hashlib.blake2b(digest_size=12)
    for p in parts:
        b = p.encode() if isinstance(p, str) else p
        h.update(b"%d:" % len(b))
        h.update(b)
    return h.hexdigest()


# ------------------------------------------------------------------------- the script
def agent_call(
    ctx: Context,
    action: str,
    extra_keys: list[str],
    extra: list[str | bytes | int],
    *,
    op_id: str = "",
    digest: str = "",
    key: str | None = None,
) -> Flow[Fields]:
    s = ctx.settings
    args: list[str | bytes | int] = [
        ctx.agent,
        s.audit_maxlen,
        s.stream_maxlen,
        int(s.dedupe_window * 1000),
        action,
        op_id,
        digest,
        *extra,
    ]
    reading = action in READ_ACTIONS  # these return before the script's first write
    reply = yield ScriptCall(
        load("agent"), ctx.keys.fixed() + extra_keys, args, op_id or None, readonly=reading
    )
    required = "read" if reading else "write"
    f = AGENT.check(reply, Failure(ctx, action, required, key))
    if f.tag == b"dup":
        # "ag1 <digest> <revision> <result>"; anything else is another script's record.
        raw = f.next()
        record = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        head, _, result = record.partition(" ")[2].partition(" ")[2].partition(" ")
        if not record.startswith("ag1 ") or record.split(" ")[1] != (digest or "-"):
            raise errors.OpIdReused(
                f"op id {op_id!r} was already used for a different request; "
                "an op id names one request (its replays must be identical)",
                op_id=op_id,
                **ctx.err(key=key),
            )
        with decoding(ctx.keys.ops, **ctx.err()):
            return Fields([b"ok", int(head), result.encode()], 1, b"ok")
    return f


READ_ACTIONS = frozenset({"outcome_stats", "decisions", "sessions", "session_info"})


def _session_keys(ctx: Context, sid: str) -> list[str]:
    nk = ctx.keys
    return [nk.session(sid), nk.session_log(sid), nk.sessions, nk.session_expiry]


# ------------------------------------------------------------------------- contexts
def context_key(agent: str) -> str:
    return CONTEXT_PREFIX + agent


def save_context(
    ctx: Context,
    agent: str,
    value: Any,
    *,
    expected_version: int | None,
    op_id: str | None,
) -> Flow[Entry]:
    """Write the agent's context entry (CAS when ``expected_version`` is given:
    ConflictError carrying the current entry). Only the agent itself saves its context
    (client-side, like every identity check outside authenticated mode)."""
    if agent != ctx.agent:
        raise errors.PermissionDenied(
            f"agent {ctx.agent!r} may not save the context of {agent!r}: only its owner may",
            action="context_save",
            required="owner",
            granted="none",
            **ctx.err(key=context_key(agent)),
        )
    entry = yield from _entries.put(
        ctx,
        context_key(agent),
        value,
        expected_version=version_arg(expected_version),
        op_id=op_id,
    )
    return entry


def get_context(ctx: Context, agent: str) -> Flow[Entry | None]:
    entry = yield from _entries.get(ctx, context_key(agent))
    return entry


def resume_context(
    ctx: Context, agent: str, *, since: int | str | None, limit: int
) -> Flow[Resumed]:
    """The context entry and the feed's events after it (``since``: a cursor to go on
    from instead). EventsTrimmed when the feed no longer holds them all."""
    n = page_arg(limit)
    after = None if since is None else since_arg(since)
    entry = yield from _entries.get(ctx, context_key(agent))
    if after is not None:
        start = after
    elif entry is not None:
        start = f"{entry.mod_revision + 1}-0"
    else:
        page = yield from _events.read_events(ctx, None, 1)
        return Resumed(None, [], page.next, True)
    events: list[Any] = []
    while len(events) < n:
        page = yield from _events.read_events(ctx, start, min(500, n - len(events)))
        events += page.events
        if page.next == start:
            break
        start = page.next
        if not page.events and not page.skipped:
            break
    complete = len(events) < n
    if not complete:
        peek = yield from _events.read_events(ctx, start, 1)
        complete = not peek.events and not peek.skipped
    return Resumed(entry, events, start, complete)


# ------------------------------------------------------------------------- sessions
def open_session(
    ctx: Context, sid: str, *, ttl: Any, meta: Any, op_id: str | None
) -> Flow[SessionInfo]:
    ttl_ms = ttl_arg(ttl, ctx.settings)
    enc = ctx.codec.encode(meta, allow_compress=False)
    op = op_id_arg(op_id)
    digest = digest_of("open", sid, str(ttl_ms), enc.data, enc.fmt)
    extra: list[str | bytes | int] = [sid, "" if ttl_ms is None else ttl_ms, enc.data, enc.fmt]
    f = yield from agent_call(
        ctx, "session_open", _session_keys(ctx, sid), extra, op_id=op, digest=digest, key=sid
    )
    f.number()
    with decoding(ctx.keys.ops, **ctx.err()):  # a replay's result comes from the op record
        x, opened = (int(p) for p in f.string().split(" "))
    return SessionInfo(
        id=sid,
        state="open",
        opened_by=ctx.agent,
        opened_at=ms_to_datetime(opened),
        expires_at=ms_to_datetime(x) if x > 0 else None,
        decisions=0,
        meta=meta,
    )


def extend_session(ctx: Context, sid: str, *, ttl: Any, op_id: str | None) -> Flow[datetime | None]:
    """A new expiry, ``ttl`` seconds from now (None: never); returns it."""
    ttl_ms = ttl_arg(ttl, ctx.settings)
    op = op_id_arg(op_id)
    f = yield from agent_call(
        ctx,
        "session_extend",
        _session_keys(ctx, sid),
        [sid, "" if ttl_ms is None else ttl_ms],
        op_id=op,
        digest=digest_of("extend", sid, str(ttl_ms)),
        key=sid,
    )
    f.number()
    with decoding(ctx.keys.ops, **ctx.err()):
        x = int(f.string())
    return ms_to_datetime(x) if x > 0 else None


def close_session(ctx: Context, sid: str, *, op_id: str | None) -> Flow[int]:
    """Close; returns how many decisions the session logged."""
    op = op_id_arg(op_id)
    f = yield from agent_call(
        ctx,
        "session_close",
        _session_keys(ctx, sid),
        [sid],
        op_id=op,
        digest=digest_of("close", sid),
        key=sid,
    )
    f.number()
    return int(f.string())


def decide(
    ctx: Context,
    sid: str,
    decision: Any,
    *,
    rationale: Any,
    inputs: Any,
    outcome: Any,
    op_id: str | None,
) -> Flow[Decision]:
    body = {
        "decision": decision,
        "rationale": text_arg(rationale, "rationale"),
        "inputs": inputs,
        "outcome": text_arg(outcome, "outcome"),
    }
    enc = ctx.codec.encode(body, allow_compress=False)
    op = op_id_arg(op_id)
    f = yield from agent_call(
        ctx,
        "decide",
        _session_keys(ctx, sid),
        [sid, enc.data, enc.fmt],
        op_id=op,
        digest=digest_of("decide", sid, enc.data, enc.fmt),
        key=sid,
    )
    f.number()
    with decoding(ctx.keys.ops, **ctx.err()):  # a replay's result comes from the op record
        stream_id, seq, ms = f.string().split(" ")
        return Decision(
            id=stream_id,
            seq=int(seq),
            agent=ctx.agent,
            time=ms_to_datetime(int(ms)),
            decision=decision,
            rationale=body["rationale"],
            inputs=inputs,
            outcome=body["outcome"],
        )


def _decision(ctx: Context, raw: Any) -> Decision:
    e = StreamEntry._make(raw)
    fields = pairs(e.fields)
    body = ctx.codec.decode(fields["d"], text(fields["f"]))
    if not isinstance(body, dict):
        raise MalformedReply("a decision is not a mapping")
    rationale, outcome = body.get("rationale"), body.get("outcome")
    return Decision(
        id=text(e.id),
        seq=int(fields["q"]),
        agent=text(fields["a"]),
        time=ms_to_datetime(int(fields["ms"])),
        decision=body.get("decision"),
        rationale=None if rationale is None else str(rationale),
        inputs=body.get("inputs"),
        outcome=None if outcome is None else str(outcome),
    )


def _stream_id_arg(value: object, field: str) -> str:
    ok = isinstance(value, str) and _events_id(value)
    if not ok:
        raise errors.InvalidInput(
            f"{field} must be a decision id (<ms>-<seq>)", field=field, value=value
        )
    assert isinstance(value, str)
    return value


def _events_id(value: str) -> bool:
    first, dash, second = value.partition("-")
    return bool(dash) and all(p.isdigit() and len(p) <= _MAX_ID_DIGITS for p in (first, second))


def decisions(ctx: Context, sid: str, *, after: str | None, limit: int) -> Flow[DecisionPage]:
    n = page_arg(limit)
    start = "-" if after is None else "(" + _stream_id_arg(after, "after")
    f = yield from agent_call(ctx, "decisions", _session_keys(ctx, sid), [sid, start, n])
    raw = f.next()
    log_key = ctx.keys.session_log(sid)
    with decoding(log_key, **ctx.err()):
        if not isinstance(raw, list):
            raise MalformedReply("no entry list")
        out = [_decision(ctx, r) for r in raw]
    nxt = out[-1].id if len(out) == n else None
    return DecisionPage(out, nxt)


def session_info(ctx: Context, sid: str) -> Flow[SessionInfo | None]:
    f = yield from agent_call(ctx, "session_info", _session_keys(ctx, sid), [sid])
    state = f.string()
    if not state:
        return None
    with decoding(ctx.keys.session(sid), **ctx.err()):
        by, ct, x, n, m, fmt, cl = f.strings(4) + f.take(2) + [f.string()]
        meta = ctx.codec.decode(m, text(fmt))
        expires = int(x)
        return SessionInfo(
            id=sid,
            state=state,
            opened_by=by,
            opened_at=ms_to_datetime(int(ct)),
            expires_at=ms_to_datetime(expires) if expires > 0 else None,
            decisions=int(n),
            meta=meta,
            closed_at=ms_to_datetime(int(cl)) if cl else None,
        )


def session_page(ctx: Context, after: str | None) -> Flow[tuple[list[SessionSummary], str | None]]:
    """One page of live sessions by id (the index, never a scan), and the next cursor."""
    start = "-" if after is None else "(" + after
    f = yield from agent_call(
        ctx, "sessions", _session_keys(ctx, "-"), [start, ctx.settings.page_size]
    )
    with decoding(ctx.keys.session_expiry, **ctx.err()):
        last = f.string() or None
        out = []
        while len(f):
            sid, x = f.string(), f.number()
            out.append(SessionSummary(sid, ms_to_datetime(x) if x > 0 else None))
    return out, last


def new_session_id() -> str:
    return "s-" + os.urandom(8).hex()

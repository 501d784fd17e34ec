"""Reply tags: what each script's answers mean, as tables from tag to outcome or error.

Every script answers a tagged array, ``{tag, ...}``, and lists its tags in its
``--! returns`` header. A flow hands each reply to its script's :class:`Replies`:

* a tag in ``outcomes`` is an answer the flow reads itself ("ok", "dup", "held" ...):
  ``check`` returns a :class:`~swarm_memory._ops.records.Fields` reader of the fields
  after the tag (and the tag, ``.tag``);
* a tag in ``errors`` is a failure: ``check`` raises the error its builder makes from
  the call (a :class:`Failure` / :class:`InboxFailure`) and the reply's fields;
* any other tag is a :class:`~swarm_memory.errors.ServerError`, never a silent pass.

A script may answer its common outcome **packed** instead (since stop 34): one bulk
string, not an array, which its table's ``unpack`` turns into the array it stands for
before the tag is read (``split_packed``: the tag and fields joined by single spaces;
``unpack_get``: a get's one entry). Redis turns a Lua table into a reply at ~4.4k
instructions for ``{"ok"}`` and ~6.5k for "ok" and three numbers, a string at ~0.4k
(docs/performance.md, "Packed replies, stop 34"). A packed reply to a script whose table
has no ``unpack`` is a ServerError, as an unknown tag is. (STYLE.md asks for tagged
arrays; a packed reply is still tagged, its first word, and is packed only on the hot
paths where the conversion was a measured share of the call: a put, incr or create, the
get of one entry, an acquire and a release, and a put's or a get's only while the value
it carries is at most 4,096 bytes, lua/_lib.lua PACKED_VALUE_MAX. Every other answer is an
array.)

``REPLIES`` maps every script to its table; ``tests/unit/test_reply_tags.py`` checks that
the tags each script's header lists (``Script.returns``) are exactly those its table
handles.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from swarm_memory import errors
from swarm_memory._ops.effects import Command, Context, InboxContext, ScriptCall
from swarm_memory._ops.graph_records import node_from_raw
from swarm_memory._ops.records import Fields, MalformedReply, corrupt, maybe_entry
from swarm_memory.keys import InboxKeys
from swarm_memory.models import FailedCompare


class WriteItem(Protocol):
    """What an error about a written item needs to know of it."""

    @property
    def key(self) -> str: ...

    @property
    def expected(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class Failure:
    """A namespace script call that failed, as its error builder sees it."""

    ctx: Context
    action: str  # named in PermissionDenied.action
    required: str  # the level the action needs
    key: str | None = None  # the key an error names when the reply names no item
    items: Sequence[WriteItem] = ()  # a write's items: its replies name them by number

    def item(self, f: Fields) -> WriteItem:
        """The item the next field names (1-based, as Lua counts)."""
        i = f.number()
        if not 1 <= i <= len(self.items):
            raise MalformedReply(f"the reply names item {i} of {len(self.items)}")
        return self.items[i - 1]


@dataclass(frozen=True, slots=True)
class InboxFailure:
    """An inbox script call that failed."""

    ctx: InboxContext
    owner: str
    action: str


F = TypeVar("F", Failure, InboxFailure)
ErrorBuilder = Callable[[F, Fields], Exception]


def split_packed(reply: bytes) -> list[bytes]:
    """A packed reply of a tag and fields without spaces: ``b"ok 12 34"`` is
    ``[b"ok", b"12", b"34"]`` (the fields stay bytes; ``Fields.number`` reads them)."""
    return reply.split(b" ")


def unpack_get(reply: bytes) -> list[Any]:
    """lua/get.lua's packed answer for one stored entry, ``"ok <due> <len(m)> <m><v>"``:
    ``[b"ok", due, m, v]``, the array its other answers send (``m`` as stored, unparsed:
    records.packed_entry checks it). Framed by the length, so neither part's bytes can
    move the boundary. (due and the length are the script's own texts, made by itos:
    int() reads them, and a reply that does not split, or a length past its end, is
    malformed.)"""
    try:
        tag, due, length, rest = reply.split(b" ", 3)
        n = int(length)
        if not 0 <= n <= len(rest):
            raise ValueError(f"a metadata length of {n} in {len(rest)} bytes")
        return [tag, 0 if due == b"0" else int(due), rest[:n], rest[n:]]
    except ValueError:
        raise MalformedReply(f"not a packed get reply: {reply!r:.40}") from None


_PUT_PARTS = 13  # "ok", rev, due, "w", ver, cr, mr, ct, mt, x, size, fmt, the value


def unpack_put(reply: bytes) -> list[Any]:
    """lua/put.lua's packed "ok", ``"ok <rev> <due> w <ver> <cr> <mr> <ct> <mt> <x> <size>
    <fmt> <value>"``: the array its table form is, ``[b"ok", rev, due, 1, b"w", ver, cr,
    mr, ct, mt, x, size, value, fmt, 0]``: the revision and the counts as ints, as RESP
    gives them (records.write_ok reads them by index), the item's fields as the bytes of
    their text, as a replay's op record gives them (records.item_entry reads both). The
    value is last: it may hold any byte. (The numbers are the script's own texts, made by
    itos, never stored text; cr, mr, ct and mt are stored texts that read_entry matched as
    digits.)"""
    p = reply.split(b" ", _PUT_PARTS - 1)
    try:
        due = 0 if p[2] == b"0" else int(p[2])  # (the common answer without a parse)
        return [p[0], int(p[1]), due, 1, *p[3:11], p[12], p[11], 0]
    except (ValueError, IndexError):
        raise MalformedReply(f"not a packed put reply: {reply!r:.40}") from None


@dataclass(frozen=True)
class Replies(Generic[F]):
    """One script's reply tags: those its flows read, and those that are errors.
    ``unpack``: how its packed answers (a bulk string, see the module doc) read as the
    array they stand for; None for a script that answers only arrays."""

    script: str
    outcomes: frozenset[bytes]
    errors: Mapping[bytes, ErrorBuilder[F]]
    unpack: Callable[[bytes], list[Any]] | None = None

    @property
    def tags(self) -> frozenset[str]:
        return frozenset(t.decode() for t in self.outcomes | self.errors.keys())

    def _unpacked(self, reply: bytes) -> list[Any]:
        """A packed reply as the array it stands for (a ServerError from a script that
        never packs)."""
        if self.unpack is None:
            raise errors.ServerError(
                f"unexpected reply {reply!r:.40} from the {self.script} script"
            )
        return self.unpack(reply)

    def passed(self, reply: list[Any] | bytes) -> Fields | None:
        """The reply's fields after an outcome tag, or None: then ``check`` raises the
        tag's error. A flow builds its Failure (only an error reads it) when this is None."""
        if isinstance(reply, bytes):
            reply = self._unpacked(reply)
        tag = reply[0]
        return Fields(reply, 1, tag) if tag in self.outcomes else None

    def check(self, reply: list[Any] | bytes, failure: F | None) -> Fields:
        """The reply's fields after an outcome tag; else raise the tag's error (``failure``
        may be None only for a script whose table has no errors)."""
        if isinstance(reply, bytes):
            reply = self._unpacked(reply)
        tag = reply[0]
        if tag in self.outcomes:
            return Fields(reply, 1, tag)
        if tag == b"denied" and reply[1:2] == [b"identity"]:
            raise identity_refused(self.script, failure)
        build = self.errors.get(tag)
        if build is None or failure is None:
            raise errors.ServerError(
                f"unexpected reply {tag!r} from the {self.script} script", **_where(failure)
            )
        raise build(failure, Fields(reply, 1, tag))


def identity_refused(
    script: str, failure: Failure | InboxFailure | None
) -> errors.SwarmMemoryError:
    """Every script's answer when the calling Redis user is not the agent the call names
    (``_lib.lua``: the identity check that runs before the script)."""
    where = _where(failure)
    agent = where.get("agent")
    named = f"agent {agent!r}" if agent else "the agent this call names"
    action = failure.action if failure is not None else script
    return errors.IdentityMismatch(
        f"the Redis user of this connection may not act as {named}: identity check failed "
        f"in the {script} script (authenticated mode: connect with that agent's credentials)",
        action=action,
        required="identity",
        granted="none",
        **where,
    )


def _where(failure: Failure | InboxFailure | None) -> dict[str, Any]:
    if isinstance(failure, Failure):
        return failure.ctx.err()
    if isinstance(failure, InboxFailure):
        return {"agent": failure.ctx.agent}
    return {}


class MergeFallback(Exception):
    """The write script cannot merge here (``reason``: "patch" — the patch is stored
    compressed — or "stored": the stored value is not plain JSON); the flow merges on
    the client instead. Never leaves the flows."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


# ------------------------------------------------------------ every namespace script
def _namespace_not_found(fail: Failure, f: Fields) -> Exception:
    ctx = fail.ctx
    return errors.NamespaceNotFound(
        f"namespace {ctx.namespace!r} does not exist", **ctx.err(key=fail.key)
    )


def _denied(fail: Failure, f: Fields) -> Exception:
    ctx, granted = fail.ctx, f.string()
    return errors.PermissionDenied(
        f"agent {ctx.agent!r} has {granted!r} in namespace {ctx.namespace!r}; "
        f"{fail.action} needs {fail.required!r}",
        action=fail.action,
        required=fail.required,
        granted=granted,
        **ctx.err(key=fail.key),
    )


COMMON_ERRORS: dict[bytes, ErrorBuilder[Failure]] = {
    b"nons": _namespace_not_found,
    b"denied": _denied,
}


# --------------------------------------------------------------------- write script
def _conflict(fail: Failure, f: Fields) -> Exception:
    item = fail.item(f)
    ctx = fail.ctx
    current = maybe_entry(ctx, item.key, f)
    if item.expected is not None:
        why = f"expected version {item.expected}, found " + (
            f"version {current.version}" if current else "no entry"
        )
    else:
        why = "the key exists and the strategy is first-wins"
    return errors.ConflictError(
        f"write to {item.key!r} lost: {why}",
        current=current,
        expected=item.expected,
        **ctx.err(key=item.key),
    )


def _txn_conflict(fail: Failure, f: Fields) -> Exception:
    failed: list[FailedCompare] = []
    for _ in range(f.number()):
        item = fail.item(f)
        current = maybe_entry(fail.ctx, item.key, f)
        failed.append(FailedCompare(item.key, item.expected or 0, current))
    names = ", ".join(repr(c.key) for c in failed)
    return errors.TransactionConflict(
        f"transaction not committed: compares failed on {names}",
        failed=failed,
        current=failed[0].current,
        expected=failed[0].expected,
        **fail.ctx.err(key=failed[0].key),
    )


_FENCE_REASONS = {
    "stale": "a newer token ({latest}) was issued",
    "not_held": "that token's lease is not held (expired, released, or never issued)",
    "required": "namespace {namespace!r} requires the key's lock token",
    "wrong_lock": "with require_lock the fence must be the key's own lock",
}


def _fenced(fail: Failure, f: Fields) -> Exception:
    key = fail.item(f).key
    lock, token, latest, reason = f.string(), f.number(), f.number(), f.string()
    template = _FENCE_REASONS.get(reason)
    why = template.format(latest=latest, namespace=fail.ctx.namespace) if template else reason
    return errors.FencingError(
        f"write to {key!r} fenced with token {token} of lock {lock!r} refused: {why}",
        lock=lock,
        token=token,
        latest=latest,
        reason=reason,
        **fail.ctx.err(key=key),
    )


def _version_required(fail: Failure, f: Fields) -> Exception:
    key, strategy = fail.item(f).key, f.string()
    return errors.VersionRequired(
        f"namespace {fail.ctx.namespace!r} uses strategy {strategy!r}: "
        "every write must give expected_version",
        current=None,
        strategy=strategy,
        **fail.ctx.err(key=key),
    )


def _quota(fail: Failure, f: Fields) -> Exception:
    kind, limit, current, requested = f.string(), f.number(), f.number(), f.number()
    return errors.QuotaExceeded(
        f"namespace {fail.ctx.namespace!r} {kind} is {limit}; "
        f"this write would take it from {current} to {requested}",
        limit_kind=kind,
        limit=limit,
        current=current,
        requested=requested,
        **fail.ctx.err(key=fail.key),
    )


def _merge_fallback(fail: Failure, f: Fields) -> Exception:
    fail.item(f)
    return MergeFallback(f.string())


def _not_integer(fail: Failure, f: Fields) -> Exception:
    key = fail.item(f).key
    return errors.NotAnInteger(
        f"{key!r} does not hold an integer with |n| < 2**53 (or the sum leaves that range)",
        **fail.ctx.err(key=key),
    )


def _too_large(fail: Failure, f: Fields) -> Exception:
    key, size = fail.item(f).key, f.number()
    return errors.InvalidValue(
        f"merged value of {key!r} would be {size} bytes, above the limit",
        field="value",
        value=size,
        **fail.ctx.err(key=key),
    )


WRITE = Replies[Failure](
    "write",
    outcomes=frozenset({b"ok", b"dup", b"victims", b"lru"}),
    errors={
        **COMMON_ERRORS,
        b"conflict": _conflict,
        b"txn_conflict": _txn_conflict,
        b"fenced": _fenced,
        b"version_required": _version_required,
        b"quota": _quota,
        b"merge_fallback": _merge_fallback,
        b"not_integer": _not_integer,
        b"too_large": _too_large,
    },
)


# put.lua: write.lua's answers for one put (merged in a merge namespace), incr or create,
# and "general": send the call to write.lua.
PUT = Replies[Failure](
    "put",
    outcomes=frozenset({b"ok", b"dup", b"general"}),
    errors={
        **COMMON_ERRORS,
        b"conflict": _conflict,
        b"version_required": _version_required,
        b"quota": _quota,
        b"merge_fallback": _merge_fallback,
        b"not_integer": _not_integer,
        b"too_large": _too_large,
    },
    unpack=unpack_put,
)


# ---------------------------------------------------------------- the other scripts
def _namespace_deleting(fail: Failure, f: Fields) -> Exception:
    ctx = fail.ctx
    return errors.NamespaceExists(
        f"namespace {ctx.namespace!r} is being deleted; finish delete_namespace first",
        **ctx.err(),
    )


def _last_admin(fail: Failure, f: Fields) -> Exception:
    ctx = fail.ctx
    return errors.LastAdminError(
        f"namespace {ctx.namespace!r} must keep at least one admin",
        action=fail.action,
        required="admin",
        granted="admin",
        **ctx.err(),
    )


def _lock_not_owned(fail: Failure, f: Fields) -> Exception:
    holder = f.string() or None
    now = f"; {holder!r} holds it now" if holder else ""
    if fail.action == "lock_extend":
        message = f"cannot extend lock {fail.key!r}: this acquisition's lease is gone{now}"
    else:
        message = (
            f"lock {fail.key!r} is not held by this acquisition (lease expired or released)" + now
        )
    return errors.LockNotOwned(message, holder=holder, **fail.ctx.err(key=fail.key))


READ = Replies[Failure]("read", frozenset({b"ok"}), COMMON_ERRORS)
# get.lua: "general" sends the get to read.lua (its denials, identity refusals, older
# namespaces and absent ones: lua/get.lua), whose answers raise them.
GET = Replies[Failure]("get", frozenset({b"ok", b"general"}), {}, unpack_get)
NS = Replies[Failure](
    "ns",
    outcomes=frozenset({b"ok", b"exists"}),  # "exists": create finds it (exist_ok decides)
    errors={**COMMON_ERRORS, b"deleting": _namespace_deleting, b"last_admin": _last_admin},
)
PURGE = Replies[Failure]("purge", frozenset({b"ok", b"dropped"}), COMMON_ERRORS)
SWEEP = Replies[Failure]("sweep", frozenset({b"ok"}), COMMON_ERRORS)
# "done": the eviction-order index is complete (lua/lru.lua).
LRU = Replies[Failure]("lru", frozenset({b"ok", b"done"}), COMMON_ERRORS)
REAP = Replies[Failure]("reap", frozenset({b"ok"}), COMMON_ERRORS)
# "trimmed" is read_events' to raise: the error names the cursor the caller asked for.
EVENTS = Replies[Failure](
    "events", frozenset({b"ok", b"dup", b"trimmed", b"rewound"}), COMMON_ERRORS
)
LOCK = Replies[Failure](
    "lock",
    outcomes=frozenset({b"ok"}),
    errors={**COMMON_ERRORS, b"not_owned": _lock_not_owned},
)
# A lock's acquire and release (lua/acquire.lua, lua/release.lua: scripts of their own).
ACQUIRE = Replies[Failure](
    "acquire", outcomes=frozenset({b"ok", b"held"}), errors=COMMON_ERRORS, unpack=split_packed
)
RELEASE = Replies[Failure](
    "release",
    outcomes=frozenset({b"ok"}),
    errors={**COMMON_ERRORS, b"not_owned": _lock_not_owned},
    unpack=split_packed,
)


def _presence_denied(fail: Failure, f: Fields) -> Exception:
    return identity_refused("presence", fail)  # the only denial presence answers


PRESENCE = Replies[Failure]("presence", frozenset({b"ok"}), {b"denied": _presence_denied})


# --------------------------------------------------------------------- agent memory
def _session_not_open(fail: Failure, f: Fields) -> Exception:
    state = f.string()
    sid = fail.key or ""
    why = {"exists": "is already open", "closed": "is closed"}.get(
        state, "is not open (absent or expired)"
    )
    return errors.SessionNotOpen(
        f"session {sid!r} in {fail.ctx.namespace!r} {why}",
        session=sid,
        state=state,
        **fail.ctx.err(),
    )


def _too_many_strategies(fail: Failure, f: Fields) -> Exception:
    limit = f.number()
    return errors.QuotaExceeded(
        f"outcome log {fail.key!r} already has {limit} strategies, its limit",
        limit_kind="strategies",
        limit=limit,
        current=limit,
        requested=limit + 1,
        **fail.ctx.err(key=fail.key),
    )


# --------------------------------------------------------------------- graph script
def _node_conflict(fail: Failure, f: Fields) -> Exception:
    raw = f.next()
    node_id = fail.key or ""
    node = node_from_raw(fail.ctx, node_id, raw) if raw != ABSENT_NODE else None
    expected = fail.items[0].expected if fail.items else None
    found = f"version {node.version}" if node else "no node"
    return errors.NodeConflict(
        f"write to node {node_id!r} lost: expected version {expected}, found {found}",
        node=node,
        expected=expected,
        **fail.ctx.err(key=node_id),
    )


def _duplicate_fact(fail: Failure, f: Fields) -> Exception:
    other = f.string()
    return errors.NodeConflict(
        f"node {other!r} already holds this fact (kind, context, content)",
        node=None,
        **fail.ctx.err(key=other),
    )


def _missing_node(fail: Failure, f: Fields) -> Exception:
    node_id = f.string()
    return errors.NodeNotFound(
        f"node {node_id!r} does not exist in graph {fail.ctx.namespace!r} (or expired)",
        node_id=node_id,
        **fail.ctx.err(key=node_id),
    )


def _bad_kind(fail: Failure, f: Fields) -> Exception:
    kind = f.string()
    return errors.InvalidInput(
        f"link kind {kind!r} is not one graph {fail.ctx.namespace!r} declares",
        field="kind",
        value=kind,
        **fail.ctx.err(key=fail.key),
    )


def _too_many(fail: Failure, f: Fields) -> Exception:
    what, limit = f.string(), f.number()
    return errors.QuotaExceeded(
        f"{what} is limited to {limit} in graph {fail.ctx.namespace!r}",
        limit_kind=what,
        limit=limit,
        current=limit,
        requested=limit + 1,
        **fail.ctx.err(key=fail.key),
    )


AGENT = Replies[Failure](
    "agent",
    outcomes=frozenset({b"ok", b"dup"}),
    errors={**COMMON_ERRORS, b"nosession": _session_not_open, b"too_many": _too_many_strategies},
)


ABSENT_NODE = b""
GRAPH = Replies[Failure](
    "graph",
    outcomes=frozenset({b"ok", b"dup"}),
    errors={
        **COMMON_ERRORS,
        b"conflict": _node_conflict,
        b"duplicate": _duplicate_fact,
        b"missing": _missing_node,
        b"bad_kind": _bad_kind,
        b"too_many": _too_many,
    },
)


# --------------------------------------------------------------------- inbox script
_INBOX_DENIED_ACTION = {"ack": "inbox_ack", "delete": "inbox_delete"}  # else inbox_read


def _inbox_denied(fail: InboxFailure, f: Fields) -> Exception:
    what = _INBOX_DENIED_ACTION.get(fail.action, "inbox_read")
    return errors.PermissionDenied(
        f"agent {fail.ctx.agent!r} may not {what.split('_')[1]} the inbox of "
        f"{fail.owner!r}: only its owner may",
        action=what,
        required="owner",
        granted=f.string(),
        agent=fail.ctx.agent,
    )


def _inbox_full(fail: InboxFailure, f: Fields) -> Exception:
    length, limit = f.number(), fail.ctx.settings.inbox_maxlen
    return errors.QuotaExceeded(
        f"the inbox of {fail.owner!r} holds {length} unacknowledged messages, its limit",
        limit_kind="inbox_maxlen",
        limit=limit,
        current=length,
        requested=length + 1,
        agent=fail.ctx.agent,
    )


INBOX = Replies[InboxFailure](
    "inbox",
    outcomes=frozenset({b"ok", b"dup", b"none"}),
    errors={b"denied": _inbox_denied, b"full": _inbox_full},
)

# A send into the sender's lane of another agent's inbox (lua/lane.lua, authenticated mode).
LANE = Replies[InboxFailure](
    "lane",
    outcomes=frozenset({b"ok", b"dup"}),
    errors={b"denied": _inbox_denied, b"full": _inbox_full},
)


def corrupt_inbox(ctx: InboxContext, owner: str, problem: str, *, ops: bool = False) -> Exception:
    """Inbox data read back from Redis that does not parse: an error naming the inbox key
    it came from (the stream, or the op records)."""
    keys = InboxKeys.of(ctx.settings.key_prefix, owner)
    key = keys.ops if ops else keys.stream
    return corrupt(key, problem)


# ------------------------------------------------------------------- script errors
# corrupt() in lua/_lib.lua: "SMCORRUPT <position in KEYS> <problem>". Redis appends
# " script: <sha>, on @user_script:<line>." and fakeredis wraps it in its own text.
# An FCALL's says " script: <function>, on @user_function:<line>." (scripts.py may have
# added " (<file>:<line>)" after the line).
_CORRUPT = re.compile(
    r"SMCORRUPT (\d+) (.*?)(?: script: \S+, on @user_\w+:\d+(?: \([^)]*\))?\.|\n|$)"
)
_NAMESPACE_TAG = re.compile(r"\{([^@}][^}]*)\}")


def _namespace_of(key: str | None) -> str | None:
    m = _NAMESPACE_TAG.search(key or "")
    return m.group(1) if m else None


def script_error(call: ScriptCall | Command, message: str) -> errors.SwarmMemoryError | None:
    """The error for a Redis error reply that means corrupt data, else None: a script's
    ``corrupt()`` names the key by its position in the call's keys; a WRONGTYPE from a
    single-key command names that key (from a script it can name none: scripts read
    keys with ``read_call`` and check the types of the keys they write, so one left is a
    script that forgot a key; nothing was written either way, writes come last)."""
    m = _CORRUPT.search(message)
    if m and isinstance(call, ScriptCall):
        at = int(m.group(1))
        key = call.keys[at - 1] if 1 <= at <= len(call.keys) else None
        return corrupt(key, m.group(2).strip(), namespace=_namespace_of(key))
    if message.startswith("WRONGTYPE"):
        if isinstance(call, Command):
            key = str(call.args[1]) if len(call.args) > 1 else None
        else:
            key = None
        first = call.keys[0] if isinstance(call, ScriptCall) and call.keys else key
        return corrupt(key, "a key holds the wrong type", namespace=_namespace_of(first))
    return None


REPLIES: dict[str, Replies[Any]] = {
    r.script: r
    for r in (
        *(WRITE, PUT, READ, GET, NS, PURGE, SWEEP, LRU, REAP, EVENTS, LOCK, ACQUIRE, RELEASE),
        PRESENCE,
        *(INBOX, LANE, AGENT, GRAPH),
    )
}

"""Frozen data returned by the public API, and the enumerations it accepts (checked by
``swarm_memory._ops.args``: ``level_arg``, ``strategy_arg``, ``over_quota_arg``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

PermissionLevel = Literal["none", "read", "write", "admin"]
Strategy = Literal["latest-wins", "first-wins", "version", "merge", "custom"]
OverQuota = Literal["reject", "evict-oldest"]

LEVELS: tuple[PermissionLevel, ...] = ("none", "read", "write", "admin")
STRATEGIES: tuple[Strategy, ...] = ("latest-wins", "first-wins", "version", "merge", "custom")
OVER_QUOTA: tuple[OverQuota, ...] = ("reject", "evict-oldest")


def level_rank(level: str) -> int:
    return LEVELS.index(level)


# Server times (ms) as datetimes, the last few hundred kept: an entry's times repeat
# (a hot key read again, an update keeping its creation time), and a conversion costs
# ~0.22 µs against ~0.04 µs for a hit. The same value either way (datetimes are
# immutable); dict reads and writes are atomic under the GIL, and a clear racing an
# insert only costs a later miss.
_MS_CACHE: dict[int, datetime] = {}
_MS_CACHE_MAX = 512
_from_timestamp = datetime.fromtimestamp  # tz passed positionally: ~0.12 µs less


def ms_to_datetime(ms: int) -> datetime:
    d = _MS_CACHE.get(ms)
    if d is None:
        d = _from_timestamp(ms / 1000, UTC)
        if len(_MS_CACHE) >= _MS_CACHE_MAX:
            _MS_CACHE.clear()
        _MS_CACHE[ms] = d
    return d


@dataclass(frozen=True, slots=True)
class Entry:
    """One key's state. Times come from the Redis server clock (UTC)."""

    key: str
    value: Any
    version: int
    create_revision: int
    mod_revision: int
    created_at: datetime
    updated_at: datetime
    updated_by: str
    expires_at: datetime | None
    size: int  # encoded bytes stored in Redis (after compression)


# Entry(...) sets each field through object.__setattr__ (a frozen dataclass's __init__):
# ~1.1 µs, where every get and write builds one Entry per key. new_entry sets the slots
# through their descriptors: the same object in ~0.55 µs (timeit, this VM).
# tests/unit/test_api.py checks that it sets every field, in Entry's order.
_object_new = object.__new__
_set_key = Entry.__dict__["key"].__set__
_set_value = Entry.__dict__["value"].__set__
_set_version = Entry.__dict__["version"].__set__
_set_create_revision = Entry.__dict__["create_revision"].__set__
_set_mod_revision = Entry.__dict__["mod_revision"].__set__
_set_created_at = Entry.__dict__["created_at"].__set__
_set_updated_at = Entry.__dict__["updated_at"].__set__
_set_updated_by = Entry.__dict__["updated_by"].__set__
_set_expires_at = Entry.__dict__["expires_at"].__set__
_set_size = Entry.__dict__["size"].__set__


def new_entry(  # noqa: PLR0917 - Entry's fields in order, like Entry(...)
    key: str,
    value: Any,
    version: int,
    create_revision: int,
    mod_revision: int,
    created_at: datetime,
    updated_at: datetime,
    updated_by: str,
    expires_at: datetime | None,
    size: int,
) -> Entry:
    """``Entry(...)`` with the same arguments, built faster (see above)."""
    e: Entry = _object_new(Entry)
    _set_key(e, key)
    _set_value(e, value)
    _set_version(e, version)
    _set_create_revision(e, create_revision)
    _set_mod_revision(e, mod_revision)
    _set_created_at(e, created_at)
    _set_updated_at(e, updated_at)
    _set_updated_by(e, updated_by)
    _set_expires_at(e, expires_at)
    _set_size(e, size)
    return e


@dataclass(frozen=True, slots=True)
class NamespaceInfo:
    name: str
    default_permission: PermissionLevel
    permissions: dict[str, PermissionLevel]
    strategy: Strategy
    ttl: float | None
    max_keys: int | None
    max_bytes: int | None
    history: int
    over_quota: OverQuota
    max_events: int | None  # events kept in the feed; None = the client's stream_maxlen
    revision: int
    keys: int
    bytes: int
    created_at: datetime
    created_by: str
    stats: dict[str, int] = field(default_factory=dict)
    require_lock: bool = False  # every write must be fenced with its key's lock token
    # Retention, stored with the namespace when it is created (from the creating client's
    # settings unless given) so that no writer's own settings change it; None: an older
    # namespace that does not store it (each writer's settings apply).
    audit_maxlen: int | None = None  # audit records kept
    dedupe_window: float | None = None  # seconds a write's op id is remembered for replays


@dataclass(frozen=True, slots=True)
class Event:
    """One change in a namespace's feed, in revision order.

    ``cursor``: pass it as ``since=`` to resume right after this event. ``value`` is set
    when ``has_value`` (small ``put`` values ride along, and every ``broadcast``);
    otherwise read it on demand with ``ns.get(key, version=event.version)``.
    """

    revision: int
    type: str
    key: str | None
    version: int | None
    agent: str
    time: datetime
    cursor: str
    seq: int = 0  # position within its revision (put_many / sweeps emit several)
    count: int = 1  # events in this revision
    has_value: bool = False
    value: Any = None


@dataclass(frozen=True, slots=True)
class AuditRecord:
    time: datetime
    agent: str
    action: str
    key: str | None
    op_id: str | None
    outcome: str  # "ok" | "denied"
    revision: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Entries read at or after ``revision``: watch with ``since=revision`` to follow on,
    skipping events whose version is not newer than the entry you hold."""

    revision: int
    entries: dict[str, Entry]


@dataclass(frozen=True, slots=True)
class SweepResult:
    expired: list[str]
    more: bool
    # Agents whose lease in the namespace ran out and whose ephemeral entries and locks
    # this sweep removed.
    lost_agents: list[str] = field(default_factory=list)


class FencingToken(int):
    """A lock acquisition's fencing token: an int, strictly increasing per lock (tokens
    come from one counter per namespace), that also names its lock (``.lock``), so that
    ``ns.put(key, value, fence=lock.token)`` knows which lock to check."""

    lock: str

    def __new__(cls, value: int, lock: str) -> FencingToken:
        token = super().__new__(cls, value)
        token.lock = lock
        return token

    def __repr__(self) -> str:
        return f"FencingToken({int(self)}, lock={self.lock!r})"

    def __reduce__(self) -> tuple[Any, ...]:  # pickles / crosses process boundaries intact
        return (FencingToken, (int(self), self.lock))


LockMode = Literal["exclusive", "shared"]


@dataclass(frozen=True, slots=True)
class LockHolder:
    agent: str
    token: int
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class LockInfo:
    """A held lock (``ns.locks()``). ``holder``/``token``/``expires_at`` describe the
    newest holder; ``holders`` lists all of them (several for a shared lock)."""

    name: str
    mode: LockMode
    holder: str
    token: int
    expires_at: datetime
    holders: tuple[LockHolder, ...]


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """An agent's presence (``mem.agents()``): its last heartbeat and when its presence
    expires, both on the Redis server clock."""

    agent: str
    last_seen: datetime
    expires_at: datetime
    alive: bool


@dataclass(frozen=True, slots=True)
class FailedCompare:
    """One compare of a transaction that did not hold: ``expected`` is the version it
    required (0 = absent); ``current`` the entry found (None = absent)."""

    key: str
    expected: int
    current: Entry | None


@dataclass(frozen=True, slots=True)
class TxResult:
    """A committed transaction: its revision and each written key's new entry (``None``
    for deletes), in the order the operations were added."""

    revision: int
    entries: dict[str, Entry | None]


@dataclass(frozen=True, slots=True)
class Message:
    """A direct message in an agent's inbox (``mem.send`` / ``Inbox.receive``).

    ``id`` is its stream id in the recipient's inbox; ``sent_at`` is the Redis server's
    clock. ``deliveries`` counts how often it was handed to a consumer (1 on a first
    delivery, more after a redelivery; 0 on the copy ``send`` returns).
    """

    id: str
    sender: str
    to: str
    body: Any
    sent_at: datetime
    reply_to: str | None = None
    correlation_id: str | None = None
    deliveries: int = 0


@dataclass(frozen=True, slots=True)
class InboxInfo:
    """One agent's inbox as ``mem.inboxes()`` / ``mem.inbox_info()`` see it (no messages).

    ``length``: messages it holds (unacknowledged: acknowledged ones are deleted), of
    which ``pending`` were delivered to a consumer and not acknowledged yet.
    ``last_active``: the last send, read or ack (server clock; None only for an inbox an
    earlier version made and nothing touched since). ``expires_at``: when it is deleted
    unless there is activity first (``Settings.inbox_retention``; None = kept forever).
    """

    owner: str
    length: int
    pending: int
    last_active: datetime | None
    expires_at: datetime | None

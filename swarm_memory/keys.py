"""The only place Redis key names are built (DESIGN.md decision 1).

Every key of a namespace carries the namespace as a hash tag, ``<prefix>:{<ns>}:...``,
so all of a namespace's keys live in one Cluster slot and every script touches one slot.
Names are checked here too, before anything reaches Redis: ``namespace_arg``,
``agent_arg`` and ``key_arg`` are the argument checks of ``swarm_memory._ops.args`` (which
re-exports them) that guard what goes into a key name and its hash tag.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from swarm_memory.errors import InvalidName

# Namespace and agent names: conservative ASCII so they are safe inside a hash tag, in
# metric-free logs and in ACL user names. No glob characters, no braces, no whitespace.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}")
MAX_NAME_LEN = 128
# The field of a namespace's ACL hash that is no agent (no name starts with "#"): it
# holds the namespace's default level while the namespace is live, for the read script
# (ACL_MARK in lua/_lib.lua). Readers of the hash's agents skip it.
ACL_MARK = "#"


def _name_problem(name: object) -> str | None:
    if not isinstance(name, str):
        return f"must be a str, not {type(name).__name__}"
    if not name:
        return "must not be empty"
    if len(name) > MAX_NAME_LEN:
        return f"must be at most {MAX_NAME_LEN} characters"
    if _NAME_RE.fullmatch(name) is None:
        return (
            "may hold only ASCII letters, digits and . _ : @ / + = - "
            "(starting with a letter or digit; no whitespace, glob characters or braces)"
        )
    return None


def _name_arg(name: object, field: str) -> str:
    problem = _name_problem(name)
    if problem:
        raise InvalidName(f"{field} name {name!r:.80} {problem}", field=field, value=name)
    assert isinstance(name, str)
    return name


def namespace_arg(name: object) -> str:
    """Return ``name`` if it is a valid namespace name, else raise :class:`InvalidName`."""
    return _name_arg(name, "namespace")


def agent_arg(name: object) -> str:
    """Return ``name`` if it is a valid agent name, else raise :class:`InvalidName`."""
    return _name_arg(name, "agent")


def key_arg(key: object, max_bytes: int) -> str:
    """Return ``key`` if it is a valid entry key, else raise :class:`InvalidName`.

    Keys are any Unicode text of 1..``max_bytes`` UTF-8 bytes without control characters
    (NUL included), surrogates, or leading/trailing whitespace.
    """
    # Fast path: printable ASCII has no control characters or surrogates, one byte per
    # character, and its only whitespace is " ".
    if (
        type(key) is str
        and key.isascii()
        and key.isprintable()
        and 0 < len(key) <= max_bytes
        and key[0] != " "
        and key[-1] != " "
    ):
        return key
    if not isinstance(key, str):
        raise InvalidName(f"key must be a str, not {type(key).__name__}", field="key", value=key)
    problem: str | None = None
    if not key or not key.strip():
        problem = "must not be empty or whitespace only"
    elif key != key.strip():
        problem = "must not start or end with whitespace"
    elif any(unicodedata.category(ch) in ("Cc", "Cs") for ch in key):
        problem = "must not contain control characters (NUL included) or lone surrogates"
    elif len(key.encode("utf-8")) > max_bytes:
        problem = f"must be at most {max_bytes} UTF-8 bytes"
    if problem:
        raise InvalidName(f"key {key!r:.80} {problem}", field="key", value=key[:80])
    return key


@dataclass(frozen=True, slots=True)
class NamespaceKeys:
    """Redis key names of one namespace. All share the ``{ns}`` hash tag."""

    base: str  # "<prefix>:{<ns>}:"

    @classmethod
    def of(cls, prefix: str, namespace: str) -> NamespaceKeys:
        return _namespace_keys(prefix, namespace)

    @property
    def meta(self) -> str:  # hash: config, revision, counters (n keys, b bytes)
        return self.base + "meta"

    @property
    def acl(self) -> str:  # hash: agent -> level
        return self.base + "acl"

    @property
    def stats(self) -> str:  # hash: operation counters kept by the scripts
        return self.base + "stats"

    @property
    def index(self) -> str:  # zset, all scores 0: live keys in lexicographic order
        return self.base + "idx"

    @property
    def lru(self) -> str:  # zset: key -> mod_revision (evict-oldest order)
        return self.base + "lru"

    @property
    def expiry(self) -> str:  # zset: key -> expires_at ms (sweeper work list)
        return self.base + "exp"

    @property
    def events(self) -> str:  # stream: change feed; ids are "<revision>-<n>"
        return self.base + "events"

    @property
    def audit(self) -> str:  # stream: who did what, capped
        return self.base + "audit"

    @property
    def ops(self) -> str:  # hash: op_id -> packed first outcome (dedupe)
        return self.base + "ops"

    @property
    def ops_time(self) -> str:  # zset: op_id -> recorded at ms (dedupe window purge)
        return self.base + "opst"

    @property
    def bell(self) -> str:  # shard channel (not a key): the pub/sub doorbell of the feed
        return self.base + "bell"

    @property
    def lease(self) -> str:  # zset: agent -> its lease expiry ms in this namespace
        return self.base + "lease"

    @property
    def eph(self) -> str:
        # zset, scores 0, what a lease ties: "<agent>\0k<key>" an entry, "<agent>\0l<lock>\0
        # <token>" a lock hold (since stop 39; "<agent>\0l<lock>" before: lua/_lib.lua lock_tie)
        return self.base + "eph"

    @property
    def locks(self) -> str:  # zset: lock name -> latest holder expiry ms (held or expired)
        return self.base + "locks"

    @property
    def lock_records(self) -> str:  # hash: lock name -> packed record (mode, holders, tokens)
        return self.base + "lockh"

    @property
    def lock_bell(self) -> str:  # shard channel (not a key): rung with a lock's name on release
        return self.base + "lbell"

    def entry(self, key: str) -> str:  # hash: value + metadata of one entry
        return self.base + "e:" + key

    def history(self, key: str) -> str:  # hash: past versions of one entry
        return self.base + "h:" + key

    # Agent memory (lua/agent.lua): outcome logs and sessions, named by validated names.
    def outcome_counters(self, log: str) -> str:  # hash: per-strategy counters of a log
        return self.base + "oc:" + log

    def outcome_durations(self, log: str) -> str:  # zset: per-strategy ordered durations
        return self.base + "ocd:" + log

    @property
    def outcome_logs(self) -> str:  # zset, scores 0: names of the outcome logs
        return self.base + "ocx"

    def session(self, session_id: str) -> str:  # hash: one session's state
        return self.base + "ses:" + session_id

    def session_log(self, session_id: str) -> str:  # stream: one session's decisions
        return self.base + "slog:" + session_id

    @property
    def sessions(self) -> str:  # zset, scores 0: session ids (paged by id)
        return self.base + "sesx"

    @property
    def session_expiry(self) -> str:  # zset: session id -> expiry ms (those with a TTL)
        return self.base + "sesexp"

    def fixed(self) -> list[str]:
        """The names every namespace script gets first, in the order the scripts expect.
        A fresh list (callers extend it) of names built once per namespace."""
        return list(_fixed_names(self.base))

    def read_fixed(self) -> list[str]:
        """The fixed names of the read script (lua/read.lua's header): the seven of the
        sixteen it uses. A fresh list (callers extend it)."""
        return list(_read_names(self.base))

    def get_fixed(self) -> list[str]:
        """The fixed names of the get script (lua/get.lua's header): the three of the
        sixteen its common path uses (acl exp lease; the rest of a get is read.lua's). A
        fresh list."""
        return list(_get_names(self.base))

    def write_fixed(self) -> list[str]:
        """The fixed names of the write script (lua/write.lua's header): the fourteen of
        the sixteen it uses (not the lock index and the lock doorbell, which only the lock
        scripts touch). A fresh list (callers extend it)."""
        return list(_write_names(self.base))

    def put_fixed(self) -> list[str]:
        """The fixed names of a single put (lua/put.lua's header): meta acl stats idx exp
        events audit ops opst bell lease. A fresh list (callers extend it)."""
        return list(_put_names(self.base))

    def acquire_fixed(self) -> list[str]:
        """The fixed names of a lock's acquire (lua/acquire.lua's header): meta acl stats
        audit lease eph locks lockh. A fresh list."""
        return list(_acquire_names(self.base))

    def release_fixed(self) -> list[str]:
        """The fixed names of a lock's release (lua/release.lua's header): meta acl stats
        audit ops opst eph locks lockh lbell. A fresh list."""
        return list(_release_names(self.base))

    def lock_fixed(self) -> list[str]:
        """The fixed names of the lock script (lua/lock.lua's header): the thirteen of the
        sixteen it uses (not the key, eviction-order and expiry indexes; each name a call
        passes costs the server ~1.2k instructions). A fresh list."""
        return list(_lock_names(self.base))

    def _build_fixed(self) -> tuple[str, ...]:
        return (
            self.meta,
            self.acl,
            self.stats,
            self.index,
            self.lru,
            self.expiry,
            self.events,
            self.audit,
            self.ops,
            self.ops_time,
            self.bell,
            self.lease,
            self.eph,
            self.locks,
            self.lock_records,
            self.lock_bell,
        )


@dataclass(frozen=True, slots=True)
class GraphKeys:
    """The memory graph of one namespace (lua/graph.lua): fixed names under the
    namespace's hash tag, so every graph call touches the namespace's one slot and no
    key is ever named by a node, agent or tag (those are members and fields)."""

    base: str  # "<prefix>:{<ns>}:g:"

    @classmethod
    def of(cls, prefix: str, namespace: str) -> GraphKeys:
        return cls(NamespaceKeys.of(prefix, namespace).base + "g:")

    def fixed(self) -> list[str]:
        """gmeta nodes facts gix conf gexp adj weights bundles, in the script's order."""
        b = self.base
        return [b + n for n in ("meta", "n", "f", "ix", "c", "x", "adj", "w", "b")]


# Every call of every flow needs its namespace's names: build them once per namespace
# (bounded, so a process touching many namespaces does not grow without limit).
@lru_cache(maxsize=4096)
def _namespace_keys(prefix: str, namespace: str) -> NamespaceKeys:
    return NamespaceKeys(f"{prefix}:{{{namespace}}}:")


# Keyed by the base name (one str hash) rather than by the keys object (its dataclass
# __hash__ is a Python call).
@lru_cache(maxsize=4096)
def _fixed_names(base: str) -> tuple[str, ...]:
    return NamespaceKeys(base)._build_fixed()


@lru_cache(maxsize=4096)
def _read_names(base: str) -> tuple[str, ...]:
    keys = NamespaceKeys(base)
    return (keys.meta, keys.acl, keys.stats, keys.index, keys.expiry, keys.audit, keys.lease)


@lru_cache(maxsize=4096)
def _get_names(base: str) -> tuple[str, ...]:
    keys = NamespaceKeys(base)
    return (keys.acl, keys.expiry, keys.lease)


@lru_cache(maxsize=4096)
def _write_names(base: str) -> tuple[str, ...]:
    full = _fixed_names(base)
    return full[:13] + full[14:15]  # meta .. eph, lockh (no locks, no lbell)


@lru_cache(maxsize=4096)
def _put_names(base: str) -> tuple[str, ...]:
    full = _fixed_names(base)
    return full[:4] + full[5:12]  # meta acl stats idx, exp .. lease (no lru)


@lru_cache(maxsize=4096)
def _acquire_names(base: str) -> tuple[str, ...]:
    k = NamespaceKeys(base)
    return (k.meta, k.acl, k.stats, k.audit, k.lease, k.eph, k.locks, k.lock_records)


@lru_cache(maxsize=4096)
def _release_names(base: str) -> tuple[str, ...]:
    k = NamespaceKeys(base)
    return (
        *(k.meta, k.acl, k.stats, k.audit, k.ops, k.ops_time, k.eph, k.locks, k.lock_records),
        k.lock_bell,
    )


@lru_cache(maxsize=4096)
def _lock_names(base: str) -> tuple[str, ...]:
    full = _fixed_names(base)
    return full[:3] + full[6:]  # meta acl stats, then events .. lbell


@dataclass(frozen=True, slots=True)
class InboxKeys:
    """Redis key names of one agent's inbox, under its own hash tag ``{@inbox:<agent>}``.

    A namespace name cannot start with ``@``, so an inbox never shares a tag (or a key)
    with a namespace; every inbox script call touches this one slot.
    """

    base: str  # "<prefix>:{@inbox:<agent>}:"

    @classmethod
    def of(cls, prefix: str, agent: str) -> InboxKeys:
        return cls(f"{prefix}:{{@inbox:{agent}}}:")

    @property
    def stream(self) -> str:  # stream: the messages; one consumer group reads it
        return self.base + "stream"

    @property
    def ops(self) -> str:  # hash: "<sender>|<op_id>" -> packed first outcome (dedupe)
        return self.base + "ops"

    @property
    def ops_time(self) -> str:  # zset: "<sender>|<op_id>" -> recorded at ms (window purge)
        return self.base + "opst"

    @property
    def bell(self) -> str:  # shard channel (not a key): rung on every send
        return self.base + "bell"

    @property
    def meta(self) -> str:  # hash: ct (created ms), at (last activity ms)
        return self.base + "meta"

    @property
    def senders(self) -> str:  # set: agents whose lane here may hold messages (a hint)
        return self.base + "senders"

    # Lanes (authenticated mode, lua/lane.lua): what another agent sends to this inbox,
    # in keys named after the sender, which only the sender's ACL user and the owner's may
    # touch (``acl.plan``: ``lane:?:<sender>``); the owner's reads move lane messages into
    # the stream, "from" being the lane's sender.
    def lane(self, sender: str) -> str:  # stream: the sender's undelivered messages
        return self.base + "lane:s:" + sender

    def lane_keys(self, sender: str) -> list[str]:
        """The lane script's keys: the lane, its op records (hash, zset), the senders."""
        return [
            self.lane(sender),
            self.base + "lane:o:" + sender,
            self.base + "lane:t:" + sender,
            self.senders,
        ]

    def fixed(self) -> list[str]:
        """The names the inbox script gets, in the order it expects."""
        return [self.stream, self.ops, self.ops_time, self.bell, self.meta, self.senders]

    def owned(self) -> list[str]:
        """Every key of the inbox (what deleting or expiring it removes)."""
        return [self.stream, self.ops, self.ops_time, self.meta]


@dataclass(frozen=True, slots=True)
class PresenceKeys:
    """Agent presence (heartbeats), outside every namespace under its own hash tag
    ``{@presence}``: both keys share one slot, so one script updates them atomically."""

    base: str  # "<prefix>:{@presence}:"

    @classmethod
    def of(cls, prefix: str) -> PresenceKeys:
        return cls(f"{prefix}:{{@presence}}:")

    @property
    def expiry(self) -> str:  # zset: agent -> presence expires_at ms
        return self.base + "exp"

    @property
    def seen(self) -> str:  # hash: agent -> last heartbeat ms
        return self.base + "seen"

    def fixed(self) -> list[str]:
        return [self.expiry, self.seen]


def inbox_index_key(prefix: str) -> str:
    """Sorted set of agents that have an inbox, all scores 0 (paged by name). Outside
    every inbox slot: only single-key commands touch it, never a script (decision 1)."""
    return f"{prefix}:inboxes"


def registry_key(prefix: str) -> str:
    """Sorted set of namespace names. Outside every namespace slot: only single-key
    commands touch it, never a script (decision 1)."""
    return f"{prefix}:registry"


def identity_key(prefix: str, agent: str) -> str:
    """The identity key of ``agent`` (authenticated mode, DESIGN.md decision 8): its ACL
    user, and no other agent's, may read it. Never created or accessed: every script
    call carries it as its last ARGV (not a KEY: it lives in no namespace's slot), and
    the script asks ``redis.acl_check_cmd("GET", key)`` whether the calling user passes."""
    return f"{prefix}:@id:{agent}"

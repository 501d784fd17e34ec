"""Every exception swarm_memory raises.

The tree (catch the base, or any branch)::

    SwarmMemoryError
    ├── InvalidInput                     bad argument, raised before anything reaches Redis
    │   ├── InvalidName                  namespace / key / agent name syntax
    │   ├── InvalidValue                 not encodable, NaN/inf, too deep, too large
    │   ├── InvalidVersion               bool, non-int, negative or >= 2**53 versions
    │   ├── InvalidTTL                   <= 0, NaN, or above the configured maximum
    │   ├── InvalidOption                unknown strategy / permission / policy / codec
    │   └── InvalidURL                   a Redis URL redis-py cannot use (scheme, port, query)
    ├── NamespaceError
    │   ├── NamespaceNotFound
    │   └── NamespaceExists
    │       └── NamespaceConfigMismatch  exist_ok=True, but stored settings differ (.differences)
    ├── PermissionDenied                 .agent .namespace .action .required .granted
    │   ├── LastAdminError               refusing to remove the last admin
    │   └── IdentityMismatch             the connection's Redis user is not the agent named
    ├── ConflictError                    .current (Entry | None): the state that won
    │   ├── VersionRequired              strategy "version"/"custom" needs expected_version
    │   │                                (.strategy)
    │   ├── RetryLimitExceeded           a CAS loop (update / custom) gave up
    │   ├── TransactionConflict          a transaction's compares failed (.failed: every one)
    │   └── NodeConflict                 a graph node update lost (.node: the node as it is)
    ├── LockError                        .namespace .key (the lock name) .agent
    │   ├── LockTimeout                  acquire gave up after ``wait`` (.holder .expires_at)
    │   ├── LockNotOwned                 release / extend of a lease lost or never held
    │   └── FencingError                 the store refused a fenced write (.lock .token .reason)
    ├── QuotaExceeded                    .limit_kind .limit .current .requested
    ├── NodeNotFound                     a graph call names a node that is absent (.node_id)
    ├── NotAnInteger                     incr on a non-integer or out-of-range value
    ├── EventsTrimmed                    watch cursor older than the feed keeps (.requested .oldest)
    ├── HistoryRewound                   the feed lost revisions under a watcher (.requested .head)
    ├── VersionNotFound                  get(version=) / rollback to a version not kept (.version)
    ├── ResolverError                    a custom-strategy resolver raised or returned non-JSON
    ├── OpIdReused                       an op id replayed with a different request (.op_id)
    ├── RequestTimeout                   request() got no reply in time (.correlation_id)
    ├── SessionNotOpen                   a session absent, expired, closed or already open
    │                                    (.session .state)
    ├── ServerError                      Redis refused the command (OOM, READONLY, script error)
    │   ├── UnsafeEvictionPolicy         the server may evict any key (allkeys-*): writes refused
    │   └── CorruptData                  a stored record, stream entry or key type does not
    │                                    parse (.key: the Redis key; .problem)
    ├── NotReplicated                    applied on the primary, but WAIT saw too few replicas
    ├── ClusterModeMismatch              cluster setting vs server mode (.configured_cluster
    │                                    .server_cluster)
    └── TransportError                   Redis unreachable after the retry policy
        └── OutcomeUnknown               a write may or may not have been applied (.op_id)

Every error carries structured attributes (``namespace``, ``key``, ``agent`` where they
apply), so the CLI and metrics never parse messages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from swarm_memory.models import Entry, Message


class SwarmMemoryError(Exception):
    """Base of every swarm_memory error."""

    def __init__(
        self,
        message: str,
        *,
        namespace: str | None = None,
        key: str | None = None,
        agent: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.namespace = namespace
        self.key = key
        self.agent = agent


class InvalidInput(SwarmMemoryError, ValueError):
    """An argument is malformed; nothing was sent to Redis.

    ``field`` names the offending argument, ``value`` holds a short repr of it.
    """

    def __init__(self, message: str, *, field: str, value: Any = None, **ctx: Any) -> None:
        super().__init__(message, **ctx)
        self.field = field
        self.value = value


class InvalidName(InvalidInput):
    """A namespace, key or agent name breaks the naming rules."""


class InvalidValue(InvalidInput):
    """A value cannot be encoded, is too deep, or is too large."""


class InvalidVersion(InvalidInput):
    """A version is not a plain non-negative int below 2**53."""


class InvalidTTL(InvalidInput):
    """A TTL is not positive and finite, or is above the configured maximum."""


class InvalidOption(InvalidInput):
    """An enumerated option (strategy, permission level, policy, codec) is unknown."""


class InvalidURL(InvalidInput):
    """A Redis URL that redis-py cannot use: unknown scheme, bad port, unknown query
    parameter. ``value`` is the URL with its password masked; nothing was sent."""


class NamespaceError(SwarmMemoryError):
    """Namespace lifecycle problems."""


class NamespaceNotFound(NamespaceError):
    """The namespace does not exist (or is being deleted)."""


class NamespaceExists(NamespaceError):
    """``create_namespace`` without ``exist_ok`` found the namespace already there."""


class NamespaceConfigMismatch(NamespaceExists):
    """``create_namespace(..., exist_ok=True)`` found the namespace with other settings.

    Nothing was changed: settings change only through ``update_namespace`` and
    ``grant``/``revoke``. ``differences`` maps each differing field (``"history"``,
    ``"permissions['auditor']"``, ...) to ``(stored, requested)``.
    """

    def __init__(
        self, message: str, *, differences: dict[str, tuple[Any, Any]], **ctx: Any
    ) -> None:
        super().__init__(message, **ctx)
        self.differences = differences


class PermissionDenied(SwarmMemoryError):
    """The agent's level in the namespace is below what the action needs.

    Checked inside the Lua scripts: ``required`` and ``granted`` are level names
    (``none`` < ``read`` < ``write`` < ``admin``).
    """

    def __init__(
        self,
        message: str,
        *,
        action: str,
        required: str,
        granted: str,
        namespace: str | None = None,
        key: str | None = None,
        agent: str | None = None,
    ) -> None:
        super().__init__(message, namespace=namespace, key=key, agent=agent)
        self.action = action
        self.required = required
        self.granted = granted


class LastAdminError(PermissionDenied):
    """Revoking or downgrading would leave the namespace without any admin."""


class IdentityMismatch(PermissionDenied):
    """Authenticated mode: the Redis ACL user of the connection is not the agent the call
    names (checked inside every script with ``redis.acl_check_cmd`` on the agent's identity
    key, and by ``as_agent`` on a client connected as an agent's user). ``required`` is
    ``"identity"``, ``granted`` is ``"none"``."""


class ConflictError(SwarmMemoryError):
    """A write lost: expected version mismatch, first-wins, or create on an existing key.

    ``current`` is the entry as it is now (``None`` when absent); ``expected`` is the
    version the caller gave (``None`` when it gave none).
    """

    def __init__(
        self,
        message: str,
        *,
        current: Entry | None,
        expected: int | None = None,
        namespace: str | None = None,
        key: str | None = None,
        agent: str | None = None,
    ) -> None:
        super().__init__(message, namespace=namespace, key=key, agent=agent)
        self.current = current
        self.expected = expected


class VersionRequired(ConflictError):
    """The namespace strategy (``version`` or ``custom``) demands ``expected_version``.

    ``strategy`` is the namespace's strategy (``"version"`` or ``"custom"``)."""

    def __init__(self, message: str, *, strategy: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.strategy = strategy


class RetryLimitExceeded(ConflictError):
    """A client-side CAS loop (``update``, ``custom`` strategy) hit its retry bound."""

    def __init__(self, message: str, *, attempts: int, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.attempts = attempts


class TransactionConflict(ConflictError):
    """Some compares of a transaction failed; nothing was written.

    ``failed`` lists every failed compare as :class:`~swarm_memory.models.FailedCompare`
    (key, expected version — 0 for "absent" — and the entry found); ``current`` is the
    first one's entry.
    """

    def __init__(self, message: str, *, failed: list[Any], **kw: Any) -> None:
        super().__init__(message, **kw)
        self.failed = failed


class NodeConflict(ConflictError):
    """A memory-graph write lost: ``expected_version`` did not match, or the new content
    is a fact another node already holds. ``node`` is the node that won (None when the
    node is gone); ``current`` is always None (it holds entries)."""

    def __init__(self, message: str, *, node: Any, **kw: Any) -> None:
        super().__init__(message, current=None, **kw)
        self.node = node


class NodeNotFound(SwarmMemoryError):
    """A memory-graph call names a node that does not exist (or expired) in this graph."""

    def __init__(self, message: str, *, node_id: str, **ctx: Any) -> None:
        super().__init__(message, **ctx)
        self.node_id = node_id


class LockError(SwarmMemoryError):
    """Lock and lease problems. ``key`` is the lock's name."""


class LockTimeout(LockError, TimeoutError):
    """``acquire`` waited ``wait`` seconds and the lock stayed held (``holder`` had it,
    until ``expires_at`` by its lease)."""

    def __init__(
        self, message: str, *, holder: str | None, expires_at: Any = None, **ctx: Any
    ) -> None:
        super().__init__(message, **ctx)
        self.holder = holder
        self.expires_at = expires_at


class LockNotOwned(LockError):
    """``release`` / ``extend`` by a caller whose lease is gone: it expired (and maybe
    another agent holds the lock now), was force-released, or was never acquired. Nothing
    of anyone else's was changed. ``holder`` is the current holder, if any."""

    def __init__(self, message: str, *, holder: str | None = None, **ctx: Any) -> None:
        super().__init__(message, **ctx)
        self.holder = holder


class FencingError(LockError):
    """The store refused a write fenced with ``token`` on ``lock``.

    ``reason``: ``"stale"`` (a newer token was issued: ``latest``), ``"not_held"`` (the
    token's lease expired or was released, or the token was never issued for this lock),
    ``"required"`` (the namespace has ``require_lock`` and the write carried no fence for
    its key), ``"wrong_lock"`` (with ``require_lock``, the fence names another key's lock).
    Nothing was written.
    """

    def __init__(
        self, message: str, *, lock: str, token: int, latest: int, reason: str, **ctx: Any
    ) -> None:
        super().__init__(message, **ctx)
        self.lock = lock
        self.token = token
        self.latest = latest
        self.reason = reason


class QuotaExceeded(SwarmMemoryError):
    """A write would take the namespace over ``max_keys`` or ``max_bytes``, or a send
    would take an inbox over ``inbox_maxlen`` unacknowledged messages.

    ``limit_kind`` is ``"max_keys"``, ``"max_bytes"`` or ``"inbox_maxlen"``.
    """

    def __init__(
        self,
        message: str,
        *,
        limit_kind: str,
        limit: int,
        current: int,
        requested: int,
        namespace: str | None = None,
        key: str | None = None,
        agent: str | None = None,
    ) -> None:
        super().__init__(message, namespace=namespace, key=key, agent=agent)
        self.limit_kind = limit_kind
        self.limit = limit
        self.current = current
        self.requested = requested


class NotAnInteger(SwarmMemoryError):
    """``incr`` found a stored value that is not an integer in the exact range (|n| < 2**53)."""


class EventsTrimmed(SwarmMemoryError):
    """A watcher asked for events older than the namespace's feed still keeps.

    ``requested`` and ``oldest`` are revisions. Re-read the state (``ns.snapshot()``)
    and watch from its revision: never a silent gap.
    """

    def __init__(self, message: str, *, requested: int, oldest: int, **ctx: Any) -> None:
        super().__init__(message, **ctx)
        self.requested = requested
        self.oldest = oldest


class HistoryRewound(SwarmMemoryError):
    """The namespace's feed no longer holds the history a watcher read: a crash or a
    failover lost acknowledged revisions, and their numbers may be reused by new writes
    (DESIGN.md decision 3). Never delivered silently: re-read the state (``snapshot``)
    and watch from its revision. ``requested`` is the revision the watcher would read
    next; ``head`` the namespace's revision when this was seen.
    """

    def __init__(self, message: str, *, requested: int, head: int, **ctx: Any) -> None:
        super().__init__(message, **ctx)
        self.requested = requested
        self.head = head


class VersionNotFound(SwarmMemoryError):
    """The requested version is neither current nor kept in the entry's history."""

    def __init__(self, message: str, *, version: int, **ctx: Any) -> None:
        super().__init__(message, **ctx)
        self.version = version


class OpIdReused(SwarmMemoryError):
    """An op id was replayed with a request that differs from its first use.

    Nothing was applied; the first request's outcome stands. Use a fresh op id per request.
    """

    def __init__(self, message: str, *, op_id: str, **ctx: Any) -> None:
        super().__init__(message, **ctx)
        self.op_id = op_id


class RequestTimeout(SwarmMemoryError, TimeoutError):
    """``request()`` sent its message but no reply with its ``correlation_id`` arrived
    within the timeout. ``request`` is the message that was sent (it stays delivered); a
    late reply lands in the inbox like any other message.
    """

    def __init__(
        self, message: str, *, correlation_id: str, request: Message | None = None, **ctx: Any
    ) -> None:
        super().__init__(message, **ctx)
        self.correlation_id = correlation_id
        self.request = request


class SessionNotOpen(SwarmMemoryError):
    """A decision or close on a session that is not open (``state``: "absent" — never
    opened or expired —, "closed"), or opening one that is ("exists")."""

    def __init__(self, message: str, *, session: str, state: str, **ctx: Any) -> None:
        super().__init__(message, **ctx)
        self.session = session
        self.state = state


class ServerError(SwarmMemoryError):
    """Redis answered with an error (out of memory, read-only replica, script error), or
    with data that does not parse (:class:`CorruptData`).

    Nothing was applied: scripts validate before they write.
    """


class CorruptData(ServerError):
    """Data the library reads back from Redis does not have the shape it wrote: a record
    that does not parse, a number that is not one, a value its format cannot decode, or
    a key holding another type than the library keeps there (something other than this
    library wrote it).

    ``key`` is the full Redis key (``sm:{team}:e:plan``, ``sm:{team}:lockh``), not an
    entry's name; ``problem`` says what is wrong. Scripts check what they read, and the
    type of every key they will write, before their first write: a call that raises this
    changed nothing. Repair or delete the key; other keys and namespaces are unaffected.
    """

    def __init__(self, message: str, *, key: str | None, problem: str, **ctx: Any) -> None:
        super().__init__(message, key=key, **ctx)
        self.problem = problem


class UnsafeEvictionPolicy(ServerError):
    """The server's ``maxmemory-policy`` may evict any key (``allkeys-*``), namespace
    metadata and indexes included, which loses acknowledged writes and lets counters
    repeat. Writes are refused before the first one is sent (checked once per client);
    set ``Settings.allow_eviction`` to write anyway. ``policy`` is the server's setting.
    """

    def __init__(self, message: str, *, policy: str, **ctx: Any) -> None:
        super().__init__(message, **ctx)
        self.policy = policy


class NotReplicated(SwarmMemoryError):
    """With ``wait_replicas`` set: the write WAS applied on the primary, but fewer than
    ``required`` replicas acknowledged it within ``wait_timeout`` (``acked`` did).

    It may be lost if the primary fails now. Replaying ``op_id`` is safe (it is deduped;
    for a data write whose op id the client made it reads ``<id>~<request digest>``, as
    :class:`OutcomeUnknown`'s does).
    """

    def __init__(self, message: str, *, op_id: str, required: int, acked: int, **ctx: Any) -> None:
        super().__init__(message, **ctx)
        self.op_id = op_id
        self.required = required
        self.acked = acked


class ClusterModeMismatch(SwarmMemoryError):
    """The ``cluster`` setting does not match the server: a Cluster client against a
    standalone server (``configured_cluster=True``, ``server_cluster=False``) or the
    reverse. Fix the setting (``SWARM_MEMORY_CLUSTER``); nothing was sent but a handshake.
    """

    def __init__(
        self, message: str, *, configured_cluster: bool, server_cluster: bool, **ctx: Any
    ) -> None:
        super().__init__(message, **ctx)
        self.configured_cluster = configured_cluster
        self.server_cluster = server_cluster


class ResolverError(SwarmMemoryError):
    """A ``custom``-strategy resolver raised or returned non-JSON.

    The original exception is chained as ``__cause__``; nothing was written. (An
    ``update`` function's own exceptions propagate unchanged, and a non-JSON return from
    it is an :class:`InvalidValue` like any other bad value.)
    """


class TransportError(SwarmMemoryError):
    """Redis could not be reached (after the retry policy) for a read or admin call."""


class OutcomeUnknown(TransportError):
    """A write was sent but its reply never arrived, and retries were exhausted.

    Retry the same call with ``op_id=err.op_id``: within the dedupe window the store
    returns the first outcome instead of applying the write twice. (For a data write
    whose op id the client made, ``op_id`` reads ``<id>~<request digest>``: pass it as
    it is; another request under it is :class:`OpIdReused`.)
    """

    def __init__(self, message: str, *, op_id: str, **ctx: Any) -> None:
        super().__init__(message, **ctx)
        self.op_id = op_id

"""AsyncSwarmMemory: the same names and signatures as ``client.py``, awaited.

Both shells hand the same I/O-free flows (``_ops``) to a driver; only the driver differs.
``tests/unit/test_api.py`` checks that the two stay identical in names and
parameters.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import redis.asyncio

from swarm_memory import _coord, _inbox, _ops
from swarm_memory._drive import AsyncDriver
from swarm_memory._ops import Context, Resolver
from swarm_memory._shell import HandleBase, MemoryBase, make_client
from swarm_memory.codec import Codec
from swarm_memory.errors import InvalidInput
from swarm_memory.events import (
    AsyncHub,
    AsyncSubscription,
    AsyncWatch,
    OnError,
    pattern_arg,
    types_arg,
)
from swarm_memory.inbox import AsyncInbox
from swarm_memory.lock import AsyncLease, AsyncLock, AsyncTransaction, beat_flow, lease_ttl_ms
from swarm_memory.metrics import ClientMetrics
from swarm_memory.models import (
    AgentInfo,
    AuditRecord,
    Entry,
    Event,
    InboxInfo,
    LockInfo,
    LockMode,
    Message,
    NamespaceInfo,
    OverQuota,
    PermissionLevel,
    Snapshot,
    Strategy,
    SweepResult,
    ms_to_datetime,
)
from swarm_memory.settings import Settings


class AsyncSwarmMemory(MemoryBase[AsyncDriver]):
    """Shared memory for one agent identity, over one Redis (standalone or Cluster).

    Build with :meth:`from_url` or :meth:`from_client`; :meth:`as_agent` gives another
    identity over the same connection pool.
    """

    def _new_driver(self, client: Any, settings: Settings) -> AsyncDriver:
        return AsyncDriver(client, settings)

    @classmethod
    def from_url(
        cls,
        url: str | None = None,
        *,
        agent: str,
        settings: Settings | None = None,
        codec: Codec | None = None,
        metrics: ClientMetrics | None = None,
    ) -> AsyncSwarmMemory:
        """Connect to ``url`` (or ``SWARM_MEMORY_REDIS_URL``).
        ``metrics``: opt-in client instrumentation (:class:`~swarm_memory.ClientMetrics`).

        Raises InvalidInput (InvalidURL for a URL redis-py cannot use); with
        ``settings.cluster``, ClusterModeMismatch or TransportError when the seed is not
        a Cluster node or cannot be reached (on the first command: redis-py's async
        Cluster client connects then)."""
        settings = settings or Settings()
        client = make_client(url, settings, is_async=True)
        return cls(
            client,
            agent=agent,
            settings=settings,
            codec=codec,
            metrics=metrics,
            _owns_client=True,
        )

    @classmethod
    def from_client(
        cls,
        client: redis.asyncio.Redis | redis.asyncio.RedisCluster,
        *,
        agent: str,
        settings: Settings | None = None,
        codec: Codec | None = None,
        metrics: ClientMetrics | None = None,
    ) -> AsyncSwarmMemory:
        """Use an existing redis-py client. Turn its own retries off for exactly-once
        retries (``retry=Retry(NoBackoff(), 0)`` with ``redis.asyncio.retry.Retry``); ours
        run on top of whatever it does."""
        return cls(client, agent=agent, settings=settings, codec=codec, metrics=metrics)

    def namespace(self, name: str, *, resolver: Resolver | None = None) -> AsyncNamespace:
        """A handle bound to (namespace, agent). ``resolver`` serves the custom strategy."""
        self._check_resolver(resolver)
        return AsyncNamespace(self, self._ctx(name, resolver))

    async def create_namespace(
        self,
        name: str,
        *,
        default_permission: PermissionLevel = "write",
        permissions: Mapping[str, PermissionLevel] | None = None,
        strategy: Strategy = "latest-wins",
        ttl: float | timedelta | None = None,
        max_keys: int | None = None,
        max_bytes: int | None = None,
        history: int = 0,
        over_quota: OverQuota = "reject",
        max_events: int | None = None,
        require_lock: bool = False,
        exist_ok: bool = False,
    ) -> NamespaceInfo:
        """Create a namespace; its creator is admin. Raises NamespaceExists, InvalidInput."""
        return await self._driver.run(
            _ops.create_namespace(
                self._ctx(name),
                default_permission=default_permission,
                permissions=permissions,
                strategy=strategy,
                ttl=ttl,
                max_keys=max_keys,
                max_bytes=max_bytes,
                history=history,
                over_quota=over_quota,
                max_events=max_events,
                require_lock=require_lock,
                exist_ok=exist_ok,
            )
        )

    async def list_namespaces(self) -> list[str]:
        """Namespaces this agent may read, sorted by name."""
        return await self._driver.run(_ops.list_namespaces(self._ctx, self.settings.key_prefix))

    async def namespace_info(self, name: str) -> NamespaceInfo:
        """Config, counters and permissions (read permission). Raises NamespaceNotFound."""
        return await self._driver.run(_ops.namespace_info(self._ctx(name)))

    async def update_namespace(self, name: str, **options: Any) -> NamespaceInfo:
        """Change config options (admin): default_permission, strategy, ttl, max_keys,
        max_bytes, history, over_quota, max_events."""
        return await self._driver.run(_ops.update_namespace(self._ctx(name), options))

    async def clear_namespace(self, name: str) -> int:
        """Delete every entry (admin); returns how many. Batched: see docs/guarantees.md."""
        return await self._driver.run(_ops.clear_namespace(self._ctx(name)))

    async def delete_namespace(self, name: str) -> None:
        """Delete the namespace and all its keys (admin)."""
        await self._driver.run(_ops.delete_namespace(self._ctx(name)))

    # ------------------------------------------------------------------ inbox
    async def send(
        self,
        to_agent: str,
        message: Any,
        *,
        reply_to: str | None = None,
        correlation_id: str | None = None,
        op_id: str | None = None,
    ) -> Message:
        """Append ``message`` (JSON, size-limited like values) to ``to_agent``'s inbox.
        Any agent may send to any inbox. A replayed ``op_id`` returns the first message
        instead of sending twice. Raises InvalidInput, QuotaExceeded (inbox full),
        OpIdReused, OutcomeUnknown."""
        return await self._driver.run(
            _inbox.send(
                self._inbox_ctx(),
                to_agent,
                message,
                reply_to=reply_to,
                correlation_id=correlation_id,
                op_id=op_id,
            )
        )

    async def inbox(
        self, *, consumer: str | None = None, idle: float = 30.0, batch: int = 10
    ) -> AsyncInbox:
        """This agent's own inbox, read as ``consumer`` (default: a name unique to this
        object and process; inboxes with one consumer name share its buffer). Messages
        left unacknowledged for ``idle`` seconds are delivered again. See :class:`AsyncInbox`."""
        state = self._inbox_state(consumer)
        inbox = AsyncInbox(self._driver.run, self._inbox_ctx(), state, idle=idle, batch=batch)
        await self._driver.run(_inbox.open_inbox(self._inbox_ctx(), state))
        return inbox

    async def request(
        self, to_agent: str, message: Any, timeout: float = 30.0, *, op_id: str | None = None
    ) -> Message:
        """Send and wait for the reply (``AsyncInbox.request`` on the default ``inbox()``:
        messages arriving meanwhile stay buffered for its ``receive``). Raises
        RequestTimeout."""
        state = self._inbox_state(None)
        inbox = AsyncInbox(self._driver.run, self._inbox_ctx(), state, idle=30.0, batch=10)
        return await inbox.request(to_agent, message, timeout, op_id=op_id)

    async def reply(self, to: Message, message: Any, *, op_id: str | None = None) -> Message:
        """Send ``message`` to ``to.reply_to`` with ``to``'s correlation id (its id if it
        has none). Raises InvalidInput if ``to`` asks for no reply."""
        return await self._driver.run(_inbox.reply(self._inbox_ctx(), to, message, op_id=op_id))

    async def inboxes(self) -> AsyncIterator[InboxInfo]:
        """Every inbox, by owner name, with its counters (no messages; anyone may list),
        fetched page by page from an index (never KEYS/SCAN). Expired inboxes are left
        out and unlisted as the pages are read."""
        after: str | None = None
        while True:
            infos, after = await self._driver.run(_inbox.inbox_page(self._inbox_ctx(), after))
            for info in infos:
                yield info
            if after is None:
                return

    async def inbox_info(self, owner: str | None = None) -> InboxInfo | None:
        """Counters of ``owner``'s inbox (default: this agent's); None if it has none.
        Raises InvalidName."""
        return await self._driver.run(_inbox.inbox_info(self._inbox_ctx(), owner))

    async def delete_inbox(self, owner: str | None = None) -> bool:
        """Delete ``owner``'s inbox (default: this agent's) with every message in it;
        True if it existed. Only the owner may: raises PermissionDenied
        (``action="inbox_delete"``), InvalidName."""
        flow = _inbox.delete_inbox(self._inbox_ctx(), owner, self._inbox_states.values())
        return await self._driver.run(flow)

    # ------------------------------------------------------------------ agents
    async def heartbeat(
        self, ttl: float | timedelta | None = None, *, namespaces: Iterable[str] | None = None
    ) -> datetime:
        """Beat once: this agent's presence (``agents()``) and its lease in every namespace
        where it holds ephemeral entries or lease-tied locks (plus ``namespaces``), for
        ``ttl`` seconds (default ``settings.lease_ttl``). Returns the new expiry."""
        ms = lease_ttl_ms(self, ttl, namespaces)
        return ms_to_datetime(await self._driver.run(beat_flow(self, ms)))

    async def lease(
        self, ttl: float | timedelta | None = None, *, namespaces: Iterable[str] | None = None
    ) -> AsyncLease:
        """Keep this agent alive with a background heartbeat every ttl/3 (see
        :meth:`heartbeat`). When its lease runs out — the process died or stalled — its
        ephemeral entries are deleted and its locks released, with events. ``stop()`` (or
        leaving the ``with`` block) ends the lease at once."""
        ms = lease_ttl_ms(self, ttl, namespaces)
        return await AsyncLease(self, ms).start()

    async def agents(self, *, alive: bool = True) -> list[AgentInfo]:
        """Agents that heartbeat, by name (only live ones unless ``alive=False``)."""
        return await self._driver.run(_coord.presence_list(self.settings.key_prefix, alive))

    def _event_hub(self) -> AsyncHub:
        d = self._driver
        if d.hub is None:
            d.hub = AsyncHub(
                d.run,
                d.client,
                self.settings.watch_poll,
                self.settings.watch_batch,
                metrics=d.metrics,
            )
        hub: AsyncHub = d.hub
        return hub

    async def close(self) -> None:
        """Stop watches and subscriptions of this client, and close the connection pool
        if this object created it (``from_url``)."""
        if self._driver.hub is not None:
            await self._driver.hub.close()
            self._driver.hub = None
        if self._owns_client:
            await self._driver.client.aclose()

    async def __aenter__(self) -> AsyncSwarmMemory:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncNamespace(HandleBase[AsyncSwarmMemory]):
    """Operations on one namespace as one agent. Every call is permission-checked in Redis."""

    def __init__(self, memory: AsyncSwarmMemory, ctx: Context) -> None:
        super().__init__(memory, ctx)
        self._run = memory._driver.run

    async def put(
        self,
        key: str,
        value: Any,
        *,
        expected_version: int | None = None,
        ttl: float | timedelta | None = None,
        op_id: str | None = None,
        fence: int | None = None,
        ephemeral: bool = False,
    ) -> Entry:
        """Write under the namespace strategy. ``fence=lock.token``: refused (FencingError)
        unless that lock's lease with that token is held; ``ephemeral``: the entry goes
        when this agent's lease here runs out. Raises ConflictError, QuotaExceeded,
        PermissionDenied, FencingError, InvalidInput, OutcomeUnknown."""
        return await self._run(
            _ops.put(
                self._ctx,
                key,
                value,
                expected_version=expected_version,
                ttl=ttl,
                op_id=op_id,
                fence=fence,
                ephemeral=ephemeral,
            )
        )

    async def create(
        self,
        key: str,
        value: Any,
        *,
        ttl: float | timedelta | None = None,
        op_id: str | None = None,
        fence: int | None = None,
        ephemeral: bool = False,
    ) -> Entry:
        """Write only if absent. Raises ConflictError(current=...) if the key exists."""
        return await self._run(
            _ops.create(
                self._ctx, key, value, ttl=ttl, op_id=op_id, fence=fence, ephemeral=ephemeral
            )
        )

    async def get(self, key: str, *, version: int | None = None) -> Entry | None:
        """The live entry, or a kept past ``version``; None if absent / not kept."""
        return await self._run(_ops.get(self._ctx, key, version=version))

    async def delete(
        self,
        key: str,
        *,
        expected_version: int | None = None,
        op_id: str | None = None,
        fence: int | None = None,
    ) -> bool:
        """True if an entry was deleted. Raises ConflictError on a version mismatch,
        FencingError if ``fence`` is not a held token."""
        return await self._run(
            _ops.delete(self._ctx, key, expected_version=expected_version, op_id=op_id, fence=fence)
        )

    async def exists(self, key: str) -> bool:
        return await self._run(_ops.exists(self._ctx, key))

    async def keys(self, pattern: str = "*") -> AsyncIterator[str]:
        """Live keys matching a glob, in byte order, fetched page by page."""
        after: str | None = None
        while True:
            names, after = await self._run(_ops.key_page(self._ctx, pattern, after))
            for name in names:
                yield name
            if after is None:
                return

    async def get_many(self, keys: Iterable[str]) -> dict[str, Entry | None]:
        """One round trip; a dict in the order given (duplicates collapsed)."""
        return await self._run(_ops.get_many(self._ctx, keys))

    async def put_many(
        self,
        values: Mapping[str, Any],
        *,
        expected_versions: Mapping[str, int | None] | None = None,
        ttl: float | timedelta | None = None,
        op_id: str | None = None,
        fence: int | None = None,
        fences: Mapping[str, int] | None = None,
        ephemeral: bool = False,
    ) -> dict[str, Entry]:
        """Write all keys atomically (one revision) or none. ``fence``: one lock token for
        every key; ``fences``: a token per key."""
        return await self._run(
            _ops.put_many(
                self._ctx,
                values,
                expected_versions=expected_versions,
                ttl=ttl,
                op_id=op_id,
                fence=fence,
                fences=fences,
                ephemeral=ephemeral,
            )
        )

    async def update(
        self,
        key: str,
        fn: Callable[[Any], Any],
        *,
        ttl: float | timedelta | None = None,
        op_id: str | None = None,
        fence: int | None = None,
    ) -> Entry:
        """Compare-and-set loop: ``fn(value or None)`` -> new value, retried on conflict
        up to ``settings.update_max_attempts``. Raises RetryLimitExceeded."""
        return await self._run(_ops.update(self._ctx, key, fn, ttl=ttl, op_id=op_id, fence=fence))

    async def incr(
        self,
        key: str,
        amount: int = 1,
        *,
        ttl: float | timedelta | None = None,
        op_id: str | None = None,
        fence: int | None = None,
    ) -> int:
        """Atomic add, server-side. Raises NotAnInteger."""
        return await self._run(_ops.incr(self._ctx, key, amount, ttl=ttl, op_id=op_id, fence=fence))

    async def touch(self, key: str, ttl: float | timedelta, *, op_id: str | None = None) -> bool:
        """New expiry from now; value and version unchanged. False if absent."""
        return await self._run(_ops.touch(self._ctx, key, ttl, op_id=op_id))

    async def history(self, key: str) -> list[Entry]:
        """Kept versions, newest first, current included."""
        return await self._run(_ops.history(self._ctx, key))

    async def rollback(self, key: str, *, to_version: int, op_id: str | None = None) -> Entry:
        """Write an old version's value as a new version. Raises VersionNotFound."""
        return await self._run(_ops.rollback(self._ctx, key, to_version=to_version, op_id=op_id))

    async def sweep(self) -> SweepResult:
        """Remove expired entries now (also done opportunistically by every call)."""
        return await self._run(_ops.sweep(self._ctx))

    async def info(self) -> NamespaceInfo:
        return await self._run(_ops.namespace_info(self._ctx))

    async def stats(self) -> dict[str, int]:
        """keys, bytes, revision and the per-operation counters the scripts keep."""
        return await self._run(_ops.stats(self._ctx))

    async def grant(self, permissions: Mapping[str, PermissionLevel]) -> None:
        """Set agents' levels (admin). Raises LastAdminError if no admin would remain."""
        await self._run(_ops.grant(self._ctx, permissions))

    async def revoke(self, agents: Iterable[str]) -> None:
        """Remove agents' explicit levels (they fall back to the default; admin)."""
        await self._run(_ops.revoke(self._ctx, agents))

    async def clear(self) -> int:
        return await self._run(_ops.clear_namespace(self._ctx))

    # ------------------------------------------------------------------ events
    async def watch(
        self,
        pattern: str = "*",
        *,
        types: Iterable[str] | None = None,
        since: int | str | None = None,
    ) -> AsyncWatch:
        """``async for event in await ns.watch(...)``: see ``Namespace.watch``."""
        pat, kinds, start = pattern_arg(pattern), types_arg(types), _ops.since_arg(since)
        page = await self._run(_ops.read_events(self._ctx, start, 1))
        return self.memory._event_hub().watch(self._ctx, start or page.next, pat, kinds)

    async def subscribe(
        self,
        callback: Callable[[Event], Any],
        *,
        pattern: str = "*",
        types: Iterable[str] | None = None,
        since: int | str | None = None,
        on_error: OnError | None = None,
    ) -> AsyncSubscription:
        """Call ``callback(event)`` (sync or async) on a background task."""
        if not callable(callback):
            raise InvalidInput("callback must be callable", field="callback", value=callback)
        watch = await self.watch(pattern, types=types, since=since)
        return AsyncSubscription(watch, callback, on_error)

    async def broadcast(self, message: Any, *, op_id: str | None = None) -> int:
        """An event of type ``broadcast`` carrying ``message`` (write permission)."""
        return await self._run(_ops.broadcast(self._ctx, message, op_id=op_id))

    async def audit(
        self,
        *,
        agent: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """Who did what, newest first (read permission); capped at ``audit_maxlen``."""
        return await self._run(
            _ops.audit(self._ctx, agent=agent, action=action, since=since, until=until, limit=limit)
        )

    # ------------------------------------------------------------------ coordination
    def lock(
        self,
        name: str,
        *,
        ttl: float | timedelta = 30.0,
        wait: float | None = None,
        renew: bool = False,
        on_lost: Callable[[Any], Any] | None = None,
        mode: LockMode = "exclusive",
    ) -> AsyncLock:
        """A lease-based lock with a fencing token (``async with ns.lock(name) as lock``).

        ``wait``: seconds to wait for it (None = as long as it takes, 0 = one attempt);
        ``renew``: extend in the background every ttl/3, setting ``lock.lost`` (and
        calling ``on_lost(lock)``) if the lease is lost; ``mode="shared"``: many holders,
        none exclusive. Nothing is sent until acquired. Raises LockTimeout, LockNotOwned.
        """
        return AsyncLock(
            self._run,
            self._ctx,
            name,
            ttl=ttl,
            wait=wait,
            renew=renew,
            on_lost=on_lost,
            mode=mode,
            metrics=self.memory._driver.metrics,
        )

    async def locks(self) -> list[LockInfo]:
        """Locks held now, by name (read permission)."""
        return await self._run(_coord.list_locks(self._ctx))

    async def force_release(self, name: str) -> bool:
        """Drop every holder of ``name`` (admin; an ``unlock`` event). True if held."""
        return await self._run(_coord.force_release(self._ctx, name))

    def transaction(self) -> AsyncTransaction:
        """Collect compares and puts/deletes; ``commit()`` applies all or nothing."""
        return AsyncTransaction(self._run, self._ctx)

    async def get_or_set(
        self,
        key: str,
        factory: Callable[[], Any],
        *,
        ttl: float | timedelta | None = None,
        lock_ttl: float | timedelta = 30.0,
        wait: float | None = None,
    ) -> Entry:
        """The entry at ``key``; if absent, one caller (single flight, via the lock named
        ``key``) computes ``factory()`` and writes it fenced while the others wait for its
        result. A factory that raises writes nothing and lets the next waiter try.
        Raises LockTimeout after ``wait`` seconds."""
        return await self._run(
            _coord.get_or_set(self._ctx, key, factory, ttl=ttl, lock_ttl=lock_ttl, wait=wait)
        )

    async def snapshot(self, pattern: str = "*") -> Snapshot:
        """Current entries + the revision to ``watch(since=...)`` from (see docs)."""
        return await self._run(_ops.snapshot(self._ctx, pattern))

"""Lock, lease and transaction handles: thin sync and async shells over ``_coord`` flows.

A :class:`Lock` is a lease with a fencing token (DESIGN.md decision 7): the token
strictly increases per lock, and the store refuses writes fenced with a token whose lease
was lost or superseded (``ns.put(..., fence=lock.token)``). A lease can run out while its
holder still runs (a pause, a partition): two holders may then *believe* they hold the
lock, which is what leases mean — fencing is what keeps the second one's writes out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import Any, TypeVar

from swarm_memory import _coord, errors
from swarm_memory._coord import LockState, TxPlan
from swarm_memory._ops import AgentSession, Context, Flow, _bool_arg, ttl_arg
from swarm_memory.keys import validate_namespace
from swarm_memory.models import FencingToken, TxResult, ms_to_datetime

log = logging.getLogger("swarm_memory.lock")
T = TypeVar("T")
_DEFAULT: Any = object()


def _metrics_wait(metrics: Any, started: float, outcome: str) -> None:
    if metrics is not None:
        metrics.observe_lock_wait(time.monotonic() - started, outcome)


class _LockBase:
    def __init__(
        self,
        ctx: Context,
        name: str,
        *,
        ttl: Any,
        wait: Any,
        renew: bool,
        on_lost: Callable[[Any], Any] | None,
        mode: str,
        metrics: Any,
    ) -> None:
        if mode not in _coord.MODES:
            raise errors.InvalidOption(
                "mode must be 'exclusive' or 'shared'", field="mode", value=mode
            )
        _bool_arg(renew, "renew")
        if on_lost is not None and not callable(on_lost):
            raise errors.InvalidInput("on_lost must be callable", field="on_lost", value=on_lost)
        self._ctx = ctx
        self._st = LockState(ctx.key(name), _coord.MODES[mode], _coord.lock_ttl_arg(ttl, ctx))
        self._wait = _coord.wait_arg(wait)
        self._renew = renew
        self._on_lost = on_lost
        self._metrics = metrics
        self._lost_flag = False
        self.mode = mode

    @property
    def name(self) -> str:
        return self._st.name

    @property
    def token(self) -> FencingToken | None:
        """The fencing token of the current acquisition (None before the first)."""
        return self._st.token

    @property
    def expires_at(self) -> datetime | None:
        """When the lease ends unless extended (server clock), as of the last call."""
        return ms_to_datetime(self._st.expires_ms) if self._st.expires_ms else None

    @property
    def held(self) -> bool:
        """Locally: acquired, not released, and the lease not yet over by this process's
        clock (counted conservatively from before the acquiring call was sent)."""
        return self._st.held_until > time.monotonic() and not self._lost_flag

    @property
    def lost(self) -> bool:
        """True once the lease is known lost: a renewal was refused, or it ran out while
        still held (the store already refuses this token's fenced writes)."""
        if self._lost_flag:
            return True
        return self._st.token is not None and 0 < self._st.held_until <= time.monotonic()

    def _mark_lost(self) -> None:
        if self._lost_flag:
            return
        self._lost_flag = True
        if self._on_lost is not None:
            try:
                self._on_lost(self)
            except Exception:
                log.exception("on_lost callback of lock %r raised", self.name)

    def _renewal_failed(self, exc: errors.SwarmMemoryError) -> bool:
        """After a failed renewal: True (stop renewing) once the lease is known lost —
        refused by the store, or past its end by this process's clock; a transport error
        before that is retried at the next tick."""
        if isinstance(exc, errors.LockNotOwned) or time.monotonic() >= self._st.held_until:
            self._mark_lost()
            return True
        log.warning("renewing lock %r failed (will retry): %s", self.name, exc)
        return False

    def _ttl_ms(self, ttl: Any) -> int:
        return self._st.ttl_ms if ttl is None else _coord.lock_ttl_arg(ttl, self._ctx)

    def _next_renewal_in(self, *, failed: bool = False) -> float:
        """Seconds until the renewer's next extension. Due a third of the lease after the
        last good one was *sent* (a fixed rate): waiting a third of the lease after its
        reply instead added every slow round trip to the next wait, so under load the lease
        ran out between renewals. After a failure, retry after a tenth of the lease."""
        ttl = self._st.ttl_ms / 1000
        if failed:
            return ttl / 10
        return max(0.0, self._st.held_until - ttl * 2 / 3 - time.monotonic())


class Lock(_LockBase):
    """``with ns.lock("job", ttl=30) as lock: ns.put("out", v, fence=lock.token)``.

    Exiting releases; if the lease was lost meanwhile, exiting raises LockNotOwned (unless
    the block itself raised), so a critical section that ran unprotected is never silent.
    """

    def __init__(self, run: Callable[[Flow[Any]], Any], ctx: Context, name: str, **kw: Any) -> None:
        super().__init__(ctx, name, **kw)
        self._run = run
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def acquire(self, wait: float | None = _DEFAULT) -> FencingToken:
        """Acquire (waiting up to ``wait`` s; None = until it is free). Raises LockTimeout."""
        limit = self._wait if wait is _DEFAULT else _coord.wait_arg(wait)
        started = time.monotonic()
        try:
            token: FencingToken = self._run(_coord.acquire(self._ctx, self._st, limit))
        except errors.LockTimeout:
            _metrics_wait(self._metrics, started, "timeout")
            raise
        _metrics_wait(self._metrics, started, "acquired")
        self._lost_flag = False
        if self._renew:
            self._start_renewer()
        return token

    def release(self) -> None:
        """Release. Raises LockNotOwned if the lease was lost (nothing else changes)."""
        self._stop_renewer()
        self._run(_coord.release(self._ctx, self._st))

    def extend(self, ttl: float | None = None) -> datetime:
        """Renew the lease to ``ttl`` (default: the lock's ttl) from now. Raises
        LockNotOwned if it was already lost."""
        try:
            expires = self._run(_coord.extend(self._ctx, self._st, self._ttl_ms(ttl)))
        except errors.LockNotOwned:
            self._mark_lost()
            raise
        return ms_to_datetime(expires)

    def _start_renewer(self) -> None:
        self._stop.clear()
        self._renewer = threading.Thread(
            target=self._renew_loop, name=f"swarm-memory-lock-{self.name}", daemon=True
        )
        self._renewer.start()

    def _stop_renewer(self) -> None:
        self._stop.set()
        thread, self._renewer = self._renewer, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _renew_loop(self) -> None:
        delay = self._next_renewal_in()
        while not self._stop.wait(delay):
            try:
                self._run(_coord.extend(self._ctx, self._st, self._st.ttl_ms))
            except errors.SwarmMemoryError as exc:
                if self._renewal_failed(exc):
                    return
                delay = self._next_renewal_in(failed=True)
            else:
                delay = self._next_renewal_in()

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self.release()
        except errors.LockNotOwned:
            if exc_type is None:
                raise


class AsyncLock(_LockBase):
    """The async twin of :class:`Lock` (``async with ns.lock(...) as lock``)."""

    def __init__(
        self, run: Callable[[Flow[Any]], Awaitable[Any]], ctx: Context, name: str, **kw: Any
    ) -> None:
        super().__init__(ctx, name, **kw)
        self._run = run
        self._renewer: asyncio.Task[None] | None = None

    async def acquire(self, wait: float | None = _DEFAULT) -> FencingToken:
        limit = self._wait if wait is _DEFAULT else _coord.wait_arg(wait)
        started = time.monotonic()
        try:
            token: FencingToken = await self._run(_coord.acquire(self._ctx, self._st, limit))
        except errors.LockTimeout:
            _metrics_wait(self._metrics, started, "timeout")
            raise
        _metrics_wait(self._metrics, started, "acquired")
        self._lost_flag = False
        if self._renew:
            self._renewer = asyncio.get_running_loop().create_task(self._renew_loop())
        return token

    async def release(self) -> None:
        await self._stop_renewer()
        await self._run(_coord.release(self._ctx, self._st))

    async def extend(self, ttl: float | None = None) -> datetime:
        try:
            expires = await self._run(_coord.extend(self._ctx, self._st, self._ttl_ms(ttl)))
        except errors.LockNotOwned:
            self._mark_lost()
            raise
        return ms_to_datetime(expires)

    async def _stop_renewer(self) -> None:
        task, self._renewer = self._renewer, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _renew_loop(self) -> None:
        delay = self._next_renewal_in()
        while True:
            await asyncio.sleep(delay)
            try:
                await self._run(_coord.extend(self._ctx, self._st, self._st.ttl_ms))
            except errors.SwarmMemoryError as exc:
                if self._renewal_failed(exc):
                    return
                delay = self._next_renewal_in(failed=True)
            else:
                delay = self._next_renewal_in()

    async def __aenter__(self) -> AsyncLock:
        await self.acquire()
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            await self.release()
        except errors.LockNotOwned:
            if exc_type is None:
                raise


# ------------------------------------------------------------------------ transactions
class _TxBase:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._plan = TxPlan()
        self.result: TxResult | None = None

    def check(self, key: str, version: int) -> Any:
        """Commit only if ``key`` is at ``version`` (0 = absent). Chainable."""
        _coord.tx_compare(self._ctx, self._plan, key, version)
        return self

    def check_absent(self, key: str) -> Any:
        return self.check(key, 0)

    def put(
        self, key: str, value: Any, *, ttl: float | None = None, fence: int | None = None
    ) -> Any:
        """Write ``value`` on commit (under the namespace strategy). Chainable."""
        _coord.tx_write(self._ctx, self._plan, "P", key, value, ttl=ttl, fence=fence)
        return self

    def delete(self, key: str, *, fence: int | None = None) -> Any:
        _coord.tx_write(self._ctx, self._plan, "D", key, None, ttl=None, fence=fence)
        return self


class Transaction(_TxBase):
    """``ns.transaction().check("a", 3).check_absent("b").put("a", 1).put("b", 2).commit()``
    — or ``with ns.transaction() as tx: ...`` (commits when the block ends without error).
    All-or-nothing in one script; TransactionConflict lists every failed compare."""

    def __init__(self, run: Callable[[Flow[Any]], Any], ctx: Context) -> None:
        super().__init__(ctx)
        self._run = run

    def commit(self, *, op_id: str | None = None) -> TxResult:
        self.result = self._run(_coord.commit(self._ctx, self._plan, op_id))
        return self.result

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.commit()


class AsyncTransaction(_TxBase):
    def __init__(self, run: Callable[[Flow[Any]], Awaitable[Any]], ctx: Context) -> None:
        super().__init__(ctx)
        self._run = run

    async def commit(self, *, op_id: str | None = None) -> TxResult:
        self.result = await self._run(_coord.commit(self._ctx, self._plan, op_id))
        return self.result

    async def __aenter__(self) -> AsyncTransaction:
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            await self.commit()


# ------------------------------------------------------------------------ agent leases
def beat_flow(memory: Any, ttl_ms: int) -> Flow[int]:
    """One heartbeat: presence, then the lease in every namespace where this identity
    holds something tied to it. Returns the presence expiry (server ms)."""
    session: AgentSession = memory._session
    s = memory.settings
    expires = yield from _coord.presence_beat(
        s.key_prefix, memory.agent, ttl_ms, int(s.presence_retention * 1000)
    )
    for name in sorted(session.namespaces):
        with contextlib.suppress(errors.NamespaceNotFound, errors.PermissionDenied):
            yield from _coord.lease_beat(memory._ctx(name), ttl_ms)
    return int(expires)


def leave_flow(memory: Any) -> Flow[None]:
    """End the lease everywhere now and sweep, so what it held goes at once (events)."""
    from swarm_memory._ops import sweep  # noqa: PLC0415

    yield from _coord.presence_leave(memory.settings.key_prefix, memory.agent)
    for name in sorted(memory._session.namespaces):
        with contextlib.suppress(errors.NamespaceNotFound, errors.PermissionDenied):
            ctx = memory._ctx(name)
            yield from _coord.lease_leave(ctx)
            yield from sweep(ctx)


def lease_ttl_ms(memory: Any, ttl: Any, namespaces: Iterable[str] | None) -> int:
    """Validate, record the identity's lease ttl and namespaces, and return ttl in ms."""
    session: AgentSession = memory._session
    ms = ttl_arg(ttl, memory.settings)
    if isinstance(namespaces, str):
        raise errors.InvalidInput(
            "namespaces must be a list of names", field="namespaces", value=namespaces
        )
    names = [validate_namespace(n) for n in namespaces or ()]
    if ms is not None:
        session.lease_ttl = ms / 1000
    session.namespaces.update(names)
    session.leased = True
    return session.ttl_ms()


class Lease:
    """A background heartbeat (``mem.lease(ttl)``): beats every ttl/3 until stopped.
    ``stop()`` ends the lease at once (its ephemeral entries and locks go, with events);
    ``stop(release=False)`` just stops beating (they go when it runs out)."""

    def __init__(self, memory: Any, ttl_ms: int) -> None:
        self._memory = memory
        self._ttl_ms = ttl_ms
        self._stop = threading.Event()
        self.lost = False
        self.expires_at: datetime | None = None
        self.beat()
        self._thread = threading.Thread(target=self._loop, name="swarm-memory-lease", daemon=True)
        self._thread.start()

    def beat(self) -> datetime:
        self.expires_at = ms_to_datetime(
            self._memory._driver.run(beat_flow(self._memory, self._ttl_ms))
        )
        self._held_until = time.monotonic() + self._ttl_ms / 1000
        return self.expires_at

    def _loop(self) -> None:
        while not self._stop.wait(self._ttl_ms / 3000):
            started = time.monotonic()
            try:
                self.beat()
            except errors.SwarmMemoryError as exc:
                log.warning("heartbeat of %r failed: %s", self._memory.agent, exc)
                if started >= self._held_until:
                    self.lost = True

    def stop(self, *, release: bool = True) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        if release:
            self._memory._driver.run(leave_flow(self._memory))

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class AsyncLease:
    """The async twin of :class:`Lease` (a task); create with ``await mem.lease(ttl)``."""

    def __init__(self, memory: Any, ttl_ms: int) -> None:
        self._memory = memory
        self._ttl_ms = ttl_ms
        self.lost = False
        self.expires_at: datetime | None = None
        self._task: asyncio.Task[None] | None = None
        self._held_until = 0.0

    async def start(self) -> AsyncLease:
        await self.beat()
        self._task = asyncio.get_running_loop().create_task(self._loop())
        return self

    async def beat(self) -> datetime:
        expires = await self._memory._driver.run(beat_flow(self._memory, self._ttl_ms))
        self.expires_at = ms_to_datetime(expires)
        self._held_until = time.monotonic() + self._ttl_ms / 1000
        return self.expires_at

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._ttl_ms / 3000)
            started = time.monotonic()
            try:
                await self.beat()
            except errors.SwarmMemoryError as exc:
                log.warning("heartbeat of %r failed: %s", self._memory.agent, exc)
                if started >= self._held_until:
                    self.lost = True

    async def stop(self, *, release: bool = True) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if release:
            await self._memory._driver.run(leave_flow(self._memory))

    async def __aenter__(self) -> AsyncLease:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

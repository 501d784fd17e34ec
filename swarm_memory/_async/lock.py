"""AsyncLock, AsyncLease, AsyncTransaction: thin shells over the ``_ops.coord`` flows.

A lock is a lease with a fencing token (DESIGN.md decision 7): the token strictly
increases per lock, and the store refuses writes fenced with a token whose lease was
lost or superseded (``ns.put(..., fence=lock.token)``). A lease can run out while its
holder still runs (a pause, a partition): two holders may then *believe* they hold the
lock, which is what leases mean — fencing is what keeps the second one's writes out.
State and checks shared with the sync handles live in ``_handles.py``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from swarm_memory import errors
from swarm_memory._handles import DEFAULT, LockBase, TxBase, log, metrics_wait
from swarm_memory._ops import args as _args
from swarm_memory._ops import coord as _coord
from swarm_memory._ops.effects import Context, Flow
from swarm_memory._synchronization import AsyncBackground, AsyncSignal
from swarm_memory.models import FencingToken, TxResult, ms_to_datetime


class AsyncLock(LockBase):
    """``async with ns.lock("job", ttl=30) as lock: await ns.put("out", v, fence=lock.token)``.

    Exiting releases; if the lease was lost meanwhile, exiting raises LockNotOwned (unless
    the block itself raised), so a critical section that ran unprotected is never silent.
    With ``renew=True`` a background renewer extends the lease every third of its ttl.
    """

    def __init__(self, run: Callable[[Flow[Any]], Any], ctx: Context, name: str, **kw: Any) -> None:
        super().__init__(ctx, name, **kw)
        self._run = run
        # The renewer's stop signal, made by the first renewing acquire: an event costs
        # ~3 us, half of a lock handle's construction, and most locks never renew.
        self._stop: AsyncSignal | None = None
        self._renewer: AsyncBackground | None = None

    async def acquire(self, wait: float | None = DEFAULT) -> FencingToken:
        """Acquire (waiting up to ``wait`` s; None = until it is free). Raises LockTimeout."""
        limit = self._wait if wait is DEFAULT else _args.wait_arg(wait)
        started = time.monotonic()
        try:
            token: FencingToken = await self._run(_coord.acquire(self._ctx, self._st, limit))
        except errors.LockTimeout:
            metrics_wait(self._metrics, started, "timeout")
            raise
        metrics_wait(self._metrics, started, "acquired")
        self._lost_flag = False
        if self._renew:
            stop = self._stop = self._stop or AsyncSignal()
            stop.clear()
            self._renewer = AsyncBackground(
                functools.partial(self._renew_loop, stop), f"swarm-memory-lock-{self.name}"
            )
        return token

    async def release(self) -> None:
        """Release. Raises LockNotOwned if the lease was lost (nothing else changes)."""
        await self._stop_renewer()
        await self._run(_coord.release(self._ctx, self._st))

    async def extend(self, ttl: float | None = None) -> datetime:
        """Renew the lease to ``ttl`` (default: the lock's ttl) from now. Raises
        LockNotOwned if it was already lost."""
        try:
            expires = await self._run(_coord.extend(self._ctx, self._st, self._ttl_ms(ttl)))
        except errors.LockNotOwned:
            self._mark_lost()
            raise
        return ms_to_datetime(expires)

    async def _stop_renewer(self) -> None:
        if self._stop is not None:
            self._stop.set()
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            await renewer.stop()

    async def _renew_loop(self, stop: AsyncSignal) -> None:
        delay = self._next_renewal_in()
        while not await stop.wait(delay):
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


class AsyncTransaction(TxBase):
    """``ns.transaction().check("a", 3).check_absent("b").put("a", 1).put("b", 2).commit()``
    — or as a context manager (commits when the block ends without error). All or
    nothing in one script; TransactionConflict lists every failed compare."""

    def __init__(self, run: Callable[[Flow[Any]], Any], ctx: Context) -> None:
        super().__init__(ctx)
        self._run = run

    async def commit(self, *, op_id: str | None = None) -> TxResult:
        result: TxResult = await self._run(_coord.commit(self._ctx, self._plan, op_id))
        self.result = result
        return result

    async def __aenter__(self) -> AsyncTransaction:
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            await self.commit()


class AsyncLease:
    """A background heartbeat (``mem.lease(ttl)``): beats every ttl/3 until stopped.
    ``stop()`` ends the lease at once (its ephemeral entries and locks go, with events);
    ``stop(release=False)`` just stops beating (they go when it runs out)."""

    def __init__(self, memory: Any, ttl_ms: int) -> None:
        self._memory = memory
        self._ttl_ms = ttl_ms
        self.lost = False
        self.expires_at: datetime | None = None
        self._held_until = 0.0
        self._stop = AsyncSignal()
        self._beater: AsyncBackground | None = None

    async def start(self) -> AsyncLease:
        """Beat once now, then in the background."""
        await self.beat()
        self._beater = AsyncBackground(self._loop, "swarm-memory-lease")
        return self

    async def beat(self) -> datetime:
        expires = await self._memory._driver.run(self._memory._heartbeat(self._ttl_ms))
        self.expires_at = ms_to_datetime(expires)
        self._held_until = time.monotonic() + self._ttl_ms / 1000
        return self.expires_at

    async def _loop(self) -> None:
        while not await self._stop.wait(self._ttl_ms / 3000):
            started = time.monotonic()
            try:
                await self.beat()
            except errors.SwarmMemoryError as exc:
                log.warning("heartbeat of %r failed: %s", self._memory.agent, exc)
                if started >= self._held_until:
                    self.lost = True

    async def stop(self, *, release: bool = True) -> None:
        self._stop.set()
        beater, self._beater = self._beater, None
        if beater is not None:
            await beater.stop()
        if release:
            await self._memory._driver.run(self._memory._leave())

    async def __aenter__(self) -> AsyncLease:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

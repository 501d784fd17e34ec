"""State and argument checks shared by the sync and async handles (locks, transactions,
inboxes): everything of theirs that is not I/O.

The handles themselves are ``_async/lock.py`` and ``_async/inbox.py`` (the source) and
their generated ``_sync/`` twins.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Self

from swarm_memory import errors
from swarm_memory._ops import args as _args
from swarm_memory._ops import coord as _coord
from swarm_memory._ops import inbox as _inbox
from swarm_memory._ops.coord import LockState, TxPlan
from swarm_memory._ops.effects import Context, Flow, InboxContext
from swarm_memory._ops.inbox import InboxState
from swarm_memory.models import FencingToken, Message, TxResult, ms_to_datetime

log = logging.getLogger("swarm_memory.lock")
DEFAULT: Any = object()
"""``wait`` not given: the lock's own ``wait``."""


def metrics_wait(metrics: Any, started: float, outcome: str) -> None:
    if metrics is not None:
        metrics.observe_lock_wait(time.monotonic() - started, outcome)


class LockBase:
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
        script_mode = _args.lock_mode_arg(mode)
        _args.bool_arg(renew, "renew")
        if on_lost is not None and not callable(on_lost):
            raise errors.InvalidInput("on_lost must be callable", field="on_lost", value=on_lost)
        self._ctx = ctx
        self._st = LockState(ctx.key(name), script_mode, _args.lock_ttl_arg(ttl, ctx.settings))
        self._wait = _args.wait_arg(wait)
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
        return self._st.ttl_ms if ttl is None else _args.lock_ttl_arg(ttl, self._ctx.settings)

    def _next_renewal_in(self, *, failed: bool = False) -> float:
        """Seconds until the renewer's next extension. Due a third of the lease after the
        last good one was *sent* (a fixed rate): waiting a third of the lease after its
        reply instead added every slow round trip to the next wait, so under load the lease
        ran out between renewals. After a failure, retry after a tenth of the lease."""
        ttl = self._st.ttl_ms / 1000
        if failed:
            return ttl / 10
        return max(0.0, self._st.held_until - ttl * 2 / 3 - time.monotonic())


# ------------------------------------------------------------------------ transactions
class TxBase:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._plan = TxPlan()
        self.result: TxResult | None = None

    def check(self, key: str, version: int) -> Self:
        """Commit only if ``key`` is at ``version`` (0 = absent). Chainable."""
        _coord.tx_compare(self._ctx, self._plan, key, version)
        return self

    def check_absent(self, key: str) -> Self:
        return self.check(key, 0)

    def put(
        self, key: str, value: Any, *, ttl: float | None = None, fence: int | None = None
    ) -> Self:
        """Write ``value`` on commit (under the namespace strategy). Chainable."""
        _coord.tx_write(self._ctx, self._plan, "P", key, value, ttl=ttl, fence=fence)
        return self

    def delete(self, key: str, *, fence: int | None = None) -> Self:
        _coord.tx_write(self._ctx, self._plan, "D", key, None, ttl=None, fence=fence)
        return self


# ------------------------------------------------------------------------ inboxes
class InboxBase:
    def __init__(
        self,
        run: Callable[[Flow[Any]], Any],
        ctx: InboxContext,
        state: InboxState,
        *,
        idle: float,
        batch: int,
    ) -> None:
        self._idle_ms = _args.idle_arg(idle)
        self._batch = _args.batch_arg(batch)
        self._run = run
        self._ctx = ctx
        self._state = state

    @property
    def owner(self) -> str:
        """The agent whose inbox this is (always the caller)."""
        return self._state.owner

    @property
    def consumer(self) -> str:
        """The consumer name this inbox reads as."""
        return self._state.consumer

    @property
    def idle(self) -> float:
        return self._idle_ms / 1000

    @property
    def batch(self) -> int:
        return self._batch

    def _receive(self, timeout: float | None) -> Flow[Message | None]:
        wait = _args.timeout_arg(timeout)
        return _inbox.receive(self._ctx, self._state, wait, self._idle_ms, self._batch)

    def _request(
        self, to_agent: str, message: Any, timeout: float, op_id: str | None
    ) -> Flow[Message]:
        return _inbox.request(
            self._ctx,
            self._state,
            to_agent,
            message,
            timeout=timeout,
            idle_ms=self._idle_ms,
            batch=self._batch,
            op_id=op_id,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(owner={self.owner!r}, consumer={self.consumer!r})"

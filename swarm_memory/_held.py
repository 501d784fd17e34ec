"""Pool connections a sync client keeps checked out between its script calls.

redis-py's ``ConnectionPool.get_connection`` and ``release`` cost ~6.3 µs a call (timeit,
this VM: a lock each, a poll of the socket for unread data, and the observability
bookkeeping of both): a sixth of a sync ``put``'s client CPU. A sync driver that sends
its script calls directly (``_drive.direct_pool``) keeps up to :data:`MAX_HELD`
connections it checked out of the pool and takes one of them for the next call instead:
a ``list.pop`` and an ``append``, atomic under the GIL, so threads never share one.

What the pool's checkout would have done still happens:

- a connection idle for longer than :data:`IDLE_CHECK_S` goes back through the pool (its
  ``release`` and ``get_connection``: the poll that finds a connection the server
  closed, which is then reconnected before the call);
- a connection that failed mid-call was disconnected by redis-py itself, and its next
  ``send_packed_command`` connects it again (a failed connect is still told apart as
  "not sent": ``_drive._failed_connecting`` sees redis-py's ``connect`` frame);
- a forked child forgets every held connection without touching it (they are the
  parent's sockets, as the pool's own fork check assumes).

Only a plain ``ConnectionPool`` with room (``max_connections`` of at least
:data:`MIN_POOL`) holds any: a Sentinel pool (which swaps its master on failover), a
blocking pool or a small one keeps redis-py's checkout on every call, so holding never
starves another user of the pool. The connections stay counted as in use by the pool,
which closes them with its own ``disconnect()``.

The async driver does not hold (``AsyncHeldConnections``): its script calls share one
pipelined connection (``_pipeline``), and an asyncio connection belongs to the event loop
that opened it.
"""

from __future__ import annotations

import os
import weakref
from typing import Any

import redis

MAX_HELD = 8
MIN_POOL = 32
IDLE_CHECK_S = 1.0

_registry: weakref.WeakKeyDictionary[Any, HeldConnections] = weakref.WeakKeyDictionary()


class HeldConnections:
    """The held connections of one pool, shared by every sync driver over it."""

    __slots__ = ("__weakref__", "enabled", "held", "pool")

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        # (connection, time.monotonic() of its last use), most recent last.
        self.held: list[tuple[Any, float]] = []
        self.enabled = (
            type(pool) is redis.ConnectionPool
            and isinstance(pool.max_connections, int)
            and pool.max_connections >= MIN_POOL
        )

    @classmethod
    def of(cls, pool: Any) -> HeldConnections:
        held = _registry.get(pool)
        if held is None:
            held = _registry.setdefault(pool, cls(pool))
        return held

    def get(self, now: float) -> Any:
        """A connection for one call (``now``: time.monotonic())."""
        if self.enabled:
            try:
                conn, last = self.held.pop()
            except IndexError:
                pass
            else:
                if now - last < IDLE_CHECK_S:
                    return conn
                self.pool.release(conn)  # and out again, through the pool's checks
        return self.pool.get_connection()

    def put(self, conn: Any, now: float) -> None:
        """``conn`` after its call (its reply read, or disconnected by redis-py)."""
        if self.enabled and len(self.held) < MAX_HELD:
            self.held.append((conn, now))
        else:
            self.pool.release(conn)

    def release_all(self) -> None:
        """Every held connection back to the pool (the client is closing)."""
        while True:
            try:
                conn, _ = self.held.pop()
            except IndexError:
                return
            self.pool.release(conn)

    def forget(self) -> None:
        self.held = []


class AsyncHeldConnections:
    """The async driver's twin: every call through the pool (see the module doc)."""

    __slots__ = ("pool",)

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    @classmethod
    def of(cls, pool: Any) -> AsyncHeldConnections:
        return cls(pool)

    async def get(self, now: float) -> Any:
        return await self.pool.get_connection()

    async def put(self, conn: Any, now: float) -> None:
        await self.pool.release(conn)

    async def release_all(self) -> None:
        return None


def _forget_all() -> None:
    for held in list(_registry.values()):
        held.forget()


os.register_at_fork(after_in_child=_forget_all)

"""AsyncHub, AsyncWatch, AsyncSubscription: the change feed's async shells.

The feed logic is :class:`~swarm_memory._feed.FeedCore` (I/O-free, shared); a hub runs it
on one background reader per connection pool and hands events to each watch's queue.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from swarm_memory import errors
from swarm_memory._feed import FeedCore, OnError, Subscriber, doorbell_failed, log, note_doorbell
from swarm_memory._ops.effects import Context, Flow
from swarm_memory._synchronization import (
    EMPTY,
    AsyncBackground,
    AsyncQueue,
    AsyncSignal,
    ainvoke,
    asleep,
    ayield_turn,
)
from swarm_memory.metrics import ClientMetrics
from swarm_memory.models import Event


class AsyncWatch:
    """An iterator of :class:`Event` (``async for``); also ``get(timeout)``. Close it
    (or use it as a context manager) to stop."""

    def __init__(self, hub: AsyncHub, sub: Subscriber, q: AsyncQueue[Any]) -> None:
        self._hub, self._sub, self._q = hub, sub, q
        self._buffer: deque[Event] = deque()
        self._position = sub.start

    @property
    def cursor(self) -> str:
        """Where this watch would resume (``since=``) if it stopped now: right after the
        last event it returned (the hub may have read further ahead; that does not count)."""
        return self._position

    async def get(self, timeout: float | None = None) -> Event | None:
        """The next event, or None after ``timeout`` seconds. Raises EventsTrimmed,
        PermissionDenied or NamespaceNotFound when the feed ends that way."""
        if not self._buffer:
            item = await self._q.get(timeout)
            if item is EMPTY:
                return None
            if isinstance(item, BaseException):
                await self.close()
                raise item
            self._buffer.extend(item)
        event = self._buffer.popleft()
        self._position = event.cursor
        return event

    def __aiter__(self) -> AsyncWatch:
        return self

    async def __anext__(self) -> Event:
        event = await self.get()
        assert event is not None
        return event

    async def close(self) -> None:
        self._hub.core.remove(self._sub)

    async def __aenter__(self) -> AsyncWatch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncHub:
    """One pub/sub connection and one feed reader per connection pool."""

    def __init__(
        self,
        run: Callable[[Flow[Any]], Any],
        client: Any,
        poll: float,
        batch: int,
        metrics: ClientMetrics | None = None,
    ) -> None:
        self.core = FeedCore(batch, metrics=metrics)
        self._run = run
        self._client = client
        self._poll = poll
        self._reader: AsyncBackground | None = None
        # Watches may start from several threads (sync client): one reader starts.
        self._start_lock = threading.Lock()
        self._wake = AsyncSignal()
        self._stop = AsyncSignal()

    async def close(self) -> None:
        """End every watch of this hub and stop its reader."""
        self._stop.set()
        for sub in [s for subs in list(self.core.feeds.values()) for s in subs]:
            self.core.remove(sub)
            sub.push(errors.TransportError("the client was closed"))
        reader = self._reader
        if reader is not None:
            await reader.stop()

    def watch(
        self, ctx: Context, start: str, pattern: str, types: frozenset[str] | None
    ) -> AsyncWatch:
        if self._stop.is_set():
            raise errors.TransportError("the client was closed")
        q: AsyncQueue[Any] = AsyncQueue()
        sub = Subscriber(ctx, start, pattern, types, q.put)
        self.core.add(sub)
        self._wake.set()
        with self._start_lock:
            if self._reader is None or self._reader.done():
                self._reader = AsyncBackground(self._loop, "swarm-memory-events")
        return AsyncWatch(self, sub, q)

    async def _ring(
        self, read: Any, burst: bool, rung: dict[str, int | None], bells: dict[str, list[bytes]]
    ) -> bool:
        """Note the doorbells that came; True when the next pass should only look for
        more (no wait). A look for queued doorbells (a burst) lets one service take them.
        On a task, a doorbell after a quiet spell is served at once (a look is a loop
        turn, ~30 µs, on every event's latency) and the pass after it looks, once the
        woken watchers have run (``burst``). On a thread, a look is a cheap syscall while
        any reader work after the hand-off holds the GIL the woken watchers wait for: it
        looks before serving, then blocks right after."""
        msg = await read(ignore_subscribe_messages=True, timeout=0 if burst else 0.05)
        came = msg is not None
        drain = burst or not AsyncBackground.cooperative
        for _ in range(256):
            if msg is None:
                break
            note_doorbell(msg, rung, bells)
            if not drain:
                break
            msg = await read(ignore_subscribe_messages=True, timeout=0)
        return came and AsyncBackground.cooperative

    async def _loop(self) -> None:
        pubsub: Any = None
        subscribed: set[str] = set()
        last_poll = 0.0
        burst = False  # look for doorbells queued behind the last (see _ring)
        try:
            while True:
                with self._start_lock:
                    if self.core.empty() or self._stop.is_set():
                        self._reader = None
                        break
                rung: dict[str, int | None] = {}
                bells: dict[str, list[bytes]] = {}
                fresh = False
                try:
                    if pubsub is None:
                        pubsub, subscribed = self._client.pubsub(), set()
                        # A new doorbell connection (the first, or after a drop, which a
                        # server restart or failover causes): read every feed before
                        # trusting doorbell payloads, so the read checks the history.
                        self._wake.set()
                        fresh = True
                    wanted = self.core.channels()
                    if wanted - subscribed:
                        await pubsub.ssubscribe(*(wanted - subscribed))
                        subscribed |= wanted
                    # Cluster pub/sub keeps one connection per shard: read those.
                    read = getattr(pubsub, "get_sharded_message", pubsub.get_message)
                    burst = await self._ring(read, burst, rung, bells)
                except Exception as exc:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
                    pubsub, burst = None, False
                    await asleep(doorbell_failed(exc, self._poll))
                if fresh:
                    bells.clear()  # the checked reads come first (see above)
                work, last_poll = self.core.plan(rung, bells, self._wake, last_poll, self._poll)
                for key, rev, payloads in work:
                    try:
                        await self._run(self.core.service(key, rev, payloads))
                    except Exception:  # never let one bad read kill every watcher
                        log.exception("event feed service failed; retrying on the next wake")
                if work:  # the watchers woken by these events run before the next read
                    await ayield_turn()
        finally:
            if pubsub is not None:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()


class AsyncSubscription:
    """A callback subscription on a background reader. An exception in the callback is
    logged, counted (``errors``) and passed to ``on_error``; the subscription goes on.
    It ends only on ``unsubscribe()`` or when the feed ends (trimmed, denied, deleted).
    On the async client the callback may be a coroutine function."""

    def __init__(
        self, watch: AsyncWatch, callback: Callable[[Event], Any], on_error: OnError | None
    ) -> None:
        self._watch, self._callback, self._on_error = watch, callback, on_error
        self.errors = 0
        self.delivered = 0
        self.ended: BaseException | None = None
        self._stop = AsyncSignal()
        self._runner = AsyncBackground(self._loop, "swarm-memory-subscription")

    async def _report(self, exc: BaseException, event: Event | None) -> None:
        if self._on_error is not None:
            try:
                await ainvoke(self._on_error, exc, event)
            except Exception:
                log.exception("on_error callback raised")

    async def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                event = await self._watch.get(timeout=0.1)
            except errors.SwarmMemoryError as exc:
                self.ended = exc
                await self._report(exc, None)
                return
            if event is None:
                continue
            try:
                await ainvoke(self._callback, event)
                self.delivered += 1
            except Exception as exc:
                self.errors += 1
                log.exception("subscription callback raised on %s", event)
                await self._report(exc, event)

    @property
    def active(self) -> bool:
        return not self._runner.done()

    async def unsubscribe(self) -> None:
        self._stop.set()
        await self._watch.close()
        await self._runner.stop()

    async def __aenter__(self) -> AsyncSubscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.unsubscribe()

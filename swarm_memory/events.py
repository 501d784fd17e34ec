"""Watching a namespace's change feed: one shared reader per process, local fan-out.

Correctness lives in the stream: each subscriber holds its own cursor (a stream id) and
gets every event after it, in order, exactly once, or ``EventsTrimmed``. Pub/sub is only a
doorbell (sharded pub/sub on Cluster): it wakes the reader at once; a poll bound
(``Settings.watch_poll``) covers doorbells lost with a dropped connection.

A hub (one per connection pool, i.e. per client and its ``as_agent`` identities) keeps
one pub/sub connection and, per (namespace, agent), reads the feed once for every
subscriber at the same position, then hands events to each subscriber's queue. Reads
run the permission-checked ``events`` script as that agent. The reading logic is an
I/O-free flow (:meth:`FeedCore.service`); :class:`SyncHub` runs it on a thread and
:class:`AsyncHub` on a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis.exceptions as rexc

from swarm_memory import _ops, errors
from swarm_memory._ops import Context, Flow
from swarm_memory.metrics import ClientMetrics
from swarm_memory.models import Event

log = logging.getLogger("swarm_memory.events")

FeedKey = tuple[str, str, str]  # (bell channel, namespace, agent)
_FATAL = (errors.EventsTrimmed, errors.PermissionDenied, errors.NamespaceNotFound)
# Events after which a watcher's right to read may differ: never taken from a doorbell.
PERMISSION_EVENTS = frozenset({"ns_create", "ns_update", "ns_grant", "ns_revoke", "ns_delete"})
# Keyless events every key pattern admits: broadcasts are addressed to every reader, and
# ns_clear / ns_delete remove the matching keys too (a watcher keeping the state of
# "task-*" must learn that they are gone). The other lifecycle events concern no key.
EVERY_PATTERN_EVENTS = frozenset({"broadcast", "ns_clear", "ns_delete"})


@dataclass(eq=False)
class Subscriber:
    ctx: Context
    start: str  # stream id of the next event this subscriber needs
    pattern: str
    types: frozenset[str] | None
    push: Callable[[list[Event] | BaseException], None]
    closed: bool = False

    @property
    def feed(self) -> FeedKey:
        return (self.ctx.keys.bell, self.ctx.namespace, self.ctx.agent)

    def wants(self, event: Event) -> bool:
        """Key events when the key matches the pattern. Keyless events: all of them with
        the pattern "*" or when named in ``types``; with another pattern only broadcasts,
        ``ns_clear`` and ``ns_delete``, never ``ns_create``/``ns_update``/``ns_grant``/
        ``ns_revoke``, which concern no key."""
        if self.pattern == "*" and self.types is None:
            return True
        if self.types is not None and event.type not in self.types:
            return False
        if event.key is not None:
            return fnmatch.fnmatchcase(event.key, self.pattern)
        return self.pattern == "*" or self.types is not None or event.type in EVERY_PATTERN_EVENTS


@dataclass
class FeedCore:
    """Subscribers grouped by feed; the I/O-free part of both hubs."""

    batch: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    feeds: dict[FeedKey, list[Subscriber]] = field(default_factory=dict)
    metrics: ClientMetrics | None = None  # opt-in: events delivered, watcher lag

    def add(self, sub: Subscriber) -> None:
        with self.lock:
            self.feeds.setdefault(sub.feed, []).append(sub)

    def remove(self, sub: Subscriber) -> None:
        sub.closed = True
        with self.lock:
            subs = self.feeds.get(sub.feed, [])
            if sub in subs:
                subs.remove(sub)
            if not subs:
                self.feeds.pop(sub.feed, None)

    def channels(self) -> set[str]:
        with self.lock:
            return {key[0] for key in self.feeds}

    def keys_for(self, channel: str | None) -> list[FeedKey]:
        with self.lock:
            return [k for k in self.feeds if channel is None or k[0] == channel]

    def empty(self) -> bool:
        with self.lock:
            return not self.feeds

    def plan(
        self,
        rung: dict[str, int | None],
        bells: dict[str, list[bytes]],
        wake: threading.Event | asyncio.Event,
        last_poll: float,
        poll: float,
    ) -> tuple[list[tuple[FeedKey, int | None, list[bytes] | None]], float]:
        """Which feeds to serve now: those a doorbell rang for, or every feed when a
        watcher joined or the poll interval passed (lost doorbells)."""
        now = time.monotonic()
        if wake.is_set() or now - last_poll >= poll:
            wake.clear()
            last_poll = now
            rung = {key[0]: None for key in self.keys_for(None)}
        work = [(k, rung[k[0]], bells.get(k[0])) for k in self.keys_for(None) if k[0] in rung]
        return work, last_poll

    def _deliver(self, group: list[Subscriber], events: list[Event]) -> None:
        delivered = 0
        for sub in group:  # one hand-off per batch: one wake-up per subscriber
            wanted = [e for e in events if sub.wants(e)]
            if wanted and not sub.closed:
                sub.push(wanted)
                delivered += len(wanted)
        if self.metrics is not None and group:
            self.metrics.count_events(group[0].ctx.namespace, delivered)

    def _take_carried(
        self, group: list[Subscriber], start: str, carried: list[tuple[int, list[Event]]]
    ) -> str:
        cursor = start
        for revision, events in carried:
            if cursor != f"{revision}-0":
                if revision < int(cursor.split("-", 1)[0]):
                    continue  # already delivered
                break  # a gap: the read fills it
            if any(e.type in PERMISSION_EVENTS for e in events):
                break
            self._deliver(group, events)
            cursor = events[-1].cursor
        for sub in group:
            sub.start = cursor
        return cursor

    def service(
        self, key: FeedKey, rung: int | None = None, bells: list[bytes] | None = None
    ) -> Flow[None]:
        """Deliver new events to every subscriber of one feed.

        ``bells``: doorbell payloads, which carry their revision's events: a group whose
        cursor is exactly there takes them without a read, unless they change
        permissions (then the permission-checked read decides). ``rung``: the newest
        revision rung; a group already past it skips the read."""
        with self.lock:
            subs = [s for s in self.feeds.get(key, []) if not s.closed]
        if not subs:
            return
        carried: list[tuple[int, list[Event]]] = []
        for payload in bells or ():
            try:
                carried.append(_ops.doorbell_events(subs[0].ctx, payload))
            except Exception:  # an undecodable value: the read path will report it
                break
        groups: dict[str, list[Subscriber]] = {}
        for sub in subs:
            groups.setdefault(sub.start, []).append(sub)
        for position, group in groups.items():
            cursor = self._take_carried(group, position, carried)
            if rung is not None and int(cursor.split("-", 1)[0]) > rung:
                continue
            for _page in range(1000):  # bounded per wake-up; the next wake continues
                try:
                    page = yield from _ops.read_events(group[0].ctx, cursor, self.batch)
                except _FATAL as exc:
                    for sub in group:
                        sub.push(exc)
                        self.remove(sub)
                    break
                except errors.SwarmMemoryError as exc:  # transport: retried on the next wake
                    log.warning("event feed read failed, will retry: %s", exc)
                    break
                if page.events:
                    self._deliver(group, page.events)
                cursor = page.next
                for sub in group:
                    sub.start = cursor
                if self.metrics is not None:
                    behind = page.revision - int(cursor.split("-", 1)[0])
                    self.metrics.set_watch_lag(group[0].ctx.namespace, behind)
                if len(page.events) < self.batch:
                    break


class Watch:
    """A sync iterator of :class:`Event`; also ``get(timeout)``. Close it (or use
    ``with``) to stop."""

    def __init__(self, hub: SyncHub, sub: Subscriber, q: queue.SimpleQueue[Any]) -> None:
        self._hub, self._sub, self._q = hub, sub, q
        self._buffer: deque[Event] = deque()
        self._position = sub.start

    @property
    def cursor(self) -> str:
        """Where this watch would resume (``since=``) if it stopped now: right after the
        last event it returned (the hub may have read further ahead; that does not count)."""
        return self._position

    def get(self, timeout: float | None = None) -> Event | None:
        """The next event, or None after ``timeout`` seconds. Raises EventsTrimmed,
        PermissionDenied or NamespaceNotFound when the feed ends that way."""
        if not self._buffer:
            try:
                item = self._q.get(timeout=timeout)
            except queue.Empty:
                return None
            if isinstance(item, BaseException):
                self.close()
                raise item
            self._buffer.extend(item)
        event = self._buffer.popleft()
        self._position = event.cursor
        return event

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        event = self.get()
        assert event is not None
        return event

    def close(self) -> None:
        self._hub.core.remove(self._sub)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SyncHub:
    """One pub/sub connection + one reader thread per connection pool."""

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
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()

    def close(self) -> None:
        """End every watch of this hub and stop its thread."""
        self._stop.set()
        for sub in [s for subs in list(self.core.feeds.values()) for s in subs]:
            self.core.remove(sub)
            sub.push(errors.TransportError("the client was closed"))
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)

    def watch(self, ctx: Context, start: str, pattern: str, types: frozenset[str] | None) -> Watch:
        if self._stop.is_set():
            raise errors.TransportError("the client was closed")
        q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        sub = Subscriber(ctx, start, pattern, types, q.put)
        self.core.add(sub)
        self._wake.set()
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="swarm-memory-events", daemon=True
                )
                self._thread.start()
        return Watch(self, sub, q)

    def _loop(self) -> None:
        pubsub: Any = None
        subscribed: set[str] = set()
        last_poll = 0.0
        while True:
            with self._start_lock:
                if self.core.empty() or self._stop.is_set():
                    self._thread = None
                    break
            rung: dict[str, int | None] = {}
            bells: dict[str, list[bytes]] = {}
            try:
                if pubsub is None:
                    pubsub, subscribed = self._client.pubsub(), set()
                wanted = self.core.channels()
                if wanted - subscribed:
                    pubsub.ssubscribe(*(wanted - subscribed))
                    subscribed |= wanted
                msg = pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=0.05)
                for _ in range(256):  # drain what is queued: one service per burst
                    if msg is None:
                        break
                    _note(msg, rung, bells)
                    msg = pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=0)
            except Exception as exc:
                with contextlib.suppress(Exception):
                    pubsub.close()
                pubsub = None
                time.sleep(_doorbell_failed(exc, self._poll))
            work, last_poll = self.core.plan(rung, bells, self._wake, last_poll, self._poll)
            for key, rev, payloads in work:
                try:
                    self._run(self.core.service(key, rev, payloads))
                except Exception:  # never let one bad read kill every watcher
                    log.exception("event feed service failed; retrying on the next wake")
        with contextlib.suppress(Exception):
            if pubsub is not None:
                pubsub.close()


class AsyncWatch:
    """The async twin of :class:`Watch`: ``async for``, ``await get(timeout)``."""

    def __init__(self, hub: AsyncHub, sub: Subscriber, q: asyncio.Queue[Any]) -> None:
        self._hub, self._sub, self._q = hub, sub, q
        self._buffer: deque[Event] = deque()
        self._position = sub.start

    @property
    def cursor(self) -> str:
        """Right after the last event returned: see :attr:`Watch.cursor`."""
        return self._position

    async def get(self, timeout: float | None = None) -> Event | None:
        if not self._buffer:
            try:
                item = await asyncio.wait_for(self._q.get(), timeout)
            except TimeoutError:
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
    """One pub/sub connection + one reader task per connection pool and event loop."""

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
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closed = False

    async def close(self) -> None:
        """End every watch of this hub and stop its task."""
        self._closed = True
        for sub in [s for subs in list(self.core.feeds.values()) for s in subs]:
            self.core.remove(sub)
            sub.push(errors.TransportError("the client was closed"))
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def watch(
        self, ctx: Context, start: str, pattern: str, types: frozenset[str] | None
    ) -> AsyncWatch:
        if self._closed:
            raise errors.TransportError("the client was closed")
        q: asyncio.Queue[Any] = asyncio.Queue()
        sub = Subscriber(ctx, start, pattern, types, q.put_nowait)
        self.core.add(sub)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop())
        return AsyncWatch(self, sub, q)

    async def _loop(self) -> None:
        pubsub: Any = None
        subscribed: set[str] = set()
        last_poll = 0.0
        try:
            while not self.core.empty():
                rung: dict[str, int | None] = {}
                bells: dict[str, list[bytes]] = {}
                try:
                    if pubsub is None:
                        pubsub, subscribed = self._client.pubsub(), set()
                    wanted = self.core.channels()
                    if wanted - subscribed:
                        await pubsub.ssubscribe(*(wanted - subscribed))
                        subscribed |= wanted
                    # Cluster pub/sub keeps one connection per shard: read those.
                    read = getattr(pubsub, "get_sharded_message", pubsub.get_message)
                    msg = await read(ignore_subscribe_messages=True, timeout=0.05)
                    for _ in range(256):  # drain what is queued: one service per burst
                        if msg is None:
                            break
                        _note(msg, rung, bells)
                        msg = await read(ignore_subscribe_messages=True, timeout=0)
                except Exception as exc:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
                    pubsub = None
                    await asyncio.sleep(_doorbell_failed(exc, self._poll))
                work, last_poll = self.core.plan(rung, bells, self._wake, last_poll, self._poll)
                for key, rev, payloads in work:
                    try:
                        await self._run(self.core.service(key, rev, payloads))
                    except Exception:
                        log.exception("event feed service failed; retrying on the next wake")
        finally:
            if pubsub is not None:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()


OnError = Callable[[BaseException, Event | None], Any]


class Subscription:
    """A callback subscription on a background thread. An exception in the callback is
    logged, counted (``errors``) and passed to ``on_error``; the subscription goes on.
    It ends only on ``unsubscribe()`` or when the feed ends (trimmed, denied, deleted)."""

    def __init__(
        self, watch: Watch, callback: Callable[[Event], Any], on_error: OnError | None
    ) -> None:
        self._watch, self._callback, self._on_error = watch, callback, on_error
        self.errors = 0
        self.delivered = 0
        self.ended: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name="swarm-memory-subscription", daemon=True
        )
        self._thread.start()

    def _report(self, exc: BaseException, event: Event | None) -> None:
        if self._on_error is not None:
            try:
                self._on_error(exc, event)
            except Exception:
                log.exception("on_error callback raised")

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                event = self._watch.get(timeout=0.1)
            except errors.SwarmMemoryError as exc:
                self.ended = exc
                self._report(exc, None)
                return
            if event is None:
                continue
            try:
                self._callback(event)
                self.delivered += 1
            except Exception as exc:
                self.errors += 1
                log.exception("subscription callback raised on %s", event)
                self._report(exc, event)

    @property
    def active(self) -> bool:
        return self._thread.is_alive()

    def unsubscribe(self) -> None:
        self._stop.set()
        self._watch.close()
        if threading.current_thread() is not self._thread:
            self._thread.join(5)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.unsubscribe()


class AsyncSubscription:
    """The async twin of :class:`Subscription`, on a task; the callback may be async."""

    def __init__(
        self, watch: AsyncWatch, callback: Callable[[Event], Any], on_error: OnError | None
    ) -> None:
        self._watch, self._callback, self._on_error = watch, callback, on_error
        self.errors = 0
        self.delivered = 0
        self.ended: BaseException | None = None
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _report(self, exc: BaseException, event: Event | None) -> None:
        if self._on_error is not None:
            try:
                result = self._on_error(exc, event)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("on_error callback raised")

    async def _loop(self) -> None:
        while True:
            try:
                event = await self._watch.get()
            except errors.SwarmMemoryError as exc:
                self.ended = exc
                await self._report(exc, None)
                return
            if event is None:
                continue
            try:
                result = self._callback(event)
                if asyncio.iscoroutine(result):
                    await result
                self.delivered += 1
            except Exception as exc:
                self.errors += 1
                log.exception("subscription callback raised on %s", event)
                await self._report(exc, event)

    @property
    def active(self) -> bool:
        return not self._task.done()

    async def unsubscribe(self) -> None:
        await self._watch.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def __aenter__(self) -> AsyncSubscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.unsubscribe()


def _doorbell_failed(exc: BaseException, poll: float) -> float:
    """Log a lost or refused doorbell (an ACL without channel rights, a server without
    SSUBSCRIBE); return how long to wait before trying again. Watchers keep being served
    by polling meanwhile: the doorbell is only a hint."""
    refused = not isinstance(exc, rexc.ConnectionError | rexc.TimeoutError | OSError)
    log.log(
        logging.WARNING if refused else logging.INFO,
        "event doorbell unavailable (%s); polling every %ss",
        exc,
        poll,
    )
    return min(poll, 1.0) if refused else 0.05


def _note(msg: dict[str, Any], rung: dict[str, int | None], bells: dict[str, list[bytes]]) -> None:
    """Record a doorbell: the newest revision rung per channel (None = read anyway) and
    its payload (the events it carries)."""
    if msg.get("type") != "smessage":
        return
    raw = msg["channel"]
    channel = raw.decode() if isinstance(raw, bytes) else str(raw)
    data = msg["data"] if isinstance(msg["data"], bytes) else str(msg["data"]).encode()
    try:
        rev: int | None = int(_ops.unpack(data)[0])
    except (ValueError, IndexError):
        rev = None  # "0": the namespace was dropped; anything else: read anyway
    if not rev:
        rung[channel] = None
        return
    bells.setdefault(channel, []).append(data)
    if channel not in rung or (rung[channel] is not None and rev > (rung[channel] or 0)):
        rung[channel] = rev


def types_arg(types: object) -> frozenset[str] | None:
    if types is None:
        return None
    if isinstance(types, str) or not isinstance(types, Iterable):
        raise errors.InvalidInput("types must be a collection of event type names", field="types")
    kinds = frozenset(types)
    if not all(isinstance(t, str) for t in kinds):
        raise errors.InvalidInput("types must be a collection of event type names", field="types")
    return frozenset(str(t) for t in kinds)


def pattern_arg(pattern: object) -> str:
    if not isinstance(pattern, str) or "\x00" in pattern:
        raise errors.InvalidInput("pattern must be a glob string", field="pattern", value=pattern)
    return pattern

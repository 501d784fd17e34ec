"""The change feed's I/O-free core, shared by the sync and async hubs.

Correctness lives in the stream: each subscriber holds its own cursor (a stream id) and
gets every event after it, in order, exactly once, or ``EventsTrimmed``. Pub/sub is only a
doorbell (sharded pub/sub on Cluster): it wakes the reader at once; a poll bound
(``Settings.watch_poll``) covers doorbells lost with a dropped connection.

A hub (one per connection pool, i.e. per client and its ``as_agent`` identities) keeps
one pub/sub connection and, per (namespace, agent), reads the feed once for every
subscriber at the same position, then hands events to each subscriber's queue. Reads
run the permission-checked ``events`` script as that agent. The reading logic is the
flow :meth:`FeedCore.service`; the hubs (``_async/events.py`` and the generated
``_sync/events.py``) run it on a task or a thread.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis.exceptions as rexc

from swarm_memory import errors
from swarm_memory._ops import events as _events
from swarm_memory._ops import records as _records
from swarm_memory._ops.effects import Context, Flow
from swarm_memory._synchronization import AsyncSignal, Signal
from swarm_memory.metrics import ClientMetrics
from swarm_memory.models import Event

log = logging.getLogger("swarm_memory.events")

FeedKey = tuple[str, str, str]  # (bell channel, namespace, agent)
_FATAL = (
    errors.EventsTrimmed,
    errors.HistoryRewound,
    errors.PermissionDenied,
    errors.NamespaceNotFound,
)
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
    # Server time (ms) of the event right before ``start``, once this subscriber has read
    # one: the next read checks it is still there, so a rewound history (revisions lost
    # in a crash and reused by new writes) raises HistoryRewound instead of passing.
    last_ms: int | None = None

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
    # Feed entries ("entry") and doorbell payloads ("doorbell") that did not decode and
    # were skipped (also logged, and counted in the metrics when they are on).
    skipped: dict[str, int] = field(default_factory=lambda: {"entry": 0, "doorbell": 0})

    def report_skipped(self, namespace: str, what: str, where: str, problem: str) -> None:
        """A feed entry or doorbell that is no event this library wrote: logged and
        counted, then skipped (the feed goes on past it, never stalls on it)."""
        self.skipped[what] = self.skipped.get(what, 0) + 1
        log.warning(
            "skipped a %s of namespace %r that does not decode (%s): %s",
            what,
            namespace,
            where,
            problem,
        )
        if self.metrics is not None:
            self.metrics.count_skipped(namespace, what)

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
        wake: Signal | AsyncSignal,
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
            # Watches of everything share the batch (consumers only read it).
            every = sub.pattern == "*" and sub.types is None
            wanted = events if every else [e for e in events if sub.wants(e)]
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
            _moved(group, cursor, events[-1])
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
                carried.append(_events.doorbell_events(subs[0].ctx, payload))
            except _records.DECODE_ERRORS as exc:  # the stream read delivers its events
                self.report_skipped(
                    subs[0].ctx.namespace, "doorbell", key[0], f"{type(exc).__name__}: {exc}"
                )
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
                    page = yield from _events.read_events(
                        group[0].ctx, cursor, self.batch, group[0].last_ms
                    )
                except _FATAL as exc:
                    for sub in group:
                        sub.push(exc)
                        self.remove(sub)
                    break
                except errors.SwarmMemoryError as exc:  # transport: retried on the next wake
                    log.warning("event feed read failed, will retry: %s", exc)
                    break
                for sid, problem in page.skipped:
                    self.report_skipped(group[0].ctx.namespace, "entry", sid, problem)
                if page.events:
                    self._deliver(group, page.events)
                if page.next != cursor:
                    # The entry right before the new position: the last event, unless the
                    # read ended on a skipped foreign entry (no time to check next read).
                    tail = page.events[-1] if page.events else None
                    _moved(group, page.next, tail if tail and tail.cursor == page.next else None)
                cursor = page.next
                for sub in group:
                    sub.start = cursor
                if self.metrics is not None:
                    behind = page.revision - int(cursor.split("-", 1)[0])
                    self.metrics.set_watch_lag(group[0].ctx.namespace, behind)
                if len(page.events) + len(page.skipped) < self.batch:
                    break


OnError = Callable[[BaseException, Event | None], Any]
_MAX_LEN_DIGITS = 12  # the length prefix of a netstring part (unpack reads as many)


def _bell_revision(data: bytes) -> int | None:
    """The revision a doorbell payload starts with (its first netstring part), or None
    when it does not: only that part is parsed here, per doorbell, on the reader; the
    whole payload is decoded (and checked) once by the feed's service."""
    colon = data.find(b":", 0, _MAX_LEN_DIGITS)
    digits = data[:colon]
    if colon < 0 or not digits.isdigit():
        return None
    first = data[colon + 1 : colon + 1 + int(digits)]
    return int(first) if first.isdigit() and len(first) == int(digits) else None


def _moved(group: list[Subscriber], cursor: str, last: Event | None) -> None:
    """The group read up to ``cursor``; ``last`` is the event right before it (None: an
    entry that was no event of ours, so the next read cannot check it)."""
    last_ms = None if last is None else round(last.time.timestamp() * 1000)
    for sub in group:
        sub.start, sub.last_ms = cursor, last_ms


def doorbell_failed(exc: BaseException, poll: float) -> float:
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


def note_doorbell(
    msg: dict[str, Any], rung: dict[str, int | None], bells: dict[str, list[bytes]]
) -> None:
    """Record a doorbell: the newest revision rung per channel (None = read anyway) and
    its payload (the events it carries)."""
    if msg.get("type") != "smessage":
        return
    raw = msg["channel"]
    channel = raw.decode() if isinstance(raw, bytes) else str(raw)
    data = msg["data"] if isinstance(msg["data"], bytes) else str(msg["data"]).encode()
    if data.isdigit():  # a bare revision (a big batch: read it), or "0" (dropped)
        rung[channel] = None
        return
    rev = _bell_revision(data)
    if not rev:
        # Not a doorbell this library rings: read anyway, and let service() report it
        # (it fails to decode there too).
        rung[channel] = None
        bells.setdefault(channel, []).append(data)
        return
    bells.setdefault(channel, []).append(data)
    if channel not in rung or (rung[channel] is not None and rev > (rung[channel] or 0)):
        rung[channel] = rev

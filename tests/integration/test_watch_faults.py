"""Watchers under faults, against a real redis-server (DESIGN.md decision 5).

The stream is the truth and pub/sub only a doorbell: a watcher must get every event after
its cursor, in (revision, seq) order, exactly once, whatever happens to its connections,
or an explicit ``EventsTrimmed`` / ``PermissionDenied``, never a silent gap.

Faults come from a third, raw client (``CLIENT KILL ID ...`` on every connection of the
watcher's client, which carries its own ``client_name``, so the writer is never hit) and
from a :class:`~tests.faultproxy.FaultProxy` subclass that keeps a pub/sub connection
open but swallows the doorbells it carries (a half-open connection: nothing tells the
client its doorbell is gone). Every expectation is read back from the server with XRANGE
on the namespace stream, never from the library under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from swarm_memory import (
    AsyncSwarmMemory,
    Event,
    EventsTrimmed,
    PermissionDenied,
    Settings,
    SwarmMemory,
)
from swarm_memory.keys import NamespaceKeys
from tests.faultproxy import FaultProxy
from tests.servers import RedisServer

NS = "team"
EVENTS = 5000
KILLS = 5
POLL = 0.3  # watch_poll for the poll-bound tests
MARGIN = 1.0  # scheduling slack on top of the poll bound
RUN_TIMEOUT = 45.0  # the whole 5,000-event run, kills included

Pos = tuple[int, int]  # (revision, seq)


# ---------------------------------------------------------------------------- helpers
def _settings(**kw: Any) -> Settings:
    return Settings(key_prefix="t" + uuid.uuid4().hex[:12], **kw)


def _client_name() -> str:
    return "watcher-" + uuid.uuid4().hex[:10]


def _named(url: str, name: str) -> str:
    """A URL whose connections all carry ``name`` (CLIENT SETNAME on connect)."""
    return f"{url}?client_name={name}"


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """The third client: kills connections and reads the stream for the expectations."""
    client = redis_server.client()
    yield client
    client.close()


def _connections(raw: redis.Redis, name: str, *, pubsub: bool | None = None) -> list[Any]:
    found = []
    for c in raw.client_list():
        if c.get("name") != name:
            continue
        is_pubsub = "P" in c.get("flags", "") or int(c.get("ssub", 0) or 0) > 0
        if pubsub is None or pubsub == is_pubsub:
            found.append(c)
    return found


def _kill(raw: Any, name: str, *, normal: bool = True) -> tuple[int, int]:
    """Kill every connection named ``name``: ``CLIENT KILL ID <id> TYPE pubsub`` and
    ``CLIENT KILL ID <id> TYPE normal SKIPME yes``. Returns (pubsub, normal) killed."""
    killed_pubsub = killed_normal = 0
    for c in raw.client_list():
        if c.get("name") != name:
            continue
        killed_pubsub += int(raw.execute_command("CLIENT", "KILL", "ID", c["id"], "TYPE", "pubsub"))
        if normal:
            killed_normal += int(
                raw.execute_command(
                    "CLIENT", "KILL", "ID", c["id"], "TYPE", "normal", "SKIPME", "yes"
                )
            )
    return killed_pubsub, killed_normal


def _kill_live(raw: Any, name: str) -> tuple[int, int]:
    """``_kill`` once it hits a connection: retried (for up to 5 s) while a kill finds
    none. The watcher reconnects on its next read (a doorbell or a poll), a fast writer
    can reach the next mark sooner, and a connection just listed can be gone a moment
    later, dropped by the client after another one's error (CI found kills of none)."""

    def hit() -> tuple[int, int] | None:
        killed = _kill(raw, name)
        return killed if killed != (0, 0) else None

    found: tuple[int, int] = _wait_for(hit, what="a watcher connection to kill")
    return found


def _wait_for(cond: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def _stream(raw: Any, prefix: str, after_rev: int = 0) -> list[tuple[Pos, str]]:
    """(revision, seq) and type of every stream entry after revision ``after_rev``."""
    key = NamespaceKeys.of(prefix, NS).events
    out = []
    for raw_id, fields in raw.xrange(key, min=f"{after_rev + 1}-0"):
        rev, seq = raw_id.decode().split("-")
        out.append(((int(rev), int(seq)), fields[b"t"].decode()))
    return out


def _oldest_kept(raw: Any, prefix: str) -> int:
    (first_id, _fields), *_ = raw.xrange(NamespaceKeys.of(prefix, NS).events, count=1)
    return int(first_id.split(b"-")[0])


def _server_rev(raw: redis.Redis, prefix: str) -> int:
    return int(raw.hget(NamespaceKeys.of(prefix, NS).meta, "rev") or 0)


def _plan() -> list[list[int]]:
    """EVENTS values in write calls: mostly single puts, every 7th a put_many of 5 keys
    (one revision, seq 0..4). Keys cycle over k0..k49."""
    plan: list[list[int]] = []
    i = step = 0
    while i < EVENTS:
        n = 5 if step % 7 == 3 and i + 5 <= EVENTS else 1
        plan.append(list(range(i, i + n)))
        i += n
        step += 1
    return plan


def _kill_marks() -> list[int]:
    return [EVENTS * (j + 1) // (KILLS + 1) for j in range(KILLS)]


def _check_run(got: list[Event], raw: redis.Redis, prefix: str, since: int) -> None:
    expected = [pos for pos, kind in _stream(raw, prefix, since) if kind == "put"]
    assert len(expected) == EVENTS
    positions = [(e.revision, e.seq) for e in got]
    dups = len(positions) - len(set(positions))
    assert dups == 0, f"{dups} duplicate events"
    assert all(a < b for a, b in itertools.pairwise(positions)), "out of order"
    missing = sorted(set(expected) - set(positions))
    assert not missing, f"{len(missing)} events never arrived, first {missing[:5]}"
    assert positions == expected
    assert [e.value for e in got] == list(range(EVENTS))
    assert all(e.type == "put" and e.key == f"k{e.value % 50}" for e in got)


def _sync_drain(w: Any, n: int, timeout: float = 5.0) -> list[Event]:
    out: list[Event] = []
    for _ in range(n):
        ev = w.get(timeout)
        assert ev is not None, f"only {len(out)} of {n} events arrived"
        out.append(ev)
    return out


async def _async_drain(w: Any, n: int, timeout: float = 5.0) -> list[Event]:
    out: list[Event] = []
    for _ in range(n):
        ev = await w.get(timeout)
        assert ev is not None, f"only {len(out)} of {n} events arrived"
        out.append(ev)
    return out


class DoorbellMuteProxy(FaultProxy):
    """A FaultProxy that, while ``muted`` is set, swallows what the server sends on
    pub/sub connections (after their SSUBSCRIBE confirmation) and keeps the connection
    open: the doorbell is lost and nothing tells the client so."""

    def __init__(self, host: str, port: int) -> None:
        self.muted = threading.Event()
        self.swallowed = 0
        super().__init__(host, port)

    def _pump_down(self, link: Any) -> None:
        pubsub = False
        try:
            while True:
                data = link.upstream.recv(65536)
                if not data:
                    break
                if b"ssubscribe" in data:
                    pubsub = True
                elif pubsub and self.muted.is_set():
                    self.swallowed += 1
                    continue
                link.client.sendall(data)
        except OSError:
            pass
        finally:
            self._forget(link)


# ------------------------------------------------------- 1. connection kills mid-run
def test_sync_watcher_survives_connection_kills(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    settings = _settings(watch_poll=0.2)
    name = _client_name()
    writer = SwarmMemory.from_url(redis_server.url, agent="writer", settings=settings)
    watcher = SwarmMemory.from_url(
        _named(redis_server.url, name), agent="watcher", settings=settings
    )
    try:
        writer.create_namespace(NS)
        wns = writer.namespace(NS)
        since = _server_rev(raw, settings.key_prefix)
        w = watcher.namespace(NS).watch(since=since)
        kills: list[tuple[int, int]] = []
        failure: list[BaseException] = []

        def write_all() -> None:
            try:
                marks, done = _kill_marks(), 0
                for batch in _plan():
                    if len(batch) == 1:
                        wns.put(f"k{batch[0] % 50}", batch[0])
                    else:
                        wns.put_many({f"k{i % 50}": i for i in batch})
                    done += len(batch)
                    while marks and done >= marks[0]:
                        marks.pop(0)
                        kills.append(_kill_live(raw, name))  # (a kill of none retried)
            except BaseException as exc:
                failure.append(exc)

        thread = threading.Thread(target=write_all, name="writer", daemon=True)
        started = time.monotonic()
        thread.start()
        got: list[Event] = []
        deadline = started + RUN_TIMEOUT
        while len(got) < EVENTS and time.monotonic() < deadline:
            ev = w.get(timeout=0.5)
            if ev is not None:
                got.append(ev)
            assert not failure, f"writer failed: {failure[0]!r}"
        thread.join(10)
        assert not failure, f"writer failed: {failure[0]!r}"
        assert len(kills) == KILLS
        assert sum(p for p, _ in kills) >= 3, f"the doorbell was rarely killed: {kills}"
        assert len(got) == EVENTS, (
            f"{len(got)} of {EVENTS} events after {time.monotonic() - started:.1f}s; "
            f"kills (pubsub, normal): {kills}"
        )
        _check_run(got, raw, settings.key_prefix, since)
        assert w.get(0.3) is None  # nothing extra, nothing twice
        # The doorbell is back after the kills.
        _wait_for(lambda: _connections(raw, name, pubsub=True), what="doorbell reconnect")
        w.close()
    finally:
        watcher.close()
        writer.close()


async def test_async_watcher_survives_connection_kills(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    settings = _settings(watch_poll=0.2)
    name = _client_name()
    writer = AsyncSwarmMemory.from_url(redis_server.url, agent="writer", settings=settings)
    watcher = AsyncSwarmMemory.from_url(
        _named(redis_server.url, name), agent="watcher", settings=settings
    )
    try:
        await writer.create_namespace(NS)
        wns = writer.namespace(NS)
        since = _server_rev(raw, settings.key_prefix)
        w = await watcher.namespace(NS).watch(since=since)
        kills: list[tuple[int, int]] = []

        async def write_all() -> None:
            marks, done = _kill_marks(), 0
            for batch in _plan():
                if len(batch) == 1:
                    await wns.put(f"k{batch[0] % 50}", batch[0])
                else:
                    await wns.put_many({f"k{i % 50}": i for i in batch})
                done += len(batch)
                while marks and done >= marks[0]:
                    marks.pop(0)
                    kills.append(await asyncio.to_thread(_kill_live, raw, name))

        async def consume() -> list[Event]:
            got: list[Event] = []
            while len(got) < EVENTS:
                got.append(await w.__anext__())
            return got

        started = time.monotonic()
        writing = asyncio.create_task(write_all())
        try:
            got = await asyncio.wait_for(consume(), RUN_TIMEOUT)
        except TimeoutError:
            pytest.fail(
                f"not all {EVENTS} events arrived within {RUN_TIMEOUT}s "
                f"(writer done: {writing.done()}); kills (pubsub, normal): {kills}"
            )
        finally:
            if not writing.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(writing), 10)
        await writing  # re-raises a writer failure
        assert time.monotonic() - started < RUN_TIMEOUT
        assert len(kills) == KILLS
        assert sum(p for p, _ in kills) >= 3, f"the doorbell was rarely killed: {kills}"
        _check_run(got, raw, settings.key_prefix, since)
        assert await w.get(0.3) is None
        deadline = time.monotonic() + 5
        while not _connections(raw, name, pubsub=True):
            assert time.monotonic() < deadline, "the doorbell never reconnected"
            await asyncio.sleep(0.02)
        await w.close()
    finally:
        await watcher.close()
        await writer.close()


# ------------------------------------------------------------------- 2. doorbell lost
def test_doorbell_connection_killed_events_still_arrive(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    settings = _settings(watch_poll=POLL)
    name = _client_name()
    admin = SwarmMemory.from_url(redis_server.url, agent="planner", settings=settings)
    watcher = SwarmMemory.from_url(
        _named(redis_server.url, name), agent="watcher", settings=settings
    )
    try:
        admin.create_namespace(NS)
        ns = admin.namespace(NS)
        since = _server_rev(raw, settings.key_prefix)
        w = watcher.namespace(NS).watch(since=since)
        got: list[Event] = []
        for rnd in range(5):
            _wait_for(lambda: _connections(raw, name, pubsub=True), what="doorbell subscribed")
            killed_pubsub, _ = _kill(raw, name, normal=False)
            assert killed_pubsub == 1
            t0 = time.monotonic()
            entry = ns.put(f"after-kill-{rnd}", rnd)  # the doorbell for this one is lost
            ev = w.get(timeout=POLL + MARGIN)
            latency = time.monotonic() - t0
            assert ev is not None, f"round {rnd}: event not delivered within the poll bound"
            assert (ev.revision, ev.key) == (entry.mod_revision, f"after-kill-{rnd}")
            assert latency <= POLL + MARGIN
            got.append(ev)
        expected = [pos for pos, _ in _stream(raw, settings.key_prefix, since)]
        assert [(e.revision, e.seq) for e in got] == expected
        assert w.get(0.2) is None
        w.close()
    finally:
        watcher.close()
        admin.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_doorbell_silently_lost_poll_bound_delivers(
    redis_server: RedisServer, raw: redis.Redis, mode: str
) -> None:
    """The pub/sub connection stays open but its doorbells vanish: only the poll bound
    (watch_poll) can deliver, and it must, for every event, within poll + margin."""
    settings = _settings(watch_poll=POLL)
    admin = SwarmMemory.from_url(redis_server.url, agent="planner", settings=settings)
    admin.create_namespace(NS)
    ns = admin.namespace(NS)
    since = _server_rev(raw, settings.key_prefix)
    with DoorbellMuteProxy(redis_server.host, redis_server.port) as proxy:
        memory: Any
        if mode == "sync":
            memory = SwarmMemory.from_url(proxy.url, agent="watcher", settings=settings)
            w: Any = memory.namespace(NS).watch(since=since)
        else:
            memory = AsyncSwarmMemory.from_url(proxy.url, agent="watcher", settings=settings)
            w = await memory.namespace(NS).watch(since=since)

        async def get(timeout: float) -> Event | None:
            if mode == "sync":
                return await asyncio.to_thread(w.get, timeout)
            got: Event | None = await w.get(timeout)
            return got

        try:
            # Doorbell working: the first event is prompt.
            ns.put("warm", 0)
            first = await get(2.0)
            assert first is not None and first.key == "warm"
            proxy.muted.set()
            got: list[Event] = [first]
            latencies = []
            for i in range(6):
                await asyncio.sleep(0.05 * (i % 3))  # land at different poll phases
                t0 = time.monotonic()
                if i % 2:
                    ns.put_many({f"m{i}-{j}": j for j in range(3)})
                    batch = [await get(POLL + MARGIN) for _ in range(3)]
                else:
                    ns.put(f"p{i}", i)
                    batch = [await get(POLL + MARGIN)]
                latencies.append(time.monotonic() - t0)
                assert all(e is not None for e in batch), f"write {i}: lost with the doorbell"
                got.extend(e for e in batch if e is not None)
            assert proxy.swallowed >= 1, "the proxy never swallowed a doorbell"
            assert max(latencies) <= POLL + MARGIN, latencies
            expected = [pos for pos, _ in _stream(raw, settings.key_prefix, since)]
            assert [(e.revision, e.seq) for e in got] == expected
            assert await get(0.2) is None
        finally:
            if mode == "sync":
                w.close()
                memory.close()
            else:
                await w.close()
                await memory.close()
    admin.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_doorbell_refused_degrades_to_polling(
    redis_server: RedisServer, raw: redis.Redis, mode: str
) -> None:
    """The server refuses the doorbell subscription (an ACL user without channel
    permissions: SSUBSCRIBE fails with NOPERM; a Redis without SSUBSCRIBE fails alike).
    Pub/sub is only a doorbell: the watcher must fall back to the poll bound, not stop
    reading the stream and hang without an error."""
    settings = _settings(watch_poll=POLL)
    user = "nochan-" + uuid.uuid4().hex[:8]
    raw.execute_command("ACL", "SETUSER", user, "on", ">pw", "~*", "resetchannels", "+@all")
    url = f"redis://{user}:pw@{redis_server.host}:{redis_server.port}/0"
    admin = SwarmMemory.from_url(redis_server.url, agent="planner", settings=settings)
    memory: Any = None
    w: Any = None
    try:
        admin.create_namespace(NS)
        ns = admin.namespace(NS)
        since = _server_rev(raw, settings.key_prefix)
        if mode == "sync":
            memory = SwarmMemory.from_url(url, agent="watcher", settings=settings)
            w = memory.namespace(NS).watch(since=since)
        else:
            memory = AsyncSwarmMemory.from_url(url, agent="watcher", settings=settings)
            w = await memory.namespace(NS).watch(since=since)
        got: list[Event] = []
        for i in range(3):
            await asyncio.sleep(0.1)
            ns.put(f"k{i}", i)
            if mode == "sync":
                ev = await asyncio.to_thread(w.get, POLL + MARGIN)
            else:
                ev = await w.get(POLL + MARGIN)
            assert ev is not None, (
                f"event {i} never arrived: the watcher stopped reading when its doorbell "
                f"subscription was refused"
            )
            got.append(ev)
        expected = [pos for pos, _ in _stream(raw, settings.key_prefix, since)]
        assert [(e.revision, e.seq) for e in got] == expected
    finally:
        if w is not None:
            if mode == "sync":
                w.close()
                memory.close()
            else:
                hub = memory._driver.hub
                await w.close()
                await memory.close()
                # A hub task that died of the refusal would log "Task exception was never
                # retrieved" whenever it is garbage-collected, maybe inside pytest's own
                # ast.parse of a later failure, which CPython 3.11 turns into an
                # INTERNALERROR (traceback carets re-enter ast). Retrieve it here.
                task = getattr(hub, "_task", None)
                if task is not None and task.done() and not task.cancelled():
                    task.exception()
        admin.close()
        raw.execute_command("ACL", "DELUSER", user)


# ----------------------------------------------------------------------- 3. trimmed
def test_watch_from_a_trimmed_revision_raises(redis_server: RedisServer, raw: redis.Redis) -> None:
    settings = _settings(watch_poll=POLL)
    mem = SwarmMemory.from_url(redis_server.url, agent="planner", settings=settings)
    try:
        mem.create_namespace(NS, max_events=10)
        ns = mem.namespace(NS)
        for i in range(1000):
            ns.put(f"k{i % 50}", i)
        prefix = settings.key_prefix
        last = _server_rev(raw, prefix)
        oldest = _oldest_kept(raw, prefix)
        assert oldest > 2  # MAXLEN ~ keeps whole stream nodes: 10 or more, not 1001
        kept = len(_stream(raw, prefix))
        assert kept < 1000 and kept == last - oldest + 1

        with pytest.raises(EventsTrimmed) as exc:
            ns.watch(since=1)
        # requested: the first revision the caller needs (since + 1), as the contract
        # tests (tests/contract/test_events.py) define it.
        assert (exc.value.requested, exc.value.oldest) == (2, oldest)
        # The same by cursor, just below the oldest kept entry.
        with pytest.raises(EventsTrimmed) as exc:
            ns.watch(since=f"{oldest - 1}-0")
        assert (exc.value.requested, exc.value.oldest) == (oldest - 1, oldest)
        with pytest.raises(EventsTrimmed):
            ns.watch(since=oldest - 2)

        # A recent cursor still works ...
        recent = ns.watch(since=last - 2)
        tail = _sync_drain(recent, 2)
        assert [e.revision for e in tail] == [last - 1, last]
        assert [e.value for e in tail] == [998, 999]
        assert recent.get(0.2) is None
        recent.close()
        # ... and so does the oldest kept position exactly.
        edge = ns.watch(since=oldest - 1)
        everything = _sync_drain(edge, kept)
        assert [e.revision for e in everything] == list(range(oldest, last + 1))
        edge.close()
    finally:
        mem.close()


async def test_paused_async_watcher_behind_trimming_raises(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    """The async hub runs on the loop: writing with a blocking client without yielding
    to the loop pauses the watcher for sure while the feed is trimmed past it."""
    settings = _settings(watch_poll=POLL)
    writer = SwarmMemory.from_url(redis_server.url, agent="writer", settings=settings)
    watcher = AsyncSwarmMemory.from_url(redis_server.url, agent="watcher", settings=settings)
    try:
        writer.create_namespace(NS, max_events=10)
        ns = writer.namespace(NS)
        start = _server_rev(raw, settings.key_prefix) + 1
        w = await watcher.namespace(NS).watch()
        for i in range(1000):  # no await: the hub cannot read meanwhile
            ns.put(f"k{i % 50}", i)
        oldest = _oldest_kept(raw, settings.key_prefix)
        assert oldest > start
        with pytest.raises(EventsTrimmed) as exc:
            await w.get(5.0)
        assert (exc.value.requested, exc.value.oldest) == (start, oldest)
    finally:
        await watcher.close()
        writer.close()


def test_paused_sync_watcher_behind_trimming_raises(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    """A sync watcher whose hub hears no doorbell (muted) and polls rarely is behind
    the trimming when it next reads: EventsTrimmed, not the events after the gap."""
    settings = _settings(watch_poll=30.0)
    writer = SwarmMemory.from_url(redis_server.url, agent="writer", settings=settings)
    with DoorbellMuteProxy(redis_server.host, redis_server.port) as proxy:
        watcher = SwarmMemory.from_url(proxy.url, agent="watcher", settings=settings)
        try:
            writer.create_namespace(NS, max_events=10)
            ns = writer.namespace(NS)
            start = _server_rev(raw, settings.key_prefix) + 1
            w = watcher.namespace(NS).watch()
            ns.put("first", 0)  # the hub is running and subscribed
            ev = w.get(5.0)
            assert ev is not None and ev.revision == start
            proxy.muted.set()
            for i in range(1000):  # consumption paused, doorbells lost
                ns.put(f"k{i % 50}", i)
            oldest = _oldest_kept(raw, settings.key_prefix)
            assert oldest > start + 1
            proxy.muted.clear()
            ns.put("wake", 1)  # a doorbell that gets through: the hub reads now
            # A doorbell already in flight when the mute began may have let the hub read
            # a few events: those must be the gapless run right after "first", then the
            # error (the run cannot reach `oldest`: trimmed entries are gone).
            late: list[Event] = []
            with pytest.raises(EventsTrimmed) as exc:
                for _ in range(1000):
                    got = w.get(5.0)
                    assert got is not None, f"neither events nor EventsTrimmed after {late}"
                    late.append(got)
            assert [e.revision for e in late] == list(range(start + 1, start + 1 + len(late)))
            assert (exc.value.requested, exc.value.oldest) == (start + 1 + len(late), oldest)
            assert exc.value.requested < oldest
        finally:
            watcher.close()
            writer.close()


def test_unconsumed_watcher_never_skips_silently(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    """Not consuming while the feed is trimmed hard: whatever the hub managed to buffer
    must be a gapless run from the start, then either the rest or EventsTrimmed."""
    settings = _settings(watch_poll=POLL)
    writer = SwarmMemory.from_url(redis_server.url, agent="writer", settings=settings)
    watcher = SwarmMemory.from_url(redis_server.url, agent="watcher", settings=settings)
    try:
        writer.create_namespace(NS, max_events=10)
        ns = writer.namespace(NS)
        start = _server_rev(raw, settings.key_prefix) + 1
        w = watcher.namespace(NS).watch()
        for i in range(1000):
            ns.put(f"k{i % 50}", i)
        got: list[Event] = []
        trimmed: EventsTrimmed | None = None
        try:
            while len(got) < 1000:
                ev = w.get(POLL + MARGIN)
                assert ev is not None, f"stalled after {len(got)} events, neither rest nor error"
                got.append(ev)
        except EventsTrimmed as exc:
            trimmed = exc
        assert [e.revision for e in got] == list(range(start, start + len(got)))
        assert [e.value for e in got] == list(range(len(got)))
        if trimmed is not None:
            assert trimmed.requested == start + len(got)
            assert trimmed.oldest > trimmed.requested
        else:
            assert w.get(0.2) is None
            w.close()
    finally:
        watcher.close()
        writer.close()


# --------------------------------------------------------------- 4. resume by cursor
def test_resume_by_cursor_exactly_once(redis_server: RedisServer, raw: redis.Redis) -> None:
    settings = _settings(watch_poll=POLL)
    mem = SwarmMemory.from_url(redis_server.url, agent="planner", settings=settings)
    try:
        mem.create_namespace(NS)
        ns = mem.namespace(NS)
        since = _server_rev(raw, settings.key_prefix)
        for i in range(100):
            ns.put(f"k{i % 50}", i)
        w = ns.watch(since=since)
        first = _sync_drain(w, 100)
        w.close()
        for i in range(100, 200):
            ns.put(f"k{i % 50}", i)
        w = ns.watch(since=first[-1].cursor)
        second = _sync_drain(w, 100)
        assert w.get(0.3) is None
        w.close()
        assert [e.value for e in first + second] == list(range(200))
        positions = [(e.revision, e.seq) for e in first + second]
        assert positions == [pos for pos, _ in _stream(raw, settings.key_prefix, since)]

        # Mid-revision: stop after the 2nd event of a 5-event revision, resume there.
        many = ns.put_many({f"m{j}": j for j in range(5)})
        ns.put("after", 1)
        w = ns.watch(since=second[-1].cursor)
        head = _sync_drain(w, 2)
        w.close()
        rev = many["m0"].mod_revision
        assert [(e.revision, e.seq, e.count) for e in head] == [(rev, 0, 5), (rev, 1, 5)]
        assert head[1].cursor == f"{rev}-2"
        w = ns.watch(since=head[1].cursor)
        rest = _sync_drain(w, 4)
        assert w.get(0.3) is None
        w.close()
        assert [(e.revision, e.seq) for e in rest[:3]] == [(rev, 2), (rev, 3), (rev, 4)]
        assert sorted(str(e.key) for e in head + rest[:3]) == [f"m{j}" for j in range(5)]
        assert (rest[3].key, rest[3].revision) == ("after", rev + 1)
        assert rest[2].cursor == f"{rev + 1}-0"
    finally:
        mem.close()


async def test_async_resume_mid_revision(redis_server: RedisServer, raw: redis.Redis) -> None:
    settings = _settings(watch_poll=POLL)
    mem = AsyncSwarmMemory.from_url(redis_server.url, agent="planner", settings=settings)
    try:
        await mem.create_namespace(NS)
        ns = mem.namespace(NS)
        since = _server_rev(raw, settings.key_prefix)
        await ns.put_many({f"a{j}": j for j in range(5)})
        await ns.put_many({f"b{j}": j for j in range(5)})
        w = await ns.watch(since=since)
        head = await _async_drain(w, 7)  # all of the first revision, 2 of the second
        await w.close()
        w = await ns.watch(since=head[-1].cursor)
        rest = await _async_drain(w, 3)
        assert await w.get(0.3) is None
        await w.close()
        positions = [(e.revision, e.seq) for e in head + rest]
        assert positions == [pos for pos, _ in _stream(raw, settings.key_prefix, since)]
    finally:
        await mem.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_watch_cursor_is_where_the_consumer_is(
    redis_server: RedisServer, raw: redis.Redis, mode: str
) -> None:
    """``Watch.cursor`` promises "where this watch would resume (since=) if it stopped
    now". A consumer that has taken 3 of 10 events, closes and resumes from it must get
    the other 7: events the hub buffered but nobody consumed must not vanish."""
    settings = _settings(watch_poll=POLL)
    mem = SwarmMemory.from_url(redis_server.url, agent="planner", settings=settings)
    amem = AsyncSwarmMemory.from_url(redis_server.url, agent="planner", settings=settings)
    try:
        mem.create_namespace(NS)
        ns = mem.namespace(NS)
        since = _server_rev(raw, settings.key_prefix)
        rest: list[Event]
        if mode == "sync":
            w: Any = ns.watch(since=since)
            for i in range(10):
                ns.put(f"k{i}", i)
            taken = _sync_drain(w, 3)
            time.sleep(POLL + 0.2)  # the hub reads on (as it would in real use)
            cursor = w.cursor
            w.close()
            resumed: Any = ns.watch(since=cursor)
            rest = list(iter(lambda: resumed.get(0.5), None))
            resumed.close()
        else:
            ans = amem.namespace(NS)
            w = await ans.watch(since=since)
            for i in range(10):
                await ans.put(f"k{i}", i)
            taken = await _async_drain(w, 3)
            await asyncio.sleep(POLL + 0.2)
            cursor = w.cursor
            await w.close()
            resumed = await ans.watch(since=cursor)
            rest = []
            while (ev := await resumed.get(0.5)) is not None:
                rest.append(ev)
            await resumed.close()
        assert [e.value for e in taken] == [0, 1, 2]
        assert [e.value for e in rest] == list(range(3, 10)), (
            f"resumed from Watch.cursor={cursor!r} (the hub's read position; the last "
            f"consumed event's cursor is {taken[-1].cursor!r}): events "
            f"{sorted(set(range(3, 10)) - {e.value for e in rest})} were silently skipped"
        )
    finally:
        await amem.close()
        mem.close()


# --------------------------------------------------------------------- 5. permission
def test_permission_on_watch_audit_and_revoke_ends_a_running_watch(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    settings = _settings(watch_poll=POLL)
    admin = SwarmMemory.from_url(redis_server.url, agent="planner", settings=settings)
    reader_mem = SwarmMemory.from_url(redis_server.url, agent="reader", settings=settings)
    try:
        admin.create_namespace(NS, default_permission="none")
        ns = admin.namespace(NS)
        rns = reader_mem.namespace(NS)
        with pytest.raises(PermissionDenied) as exc:
            rns.watch()
        assert (exc.value.required, exc.value.granted) == ("read", "none")
        with pytest.raises(PermissionDenied):
            rns.watch(since=0)
        with pytest.raises(PermissionDenied) as exc:
            rns.audit()
        assert (exc.value.required, exc.value.granted) == ("read", "none")

        ns.grant({"reader": "read"})
        w = rns.watch()
        assert rns.audit(limit=5)  # read is enough for the audit log too
        ns.put("visible", 1)
        ev = w.get(POLL + MARGIN)
        assert ev is not None and ev.key == "visible"

        ns.revoke(["reader"])
        revoked_at = _server_rev(raw, settings.key_prefix)
        t0 = time.monotonic()
        ns.put("secret", 2)
        late: list[Event] = []
        with pytest.raises(PermissionDenied) as exc:
            while time.monotonic() - t0 < POLL + MARGIN:
                got = w.get(0.05)
                if got is not None:
                    late.append(got)
        assert time.monotonic() - t0 <= POLL + MARGIN
        assert exc.value.granted == "none"
        # Nothing at or after the revoke reached the revoked reader.
        assert all(e.revision < revoked_at for e in late), late
        assert "secret" not in {e.key for e in late}
    finally:
        reader_mem.close()
        admin.close()


async def test_async_revoke_ends_a_running_watch(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    settings = _settings(watch_poll=POLL)
    admin = AsyncSwarmMemory.from_url(redis_server.url, agent="planner", settings=settings)
    reader_mem = AsyncSwarmMemory.from_url(redis_server.url, agent="reader", settings=settings)
    try:
        await admin.create_namespace(NS, default_permission="none")
        ns = admin.namespace(NS)
        rns = reader_mem.namespace(NS)
        with pytest.raises(PermissionDenied):
            await rns.watch()
        with pytest.raises(PermissionDenied):
            await rns.audit()
        await ns.grant({"reader": "read"})
        w = await rns.watch()
        await ns.put("visible", 1)
        ev = await w.get(POLL + MARGIN)
        assert ev is not None and ev.key == "visible"
        await ns.revoke(["reader"])
        revoked_at = _server_rev(raw, settings.key_prefix)
        await ns.put("secret", 2)
        late: list[Event] = []

        async def until_denied() -> None:
            while True:
                late.append(await w.__anext__())

        with pytest.raises(PermissionDenied):
            await asyncio.wait_for(until_denied(), POLL + MARGIN)
        assert all(e.revision < revoked_at for e in late), late
    finally:
        await reader_mem.close()
        await admin.close()


# ---------------------------------------------------------------------- 6. subscribe
def test_subscription_survives_a_raising_callback_and_stops_on_unsubscribe(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    settings = _settings(watch_poll=POLL)
    mem = SwarmMemory.from_url(redis_server.url, agent="planner", settings=settings)
    try:
        mem.create_namespace(NS)
        ns = mem.namespace(NS)
        since = _server_rev(raw, settings.key_prefix)
        seen: list[int] = []
        reported: list[tuple[BaseException, Event | None]] = []

        def callback(ev: Event) -> None:
            if ev.value % 3 == 0:
                raise ValueError(f"boom {ev.value}")
            seen.append(ev.value)

        sub = ns.subscribe(
            callback, since=since, on_error=lambda exc, ev: reported.append((exc, ev))
        )
        for i in range(30):
            ns.put(f"k{i}", i)
        _wait_for(lambda: sub.delivered + sub.errors >= 30, what="30 callbacks")
        assert sub.errors == 10 and sub.delivered == 20
        assert seen == [i for i in range(30) if i % 3]
        assert [ev.value for _, ev in reported if ev is not None] == list(range(0, 30, 3))
        assert all(
            isinstance(e, ValueError) and str(e) == f"boom {ev.value}"
            for e, ev in reported
            if ev is not None
        )
        assert len(reported) == 10 and sub.active and sub.ended is None

        sub.unsubscribe()
        assert not sub.active
        for i in range(30, 40):
            ns.put(f"k{i}", i)
        time.sleep(POLL + 0.3)
        assert len(seen) == 20 and sub.errors == 10 and len(reported) == 10
    finally:
        mem.close()


async def test_async_subscription_survives_a_raising_callback(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    settings = _settings(watch_poll=POLL)
    mem = AsyncSwarmMemory.from_url(redis_server.url, agent="planner", settings=settings)
    try:
        await mem.create_namespace(NS)
        ns = mem.namespace(NS)
        since = _server_rev(raw, settings.key_prefix)
        seen: list[int] = []
        reported: list[tuple[BaseException, Event | None]] = []

        async def callback(ev: Event) -> None:
            if ev.value % 3 == 0:
                raise ValueError(f"boom {ev.value}")
            seen.append(ev.value)

        async def on_error(exc: BaseException, ev: Event | None) -> None:
            reported.append((exc, ev))

        sub = await ns.subscribe(callback, since=since, on_error=on_error)
        for i in range(30):
            await ns.put(f"k{i}", i)
        deadline = time.monotonic() + 5
        while sub.delivered + sub.errors < 30:
            assert time.monotonic() < deadline, (sub.delivered, sub.errors)
            await asyncio.sleep(0.01)
        assert (sub.delivered, sub.errors) == (20, 10)
        assert seen == [i for i in range(30) if i % 3]
        assert [ev.value for _, ev in reported if ev is not None] == list(range(0, 30, 3))
        assert sub.active and sub.ended is None
        await sub.unsubscribe()
        assert not sub.active
        for i in range(30, 40):
            await ns.put(f"k{i}", i)
        await asyncio.sleep(POLL + 0.3)
        assert len(seen) == 20 and sub.errors == 10
    finally:
        await mem.close()

"""The hub reader's order of work per doorbell, against a real redis-server (issue 16).

An event's latency is the reader's work between a doorbell arriving and the watchers
getting its events. On the async client a doorbell after a quiet spell is handed on
before the hub reads again (a look for more costs a loop turn per event), and the
watchers it woke run before that read; on a thread the reader looks first (cheap) and
blocks right after the hand-off, since the woken watchers need the GIL it holds. Either
way a burst of queued doorbells is drained into one service. The order is recorded by wrapping the
doorbell connection's reads and the subscriber's hand-off, so nothing here is timed.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from swarm_memory import AsyncSwarmMemory, Settings, SwarmMemory
from tests.servers import RedisServer

NS = "team"
Log = list[tuple[Any, ...]]


class _RecordingPubSub:
    """A doorbell connection that logs each read as it starts, ("reading", timeout), and
    as it returns, ("read", timeout, got a message)."""

    def __init__(self, real: Any, log: Log) -> None:
        self._real, self._log = real, log

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def get_sharded_message(self, **kw: Any) -> Any:
        self._log.append(("reading", kw.get("timeout")))
        msg = self._real.get_sharded_message(**kw)
        self._log.append(("read", kw.get("timeout"), msg is not None))
        return msg


class _AsyncRecordingPubSub(_RecordingPubSub):
    async def get_sharded_message(self, **kw: Any) -> Any:
        self._log.append(("reading", kw.get("timeout")))
        msg = await self._real.get_sharded_message(**kw)
        self._log.append(("read", kw.get("timeout"), msg is not None))
        return msg


class _Client:
    """The hub's client, whose ``pubsub()`` records."""

    def __init__(self, real: Any, log: Log, wrap: type[_RecordingPubSub]) -> None:
        self._real, self._log, self._wrap = real, log, wrap

    def pubsub(self) -> Any:
        return self._wrap(self._real.pubsub(), self._log)


def _record_pushes(watch: Any, log: Log) -> None:
    sub = watch._sub
    push = sub.push

    def logged(item: Any) -> None:
        log.append(("push",))
        push(item)

    sub.push = logged


def _settings() -> Settings:
    return Settings(key_prefix="t" + uuid.uuid4().hex[:12])


@pytest.fixture
def mem(redis_server: RedisServer) -> Iterator[SwarmMemory]:
    m = SwarmMemory.from_url(redis_server.url, agent="planner", settings=_settings())
    m.create_namespace(NS)
    yield m
    m.close()


def _after_quiet_doorbell(log: Log) -> list[tuple[Any, ...]]:
    """What the reader did right after the read that returned the doorbell."""
    at = next(i for i, e in enumerate(log) if e[0] == "read" and e[2])
    return log[at + 1 : at + 2]


def test_threads_look_for_queued_doorbells_first_and_block_right_after_the_hand_off(
    mem: SwarmMemory,
) -> None:
    """On a thread the woken watchers wait for the GIL until the reader blocks: it looks
    (no wait) before serving, never between the hand-off and its next waiting read."""
    log: Log = []
    hub = mem._event_hub()
    hub._client = _Client(hub._client, log, _RecordingPubSub)
    ns = mem.namespace(NS)
    with ns.watch() as w:
        ns.put("warm", 0)  # the first, checked read of the new connection comes first
        assert w.get(timeout=5) is not None
        time.sleep(0.3)  # quiet: the reader waits in a read
        _record_pushes(w, log)
        log.clear()
        ns.put("k", 1)
        ev = w.get(timeout=5)
        assert ev is not None and ev.key == "k"
        time.sleep(0.1)  # the reader is in its next read
    at = log.index(("read", 0.05, True))
    push = log.index(("push",))
    assert ("reading", 0) in log[at:push]
    assert [e for e in log[push:] if e[0] == "reading"][:1] == [("reading", 0.05)]


def test_a_burst_of_queued_doorbells_is_drained_into_one_service(mem: SwarmMemory) -> None:
    hub = mem._event_hub()
    ns = mem.namespace(NS)
    served: list[int] = []
    service = hub.core.service

    def counted(key: Any, rung: Any = None, bells: Any = None) -> Any:
        served.append(len(bells or ()))
        return service(key, rung, bells)

    with ns.watch() as w:
        ns.put("warm", 0)
        assert w.get(timeout=5) is not None
        time.sleep(0.3)
        hub.core.service = counted  # type: ignore[method-assign]
        with hub.core.lock:  # the reader stops at its next look at the feeds
            for i in range(5):
                ns.put(f"k{i}", i)
            time.sleep(0.2)  # the doorbells queue up on its connection
        got = [w.get(timeout=5) for _ in range(5)]
        assert [e.key if e else None for e in got] == [f"k{i}" for i in range(5)]
        # At most the first alone (it may have been read before the reader stopped),
        # then the rest together; one service per doorbell would be 5.
        assert sum(1 for n in served if n) <= 2
        assert sum(served) == 5


def test_async_a_doorbell_after_a_quiet_spell_is_handed_on_before_the_next_read(
    redis_server: RedisServer,
) -> None:
    async def main() -> list[tuple[Any, ...]]:
        log: Log = []
        m = AsyncSwarmMemory.from_url(redis_server.url, agent="planner", settings=_settings())
        try:
            await m.create_namespace(NS)
            hub = m._event_hub()
            hub._client = _Client(hub._client, log, _AsyncRecordingPubSub)
            ns = m.namespace(NS)
            async with await ns.watch() as w:
                await ns.put("warm", 0)
                assert await w.get(timeout=5) is not None
                await asyncio.sleep(0.3)
                _record_pushes(w, log)
                log.clear()
                await ns.put("k", 1)
                ev = await w.get(timeout=5)
                log.append(("got",))
                assert ev is not None and ev.key == "k"
        finally:
            await m.close()
        return log

    log = asyncio.run(main())
    assert _after_quiet_doorbell(log) == [("push",)]
    # The watcher woken by the hand-off runs before the hub starts its next read.
    after = log[log.index(("push",)) + 1 :]
    assert not [e for e in after[: after.index(("got",))] if e[0] == "reading"]

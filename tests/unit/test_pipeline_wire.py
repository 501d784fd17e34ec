"""The pipelined channel's reply matching (swarm_memory/_pipeline.py), on a fake socket:
replies go to the calls in the order they were written, error replies become redis-py's
exceptions, and what cannot be matched any more (a Sentinel primary demoted, bytes that
are not RESP, a reply nobody asked for) closes the connection and fails every call."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio.observability.recorder as async_recorder
import redis.exceptions as rexc
from redis._parsers import _AsyncHiredisParser

from swarm_memory._drive import recording_off
from swarm_memory._pipeline import FLUSH_EVERY, AsyncScriptPipe, _Wire


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def abort(self) -> None:
        self.aborted = True


class _Writer:
    def __init__(self) -> None:
        self.transport = _Transport()


class _Pool:
    is_master = True


class _Conn:
    socket_timeout = 5.0
    _parser = _AsyncHiredisParser(65536)

    def __init__(self, sentinel: bool = False) -> None:
        if sentinel:
            self.connection_pool = _Pool()

    def _host_error(self) -> str:
        return "127.0.0.1:0"


async def _wire(sentinel: bool = False) -> tuple[_Wire, Any]:
    writer = _Writer()
    return _Wire(writer, _Conn(sentinel), asyncio.get_running_loop()), writer.transport


async def test_replies_go_to_the_calls_in_order_and_writes_are_batched() -> None:
    wire, transport = await _wire()
    futs = [wire.send(b"*1\r\n$4\r\nPING\r\n") for _ in range(3)]
    await asyncio.sleep(0)
    assert transport.written == [b"*1\r\n$4\r\nPING\r\n" * 3]  # one write for the turn
    wire.data_received(b"$1\r\na\r\n-NOSCRIPT No matching script.\r\n:")
    assert futs[0].result() == b"a"
    assert isinstance(futs[1].exception(), rexc.NoScriptError)
    assert not futs[2].done()
    wire.data_received(b"7\r\n")
    assert futs[2].result() == 7
    assert not wire.closed


async def test_a_busy_turn_writes_its_first_chunk_ahead_and_the_rest_at_its_end() -> None:
    """A turn's first FLUSH_EVERY calls are written as soon as there are that many (Redis
    starts on them while the rest are built), the rest at the turn's end, in order; the
    replies still go to the calls in the order written. Each turn writes its own first
    chunk ahead; a turn of exactly one chunk is one write."""
    wire, transport = await _wire()
    n = 2 * FLUSH_EVERY + 5
    cmds = [b"*2\r\n$4\r\nECHO\r\n$2\r\n%02d\r\n" % i for i in range(n)]
    futs = []
    for i, cmd in enumerate(cmds):
        futs.append(wire.send(cmd))
        assert len(transport.written) == (1 if i + 1 >= FLUSH_EVERY else 0)
    assert transport.written == [b"".join(cmds[:FLUSH_EVERY])]
    await asyncio.sleep(0)
    assert transport.written[1:] == [b"".join(cmds[FLUSH_EVERY:])]  # the turn's end
    wire.data_received(b"".join(b"$2\r\n%02d\r\n" % i for i in range(n)))
    assert [f.result() for f in futs] == [b"%02d" % i for i in range(n)]
    # The next turn writes its own first chunk ahead again, then the rest at its end.
    for cmd in cmds[: FLUSH_EVERY + 1]:
        wire.send(cmd)
    assert transport.written[2:] == [b"".join(cmds[:FLUSH_EVERY])]
    await asyncio.sleep(0)
    assert transport.written[3:] == [cmds[FLUSH_EVERY]]
    # A turn of exactly one chunk is one write, and its end writes nothing more.
    for cmd in cmds[:FLUSH_EVERY]:
        wire.send(cmd)
    await asyncio.sleep(0)
    assert transport.written[4:] == [b"".join(cmds[:FLUSH_EVERY])]


async def test_a_cancelled_call_s_reply_is_dropped() -> None:
    wire, _ = await _wire()
    first, second = wire.send(b"x"), wire.send(b"y")
    first.cancel()
    wire.data_received(b"+one\r\n+two\r\n")
    assert second.result() == b"two"


async def test_readonly_on_a_sentinel_primary_is_a_connection_error() -> None:
    wire, transport = await _wire(sentinel=True)
    futs = [wire.send(b"x") for _ in range(3)]
    wire.data_received(b"-READONLY You can't write against a read only replica.\r\n")
    assert all(isinstance(f.exception(), rexc.ConnectionError) for f in futs)
    assert wire.closed and transport.aborted


async def test_readonly_elsewhere_is_the_reply() -> None:
    wire, _ = await _wire()
    fut = wire.send(b"x")
    wire.data_received(b"-READONLY You can't write against a read only replica.\r\n")
    assert isinstance(fut.exception(), rexc.ReadOnlyError)
    assert not wire.closed


@pytest.mark.parametrize("data", [b"?bogus\r\n", b"+one\r\n+two\r\n"])
async def test_what_cannot_be_matched_closes_the_connection(data: bytes) -> None:
    wire, transport = await _wire()
    fut = wire.send(b"x")
    after = wire.send(b"y") if data.startswith(b"?") else None
    wire.data_received(data)
    if after is None:  # the first reply was fut's; the second is nobody's
        assert fut.result() == b"one"
    else:
        assert isinstance(fut.exception(), rexc.InvalidResponse)
        assert isinstance(after.exception(), rexc.InvalidResponse)
    assert wire.closed and transport.aborted
    with pytest.raises(rexc.ConnectionError):
        wire.send(b"z")


async def test_connection_lost_fails_every_call_in_flight() -> None:
    wire, _ = await _wire()
    futs = [wire.send(b"x") for _ in range(3)]
    wire.connection_lost(ConnectionResetError(104, "reset"))
    errors = [f.exception() for f in futs]
    assert all(isinstance(e, rexc.ConnectionError) for e in errors)
    assert len({id(e) for e in errors}) == 3


async def test_a_connection_lost_mid_turn_fails_the_written_chunk_and_the_rest() -> None:
    """A connection lost after a turn's first chunk was written ahead and before the turn's
    end: the chunk's calls (maybe run) and the calls not written yet fail alike, with
    ConnectionError, and the turn's end writes nothing on the closed connection."""
    wire, transport = await _wire()
    futs = [wire.send(b"x") for _ in range(FLUSH_EVERY + 3)]
    assert transport.written == [b"x" * FLUSH_EVERY]
    wire.connection_lost(ConnectionResetError(104, "reset"))
    await asyncio.sleep(0)
    assert transport.written == [b"x" * FLUSH_EVERY]
    assert all(isinstance(f.exception(), rexc.ConnectionError) for f in futs)
    with pytest.raises(rexc.ConnectionError):
        wire.send(b"y")


class _Collector:
    def __init__(self) -> None:
        self.durations: list[str] = []

    def record_operation_duration(self, **kw: Any) -> None:
        self.durations.append(kw["command_name"])


async def test_a_call_on_the_open_wire_is_its_future_unless_calls_are_recorded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``AsyncScriptPipe.call`` on an open wire of this loop, with redis-py's observability
    off, hands back the wire's future itself (no coroutine of its own per call); with a
    collector set, the call goes through the coroutine that records its duration; a
    closed wire, through the one that connects a new one. Either way the reply is the
    call's."""
    wire, transport = await _wire()
    pipe = AsyncScriptPipe(pool=None)
    pipe.wire = wire
    if "_async_collector_resolved" not in vars(async_recorder):
        # A redis-py whose recorder we cannot see off: every call is recorded.
        assert not recording_off(async_recorder)()
        call = pipe.call("PING", b"*1\r\n$4\r\nPING\r\n")
        assert asyncio.iscoroutine(call)
        call.close()
        return
    monkeypatch.setattr(async_recorder, "_async_metrics_collector", None)
    monkeypatch.setattr(async_recorder, "_async_collector_resolved", True)  # looked: none
    assert recording_off(async_recorder)()
    fast = pipe.call("PING", b"*1\r\n$4\r\nPING\r\n")
    assert isinstance(fast, asyncio.Future)
    await asyncio.sleep(0)
    wire.data_received(b"+PONG\r\n")
    assert await fast == b"PONG"

    collector = _Collector()
    monkeypatch.setattr(async_recorder, "_async_metrics_collector", collector)
    assert not recording_off(async_recorder)()
    recorded = pipe.call("PING", b"*1\r\n$4\r\nPING\r\n")
    assert asyncio.iscoroutine(recorded)
    task = asyncio.ensure_future(recorded)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    wire.data_received(b"+PONG\r\n")
    assert await task == b"PONG"
    assert collector.durations == ["PING"]
    assert transport.written == [b"*1\r\n$4\r\nPING\r\n"] * 2
    monkeypatch.setattr(async_recorder, "_async_metrics_collector", None)
    assert recording_off(async_recorder)()

    wire.closed = True
    reconnecting = pipe.call("PING", b"*1\r\n$4\r\nPING\r\n")
    assert asyncio.iscoroutine(reconnecting)
    reconnecting.close()  # (it would connect through the pool: not here)

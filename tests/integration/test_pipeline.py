"""Pipelined async script calls (swarm_memory/_pipeline.py) against a real redis-server:
many tasks' calls share one connection and each gets its own reply; error replies are
redis-py's exceptions; a lost connection, a timeout and a cancelled caller leave the
channel consistent; a failed connect is "not sent" in every task that waited for it.

Every async test elsewhere runs through the channel too (Settings.pipeline is on by
default); these look at the channel itself.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.exceptions as rexc

from swarm_memory import AsyncSwarmMemory, OutcomeUnknown, Settings, TransportError
from swarm_memory._drive import _failed_connecting, pack
from swarm_memory._pipeline import AsyncScriptPipe
from tests.faultproxy import FaultProxy
from tests.servers import RedisServer, free_port

# A script that keeps the server busy for ARGV[1] microseconds, then returns ARGV[2].
BUSY = """
local t0 = redis.call('TIME')
local start = t0[1] * 1000000 + t0[2]
repeat
  local t = redis.call('TIME')
until (t[1] * 1000000 + t[2]) - start >= tonumber(ARGV[1])
return ARGV[2]
"""
ECHO = "return ARGV[1]"


def _settings(**kw: Any) -> Settings:
    return Settings(key_prefix="t" + uuid.uuid4().hex[:12], **kw)


def _pipe(mem: AsyncSwarmMemory) -> AsyncScriptPipe:
    pipe = mem._driver.pipe
    assert isinstance(pipe, AsyncScriptPipe)
    return pipe


async def _echo(pipe: AsyncScriptPipe, value: str) -> Any:
    return await pipe.call("EVAL", pack(("EVAL", ECHO, 0, value)))


async def _busy(pipe: AsyncScriptPipe, seconds: float, value: str) -> Any:
    return await pipe.call("EVAL", pack(("EVAL", BUSY, 0, int(seconds * 1e6), value)))


async def test_concurrent_tasks_each_get_their_own_reply(redis_server: RedisServer) -> None:
    mem = AsyncSwarmMemory.from_url(redis_server.url, agent="a", settings=_settings())
    try:
        await mem.create_namespace("team")
        ns = mem.namespace("team")

        async def worker(i: int) -> None:
            for j in range(20):
                value = {"task": i, "round": j}
                item = await ns.put(f"k{i}", value)
                assert item.value == value
                got = await ns.get(f"k{i}")
                assert got is not None and got.value == value and got.version == item.version
                # a read of another task's key, interleaved with that task's writes
                other = await ns.get(f"k{(i + 1) % 50}")
                assert other is None or other.value["task"] == (i + 1) % 50

        await asyncio.gather(*(worker(i) for i in range(50)))
        pool = mem.redis.connection_pool
        # The script calls shared one connection: the pool holds only the few that
        # other commands (the eviction-policy check, the auth probe, FUNCTION LOAD) took.
        assert len(pool._available_connections) + len(pool._in_use_connections) <= 3
        wire = _pipe(mem).wire
        assert wire is not None and not wire.closed
    finally:
        await mem.close()
    assert _pipe(mem).wire is None  # closed by close()


async def test_error_replies_are_redis_pys_exceptions(redis_server: RedisServer) -> None:
    mem = AsyncSwarmMemory.from_url(redis_server.url, agent="a", settings=_settings())
    raw = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        pipe = _pipe(mem)
        for command in [
            ("FCALL", "no_such_function_" + uuid.uuid4().hex, 0),
            ("FCALL_RO", "no_such_function_" + uuid.uuid4().hex, 0),
            ("EVALSHA", "0" * 40, 0),
            ("EVALSHA_RO", "0" * 40, 0),
            ("EVALSHA", "0" * 40, 5),  # more keys than arguments
            ("EVAL", "return redis.error_reply('MYCODE custom text')", 0),
            ("EVAL", "return redis.call('INCR', KEYS[1])", 1, "pipe-not-an-int"),
        ]:
            if command[-1] == "pipe-not-an-int":
                await raw.set("pipe-not-an-int", "x")
            with pytest.raises(rexc.ResponseError) as ours:
                await pipe.call(str(command[0]), pack(command))
            with pytest.raises(rexc.ResponseError) as theirs:
                await raw.execute_command(*command)
            assert type(ours.value) is type(theirs.value), command
            assert str(ours.value) == str(theirs.value), command
            assert getattr(ours.value, "status_code", None) == getattr(
                theirs.value, "status_code", None
            )
        assert type(ours.value) is rexc.ResponseError
        # the channel stays in step after the errors
        assert await _echo(pipe, "after") == b"after"
    finally:
        await raw.delete("pipe-not-an-int")
        await raw.aclose()
        await mem.close()


async def test_an_acl_user_with_a_password(redis_server: RedisServer) -> None:
    """AUTH as a user (redis-py's handshake), and NOPERM is its NoPermissionError."""
    user, password = "pipe-" + uuid.uuid4().hex[:8], uuid.uuid4().hex
    admin = redis_server.client()
    admin.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["~*"],
                      commands=["+@all", "-fcall"])  # fmt: skip
    url = f"redis://{user}:{password}@127.0.0.1:{redis_server.port}/0"
    mem = AsyncSwarmMemory.from_url(url, agent="a", settings=_settings())
    raw = redis.asyncio.Redis.from_url(url)
    try:
        pipe = _pipe(mem)
        assert await _echo(pipe, "hi") == b"hi"
        command = ("FCALL", "anything", 0)
        with pytest.raises(rexc.NoPermissionError) as ours:
            await pipe.call("FCALL", pack(command))
        with pytest.raises(rexc.NoPermissionError) as theirs:
            await raw.execute_command(*command)
        assert str(ours.value) == str(theirs.value)
        bad = f"redis://{user}:wrong@127.0.0.1:{redis_server.port}/0"
        wrong = AsyncSwarmMemory.from_url(bad, agent="a", settings=_settings())
        try:
            with pytest.raises(rexc.AuthenticationError) as info:
                await _echo(_pipe(wrong), "x")
            assert _failed_connecting(info.value)
        finally:
            await wrong.close()
    finally:
        await raw.aclose()
        await mem.close()
        admin.acl_deluser(user)
        admin.close()


async def test_a_lost_connection_fails_every_call_in_flight_then_reconnects(
    redis_server: RedisServer,
) -> None:
    with FaultProxy(redis_server.host, redis_server.port) as proxy:
        mem = AsyncSwarmMemory.from_url(proxy.url, agent="a", settings=_settings())
        try:
            pipe = _pipe(mem)
            assert await _echo(pipe, "warm") == b"warm"
            calls = [asyncio.ensure_future(_busy(pipe, 1.0, f"v{i}")) for i in range(5)]
            await asyncio.sleep(0.2)  # the first runs on the server, the others queue
            await asyncio.to_thread(proxy.close_connections)
            results = await asyncio.gather(*calls, return_exceptions=True)
            assert all(isinstance(r, rexc.ConnectionError) for r in results), results
            assert not any(_failed_connecting(r) for r in results)  # maybe sent
            assert pipe.wire is not None and pipe.wire.closed
            # the next call connects again, and the order holds
            values = await asyncio.gather(*(_echo(pipe, f"again{i}") for i in range(10)))
            assert values == [f"again{i}".encode() for i in range(10)]
        finally:
            await mem.close()


async def test_a_write_whose_reply_is_lost_among_others_is_outcome_unknown(
    redis_server: RedisServer,
) -> None:
    """The retry tests' contract (tests/integration/test_retry.py) with calls in flight:
    the connection cut under a write (retries refused) is OutcomeUnknown."""
    with FaultProxy(redis_server.host, redis_server.port) as proxy:
        settings = _settings(retry_attempts=2, retry_backoff=0)
        mem = AsyncSwarmMemory.from_url(proxy.url, agent="a", settings=settings)
        try:
            await mem.create_namespace("team")
            ns = mem.namespace("team")
            await ns.put("w", 0)
            proxy.stop_listening()  # the open connection stays; reconnects are refused
            proxy.drop_next_reply("FCALL")
            results = await asyncio.gather(
                *(ns.put(f"k{i}", i, op_id=f"op-{i}") for i in range(10)),
                return_exceptions=True,
            )
            assert all(isinstance(r, OutcomeUnknown) for r in results), results
        finally:
            await mem.close()


async def test_a_timed_out_call_drops_the_connection_and_the_calls_behind_it(
    redis_server: RedisServer,
) -> None:
    mem = AsyncSwarmMemory.from_url(
        redis_server.url, agent="a", settings=_settings(socket_timeout=0.3)
    )
    try:
        pipe = _pipe(mem)
        assert await _echo(pipe, "warm") == b"warm"
        slow = asyncio.ensure_future(_busy(pipe, 0.8, "late"))
        await asyncio.sleep(0)
        behind = [asyncio.ensure_future(_echo(pipe, f"b{i}")) for i in range(3)]
        with pytest.raises(rexc.TimeoutError):
            await slow
        results = await asyncio.gather(*behind, return_exceptions=True)
        assert all(isinstance(r, rexc.ConnectionError) for r in results), results
        await asyncio.sleep(0.7)  # the busy script ends; its late reply went nowhere
        values = await asyncio.gather(*(_echo(pipe, f"n{i}") for i in range(5)))
        assert values == [f"n{i}".encode() for i in range(5)]
    finally:
        await mem.close()


async def test_a_cancelled_caller_keeps_the_order(redis_server: RedisServer) -> None:
    mem = AsyncSwarmMemory.from_url(redis_server.url, agent="a", settings=_settings())
    try:
        pipe = _pipe(mem)
        assert await _echo(pipe, "warm") == b"warm"
        first = asyncio.ensure_future(_busy(pipe, 0.1, "first"))
        await asyncio.sleep(0.02)
        after = [asyncio.ensure_future(_echo(pipe, f"a{i}")) for i in range(5)]
        first.cancel()
        after[2].cancel()
        results = await asyncio.gather(*after, return_exceptions=True)
        assert results[:2] + results[3:] == [b"a0", b"a1", b"a3", b"a4"]
        assert isinstance(results[2], asyncio.CancelledError)
        assert first.cancelled()
        assert await _echo(pipe, "later") == b"later"
        assert not pipe.wire.closed  # type: ignore[union-attr]
    finally:
        await mem.close()


async def test_a_failed_connect_is_not_sent_in_every_waiting_task() -> None:
    url = f"redis://127.0.0.1:{free_port()}"
    mem = AsyncSwarmMemory.from_url(url, agent="a", settings=_settings(retry_attempts=1))
    try:
        pipe = AsyncScriptPipe(mem.redis.connection_pool)
        results = await asyncio.gather(
            *(_echo(pipe, str(i)) for i in range(10)), return_exceptions=True
        )
        assert all(isinstance(r, rexc.ConnectionError) for r in results), results
        assert all(_failed_connecting(r) for r in results)
        assert len({id(r) for r in results}) == len(results)  # each its own exception
        errors = await asyncio.gather(
            *(mem.namespace("team").incr("k") for _ in range(10)), return_exceptions=True
        )
        for error in errors:
            assert isinstance(error, TransportError) and not isinstance(error, OutcomeUnknown)
            assert "not sent" in error.message
    finally:
        await mem.close()


async def test_where_the_channel_is_used(redis_server: RedisServer) -> None:
    off = AsyncSwarmMemory.from_url(redis_server.url, agent="a", settings=_settings(pipeline=False))
    resp3 = AsyncSwarmMemory.from_client(
        redis.asyncio.Redis.from_url(redis_server.url, protocol=3), agent="a"
    )
    checked = AsyncSwarmMemory.from_client(
        redis.asyncio.Redis.from_url(redis_server.url, health_check_interval=30), agent="a"
    )
    try:
        assert off._driver.pipe is None
        assert resp3._driver.pipe is None
        assert checked._driver.pipe is None
        await off.create_namespace("team")
        assert (await off.namespace("team").put("k", 1)).version == 1
    finally:
        for mem in (off, resp3, checked):
            await mem.close()
            await mem.redis.aclose()


def test_sync_clients_have_no_channel(redis_server: RedisServer) -> None:
    from swarm_memory import SwarmMemory

    mem = SwarmMemory.from_url(redis_server.url, agent="a", settings=_settings())
    try:
        assert mem._driver.pipe is None
    finally:
        mem.close()


def test_a_channel_reused_under_a_new_event_loop(redis_server: RedisServer) -> None:
    """One client used from a second event loop: that loop gets a connection of its own;
    the first loop's is dropped, its socket and futures not touched from another loop."""
    client = redis.asyncio.Redis.from_url(redis_server.url)
    pipe = AsyncScriptPipe(client.connection_pool)

    async def call(value: str) -> Any:
        assert await _echo(pipe, value) == value.encode()
        return pipe.wire

    first = asyncio.new_event_loop()
    try:
        old = first.run_until_complete(call("one"))
        assert old is not None and not old.closed

        async def again() -> Any:
            wire = await call("two")
            await pipe.aclose()
            return wire

        new = asyncio.run(again())
        assert new is not old and old.closed and new.closed
        first.run_until_complete(asyncio.sleep(0.01))  # the old socket's close runs there
    finally:
        first.close()

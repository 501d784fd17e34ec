"""Client CPU per call, without the network: ``python -m bench.client_cost [ops...]``.

What one call costs the *client* (Python, redis-py, hiredis), repeatably on a noisy VM:
it starts its own ``redis-server`` (never 6379), makes each call once for real while
recording the reply bytes its connection receives, then swaps the connection's socket
for one that swallows what is sent and hands back the recorded reply, and times ``--n``
calls by process CPU time (``time.process_time``), ``--repeat`` times; it prints the
minimum and the median per call. No server time, no loopback, no scheduling: only what
the client itself executes, the same replies parsed every time.

Ops: ``put``, ``merge`` (bench.server_cost's ``merge(32)``: one field into an object of 32,
the reply carrying the merged object), ``incr``, ``get``, ``get_many`` (100 keys),
``put_many`` (100 entries) and ``lock``
(``with ns.lock(...)``: an acquire and a release, two script calls whose two replies are
recorded and replayed in turn) through ``SwarmMemory``; ``aput``, ``aget`` and ``alock``,
the same through ``AsyncSwarmMemory`` (its pipelined connection's transport swapped for
one that swallows the writes and hands the recorded replies to the protocol: the event
loop's own turns are part of what is timed); ``bare_evalsha`` (redis-py EVALSHA of the
bare Lua CAS+XADD) and ``bare_hgetall`` (redis-py HGETALL) for the floor of a redis-py
call; ``redispy_lock`` (redis-py's ``Lock``, one object acquired without blocking and
released, as the locks family's ``peer.redis-py.Lock`` does) beside ``lock``.

It reaches into redis-py's connection (``_sock``, the pool's idle connections) and the
async driver's pipe (``swarm_memory._pipeline``): a measuring tool, not library code; if
a redis-py release moves them, it says so and stops.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.baselines import CAS_XADD
from bench.harness import VALUE, encode

OPS = (
    "put",
    "merge",
    "incr",
    "get",
    "get_many",
    "put_many",
    "lock",
    "aput",
    "aget",
    "alock",
    "bare_evalsha",
    "bare_hgetall",
    "redispy_lock",
)
ASYNC_OPS = ("aput", "aget", "alock")


class ReplaySocket:
    """A socket that passes through, records what it receives, or replays it.

    Recorded replies are grouped by the send that preceded them (a lock's acquire and
    release are two); replaying, each send moves on to the next reply, in turn."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.mode = "pass"  # pass | record | replay
        self.log: list[list[bytes]] = []  # per send, the chunks received after it
        self.replies: list[bytes] = []
        self.reply = b""
        self.turn = -1

    def sendall(self, data: Any) -> None:
        if self.mode == "replay":
            self.turn = (self.turn + 1) % len(self.replies)
            self.reply = self.replies[self.turn]
            return
        if self.mode == "record":
            self.log.append([])
        self.real.sendall(data)

    def recv_into(self, buf: Any, *args: Any) -> int:
        if self.mode == "replay":
            buf[: len(self.reply)] = self.reply
            return len(self.reply)
        n: int = self.real.recv_into(buf, *args)
        if self.mode == "record":
            self.log[-1].append(bytes(buf[:n]))
        return n

    def replay(self) -> None:
        """Stop recording; replay what was recorded (a reply however many recv() it took)."""
        self.replies = [b"".join(chunks) for chunks in self.log]
        self.turn = -1
        self.mode = "replay"

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def _idle_connection(client: Any) -> Any:
    """The connection the next call will use: the one a sync client holds between its
    script calls (``swarm_memory._held``), else the pool's one idle connection."""
    from swarm_memory import _held

    held = _held._registry.get(client.connection_pool)
    if held is not None and held.held:
        if len(held.held) != 1:
            sys.exit("bench.client_cost: expected one held connection")
        return held.held[0][0]
    idle = getattr(client.connection_pool, "_available_connections", None)
    if not idle or len(idle) != 1:
        sys.exit("bench.client_cost: expected one idle pooled connection (redis-py changed?)")
    return idle[0]


def time_op(client: Any, fn: Callable[[], Any], n: int, repeat: int) -> list[float]:
    """µs of process CPU per call of ``fn``, ``repeat`` times, its reply replayed."""
    fn()  # warm up: scripts loaded, connection made
    conn = _idle_connection(client)
    sock = ReplaySocket(conn._sock)
    conn._sock = sock
    conn._parser._sock = sock
    try:
        sock.mode = "record"
        fn()
        sock.replay()
        out = []
        for _ in range(repeat):
            gc.collect()
            t0 = time.process_time()
            for _ in range(n):
                fn()
            out.append((time.process_time() - t0) / n * 1e6)
        return out
    finally:
        sock.mode = "pass"
        conn._sock = sock.real
        conn._parser._sock = sock.real


class ReplayTransport:
    """The async pipe's transport, recording the replies its protocol is handed, or
    swallowing writes and handing it the recorded replies in turn (one per write:
    each call is written in its own event loop turn, as the timing loop awaits it)."""

    def __init__(self, wire: Any) -> None:
        self.wire = wire
        self.real = wire.transport
        self.mode = "pass"  # pass | record | replay
        self.log: list[list[bytes]] = []
        self.replies: list[bytes] = []
        self.turn = -1
        self.received = type(wire).data_received.__get__(wire)

    def write(self, data: bytes) -> None:
        if self.mode == "replay":
            self.turn = (self.turn + 1) % len(self.replies)
            self.received(self.replies[self.turn])
            return
        if self.mode == "record":
            self.log.append([])
        self.real.write(data)

    def data_received(self, data: bytes) -> None:
        if self.mode == "record":
            self.log[-1].append(bytes(data))
        self.received(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


async def atime_op(mem: Any, fn: Callable[[], Awaitable[Any]], n: int, repeat: int) -> list[float]:
    """:func:`time_op` for the async client: µs of process CPU per awaited call."""
    await fn()  # warm up: scripts loaded, the pipe connected
    pipe = mem._driver.pipe
    wire = getattr(pipe, "wire", None)
    if wire is None or not hasattr(wire, "transport"):
        sys.exit("bench.client_cost: the async driver has no pipelined connection")
    fake = ReplayTransport(wire)
    wire.transport = fake
    wire.data_received = fake.data_received  # the transport calls its protocol's method
    try:
        fake.mode = "record"
        await fn()
        fake.replies = [b"".join(chunks) for chunks in fake.log]
        fake.mode = "replay"
        out = []
        for _ in range(repeat):
            gc.collect()
            t0 = time.process_time()
            for _ in range(n):
                await fn()
            out.append((time.process_time() - t0) / n * 1e6)
        return out
    finally:
        fake.mode = "pass"
        wire.transport = fake.real
        del wire.data_received


async def run_async(url: str, ops: list[str], n: int, repeat: int) -> dict[str, list[float]]:
    from swarm_memory import AsyncSwarmMemory

    mem = AsyncSwarmMemory.from_url(url, agent="bench")
    ns = mem.namespace("cpu")

    async def alock() -> None:
        async with ns.lock("al", ttl=10.0):
            pass

    fns: dict[str, Callable[[], Awaitable[Any]]] = {
        "aput": lambda: ns.put("ap", VALUE),
        "aget": lambda: ns.get("g"),
        "alock": alock,
    }
    try:
        return {op: await atime_op(mem, fns[op], n, repeat) for op in ops}
    finally:
        await mem.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20000, help="calls per timing (÷20 for *_many)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("ops", nargs="*", default=list(OPS))
    a = p.parse_args(argv)
    unknown = set(a.ops) - set(OPS)
    if unknown:
        p.error(f"unknown ops: {sorted(unknown)}; known: {', '.join(OPS)}")

    from bench.server_cost import merge_cases
    from swarm_memory import SwarmMemory
    from tests.servers import RedisServer

    server = RedisServer()
    server.start()
    try:
        mem = SwarmMemory.from_url(server.url, agent="bench")
        mem.create_namespace("cpu", exist_ok=True)
        ns = mem.namespace("cpu")
        many = {f"m{i}": VALUE for i in range(100)}
        ns.put("g", VALUE)
        ns.put_many(many)
        raw = server.client()

        def lock() -> None:
            with ns.lock("l", ttl=10.0):
                pass

        peer_lock = raw.lock("bare:lock", timeout=10.0)

        def redispy_lock() -> None:
            if not peer_lock.acquire(blocking=False):
                raise RuntimeError("redis-py Lock: already held")
            peer_lock.release()

        sha = raw.script_load(CAS_XADD)
        body = encode(VALUE)
        raw.hset("bare:h", mapping={"v": body, "f": "json", "ver": 1, "by": "bench"})
        merge32 = merge_cases(mem)[0]
        fns: dict[str, tuple[Any, Callable[[], Any]]] = {
            "put": (mem.redis, lambda: ns.put("p", VALUE)),
            "merge": (mem.redis, merge32),
            "incr": (mem.redis, lambda: ns.incr("c")),
            "get": (mem.redis, lambda: ns.get("g")),
            "get_many": (mem.redis, lambda: ns.get_many(list(many))),
            "put_many": (mem.redis, lambda: ns.put_many(many)),
            "lock": (mem.redis, lock),
            "bare_evalsha": (raw, lambda: raw.evalsha(sha, 2, "bare:c", "bare:s", 0, body)),
            "bare_hgetall": (raw, lambda: raw.hgetall("bare:h")),
            "redispy_lock": (raw, redispy_lock),
        }
        print(f"{'op':14} {'min µs':>9} {'median µs':>10}  (client CPU per call, no network)")
        for op in a.ops:
            if op in ASYNC_OPS:
                res = asyncio.run(run_async(server.url, [op], a.n, a.repeat))[op]
            else:
                client, fn = fns[op]
                n = max(1, a.n // 20) if op.endswith("_many") else a.n
                res = time_op(client, fn, n, a.repeat)
            print(f"{op:14} {min(res):9.2f} {statistics.median(res):10.2f}", flush=True)
        mem.close()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

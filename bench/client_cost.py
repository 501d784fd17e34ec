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
``put_many`` (100 entries), ``put_metrics`` (``put`` by a client with client-side metrics
on, ``metrics=ClientMetrics(...)``: beside ``put``, what they cost a call) and ``lock``
(``with ns.lock(...)``: an acquire and a release, two script calls whose two replies are
recorded and replayed in turn) through ``SwarmMemory``; ``aput``, ``aget`` and ``alock``,
the same through ``AsyncSwarmMemory`` (its pipelined connection's transport swapped for
one that swallows the writes and hands the recorded replies to the protocol: the event
loop's own turns are part of what is timed); ``aput50``, the suite's async family's
mode: 50 tasks' puts gathered, each write of the pipe answered in the next event loop
turn with one recorded reply per call it carried (µs per put: the tasks, the gather and
the pipe's turns included); ``bare_evalsha`` (redis-py EVALSHA of the
bare Lua CAS+XADD) and ``bare_hgetall`` (redis-py HGETALL) for the floor of a redis-py
call; ``redispy_lock`` (redis-py's ``Lock``, one object acquired without blocking and
released, as the locks family's ``peer.redis-py.Lock`` does) beside ``lock``.

``--callgrind`` counts instructions instead of timing, for A/B comparisons that a noisy
VM's timings cannot settle: each op runs in a child process under ``valgrind
--tool=callgrind`` twice, with ``--n`` and three times ``--n`` calls, and the difference of the
two totals, divided by the calls between them, is the op's client instructions per
call (the start, the recording and the warm-up cancel out; the server is not traced).

It reaches into redis-py's connection (``_sock``, the pool's idle connections) and the
async driver's pipe (``swarm_memory._pipeline``): a measuring tool, not library code; if
a redis-py release moves them, it says so and stops.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from bench.baselines import CAS_XADD
from bench.harness import VALUE, encode

OPS = (
    "put",
    "put_metrics",
    "merge",
    "incr",
    "get",
    "get_many",
    "put_many",
    "lock",
    "aput",
    "aput50",
    "aget",
    "alock",
    "bare_evalsha",
    "bare_hgetall",
    "redispy_lock",
)
ASYNC_OPS = ("aput", "aput50", "aget", "alock")
TASKS = 50  # aput50's tasks, as the suite's async family runs them


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
    each call is written in its own event loop turn, as the timing loop awaits it).
    In ``many`` mode a write may carry many calls: it is answered in the next turn, as
    a socket's reply would be, with the one recorded reply repeated once per call."""

    def __init__(self, wire: Any) -> None:
        self.wire = wire
        self.real = wire.transport
        self.mode = "pass"  # pass | record | replay | many
        self.log: list[list[bytes]] = []
        self.replies: list[bytes] = []
        self.turn = -1
        self.owed = 0  # (many) replies scheduled and not yet handed over
        self.received = type(wire).data_received.__get__(wire)

    def write(self, data: bytes) -> None:
        if self.mode == "replay":
            self.turn = (self.turn + 1) % len(self.replies)
            self.received(self.replies[self.turn])
            return
        if self.mode == "many":
            # The calls this write carries: those waiting for a reply, less those whose
            # replies are already on their way.
            calls = len(self.wire.pending) - self.owed
            self.owed += calls
            self.wire.loop.call_soon(self._answer, calls)
            return
        if self.mode == "record":
            self.log.append([])
        self.real.write(data)

    def _answer(self, calls: int) -> None:
        self.owed -= calls
        self.received(self.replies[0] * calls)

    def data_received(self, data: bytes) -> None:
        if self.mode == "record":
            self.log[-1].append(bytes(data))
        self.received(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


async def atime_op(
    mem: Any, fn: Callable[[], Awaitable[Any]], n: int, repeat: int, many: Any = None
) -> list[float]:
    """:func:`time_op` for the async client: µs of process CPU per call, ``n`` calls
    (:func:`timed_calls`). With ``many`` (a burst of TASKS calls of ``fn``'s one reply,
    gathered), ``n`` is a multiple of TASKS, made as bursts."""
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
        if many is not None:
            if len(fake.replies) != 1:
                sys.exit("bench.client_cost: a many-task op must make one call")
            fake.mode, fn, awaits = "many", many, n // TASKS
            for _ in range(3):
                await fn()  # warm up the tasks' path
        else:
            awaits = n
        out = []
        for _ in range(repeat):
            gc.collect()
            t0 = time.process_time()
            for _ in range(awaits):
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

    async def aput50() -> None:
        await asyncio.gather(*(ns.put(f"ap{i}", VALUE) for i in range(TASKS)))

    fns: dict[str, Callable[[], Awaitable[Any]]] = {
        "aput": lambda: ns.put("ap", VALUE),
        "aput50": lambda: ns.put("ap", VALUE),
        "aget": lambda: ns.get("g"),
        "alock": alock,
    }
    bursts = {"aput50": aput50}
    try:
        return {
            op: await atime_op(mem, fns[op], timed_calls(op, n), repeat, bursts.get(op))
            for op in ops
        }
    finally:
        await mem.close()


def timed_calls(op: str, n: int) -> int:
    """How many calls of ``op`` one timing makes with ``--n n`` (see :func:`main`)."""
    if op.endswith("_many"):
        return max(1, n // 20)
    if op == "aput50":
        return max(1, n // TASKS) * TASKS
    return n


def _instructions(op: str, n: int) -> int:
    """The instructions of a child ``bench.client_cost --n n --repeat 1 op`` under
    callgrind (its whole run: the server it starts is not traced)."""
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-m",
            "bench.client_cost",
            "--n",
            str(n),
            "--repeat",
            "1",
            op,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        sys.exit(f"bench.client_cost: {op} under callgrind failed:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def count_instructions(ops: list[str], n: int) -> int:
    """``--callgrind``: client instructions per call of each op (see the module doc)."""
    if not shutil.which("valgrind"):
        sys.exit("bench.client_cost --callgrind: valgrind is not installed")
    print(f"{'op':14} {'Ir/call':>10}  (client instructions per call, no network)")
    for op in ops:
        low, high = (_instructions(op, m) for m in (n, 3 * n))
        calls = timed_calls(op, 3 * n) - timed_calls(op, n)
        print(f"{op:14} {(high - low) / calls:10.0f}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--n", type=int, default=None, help="calls per timing (÷20 for *_many; default 20000)"
    )
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument(
        "--callgrind",
        action="store_true",
        help="instructions per call under valgrind instead of CPU time (--n defaults to 1000)",
    )
    p.add_argument("ops", nargs="*", default=list(OPS))
    a = p.parse_args(argv)
    unknown = set(a.ops) - set(OPS)
    if unknown:
        p.error(f"unknown ops: {sorted(unknown)}; known: {', '.join(OPS)}")
    if a.callgrind:
        return count_instructions(a.ops, a.n or 1000)
    a.n = a.n or 20000

    from tests.servers import RedisServer

    server = RedisServer()
    server.start()
    try:
        fns, clients = sync_ops(server, a.ops)
        print(f"{'op':14} {'min µs':>9} {'median µs':>10}  (client CPU per call, no network)")
        for op in a.ops:
            if op in ASYNC_OPS:
                res = asyncio.run(run_async(server.url, [op], a.n, a.repeat))[op]
            else:
                client, fn = fns[op]
                res = time_op(client, fn, timed_calls(op, a.n), a.repeat)
            print(f"{op:14} {min(res):9.2f} {statistics.median(res):10.2f}", flush=True)
        for mem in clients:
            mem.close()
    finally:
        server.stop()
    return 0


def sync_ops(
    server: Any, ops: Sequence[str] = OPS
) -> tuple[dict[str, tuple[Any, Callable[[], Any]]], list[Any]]:
    """The sync ops on ``server`` (a started ``tests.servers.RedisServer``): op -> (the
    redis client whose connection it uses, the call), and the SwarmMemory clients made.
    The client with metrics on (its own connection) is made only where ``ops`` asks for
    ``put_metrics``."""
    from prometheus_client import CollectorRegistry

    from bench.server_cost import merge_cases
    from swarm_memory import ClientMetrics, SwarmMemory

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
    clients = [mem]
    if "put_metrics" in ops:
        measured = SwarmMemory.from_url(
            server.url, agent="bench", metrics=ClientMetrics(CollectorRegistry())
        )
        ns_measured = measured.namespace("cpu")
        fns["put_metrics"] = (measured.redis, lambda: ns_measured.put("pm", VALUE))
        clients.append(measured)
    return fns, clients


if __name__ == "__main__":
    raise SystemExit(main())

"""The event reader's own CPU per doorbell: ``python -m bench.feed_cost``.

End-to-end event latency on a shared 2-core VM moves by milliseconds with the load;
the part of it the feed code owns — a doorbell in, events handed to every watcher's
queue — is a few tens of µs, far below that noise. This measures that part alone,
repeatably: it starts its own redis-server (never 6379), writes ``--events`` puts
(small values, which ride in the doorbell) while subscribed to the namespace's doorbell
channel, keeps the payloads, then replays them through the hub's reading steps
(``note_doorbell`` -> ``FeedCore.plan`` -> ``FeedCore.service``, the flow run to its
end: it needs no I/O when the doorbell carries the events) for 1, 10 and 50
subscribers, each pushing onto a ``queue.SimpleQueue`` nobody waits on (so thread
wake-ups, which the pub/sub fan-out baseline pays alike, stay out). Reports µs per
doorbell, median (min-max) over ``--rounds``.
"""

from __future__ import annotations

import argparse
import queue
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `bench` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from swarm_memory import SwarmMemory
from swarm_memory._feed import FeedCore, Subscriber, note_doorbell
from swarm_memory._ops.events import decode_doorbell
from swarm_memory._synchronization import Signal


def capture(url: str, events: int) -> tuple[Any, list[dict[str, Any]]]:
    """(the namespace's Context, ``events`` doorbell messages of single puts)."""
    mem = SwarmMemory.from_url(url, agent="bench")
    try:
        mem.create_namespace("bench-feed-cost", exist_ok=True)
        ns = mem.namespace("bench-feed-cost")
        ctx = ns._ctx
        ps = mem.redis.pubsub()
        ps.ssubscribe(ctx.keys.bell)
        deadline = time.monotonic() + 5
        while ps.get_sharded_message(timeout=0.1) is None and time.monotonic() < deadline:
            pass  # the subscribe confirmation
        for i in range(events):
            ns.put("k", [i, time.perf_counter_ns()])
        msgs: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while len(msgs) < events and time.monotonic() < deadline:
            m = ps.get_sharded_message(ignore_subscribe_messages=True, timeout=1)
            if m is not None:
                msgs.append(m)
        ps.close()
        if len(msgs) < events:
            raise RuntimeError(f"captured {len(msgs)} of {events} doorbells")
        return ctx, msgs
    finally:
        mem.close()


def replay(ctx: Any, msgs: list[dict[str, Any]], subscribers: int) -> tuple[float, int]:
    """(µs per doorbell, batches queued) for one pass over ``msgs``."""
    rev0 = decode_doorbell(ctx.codec, msgs[0]["data"])[0]  # every subscriber starts there
    core = FeedCore(100)
    queues: list[queue.SimpleQueue[Any]] = [queue.SimpleQueue() for _ in range(subscribers)]
    for q in queues:
        core.add(Subscriber(ctx, f"{rev0}-0", "*", None, q.put))
    wake, last_poll = Signal(), time.monotonic()
    t0 = time.perf_counter()
    for m in msgs:
        rung: dict[str, int | None] = {}
        bells: dict[str, list[bytes]] = {}
        note_doorbell(m, rung, bells)
        work, last_poll = core.plan(rung, bells, wake, last_poll, 1e9)
        for key, rev, payloads in work:
            flow = core.service(key, rev, payloads)
            try:
                flow.send(None)
            except StopIteration:
                continue
            raise RuntimeError("the feed wanted to read: the doorbells did not carry the events")
    elapsed = time.perf_counter() - t0
    return 1e6 * elapsed / len(msgs), sum(q.qsize() for q in queues)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.feed_cost", description=__doc__)
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--subscribers", default="1,10,50")
    a = ap.parse_args(argv)
    counts = [int(x) for x in a.subscribers.split(",") if x]
    from tests.servers import RedisServer

    server = RedisServer()
    server.start()
    try:
        ctx, msgs = capture(server.url, a.events)
    finally:
        server.stop()
    per: dict[int, list[float]] = {n: [] for n in counts}
    for _ in range(a.rounds):
        for n in counts:
            us, queued = replay(ctx, msgs, n)
            if queued != n * len(msgs):
                raise RuntimeError(f"{queued} batches queued, expected {n * len(msgs)}")
            per[n].append(us)
    print(f"event reader CPU per doorbell ({a.events} doorbells x {a.rounds} rounds):")
    for n, xs in per.items():
        print(
            f"  {n:>3} subscribers: {statistics.median(xs):6.1f} µs ({min(xs):.1f}-{max(xs):.1f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

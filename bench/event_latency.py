"""Write -> watcher delivery latency of ``Namespace.watch`` against raw Redis baselines.

Run from the repo root: ``python -m bench.event_latency [--json out.json]``. It starts its
own ``redis-server`` on a free loopback port (never 6379) and measures, per watcher count
(1, 10, 50 by default), in ONE process:

  sync           SwarmMemory: one client shared by a writer thread and N watches (one
                 pub/sub doorbell connection + one reader thread, local fan-out), one
                 consumer thread per watch calling ``Watch.get()``.
  async          AsyncSwarmMemory: one client, N tasks awaiting ``AsyncWatch.get()``, the
                 writer a task on the same event loop.
  xread          raw baseline: XADD -> N connections (one thread each) blocked in
                 ``XREAD BLOCK`` return.
  pubsub         raw baseline: PUBLISH -> N connections (one thread each) subscribed, each
                 returning from ``get_message()``: N subscribers = N connections.
  pubsub-fanout  raw baseline of our architecture minus the stream read: PUBLISH -> ONE
                 subscriber connection + one reader thread -> N ``SimpleQueue`` -> N
                 consumer threads.

Each written value carries ``time.perf_counter_ns()`` taken just before the write call;
latency = receive time - that stamp, per watcher per event (our events carry values of
at most ``Settings.event_value_max`` bytes, so no read is needed). Cases run interleaved
for ``--rounds`` rounds; the table shows the median over rounds of each round's p50 and
p99, and the worst max. Performance is reported as ratios to the raw baselines measured
in the same run, never asserted by a test (STYLE.md).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import queue
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import redis

from bench.harness import write_json
from swarm_memory import AsyncSwarmMemory, SwarmMemory

GOAL = "issue 3: write -> watcher p99 < 1 ms at 1-10 watchers, <= 1.2 ms at 50 watchers"
OURS = ("sync", "async")
BASELINES = ("xread", "pubsub", "pubsub-fanout")
ALL_CASES = OURS + BASELINES
_PINNED_ENV = "SWARM_BENCH_PINNED"
_COLLECT_GRACE_S = 10.0  # after the last write, how long consumers get to catch up


def goal_us(watchers: int) -> tuple[float, bool]:
    """(bound in µs, strict) for a watcher count: < 1000 up to 10, <= 1200 above."""
    return (1000.0, True) if watchers <= 10 else (1200.0, False)


def goal_met(p99_us: float, watchers: int) -> bool:
    bound, strict = goal_us(watchers)
    return p99_us < bound if strict else p99_us <= bound


@dataclass(frozen=True)
class Params:
    events: int
    warmup: int
    interval_s: float

    @property
    def total(self) -> int:
        return self.warmup + self.events


@dataclass
class Sink:
    """Latencies per watcher; ``done[i]`` once watcher i saw the last event."""

    n: int
    p: Params
    lat: list[list[int]] = field(init=False)
    got: list[int] = field(init=False)
    done: list[threading.Event] = field(init=False)

    def __post_init__(self) -> None:
        self.lat = [[] for _ in range(self.n)]
        self.got = [0] * self.n
        self.done = [threading.Event() for _ in range(self.n)]

    def record(self, i: int, seq: int, sent_ns: int, now_ns: int) -> None:
        self.got[i] += 1
        if seq >= self.p.warmup:
            self.lat[i].append(now_ns - sent_ns)
        if seq == self.p.total - 1:
            self.done[i].set()

    def summary(self) -> dict[str, Any]:
        samples = sorted(x for per in self.lat for x in per)
        expected = self.n * self.p.total
        if not samples:
            return {
                "samples": 0,
                "lost": expected,
                "p50_us": math.nan,
                "p99_us": math.nan,
                "max_us": math.nan,
            }

        def pct(q: float) -> float:
            return samples[max(0, math.ceil(q * len(samples)) - 1)] / 1000.0

        return {
            "samples": len(samples),
            "lost": expected - sum(self.got),
            "p50_us": pct(0.50),
            "p99_us": pct(0.99),
            "max_us": samples[-1] / 1000.0,
        }


@dataclass
class Bench:
    url: str
    p: Params
    raw: redis.Redis
    mem: SwarmMemory
    namespace: str = "bench-events"
    _names: int = 0

    def fresh(self, kind: str) -> str:
        self._names += 1
        return f"bench:{kind}:{os.getpid()}:{self._names}"


# ----------------------------------------------------------------------------- drivers
def paced(p: Params) -> Iterable[int]:
    """Yield sequence numbers on a fixed schedule (no drift: sleeps to absolute times)."""
    t0 = time.perf_counter()
    for seq in range(p.total):
        delay = t0 + seq * p.interval_s - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        yield seq


def run_threads(
    b: Bench,
    sink: Sink,
    *,
    consume: Callable[[int], None],
    send: Callable[[int], None],
    ready: Callable[[], bool],
    stop: threading.Event,
    extra: Iterable[threading.Thread] = (),
) -> None:
    """Start consumers (+ extra threads), wait for ``ready``, write from a writer
    thread, wait for delivery (bounded), stop everything."""
    threads = [threading.Thread(target=consume, args=(i,), daemon=True) for i in range(sink.n)]
    threads += list(extra)
    for t in threads:
        t.start()
    wait_until(ready, what="consumers to subscribe")

    def write() -> None:
        for seq in paced(b.p):
            send(seq)

    writer = threading.Thread(target=write, name="bench-writer")
    writer.start()
    writer.join()
    deadline = time.monotonic() + _COLLECT_GRACE_S
    for done in sink.done:
        done.wait(max(0.0, deadline - time.monotonic()))
    stop.set()
    for t in threads:
        t.join(5)


def wait_until(check: Callable[[], bool], *, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.005)
    time.sleep(0.02)  # let the last subscriber settle into its blocking read


def bell_subscribed(b: Bench, present: bool = True) -> bool:
    """Is a doorbell shard channel of our namespace subscribed (by the watch hub)?"""
    channels = b.raw.execute_command("PUBSUB", "SHARDCHANNELS")
    tag = ("{" + b.namespace + "}").encode()
    return any(tag in c for c in channels) == present


# ----------------------------------------------------------------------------- cases
def case_sync(b: Bench, n: int) -> Sink:
    ns = b.mem.namespace(b.namespace)
    sink, stop = Sink(n, b.p), threading.Event()
    watches = [ns.watch() for _ in range(n)]

    def consume(i: int) -> None:
        get, clock = watches[i].get, time.perf_counter_ns
        while not stop.is_set() and not sink.done[i].is_set():
            ev = get(timeout=0.2)
            now = clock()
            if ev is None:
                continue
            if not ev.has_value:
                raise RuntimeError("event carried no value: raise Settings.event_value_max")
            seq, sent = ev.value
            sink.record(i, seq, sent, now)

    def send(seq: int) -> None:
        ns.put("k", [seq, time.perf_counter_ns()])

    try:
        run_threads(
            b, sink, consume=consume, send=send, ready=lambda: bell_subscribed(b), stop=stop
        )
    finally:
        for w in watches:
            w.close()
        # The hub thread exits once it has no watches; wait so the next case starts clean.
        wait_until(lambda: bell_subscribed(b, present=False), what="the hub to unsubscribe")
    return sink


def case_async(b: Bench, n: int) -> Sink:
    return asyncio.run(_case_async(b, n))


async def _case_async(b: Bench, n: int) -> Sink:
    sink = Sink(n, b.p)
    mem = AsyncSwarmMemory.from_url(b.url, agent="bench")
    try:
        ns = mem.namespace(b.namespace)
        watches = [await ns.watch() for _ in range(n)]

        async def consume(i: int) -> None:
            get, clock = watches[i].get, time.perf_counter_ns
            while not sink.done[i].is_set():
                ev = await get()
                now = clock()
                assert ev is not None
                if not ev.has_value:
                    raise RuntimeError("event carried no value: raise Settings.event_value_max")
                seq, sent = ev.value
                sink.record(i, seq, sent, now)

        tasks = [asyncio.create_task(consume(i)) for i in range(n)]
        deadline = time.monotonic() + 10
        while not bell_subscribed(b):
            if time.monotonic() > deadline:
                raise TimeoutError("timed out waiting for the async hub to subscribe")
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.02)
        t0 = time.perf_counter()
        for seq in range(b.p.total):
            delay = t0 + seq * b.p.interval_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await ns.put("k", [seq, time.perf_counter_ns()])
        _done, pending = await asyncio.wait(tasks, timeout=_COLLECT_GRACE_S)
        for t in pending:
            t.cancel()
        for t in tasks:
            if t.done() and not t.cancelled() and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]
        for w in watches:
            await w.close()
    finally:
        await mem.close()
    wait_until(lambda: bell_subscribed(b, present=False), what="the async hub to unsubscribe")
    return sink


def case_xread(b: Bench, n: int) -> Sink:
    stream = b.fresh("xread")
    sink, stop = Sink(n, b.p), threading.Event()
    clients = [redis.Redis.from_url(b.url) for _ in range(n)]
    started = [threading.Event() for _ in range(n)]

    def consume(i: int) -> None:
        c, last, clock = clients[i], b"0-0", time.perf_counter_ns
        while not stop.is_set() and not sink.done[i].is_set():
            started[i].set()
            reply = c.xread({stream: last}, count=1000, block=200)
            now = clock()
            for _name, entries in reply.items() if isinstance(reply, dict) else reply:
                for eid, f in entries:
                    last = eid
                    sink.record(i, int(f[b"s"]), int(f[b"t"]), now)

    def send(seq: int) -> None:
        b.raw.xadd(stream, {"s": seq, "t": time.perf_counter_ns()})

    try:
        run_threads(
            b,
            sink,
            consume=consume,
            send=send,
            ready=lambda: all(e.is_set() for e in started),
            stop=stop,
        )
    finally:
        b.raw.delete(stream)
        for c in clients:
            c.close()
    return sink


def case_pubsub(b: Bench, n: int) -> Sink:
    channel = b.fresh("pubsub")
    sink, stop = Sink(n, b.p), threading.Event()
    clients = [redis.Redis.from_url(b.url) for _ in range(n)]
    subs = [c.pubsub(ignore_subscribe_messages=True) for c in clients]
    for ps in subs:
        ps.subscribe(channel)

    def consume(i: int) -> None:
        get, clock = subs[i].get_message, time.perf_counter_ns
        while not stop.is_set() and not sink.done[i].is_set():
            msg = get(timeout=0.2)
            now = clock()
            if msg is None:
                continue
            seq, sent = msg["data"].split(b":")
            sink.record(i, int(seq), int(sent), now)

    def send(seq: int) -> None:
        b.raw.publish(channel, f"{seq}:{time.perf_counter_ns()}")

    def ready() -> bool:
        return int(b.raw.pubsub_numsub(channel)[0][1]) == n

    try:
        run_threads(b, sink, consume=consume, send=send, ready=ready, stop=stop)
    finally:
        for ps, c in zip(subs, clients, strict=True):
            ps.close()
            c.close()
    return sink


def case_pubsub_fanout(b: Bench, n: int) -> Sink:
    channel = b.fresh("fanout")
    sink, stop = Sink(n, b.p), threading.Event()
    client = redis.Redis.from_url(b.url)
    ps = client.pubsub(ignore_subscribe_messages=True)
    ps.subscribe(channel)
    queues: list[queue.SimpleQueue[tuple[int, int]]] = [queue.SimpleQueue() for _ in range(n)]

    def read() -> None:  # the analogue of the hub thread: parse once, hand to every queue
        while not stop.is_set():
            msg = ps.get_message(timeout=0.05)
            if msg is None:
                continue
            seq, sent = msg["data"].split(b":")
            item = (int(seq), int(sent))
            for q in queues:
                q.put(item)

    def consume(i: int) -> None:
        get, clock = queues[i].get, time.perf_counter_ns
        while not stop.is_set() and not sink.done[i].is_set():
            try:
                seq, sent = get(timeout=0.2)
            except queue.Empty:
                continue
            sink.record(i, seq, sent, clock())

    def send(seq: int) -> None:
        b.raw.publish(channel, f"{seq}:{time.perf_counter_ns()}")

    def ready() -> bool:
        return int(b.raw.pubsub_numsub(channel)[0][1]) == 1

    reader = threading.Thread(target=read, daemon=True)
    try:
        run_threads(b, sink, consume=consume, send=send, ready=ready, stop=stop, extra=[reader])
    finally:
        ps.close()
        client.close()
    return sink


CASES: dict[str, Callable[[Bench, int], Sink]] = {
    "sync": case_sync,
    "async": case_async,
    "xread": case_xread,
    "pubsub": case_pubsub,
    "pubsub-fanout": case_pubsub_fanout,
}


# ----------------------------------------------------------------------------- report
def aggregate(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "p50_us": statistics.median(r["p50_us"] for r in rounds),
        "p99_us": statistics.median(r["p99_us"] for r in rounds),
        "max_us": max(r["max_us"] for r in rounds),
        "lost": sum(r["lost"] for r in rounds),
        "samples": sum(r["samples"] for r in rounds),
    }


def build_report(
    results: dict[str, dict[int, list[dict[str, Any]]]], cases: list[str], counts: list[int]
) -> dict[str, Any]:
    summary: dict[str, dict[int, dict[str, Any]]] = {}
    for case in cases:
        summary[case] = {}
        for n in counts:
            row = aggregate(results[case][n])
            if case in OURS:
                bound, strict = goal_us(n)
                row["goal_us"] = bound
                row["goal_strict"] = strict
                row["goal_met"] = goal_met(row["p99_us"], n)
            summary[case][n] = row
    return summary


def fill_ratios(summary: dict[str, dict[int, dict[str, Any]]]) -> None:
    """Our p99 over each baseline's p99 at the same watcher count, same run."""
    for case in OURS:
        if case not in summary:
            continue
        for n, row in summary[case].items():
            for base in BASELINES:
                if base in summary:
                    row[f"p99_vs_{base}"] = row["p99_us"] / summary[base][n]["p99_us"]


def print_table(summary: dict[str, dict[int, dict[str, Any]]], counts: list[int]) -> None:
    bases = [b for b in BASELINES if b in summary]
    head = f"{'case':<14}{'watchers':>9}{'p50 µs':>10}{'p99 µs':>10}{'max µs':>10}"
    head += "".join(f"{'p99/' + b:>19}" for b in bases) + "  goal"
    print(head)
    print("-" * len(head))
    for n in counts:
        for case, rows in summary.items():
            row = rows[n]
            line = f"{case:<14}{n:>9}{row['p50_us']:>10.0f}{row['p99_us']:>10.0f}"
            line += f"{row['max_us']:>10.0f}"
            if case in OURS:
                line += "".join(f"{row[f'p99_vs_{b}']:>18.2f}x" for b in bases)
                bound, strict = goal_us(n)
                verdict = "met" if row["goal_met"] else "NOT met"
                line += f"  p99 {'<' if strict else '<='} {bound:.0f}: {verdict}"
            else:
                line += " " * (19 * len(bases))
            if row["lost"]:
                line += f"  LOST {row['lost']}"
            print(line.rstrip())
        print()


def print_verdict(summary: dict[str, dict[int, dict[str, Any]]], counts: list[int]) -> None:
    print(f"Goal ({GOAL}):")
    for case in OURS:
        if case not in summary:
            continue
        met = [n for n in counts if summary[case][n]["goal_met"]]
        missed = [n for n in counts if not summary[case][n]["goal_met"]]
        text = (
            "met at every watcher count"
            if not missed
            else (
                f"met at {met or 'none'}; NOT met at "
                + ", ".join(f"{n} (p99 {summary[case][n]['p99_us']:.0f} µs)" for n in missed)
            )
        )
        print(f"  {case:<6} {text}")


# ----------------------------------------------------------------------------- main
def environment(server_version: str, redis_cpus: str) -> dict[str, Any]:
    try:
        import hiredis

        hiredis_version = getattr(hiredis, "__version__", "yes")
    except ImportError:  # pragma: no cover - hiredis is a dependency
        hiredis_version = None
    return {
        "python": platform.python_version(),
        "redis_py": redis.__version__,
        "hiredis": hiredis_version,
        "redis_server": server_version,
        "cpus_online": os.cpu_count(),
        "bench_cpus": sorted(os.sched_getaffinity(0)),
        "redis_cpus": redis_cpus,
        "platform": platform.platform(),
    }


def maybe_pin(cpus: str | None, argv: list[str]) -> None:
    """Re-exec this benchmark under ``taskset -c CPUS`` (once)."""
    if cpus is None or os.environ.get(_PINNED_ENV):
        return
    if shutil.which("taskset") is None:
        print("taskset not found: running unpinned", file=sys.stderr)
        return
    env = dict(os.environ, **{_PINNED_ENV: cpus})
    cmd = ["taskset", "-c", cpus, sys.executable, "-m", "bench.event_latency", *argv]
    os.execvpe("taskset", cmd, env)


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench.event_latency",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--events", type=int, default=700, help="measured events per case run")
    ap.add_argument("--warmup", type=int, default=100, help="unmeasured events first")
    ap.add_argument("--interval-ms", type=float, default=2.0, help="write interval (2 ms)")
    ap.add_argument("--watchers", default="1,10,50", help="comma-separated counts")
    ap.add_argument("--cases", default=",".join(ALL_CASES), help="subset of " + ",".join(ALL_CASES))
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    ap.add_argument(
        "--taskset",
        metavar="CPUS",
        help="re-exec pinned to CPUS (taskset -c); redis-server gets the other CPUs",
    )
    args = ap.parse_args(argv)
    args.counts = [int(x) for x in args.watchers.split(",") if x]
    args.case_list = [c for c in ALL_CASES if c in set(args.cases.split(","))]
    unknown = set(args.cases.split(",")) - set(ALL_CASES)
    if unknown or not args.case_list or not args.counts or min(args.counts) < 1:
        ap.error(f"bad --cases/--watchers (unknown: {sorted(unknown)})")
    if args.rounds < 1 or args.events < 1 or args.warmup < 0 or args.interval_ms < 0:
        ap.error("--rounds/--events must be >= 1, --warmup/--interval-ms >= 0")
    return args


def pin_server(pid: int) -> str:
    """Keep redis-server off the CPUs this process is pinned to, if any remain."""
    if not os.environ.get(_PINNED_ENV):
        return "unpinned"
    ours = os.sched_getaffinity(0)
    others = set(range(os.cpu_count() or 1)) - ours
    if not others:
        return "shared with the benchmark"
    os.sched_setaffinity(pid, others)
    return ",".join(map(str, sorted(others)))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    maybe_pin(args.taskset, argv)
    from tests.servers import RedisServer, redis_server_available

    if not redis_server_available():
        print("redis-server / redis-cli not on PATH", file=sys.stderr)
        return 2
    p = Params(args.events, args.warmup, args.interval_ms / 1000.0)
    version = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    results: dict[str, dict[int, list[dict[str, Any]]]] = {
        c: {n: [] for n in args.counts} for c in args.case_list
    }
    started = time.monotonic()
    load_before = os.getloadavg()
    with RedisServer() as server:
        assert server.process is not None
        redis_cpus = pin_server(server.process.pid)
        raw = server.client()
        mem = SwarmMemory.from_url(server.url, agent="bench")
        mem.create_namespace("bench-events", exist_ok=True)
        b = Bench(server.url, p, raw, mem)
        print(
            f"redis-server on {server.url}; {len(args.case_list)} cases x {args.counts} "
            f"watchers x {args.rounds} rounds, {p.events}+{p.warmup} events every "
            f"{args.interval_ms} ms",
            file=sys.stderr,
        )
        try:
            for r in range(args.rounds):
                order = (
                    args.case_list[r % len(args.case_list) :]
                    + args.case_list[: r % len(args.case_list)]
                )  # rotate so no case always runs first
                for n in args.counts:
                    for case in order:
                        st = CASES[case](b, n).summary()
                        results[case][n].append(st)
                        print(
                            f"  round {r + 1} {case:<14} n={n:<3} p50 {st['p50_us']:7.0f} µs  "
                            f"p99 {st['p99_us']:7.0f} µs  max {st['max_us']:7.0f} µs"
                            + (f"  lost {st['lost']}" if st["lost"] else ""),
                            file=sys.stderr,
                        )
        finally:
            mem.close()
            raw.close()
        env = environment(version, redis_cpus)
    env["loadavg_before"] = [round(x, 2) for x in load_before]
    env["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    summary = build_report(results, args.case_list, args.counts)
    fill_ratios(summary)
    elapsed = time.monotonic() - started
    print()
    print(
        f"write -> watcher delivery latency; medians of {args.rounds} interleaved rounds "
        f"(max = worst round); {p.events} events/run every {args.interval_ms} ms "
        f"after {p.warmup} warm-up; {elapsed:.0f} s"
    )
    print(
        f"python {env['python']}, redis-py {env['redis_py']}, hiredis {env['hiredis']}, "
        f"{version.split(' sha=')[0]}, {env['cpus_online']} CPUs (bench on "
        f"{env['bench_cpus']}, redis-server {redis_cpus})"
    )
    busy = max(env["loadavg_before"][0], env["loadavg_after"][0]) > 0.25 * (os.cpu_count() or 1)
    print(
        f"load average (1 min) before {env['loadavg_before'][0]}, after "
        f"{env['loadavg_after'][0]}"
        + (
            " -- other work shared these CPUs: trust the ratios (same interleaved run) "
            "more than the absolute numbers"
            if busy
            else ""
        )
    )
    print(
        "pubsub = N subscriber connections (one thread each); pubsub-fanout = 1 connection "
        "+ local fan-out to N threads; xread = N connections blocked in XREAD"
    )
    print()
    print_table(summary, args.counts)
    print_verdict(summary, args.counts)
    if args.json:
        out = {
            "goal": GOAL,
            "params": {
                "events": p.events,
                "warmup": p.warmup,
                "interval_ms": args.interval_ms,
                "rounds": args.rounds,
                "watchers": args.counts,
            },
            "env": env,
            "summary": {c: {str(n): row for n, row in rows.items()} for c, rows in summary.items()},
            "rounds": {c: {str(n): rs for n, rs in rows.items()} for c, rows in results.items()},
        }
        write_json(args.json, out, indent=2)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

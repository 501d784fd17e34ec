"""The async pipe's early writes, A/B in one process: ``python -m bench.pipe_chunks``.

``swarm_memory._pipeline`` writes the script calls of one event loop turn in one write at
the turn's end, except that a turn's first ``FLUSH_EVERY`` calls go out as soon as there
are that many (``EARLY_CHUNKS`` chunks of a turn are written ahead of its end), so Redis
runs them while the client builds the rest. This runs 50 tasks of
``AsyncSwarmMemory.put`` (each awaiting its own puts, one key each, as the suite's
``ours.async.put``) with each variant in turn, the variants interleaved round by round on
one client, and prints per variant the median wall time and client CPU time per put, the
pipe's writes per 50 puts (each variant's rule shows in it), and the wall ratio against
one write per turn (the code before stop 30).

Variants (``--variants``): ``N`` writes a turn's first N calls ahead (one chunk, the
pipe's rule), ``N*`` every chunk of N as it fills (stop 30's first version).
``--taskset CLIENT:SERVER`` pins this process and ``redis-server`` (default ``0:1``,
two CPUs; ``0:0`` puts both on one). Starts its own ``redis-server`` (never 6379).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from unittest import mock

from bench.harness import VALUE, affinity

ONE_WRITE = "one per turn"  # the code before stop 30
TASKS = 50
EVERY = 10**9  # EARLY_CHUNKS for "N*": every chunk of a turn ahead of its end


def _settings(variant: str) -> tuple[int, int]:
    """(FLUSH_EVERY, EARLY_CHUNKS) of a variant."""
    if variant == ONE_WRITE:
        return EVERY, 0
    if variant.endswith("*"):
        return int(variant[:-1]), EVERY
    return int(variant), 1


async def _measure(
    url: str, variants: list[str], rounds: int, n: int
) -> dict[str, list[tuple[float, float, float]]]:
    from swarm_memory import AsyncSwarmMemory, _pipeline

    mem = AsyncSwarmMemory.from_url(url, agent="bench")
    ns = mem.namespace("bench-chunks")

    async def task(key: str) -> None:
        for _ in range(n):
            await ns.put(key, VALUE)

    async def burst() -> None:
        await asyncio.gather(*(task(f"k{i}") for i in range(TASKS)))

    # The pipe's writes, counted (each variant's rule shows in how many it makes).
    write = _pipeline._Wire._write
    writes = [0]

    def counted(wire: _pipeline._Wire) -> None:
        writes[0] += 1
        write(wire)

    before = _pipeline.FLUSH_EVERY, _pipeline.EARLY_CHUNKS
    out: dict[str, list[tuple[float, float, float]]] = {v: [] for v in variants}
    counting = mock.patch.object(_pipeline._Wire, "_write", counted)
    counting.start()
    try:
        await burst()  # warm up: the library loaded, the pipe connected
        if mem._driver.pipe is None:
            sys.exit("bench.pipe_chunks: this client sends without the pipe (Settings.pipeline?)")
        for _ in range(rounds):
            for variant in variants:
                _pipeline.FLUSH_EVERY, _pipeline.EARLY_CHUNKS = _settings(variant)
                writes[0] = 0
                wall0, cpu0 = time.perf_counter(), time.process_time()
                await burst()
                wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
                puts = TASKS * n
                out[variant].append((wall / puts * 1e6, cpu / puts * 1e6, writes[0] / n))
    finally:
        counting.stop()
        _pipeline.FLUSH_EVERY, _pipeline.EARLY_CHUNKS = before
        await mem.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=16)
    p.add_argument("--n", type=int, default=100, help="puts per task per round")
    p.add_argument(
        "--variants",
        default="12,16,16*,25",
        help="N: a turn's first N calls ahead; N*: every chunk of N ahead",
    )
    p.add_argument("--taskset", default="0:1", help="CLIENT:SERVER CPUs (one each)")
    a = p.parse_args(argv)
    client_cpu, server_cpu = (int(x) for x in a.taskset.split(":"))
    variants = [ONE_WRITE, *a.variants.split(",")]
    for v in variants:
        try:
            _settings(v)
        except ValueError:
            p.error(f"bad variant {v!r}: want N or N*")

    from swarm_memory import SwarmMemory
    from tests.servers import RedisServer

    server = RedisServer()
    with affinity({server_cpu}):
        server.start()
    try:
        os.sched_setaffinity(0, {client_cpu})
        setup = SwarmMemory.from_url(server.url, agent="bench")
        setup.create_namespace("bench-chunks", exist_ok=True)
        setup.close()
        res = asyncio.run(_measure(server.url, variants, a.rounds, a.n))
    finally:
        server.stop()
    base = [wall for wall, _, _ in res[ONE_WRITE]]
    print(
        f"{TASKS} tasks x {a.n} puts, {a.rounds} rounds; client on CPU {client_cpu}, "
        f"redis-server on CPU {server_cpu}"
    )
    print(
        f"{'variant':>14} {'wall µs/put':>12} {'client CPU µs/put':>18} "
        f"{'writes/50 puts':>15} {'wall ÷ one write':>17}"
    )
    for variant in variants:
        walls = [wall for wall, _, _ in res[variant]]
        cpus = [cpu for _, cpu, _ in res[variant]]
        counts = [w for _, _, w in res[variant]]
        ratios = sorted(w / b for w, b in zip(walls, base, strict=True))
        print(
            f"{variant:>14} {statistics.median(walls):12.1f} {statistics.median(cpus):18.1f} "
            f"{statistics.median(counts):15.1f} "
            f"{statistics.median(ratios):8.2f} ({ratios[0]:.2f}-{ratios[-1]:.2f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

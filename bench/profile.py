"""Where one operation's time goes: ``python -m bench.profile put [--seconds 5]``.

Starts its own redis-server, runs one operation in a loop in a child process for
``--seconds`` under a sampling profiler, and prints:

1. client time per operation, and the server's own time per call of each command /
   script it ran (``INFO commandstats``: ``usec_per_call``), so the split between Redis
   work, round trips and client-side Python is explicit;
2. the hottest functions (``file:function``) by self time and by inclusive time, as % of
   the child's wall time. ``--tool py-spy`` (default when installed) samples with
   ``py-spy record --idle`` (time blocked in the socket shows up as ``recv``/``read``);
   ``--tool pyinstrument`` prints pyinstrument's call tree instead.

Operations: put, get, put_many, get_many, incr, update, merge, async_put, base_cas.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

OPS = ("put", "get", "put_many", "get_many", "incr", "update", "merge", "async_put", "base_cas")
NS, MERGE_NS = "bench-prof", "bench-prof-merge"


def _loop_sync(url: str, op: str, seconds: float) -> tuple[int, float]:
    from bench.baselines import CAS_XADD
    from bench.harness import VALUE
    from swarm_memory import SwarmMemory

    mem = SwarmMemory.from_url(url, agent="bench")
    ns, mns = mem.namespace(NS), mem.namespace(MERGE_NS)
    many = {f"m{i}": VALUE for i in range(100)}
    ns.put("g", VALUE)
    ns.put_many(many)
    r = mem.redis
    sha = r.script_load(CAS_XADD)
    ver = [0]

    def base_cas() -> None:
        from bench.harness import encode

        reply = r.evalsha(sha, 2, "bare:cas", "bare:stream", ver[0], encode(VALUE))
        ver[0] = reply[1]

    fns: dict[str, Callable[[], Any]] = {
        "put": lambda: ns.put("p", VALUE),
        "get": lambda: ns.get("g"),
        "put_many": lambda: ns.put_many(many),
        "get_many": lambda: ns.get_many(list(many)),
        "incr": lambda: ns.incr("c"),
        "update": lambda: ns.update("u", lambda v: (v or 0) + 1),
        "merge": lambda: mns.put("doc", {"w1": 1}),
        "base_cas": base_cas,
    }
    fns[op]()  # warm: connect, SCRIPT LOAD
    return _spin(fns[op], seconds)


def _spin(fn: Callable[[], Any], seconds: float) -> tuple[int, float]:
    """The measured loop (the profile reports samples inside it only)."""
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n, time.perf_counter() - t0


def _loop_async(url: str, seconds: float) -> tuple[int, float]:
    from bench.harness import VALUE
    from swarm_memory import AsyncSwarmMemory

    async def main() -> tuple[int, float]:
        mem = AsyncSwarmMemory.from_url(url, agent="bench")
        ns = mem.namespace(NS)
        count = [0]
        await asyncio.gather(*(ns.put(f"a{i}", VALUE) for i in range(50)))  # warm
        t0 = time.perf_counter()

        async def _spin_task(i: int) -> None:
            while time.perf_counter() - t0 < seconds:
                await ns.put(f"a{i}", VALUE)
                count[0] += 1

        await asyncio.gather(*(_spin_task(i) for i in range(50)))
        await mem.close()
        return count[0], time.perf_counter() - t0

    return asyncio.run(main())


def target(url: str, op: str, seconds: float, out: str) -> None:
    """The profiled child: loop, then write "n elapsed" to ``out``."""
    n, elapsed = _loop_async(url, seconds) if op == "async_put" else _loop_sync(url, op, seconds)
    Path(out).write_text(f"{n} {elapsed}")


# ----------------------------------------------------------------------------- parent
def commandstats(r: Any) -> dict[str, tuple[int, int]]:
    """{command: (calls, usec)} from INFO commandstats."""
    out: dict[str, tuple[int, int]] = {}
    for name, row in r.info("commandstats").items():
        out[name.removeprefix("cmdstat_")] = (int(row["calls"]), int(row["usec"]))
    return out


_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def _short(path: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def aggregate_raw(
    text: str, focus: str = "bench/profile.py:_spin"
) -> tuple[int, collections.Counter[str], collections.Counter[str]]:
    """py-spy ``--format raw`` (collapsed stacks) -> total, self and inclusive counts,
    over the samples taken inside the measured loop (``focus``: imports and set-up are
    left out)."""
    total = 0
    self_c: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = []
        for f in stack.split(";"):
            m = _FRAME.match(f)
            frames.append(f"{_short(m['file'])}:{m['fn']}" if m else f)
        # Coroutine frames are named like "_loop_async.<locals>.main.<locals>._spin_task".
        if not any(f.startswith(focus) or (".<locals>._spin" in f) for f in frames):
            total -= n
            continue
        if frames:
            self_c[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    return total, self_c, incl


def print_server(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]], n: int, elapsed: float
) -> None:
    print("server time per op (INFO commandstats, delta):")
    for cmd_name, (calls, usec) in sorted(after.items(), key=lambda kv: -kv[1][1]):
        c0, u0 = before.get(cmd_name, (0, 0))
        if calls - c0 <= 0 or cmd_name in ("info", "ping"):
            continue
        dc, du = calls - c0, usec - u0
        print(
            f"  {cmd_name:<14} {dc / n:6.2f} calls/op  {du / dc:7.1f} µs/call  "
            f"{du / n:7.1f} µs/op  ({100 * du / 1e6 / elapsed:4.1f}% of wall)"
        )


def print_pyspy(raw: str, top: int, us_per_op: float) -> int:
    """Percentages of the loop's samples, and that share of one operation in µs."""
    total, self_c, incl = aggregate_raw(raw)
    if not total:
        print("py-spy recorded no samples", file=sys.stderr)
        return 1
    print(f"\npy-spy: {total} samples (--idle: blocked time included)")
    groups: collections.Counter[str] = collections.Counter()
    for name, c in self_c.items():
        if name.endswith(("read_from_socket", "_socket_can_read")) or "selectors.py" in name:
            groups["blocked on the socket (server + loopback)"] += c
        elif name.startswith("swarm_memory/"):
            groups["swarm_memory/" + name.split("/")[1].split(":")[0]] += c
        elif name.startswith("redis/"):
            groups["redis-py (other)"] += c
        elif name.startswith("asyncio/"):
            groups["asyncio"] += c
        else:
            groups["other (" + name.split(":")[0].split("/")[0] + ")"] += c
    print("self time by where it is spent:")
    for name, c in groups.most_common(14):
        print(f"  {100 * c / total:5.1f}%  {us_per_op * c / total:6.1f} µs  {name}")
    print(f"top {top} by self time:")
    for name, c in self_c.most_common(top):
        print(f"  {100 * c / total:5.1f}%  {us_per_op * c / total:6.1f} µs  {name}")
    print(f"top {top} swarm_memory functions by self time:")
    ours = [(n, c) for n, c in self_c.most_common() if n.startswith("swarm_memory/")]
    for name, c in ours[:top]:
        print(f"  {100 * c / total:5.1f}%  {us_per_op * c / total:6.1f} µs  {name}")
    print(f"top {top} by inclusive time (swarm_memory / redis / bench frames):")
    shown = 0
    for name, c in incl.most_common():
        if any(p in name for p in ("swarm_memory/", "redis/", "bench/", "json/", "uuid")):
            print(f"  {100 * c / total:5.1f}%  {us_per_op * c / total:6.1f} µs  {name}")
            shown += 1
            if shown >= top:
                break
    return 0


def start_server(pin: bool) -> Any:
    """A redis-server of our own; with ``pin``, on the last CPU (the child goes on the
    others: :func:`child_prefix`), so server time never preempts the client."""
    from bench.harness import affinity
    from tests.servers import RedisServer

    cpus = sorted(os.sched_getaffinity(0))
    split = pin and len(cpus) > 1
    server = RedisServer()
    server.close = server.stop  # type: ignore[attr-defined]  # for contextlib.closing
    with affinity({cpus[-1]} if split else None):
        server.start()
    return server


def child_prefix(pin: bool) -> list[str]:
    """``taskset -c <all CPUs but the last>`` for the profiled child when pinning; the
    sampler itself stays unpinned (pinned beside its target, it could only sample the
    target while the target is off the CPU)."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2 or shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", ",".join(map(str, cpus[:-1]))]


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    ap.add_argument("op", choices=OPS)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--tool", choices=("py-spy", "pyinstrument", "none"))
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--rate", type=int, default=499, help="py-spy samples per second")
    ap.add_argument(
        "--pin",
        action="store_true",
        help="redis-server on the last CPU, the profiled child (and py-spy) on the others",
    )
    ap.add_argument("--target", nargs=2, metavar=("URL", "OUT"), help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    if a.target:  # the child
        if a.tool == "pyinstrument":
            from pyinstrument import Profiler

            with Profiler(interval=0.0005) as prof:
                target(a.target[0], a.op, a.seconds, a.target[1])
            print(prof.output_text(unicode=True, show_all=False, color=False))
        else:
            target(a.target[0], a.op, a.seconds, a.target[1])
        return 0

    tool = a.tool or ("py-spy" if shutil.which("py-spy") else "pyinstrument")
    server = start_server(a.pin)
    from swarm_memory import SwarmMemory

    with contextlib.closing(server), tempfile.TemporaryDirectory() as tmp:
        mem = SwarmMemory.from_url(server.url, agent="bench")
        mem.create_namespace(NS, exist_ok=True)
        mem.create_namespace(MERGE_NS, strategy="merge", exist_ok=True)
        mem.close()
        r = server.client()
        before = commandstats(r)
        out = os.path.join(tmp, "n.txt")
        child = [*child_prefix(a.pin), sys.executable, "-m", "bench.profile", a.op]
        child += ["--seconds", str(a.seconds)]
        child += ["--tool", tool, "--target", server.url, out]
        raw = os.path.join(tmp, "raw.txt")
        if tool == "py-spy":
            cmd = ["py-spy", "record", "--idle", "--nonblocking", "--rate", str(a.rate)]
            cmd += ["--format", "raw"]
            cmd += ["-o", raw, "--", *child]
        else:
            cmd = child
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(done.stdout, done.stderr, file=sys.stderr)
            return 1
        after = commandstats(r)
        r.close()
        n_text, el_text = Path(out).read_text().split()
        n, elapsed = int(n_text), float(el_text)
        print(f"{a.op}: {n} ops in {elapsed:.2f} s = {1e6 * elapsed / n:.0f} µs/op client-side")
        if tool == "py-spy":
            print("(wall time under py-spy sampling; the profiler slows the child a little)")
        print_server(before, after, n, elapsed)
        if tool == "pyinstrument":
            print(done.stdout)
            return 0
        return print_pyspy(Path(raw).read_text(), a.top, 1e6 * elapsed / n)
    return 0


if __name__ == "__main__":
    sys.exit(main())

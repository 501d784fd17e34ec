"""Measurement machinery shared by every case family: cases, interleaved rounds, stats.

A *case* performs ``n`` operations and returns a :class:`Sample` (timed inside the case,
so connection set-up and warm-up stay out of the clock). A *family* is a list of cases
measured against each other: every round runs every case once, in an order rotated per
round (A B C, B C A, C A B ...), so slow drift of the machine (other work on a shared
2-core VM, CPU frequency) hits every case alike. Ratios are computed per round — case
throughput over its baseline's throughput *in the same round* — and the table shows the
median of those paired ratios with their min-max.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Sample:
    """One timed run of a case: ``ops`` operations of ``items`` items each in ``elapsed`` s."""

    elapsed: float
    ops: int
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Case:
    """A benchmark case. ``run(n)`` performs about ``n`` operations and times them.

    ``items``: items per operation (100 for put_many(100)), so throughput is comparable
    with a pipelined baseline of 100 commands. ``vs``: the baselines (case names in the
    same family) to print ratios against. ``fixed``: ``run`` ignores ``n`` (duration-based
    cases such as the multi-process contention runs) and is not calibrated.
    """

    name: str
    run: Callable[[int], Sample]
    items: int = 1
    vs: tuple[str, ...] = ()
    fixed: bool = False
    note: str = ""
    close: Callable[[], None] | None = None


@dataclass
class CaseResult:
    case: Case
    n: int = 0
    samples: list[Sample] = field(default_factory=list)

    def rates(self) -> list[float]:
        """Items per second, one per round."""
        return [s.ops * self.case.items / s.elapsed for s in self.samples if s.elapsed > 0]


def calibrate(case: Case, target_s: float, *, floor: int = 3, cap: int = 1_000_000) -> int:
    """The ``n`` that makes one run of ``case`` last about ``target_s`` seconds.

    Doubles from ``floor`` until a run takes a quarter of the target (that run also warms
    connections and script caches), then scales linearly.
    """
    n = floor
    while True:
        s = case.run(n)
        if s.elapsed >= target_s / 4 or n >= cap:
            break
        n *= 2
    per_op = s.elapsed / max(s.ops, 1)
    return max(floor, min(cap, int(target_s / per_op) if per_op > 0 else cap))


def run_family(
    name: str,
    cases: list[Case],
    *,
    rounds: int,
    target_s: float,
    log: Callable[[str], None],
) -> dict[str, CaseResult]:
    """Calibrate every case, then run ``rounds`` interleaved rounds (order rotated)."""
    results = {c.name: CaseResult(c) for c in cases}
    for c in cases:
        results[c.name].n = 1 if c.fixed else calibrate(c, target_s)
    for r in range(rounds):
        k = r % len(cases)
        for c in cases[k:] + cases[:k]:
            res = results[c.name]
            s = c.run(res.n)
            res.samples.append(s)
            rate = s.ops * c.items / s.elapsed if s.elapsed > 0 else float("nan")
            log(f"  {name} round {r + 1}/{rounds} {c.name:<28} {rate:>12,.0f} /s")
    return results


def spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(results: dict[str, CaseResult]) -> dict[str, dict[str, Any]]:
    """Per case: rate median/min/max (items/s), µs per operation, paired ratios."""
    out: dict[str, dict[str, Any]] = {}
    for name, res in results.items():
        rates = res.rates()
        row: dict[str, Any] = {
            "items_per_op": res.case.items,
            "n": res.n,
            "rounds": len(res.samples),
            "rate": spread(rates),
            "us_per_op": spread([1e6 * res.case.items / x for x in rates]),
            "ratios": {},
        }
        if res.case.note:
            row["note"] = res.case.note
        extras = [s.extra for s in res.samples if s.extra]
        if extras:
            row["extra"] = merge_extras(extras)
        for base in res.case.vs:
            if base not in results:
                continue
            paired = [a / b for a, b in zip(rates, results[base].rates(), strict=False) if b > 0]
            row["ratios"][base] = spread(paired)
        out[name] = row
    return out


def merge_extras(extras: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum integer counters (lost updates, conflicts) over rounds; keep the rest as lists."""
    merged: dict[str, Any] = {}
    for key in extras[0]:
        vals = [e.get(key) for e in extras]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
            merged[key] = sum(v for v in vals if isinstance(v, int))
        else:
            merged[key] = vals
    return merged


def timed(fn: Callable[[], Any], n: int) -> Sample:
    """Call ``fn`` ``n`` times (one warm-up call first, untimed)."""
    fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return Sample(time.perf_counter() - t0, n)


async def timed_tasks(
    task: Callable[[str, int], Awaitable[None]], keys: list[str], n: int
) -> Sample:
    """One asyncio task per key, ``task(key, count)`` each: one untimed call per task
    first (so every task's connection is open), then ``n`` operations spread over them."""
    await asyncio.gather(*(task(k, 1) for k in keys))
    per = max(1, n // len(keys))
    t0 = time.perf_counter()
    await asyncio.gather(*(task(k, per) for k in keys))
    return Sample(time.perf_counter() - t0, per * len(keys))


# ----------------------------------------------------------------------------- output
def write_json(path: str, doc: Any, *, indent: int = 1) -> None:
    """Write ``doc`` as standard JSON: NaN (a run with no samples) becomes null."""

    def finite(obj: Any) -> Any:
        if isinstance(obj, float) and math.isnan(obj):
            return None
        if isinstance(obj, dict):
            return {str(k): finite(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [finite(v) for v in obj]
        return obj

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        json.dump(finite(doc), fh, indent=indent, allow_nan=False)


def fmt_rate(x: float) -> str:
    if math.isnan(x):
        return "-"
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e4:
        return f"{x / 1e3:.0f}k"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.0f}"


def fmt_us(x: float) -> str:
    if math.isnan(x):
        return "-"
    if x >= 1000:
        return f"{x / 1000:.2f} ms"
    return f"{x:.0f} µs" if x >= 10 else f"{x:.1f} µs"


def stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@contextmanager
def affinity(cpus: set[int] | None) -> Iterator[None]:
    """Run the block with this thread's CPU affinity set to ``cpus`` (processes it
    starts inherit it), then restore it."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


# ----------------------------------------------------------------------------- context
# The value every case writes: a small JSON object, like an agent's task record.
VALUE: dict[str, Any] = {"task": 7, "owner": "agent-12", "state": "running", "progress": 0.5}


def encode(value: Any) -> str:
    """JSON exactly as swarm_memory's codec writes it (compact separators): the bare
    baselines store the same bytes, so sizes and hash encodings match."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


@dataclass
class Ctx:
    """What every case builder gets: the server, the run's scale, a unique key space."""

    url: str
    quick: bool
    value: Any = field(default_factory=lambda: dict(VALUE))
    _seq: int = 0

    def fresh(self, kind: str) -> str:
        """A key/name no other case of this run uses."""
        self._seq += 1
        return f"bench:{kind}:{self._seq}"

    def raw(self, **kwargs: Any) -> Any:
        """A sync redis-py client (hiredis parser when installed), caller closes."""
        import redis

        return redis.Redis.from_url(self.url, **kwargs)

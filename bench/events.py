"""Event latency write -> watcher, p50/p99 at 1, 10, 50 watchers: ``bench.event_latency``
run inside the suite (same server, same interleaving rule), with fewer events per run so
the whole suite stays within a few minutes. ``python -m bench.event_latency`` remains the
long-form benchmark.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from bench import event_latency as el
from bench.harness import Ctx, spread
from swarm_memory import SwarmMemory

# Ours and the two baselines that bound it (one connection per consumer vs one
# shared connection fanned out); plain pub/sub per connection adds little over these.
DEFAULT_CASES = ("sync", "async", "xread", "pubsub-fanout")


def run_events(
    ctx: Ctx,
    *,
    rounds: int,
    counts: list[int],
    events: int,
    warmup: int,
    interval_ms: float,
    cases: tuple[str, ...] = DEFAULT_CASES,
    log: Callable[[str], None],
) -> dict[str, Any]:
    p = el.Params(events, warmup, interval_ms / 1000.0)
    raw = ctx.raw()
    mem = SwarmMemory.from_url(ctx.url, agent="bench")
    b = el.Bench(ctx.url, p, raw, mem)
    mem.create_namespace(b.namespace, exist_ok=True)
    results: dict[str, dict[int, list[dict[str, Any]]]] = {
        c: {n: [] for n in counts} for c in cases
    }
    try:
        for r in range(rounds):
            k = r % len(cases)
            order = list(cases[k:] + cases[:k])
            for n in counts:
                for case in order:
                    st = el.CASES[case](b, n).summary()
                    results[case][n].append(st)
                    log(
                        f"  events round {r + 1}/{rounds} {case:<14} n={n:<3} "
                        f"p50 {st['p50_us']:7.0f} µs  p99 {st['p99_us']:7.0f} µs"
                        + (f"  LOST {st['lost']}" if st["lost"] else "")
                    )
    finally:
        mem.close()
        raw.close()
    summary = el.build_report(results, list(cases), counts)
    el.fill_ratios(summary)
    # Paired per round, like every other ratio of the suite: our p99 over the fan-out
    # baseline's p99 of the same round (min-median-max over rounds).
    for case in el.OURS:
        if case not in results or "pubsub-fanout" not in results:
            continue
        for n in counts:
            paired = [
                ours["p99_us"] / base["p99_us"]
                for ours, base in zip(results[case][n], results["pubsub-fanout"][n], strict=True)
                if base["p99_us"] > 0
            ]
            summary[case][n]["p99_vs_pubsub-fanout_paired"] = spread(paired)
    return {
        "goal": el.GOAL,
        "params": {
            "events": events,
            "warmup": warmup,
            "interval_ms": interval_ms,
            "rounds": rounds,
            "pid": os.getpid(),
        },
        "summary": {c: {str(n): row for n, row in rows.items()} for c, rows in summary.items()},
    }


def goal_met(p99_us: float, watchers: int) -> bool:
    return el.goal_met(p99_us, watchers)


def goal_bound(watchers: int) -> tuple[float, bool]:
    return el.goal_us(watchers)

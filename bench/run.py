"""The benchmark suite: ``python -m bench`` (or ``python bench/run.py``) from the repo root.

Starts its own ``redis-server`` on a free loopback port (never 6379), measures every
case family with its cases interleaved over several rounds, and prints per family a
table of medians (min-max) with ratios against the baselines measured in the same run,
then the goals of the benchmark issue with the measured ratio and met / missed.

  single      one client, one call at a time: bare GET / HGETALL / HSET / HGET / Lua
              CAS+XADD; ours put / get; pottery RedisDict set / get
  batch       100 items per round trip: pipelined bare GET / HGETALL / CAS+XADD;
              ours put_many(100) / get_many(100)
  async       redis.asyncio vs AsyncSwarmMemory, 50 tasks
  nats        the async cases beside NATS JetStream KV put / update(last=) / get
  server      the server's own µs per call (INFO commandstats) of ours vs bare commands
  contention  8 and 32 processes on one key: bare Lua RMW, WATCH/MULTI, client CAS
              loop; ours incr / merge / update(fn); lost updates counted
  locks       bare SET NX PX + Lua release; redis-py Lock, python-redis-lock, pottery
              Redlock; ours (when Namespace.lock exists)
  events      write -> watcher p50 / p99 at 1, 10, 50 watchers (bench.event_latency)
  memory      MEMORY USAGE per entry, every key of a namespace, vs a bare hash
  fake        the same operations on fakeredis vs the real server

``--taskset CLIENT[:SERVER]`` pins this process (and the worker processes it forks) to
CLIENT CPUs and redis-server to SERVER CPUs (default: the other CPUs), e.g. ``0:1``, or
``0:0`` for both on one CPU. ``--quick`` runs everything tiny, in seconds (the smoke
test). ``--json PATH`` writes every number.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `bench` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import (
    baselines,
    contention,
    core,
    events,
    fake,
    locks,
    memory,
    nats_kv,
    peers,
    server_cpu,
)
from bench.harness import (
    Ctx,
    fmt_rate,
    fmt_us,
    run_family,
    spread,
    stderr,
    summarize,
    write_json,
)

FAMILIES = (
    "single",
    "batch",
    "async",
    "nats",
    "server",
    "contention",
    "locks",
    "events",
    "memory",
    "fake",
)


@dataclass(frozen=True)
class Goal:
    """case / baseline ratio (throughput) must be >= ``at_least``."""

    text: str
    family: str
    case: str
    vs: str
    at_least: float
    stretch: float | None = None


def goals_for(workers: list[int], one_cpu: bool = False) -> list[Goal]:
    """The goals (issue 16's where it sets one). ``one_cpu``: client and server pinned to
    the same CPU (``--taskset 0:0``), where issue 16 asks less of put / get."""
    top = max(workers)
    c = contention.name_of
    put_at, get_at = (0.6, 0.6) if one_cpu else (0.85, 0.9)
    where = " (one CPU)" if one_cpu else ""
    return [
        Goal(
            f"put >= {put_at}x bare Lua CAS+XADD{where}",
            "single",
            "ours.put",
            "base.cas_xadd",
            put_at,
        ),
        # For reference: the put's calls alone (floor.put, bare redis-py), the same bound.
        Goal(
            f"floor: a put's calls alone >= {put_at}x bare Lua CAS+XADD{where}",
            "single",
            "floor.put",
            "base.cas_xadd",
            put_at,
        ),
        Goal(f"get >= {get_at}x raw HGETALL{where}", "single", "ours.get", "base.hgetall", get_at),
        Goal(
            "put_many(100) >= 0.7x pipelined bare CAS",
            "batch",
            "ours.put_many(100)",
            "base.cas_xadd.x100",
            0.7,
        ),
        Goal(
            "async 50-task put >= 0.8x raw async EVALSHA",
            "async",
            "ours.async.put",
            "base.async.cas_xadd",
            0.8,
        ),
        Goal(
            "async 50-task put >= 1.0x NATS JetStream KV put",
            "nats",
            "ours.async.put",
            "peer.nats.kv.put",
            1.0,
        ),
        Goal(
            "async 50-task CAS put >= 1.0x NATS JetStream KV update",
            "nats",
            "ours.async.cas_put",
            "peer.nats.kv.update",
            1.0,
        ),
        Goal(
            f"contended incr ({top} workers) >= 0.8x bare Lua RMW",
            "contention",
            c("ours.incr", top),
            c("base.lua_rmw", top),
            0.8,
        ),
        Goal(
            f"contended incr ({top} workers) >= 50x WATCH/MULTI",
            "contention",
            c("ours.incr", top),
            c("base.watch_multi", top),
            50.0,
        ),
        Goal(
            f"contended merge ({top} workers) >= 0.5x bare Lua RMW",
            "contention",
            c("ours.merge", top),
            c("base.lua_rmw", top),
            0.5,
        ),
        Goal(
            f"contended merge ({top} workers) >= 50x WATCH/MULTI",
            "contention",
            c("ours.merge", top),
            c("base.watch_multi", top),
            50.0,
        ),
        Goal(
            f"update(fn) ({top} workers) >= 0.8x bare client CAS loop",
            "contention",
            c("ours.update", top),
            c("base.client_cas", top),
            0.8,
        ),
        Goal(
            "lock acquire+release >= 0.9x bare SET NX PX + Lua release",
            "locks",
            "ours.lock",
            "base.lock",
            0.9,
        ),
        Goal(
            "lock acquire+release >= 1.0x redis-py Lock",
            "locks",
            "ours.lock",
            "peer.redis-py.Lock",
            1.0,
        ),
        Goal(
            "identity check cost <= 2% of a put (as an agent's ACL user)",
            "single",
            "ours.put+identity",
            "ours.put",
            0.98,
        ),
        Goal(
            "client-side metrics cost <= 3% of a put",
            "single",
            "ours.put+metrics",
            "ours.put",
            0.97,
        ),
    ]


# ----------------------------------------------------------------------------- options
def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--quick", action="store_true", help="tiny run (seconds): smoke test")
    ap.add_argument("--rounds", type=int, help="interleaved rounds per family (5; quick 2)")
    ap.add_argument("--contention-rounds", type=int, help="rounds of the contention runs (3)")
    ap.add_argument("--target", type=float, help="seconds per case run (0.25; quick 0.01)")
    ap.add_argument("--workers", help="contention process counts (8,32; quick 2,3)")
    ap.add_argument("--contend-seconds", type=float, help="seconds per contention run (0.6)")
    ap.add_argument("--watchers", help="event watcher counts (1,10,50; quick 1)")
    ap.add_argument("--events", type=int, help="measured events per event case run (300)")
    ap.add_argument("--event-rounds", type=int, help="rounds of the event cases (2; quick 1)")
    ap.add_argument("--memory-entries", type=int, help="entries for the memory case (1000)")
    ap.add_argument("--server-calls", type=int, help="calls per server-CPU measurement (3000)")
    ap.add_argument("--only", help="comma-separated families: " + ",".join(FAMILIES))
    ap.add_argument("--skip", help="comma-separated families to leave out")
    ap.add_argument("--json", metavar="PATH", help="write all results as JSON here")
    ap.add_argument(
        "--nats",
        default="own",
        metavar="own|none|URL",
        help="NATS peer: start our own nats-server (own, default), use a running one "
        "(URL; a throwaway bucket, deleted after), or leave it out (none)",
    )
    ap.add_argument(
        "--nats-storage", choices=("memory", "file"), default="memory", help="KV bucket storage"
    )
    ap.add_argument(
        "--taskset",
        metavar="CLIENT[:SERVER]",
        help="pin the bench to CLIENT CPUs, redis-server to SERVER (default: the others)",
    )
    a = ap.parse_args(argv)
    q = a.quick
    a.rounds = a.rounds or (2 if q else 5)
    a.contention_rounds = a.contention_rounds or (1 if q else 3)
    a.target = a.target or (0.01 if q else 0.25)
    a.workers = [int(x) for x in (a.workers or ("2,3" if q else "8,32")).split(",") if x]
    a.contend_seconds = a.contend_seconds or (0.1 if q else 0.6)
    a.watchers = [int(x) for x in (a.watchers or ("1" if q else "1,10,50")).split(",") if x]
    a.events = a.events or (20 if q else 300)
    a.event_rounds = a.event_rounds or (1 if q else 2)
    a.memory_entries = a.memory_entries or (30 if q else 1000)
    a.server_calls = a.server_calls or (30 if q else 3000)
    only = set(a.only.split(",")) if a.only else set(FAMILIES)
    skip = set(a.skip.split(",")) if a.skip else set()
    unknown = (only | skip) - set(FAMILIES)
    if unknown:
        ap.error(f"unknown families {sorted(unknown)}; known: {', '.join(FAMILIES)}")
    a.families = [f for f in FAMILIES if f in only and f not in skip]
    if min(a.workers + a.watchers) < 1 or a.rounds < 1 or a.target <= 0:
        ap.error("--workers/--watchers/--rounds must be >= 1, --target > 0")
    a.pin = parse_taskset(ap, a.taskset)
    a.nats_skipped = []  # lines saying why the NATS peer did not run, for the report
    return a


def parse_taskset(
    ap: argparse.ArgumentParser, spec: str | None
) -> tuple[set[int], set[int]] | None:
    if spec is None:
        return None

    def cpus(text: str) -> set[int]:
        out: set[int] = set()
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            out.update(range(int(lo), int(hi or lo) + 1))
        return out

    try:
        client_text, _, server_text = spec.partition(":")
        client = cpus(client_text)
        online = set(range(os.cpu_count() or 1))
        server = cpus(server_text) if server_text else (online - client or client)
    except ValueError:
        ap.error(f"bad --taskset {spec!r}: want CLIENT[:SERVER] CPU lists, e.g. 0:1")
    if not (client | server) <= os.sched_getaffinity(0):
        ap.error(f"--taskset {spec!r}: CPUs not available to this process")
    return client, server


# ----------------------------------------------------------------------------- running
def build_cases(family: str, ctx: Ctx, a: argparse.Namespace, log: Callable[[str], None]) -> Any:
    if family == "single":
        return baselines.single_cases(ctx) + peers.dict_cases(ctx, log) + core.single_cases(ctx)
    if family == "batch":
        return baselines.batch_cases(ctx) + core.batch_cases(ctx)
    if family == "async":
        return baselines.async_cases(ctx) + core.async_cases(ctx)
    if family == "nats":
        peer = nats_kv.peer_cases(ctx, a.nats_url, a.nats_storage, log)
        ours = [*core.async_cases(ctx), nats_kv.ours_cas_case(ctx)]
        names = {c.name for c in peer}
        for c in ours:
            vs = nats_kv.OURS_VS_PEER.get(c.name)
            if vs in names:
                c.vs = (vs, *c.vs)
        return baselines.async_cases(ctx) + peer + ours
    if family == "locks":
        return [baselines.lock_case(ctx), *peers.lock_cases(ctx, log), *locks.lock_cases(ctx)]
    if family == "fake":
        return fake.fake_cases(ctx)
    raise AssertionError(family)


def run_all(a: argparse.Namespace, url: str, log: Callable[[str], None]) -> dict[str, Any]:
    ctx = Ctx(url, a.quick)
    out: dict[str, Any] = {"families": {}, "skipped": []}
    for family in a.families:
        started = time.monotonic()
        log(f"[{family}]")
        if family == "locks" and not locks.available():
            out["skipped"].append("ours.lock: not available (Namespace.lock has not landed)")
        if family == "single" and not core.metrics_available():
            out["skipped"].append(
                "ours.put+metrics: not available (swarm_memory.metrics has not landed)"
            )
        if family == "contention":
            rows: dict[str, Any] = {}
            for w in a.workers:
                cases = contention.contention_cases(ctx, w, a.contend_seconds)
                res = run_family(
                    f"contention x{w}", cases, rounds=a.contention_rounds, target_s=1, log=log
                )
                rows.update(summarize(res))
            out["families"][family] = rows
        elif family == "events":
            out["events"] = events.run_events(
                ctx,
                rounds=a.event_rounds,
                counts=a.watchers,
                events=a.events,
                warmup=max(5, a.events // 6),
                interval_ms=2.0,
                log=log,
            )
        elif family == "server":
            out["server"] = server_cpu.run_server(
                ctx, rounds=a.rounds, calls=a.server_calls, log=log
            )
        elif family == "memory":
            window = 0.2 if a.quick else memory.STEADY_WINDOW
            out["memory"] = memory.measure_memory(ctx, a.memory_entries, log, window)
        else:
            if family == "nats":

                def log_skip(line: str) -> None:
                    a.nats_skipped.append(line)
                    log(line)

                cases = build_cases(family, ctx, a, log_skip)
                out["skipped"].extend(a.nats_skipped)
            else:
                cases = build_cases(family, ctx, a, log)
            try:
                res = run_family(family, cases, rounds=a.rounds, target_s=a.target, log=log)
            finally:
                for c in cases:
                    if c.close is not None:
                        c.close()
            out["families"][family] = summarize(res)
        log(f"[{family}] {time.monotonic() - started:.1f} s")
    return out


# ----------------------------------------------------------------------------- report
def print_family(name: str, rows: dict[str, Any]) -> None:
    print(f"\n== {name}")
    head = f"{'case':<30}{'rate /s: median (min-max)':>30}{'per op':>11}   ratio vs baseline"
    print(head)
    print("-" * (len(head) + 30))
    for case, row in rows.items():
        r = row["rate"]
        rate = f"{fmt_rate(r['median'])} ({fmt_rate(r['min'])}-{fmt_rate(r['max'])})"
        per = row["us_per_op"]["median"]  # per call (a call of put_many(100) = 100 items)
        ratios = "  ".join(
            f"{v['median']:.2f}x ({v['min']:.2f}-{v['max']:.2f}) vs {b}"
            for b, v in row["ratios"].items()
        )
        line = f"{case:<30}{rate:>30}{fmt_us(per):>11}   {ratios}"
        extra = row.get("extra") or {}
        if extra.get("ab_ratio"):
            ab = spread(extra["ab_ratio"])
            line += f"   plain/with {ab['median']:.3f} ({ab['min']:.3f}-{ab['max']:.3f})"
        if "lost" in extra:
            line += f"   lost {extra['lost']}/{extra['acknowledged']}"
            if extra.get("conflicts"):
                line += f", {extra['conflicts']} conflicts"
            if extra.get("retries"):
                line += f", {extra['retries']} retries"
            if extra.get("script_calls") and extra.get("acknowledged"):
                line += f", {extra['script_calls'] / extra['acknowledged']:.2f} calls/op"
        print(line.rstrip())
    notes = [f"{case}: {row['note']}" for case, row in rows.items() if row.get("note")]
    if notes:
        print("  (" + "; ".join(notes) + ")")


def print_events(ev: dict[str, Any]) -> None:
    print("\n== events: write -> watcher latency (medians over rounds of each round's p50/p99)")
    summary = ev["summary"]
    counts = list(next(iter(summary.values())).keys())
    print(f"{'case':<15}{'watchers':>9}{'p50':>10}{'p99':>10}{'max':>10}   p99 vs baselines")
    for n in counts:
        for case, rows in summary.items():
            row = rows[n]
            vs = "  ".join(
                f"{row[k]:.2f}x {k[len('p99_vs_') :]}"
                for k in row
                if k.startswith("p99_vs_") and not k.endswith("_paired")
            )
            paired = row.get("p99_vs_pubsub-fanout_paired")
            if paired:
                vs += (
                    f"  (paired per round vs pubsub-fanout: {paired['median']:.2f}x "
                    f"{paired['min']:.2f}-{paired['max']:.2f})"
                )
            lost = f"  LOST {row['lost']}" if row["lost"] else ""
            print(
                f"{case:<15}{n:>9}{fmt_us(row['p50_us']):>10}{fmt_us(row['p99_us']):>10}"
                f"{fmt_us(row['max_us']):>10}   {vs}{lost}"
            )


def print_server(srv: dict[str, Any]) -> None:
    print(
        f"\n== server CPU per call (INFO commandstats after CONFIG RESETSTAT, "
        f"{srv['calls']} calls x {srv['rounds']} rounds; lower is better)"
    )
    print(f"{'op':<11}{'ours|floor µs/op':>24}{'bare µs/op':>24}   ours / bare")
    for what, p in srv["pairs"].items():
        o, b, r = p["ours_us"], p["base_us"], p["ratio"]
        print(
            f"{what:<11}{o['median']:>10.1f} ({o['min']:.1f}-{o['max']:.1f}){'':>3}"
            f"{b['median']:>8.1f} ({b['min']:.1f}-{b['max']:.1f})   "
            f"{r['median']:.2f}x ({r['min']:.2f}-{r['max']:.2f}) vs {p['base']}"
            f"   [{p['ours_top_level_calls_per_op']:.2f} script calls/op]"
        )


def print_memory(mem: dict[str, Any]) -> None:
    print("\n== memory per entry (MEMORY USAGE, every key of the namespace / entries)")
    for label, row in mem.items():
        per = row["per_write_records"]
        print(
            f"{label:<6} value {row['value_bytes']} B: all-in {row['per_entry_total']:,.0f} B "
            f"({row['ratio_total']:.2f}x bare), without per-write records "
            f"{row['per_entry_without_per_write_records']:,.0f} B "
            f"({row['ratio_without_per_write_records']:.2f}x bare); bare hash "
            f"{row['bare_hash_per_entry']:,.0f} B; per write: events {per['events']:.0f} B, "
            f"audit {per['audit']:.0f} B, dedupe {per['dedupe']:.0f} B; encodings "
            f"{row['entry_encoding']} / bare {row['bare_encoding']}"
        )
        print(
            f"{'':<6} steady state (dedupe window {row['dedupe_window_s']:g} s passed, "
            f"{row['steady_state_purge_writes']} purge writes, "
            f"{row['steady_state_dedupe_records_left']} dedupe records left): "
            f"{row['steady_state_per_entry']:,.0f} B ({row['ratio_steady_state']:.2f}x bare)"
        )


def evaluate_goals(a: argparse.Namespace, out: dict[str, Any]) -> list[dict[str, Any]]:
    fams = out["families"]
    rows: list[dict[str, Any]] = []
    one_cpu = bool(a.pin) and a.pin[0] == a.pin[1] and len(a.pin[0]) == 1
    for g in goals_for(a.workers, one_cpu):
        row: dict[str, Any] = {"goal": g.text, "target": g.at_least}
        case_row = fams.get(g.family, {}).get(g.case, {})
        ratio = case_row.get("ratios", {}).get(g.vs)
        ab = case_row.get("extra", {}).get("ab_ratio")
        if ab:  # measured by alternation inside each run (see core._metrics_case)
            ratio = spread(ab)
        if ratio is None or math.isnan(ratio["median"]):
            row["status"] = "n/a"
        else:
            row.update(measured=ratio["median"], min=ratio["min"], max=ratio["max"])
            met = ratio["median"] >= g.at_least
            row["status"] = "met" if met else "MISSED"
            if met and g.stretch is not None:
                row["status"] += f" (stretch {g.stretch}: " + (
                    "met)" if ratio["median"] >= g.stretch else "missed)"
                )
        rows.append(row)
    if "contention" in fams:
        lost = sum(r.get("extra", {}).get("lost", 0) for r in fams["contention"].values())
        rows.append(
            {
                "goal": "lost updates (all contention cases) == 0",
                "target": 0,
                "measured": lost,
                "status": "met" if lost == 0 else "MISSED",
            }
        )
    if "server" in out:
        pairs = out["server"]["pairs"]
        for what, bound in server_cpu.GOALS.items():
            # The goal's row, then its floor's (the calls alone), for reference.
            for label, p in (
                (f"server µs per {what}", pairs.get(what)),
                (f"floor: server µs per {what}'s calls alone", pairs.get(f"{what}.floor")),
            ):
                if p is None:
                    continue
                r = p["ratio"]
                rows.append(
                    {
                        "goal": f"{label} <= {bound:g}x {p['base']}",
                        "target": bound,
                        "measured": r["median"],
                        "min": r["min"],
                        "max": r["max"],
                        "status": "met" if r["median"] <= bound else "MISSED",
                        "lower_is_better": True,
                    }
                )
    if "events" in out:
        for case in ("sync", "async"):
            for n, ev in out["events"]["summary"].get(case, {}).items():
                bound, strict = events.goal_bound(int(n))
                rows.append(
                    {
                        "goal": f"event p99 {case} {n} watchers {'<' if strict else '<='} "
                        f"{bound / 1000:g} ms",
                        "target": bound,
                        "measured": ev["p99_us"],
                        "unit": "us",
                        "status": "met" if events.goal_met(ev["p99_us"], int(n)) else "MISSED",
                    }
                )
                vs = ev.get("p99_vs_pubsub-fanout_paired")
                if vs is not None and int(n) > 1:
                    rows.append(
                        {
                            "goal": f"event p99 {case} {n} watchers <= 1.5x pub/sub fan-out",
                            "target": 1.5,
                            "measured": vs["median"],
                            "min": vs["min"],
                            "max": vs["max"],
                            "status": "met" if vs["median"] <= 1.5 else "MISSED",
                            "lower_is_better": True,
                        }
                    )
    if "memory" in out:
        for label, m in out["memory"].items():
            for what, key in (
                ("steady state after the dedupe window", "ratio_steady_state"),
                ("all-in", "ratio_total"),
                ("without events/audit/dedupe", "ratio_without_per_write_records"),
            ):
                rows.append(
                    {
                        "goal": f"memory/entry ({label} value, {what}) <= 3x bare hash",
                        "target": 3.0,
                        "measured": m[key],
                        "status": "met" if m[key] <= 3.0 else "MISSED",
                        "lower_is_better": True,
                    }
                )
    return rows


def print_goals(rows: list[dict[str, Any]]) -> None:
    print("\n== goals (ratios: median of per-round paired ratios, min-max; same run)")
    for r in rows:
        if "measured" not in r:
            measured = "not measured"
        elif r.get("unit") == "us":
            measured = fmt_us(r["measured"])
        elif "min" in r:
            measured = f"{r['measured']:.2f}x ({r['min']:.2f}-{r['max']:.2f})"
        elif isinstance(r["measured"], int):
            measured = str(r["measured"])
        else:
            measured = f"{r['measured']:.2f}x"
        print(f"  {r['status']:<22} {r['goal']:<70} {measured}")


def environment(server_version: str, redis_cpus: str) -> dict[str, Any]:
    import redis

    try:
        import hiredis

        hiredis_version: str | None = getattr(hiredis, "__version__", "yes")
    except ImportError:
        hiredis_version = None
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
        return done.stdout.strip()

    return {
        # The core changes fast: say exactly which code was measured.
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_dirty_core": bool(git("status", "--porcelain", "--", "swarm_memory")),
        "python": platform.python_version(),
        "redis_py": redis.__version__,
        "hiredis": hiredis_version,
        "redis_server": server_version.split(" sha=", maxsplit=1)[0],
        "cpu_model": model,
        "cpus_online": os.cpu_count(),
        "bench_cpus": sorted(os.sched_getaffinity(0)),
        "redis_cpus": redis_cpus,
        "platform": platform.platform(),
    }


def main(argv: list[str] | None = None) -> int:
    a = parse_args(sys.argv[1:] if argv is None else argv)
    from bench.harness import affinity
    from tests.servers import RedisServer, redis_server_available

    if not redis_server_available():
        stderr("redis-server / redis-cli not on PATH")
        return 2
    version = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    started = time.monotonic()
    load_before = os.getloadavg()
    server = RedisServer()
    # The server inherits the affinity it is started with (all its threads do).
    nats_server = None
    a.nats_url = None
    with affinity(a.pin[1] if a.pin else None):
        server.start()
        if "nats" in a.families:  # beside redis-server, on the same CPUs
            a.nats_url, nats_server = nats_kv.start_server(a.nats, a.nats_skipped.append)
    try:
        if a.pin:
            os.sched_setaffinity(0, a.pin[0])
        redis_cpus = ",".join(map(str, sorted(a.pin[1]))) if a.pin else "unpinned"
        stderr(f"redis-server on {server.url}; families {', '.join(a.families)}")
        out = run_all(a, server.url, stderr)
        env = environment(version, redis_cpus)
    finally:
        server.stop()
        if nats_server is not None:
            nats_server.stop()
    env["loadavg_before"] = [round(x, 2) for x in load_before]
    env["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    elapsed = time.monotonic() - started
    print(
        f"swarm_memory benchmark suite: {elapsed:.0f} s; rounds {a.rounds} (contention "
        f"{a.contention_rounds}, events {a.event_rounds}), ~{a.target} s per case run"
        + (" [QUICK: numbers meaningless]" if a.quick else "")
    )
    print(
        f"python {env['python']}, redis-py {env['redis_py']}, hiredis {env['hiredis']}, "
        f"{env['redis_server']}; {env['cpu_model']}, {env['cpus_online']} CPUs online "
        f"(bench on {env['bench_cpus']}, redis-server {redis_cpus}); load average "
        f"{env['loadavg_before'][0]} before, {env['loadavg_after'][0]} after"
    )
    if (os.cpu_count() or 1) <= 2 and "contention" in a.families:
        print(
            f"note: {os.cpu_count()} CPUs: the {a.workers} contention processes and "
            "redis-server time-share them"
        )
    for line in out["skipped"]:
        print(f"not available: {line}")
    for name, rows in out["families"].items():
        print_family(name, rows)
    if "events" in out:
        print_events(out["events"])
    if "server" in out:
        print_server(out["server"])
    if "memory" in out:
        print_memory(out["memory"])
    goals = evaluate_goals(a, out)
    print_goals(goals)
    if a.json:
        doc = {
            "params": {
                k: getattr(a, k)
                for k in (
                    "quick",
                    "rounds",
                    "contention_rounds",
                    "target",
                    "workers",
                    "contend_seconds",
                    "watchers",
                    "events",
                    "event_rounds",
                    "memory_entries",
                    "server_calls",
                    "nats",
                    "nats_storage",
                    "families",
                    "taskset",
                )
            },
            "env": env,
            "elapsed_s": round(elapsed, 1),
            "goals": goals,
            **out,
        }
        write_json(a.json, doc)
        print(f"\nwrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

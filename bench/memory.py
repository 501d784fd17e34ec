"""Redis memory per entry, all of a namespace's keys included, against a bare hash.

Writes N entries with one ``put`` each (as agents do), then sums ``MEMORY USAGE key
SAMPLES 0`` over every key of the namespace (its own key prefix, so nothing else
matches) by kind:

- ``entry``: the per-entry hashes (value + 8 metadata fields);
- ``index``: the key index, LRU and expiry zsets;
- ``namespace``: meta / acl / stats hashes (fixed cost, shared by all entries);
- ``events`` / ``audit``: the change feed and audit streams (one record per write,
  capped at ``stream_maxlen`` / ``audit_maxlen``);
- ``dedupe``: op-id records + their time index (one per write, kept for
  ``dedupe_window`` seconds: at R writes/s a namespace holds R x window of them).

Reported per entry with and without the per-write records (events, audit, dedupe), vs
``HSET bare:<i> v <same JSON>`` (one field). Two value sizes: the suite's small record
and a 1 KiB one, because the fixed per-entry overhead dominates small values.

**Steady state** (after the dedupe window): the namespace is created with a short
``dedupe_window`` (``STEADY_WINDOW`` s; the window is the namespace's, stored at
creation), and after the first measurement the bench waits the window out and drives
the write script's amortized purge (every 8th revision drops up to 64 expired op-id
records) with writes to one extra key, waiting again after each pass, until at most
1 % of the records (at least 8) are left — then measures every key again. Those purge
writes are real writes: their events and audit records stay and are counted (the
report says how many there were). Nothing is subtracted: the steady figure is what the
server holds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from bench.harness import Ctx, encode
from swarm_memory import Settings, SwarmMemory

PREFIX = "bmem"
PER_WRITE = ("events", "audit", "dedupe")
STEADY_WINDOW = 1.0  # seconds: the benchmark namespaces' dedupe window
PURGE_KEY = "zz-dedupe-purge"


def _kind(suffix: str) -> str:
    if suffix.startswith("e:"):
        return "entry"
    if suffix.startswith("h:"):
        return "history"
    if suffix in ("idx", "lru", "exp"):
        return "index"
    if suffix in ("ops", "opst"):
        return "dedupe"
    if suffix in ("events", "audit"):
        return suffix
    return "namespace"


def _usage(r: Any, keys: list[bytes]) -> list[int]:
    pipe = r.pipeline(transaction=False)
    for k in keys:
        pipe.memory_usage(k, samples=0)
    return [int(x or 0) for x in pipe.execute()]


def _by_kind(r: Any, base: str) -> dict[str, int]:
    keys = list(r.scan_iter(match=base.replace("{", "\\{").replace("}", "\\}") + "*"))
    by_kind: dict[str, int] = {}
    for k, size in zip(keys, _usage(r, keys), strict=True):
        kind = _kind(k.decode()[len(base) :])
        by_kind[kind] = by_kind.get(kind, 0) + size
    return by_kind


def _purge_dedupe(r: Any, ns: Any, ops: str, entries: int, window: float) -> int:
    """Wait the dedupe window out and drive the amortized purge until < 1 % of the
    records (at least 8) remain; the number of purge writes made. ``ops``: the op
    records' hash (its purge index is a list, or a sorted set in older namespaces)."""
    writes = 0
    for _ in range(20):  # each pass leaves ~1/8 of the last pass's count
        left = int(r.hlen(ops))
        if left <= max(8, entries // 100):
            break
        time.sleep(window * 1.1)
        for _ in range(8 * math.ceil(left / 64)):
            ns.put(PURGE_KEY, writes)
            writes += 1
    return writes


def measure_memory(
    ctx: Ctx, entries: int, log: Callable[[str], None], window: float = STEADY_WINDOW
) -> dict[str, Any]:

    out: dict[str, Any] = {}
    r = ctx.raw()
    settings = Settings(key_prefix=PREFIX, dedupe_window=window)
    mem = SwarmMemory.from_url(ctx.url, agent="bench", settings=settings)
    try:
        for label, value in (("small", ctx.value), ("1KiB", {"blob": "x" * 1000})):
            nsname = f"bench-mem-{label.lower()}"
            mem.create_namespace(nsname, exist_ok=True)
            ns = mem.namespace(nsname)
            for i in range(entries):
                ns.put(f"task-{i:06d}", value)
            base = f"{PREFIX}:{{{nsname}}}:"
            by_kind = _by_kind(r, base)
            data = encode(value)
            bare_keys = [f"bench:bare-{label}:{i:06d}" for i in range(entries)]
            pipe = r.pipeline(transaction=False)
            for k in bare_keys:
                pipe.hset(k, "v", data)
            pipe.execute()
            bare = sum(_usage(r, [k.encode() for k in bare_keys])) / entries
            sample_entry = (base + "e:task-000000").encode()
            total = sum(by_kind.values()) / entries
            steady = total - sum(by_kind.get(k, 0) for k in PER_WRITE) / entries
            purge_writes = _purge_dedupe(r, ns, base + "ops", entries, window)
            steady_by_kind = _by_kind(r, base)
            steady_state = sum(steady_by_kind.values()) / entries
            row = {
                "entries": entries,
                "dedupe_window_s": window,
                "steady_state_per_entry": steady_state,
                "steady_state_bytes_by_kind": steady_by_kind,
                "steady_state_purge_writes": purge_writes,
                "steady_state_dedupe_records_left": int(r.hlen(base + "ops")),
                "ratio_steady_state": steady_state / bare,
                "value_bytes": len(data),
                "bytes_by_kind": by_kind,
                "per_entry_total": total,
                "per_entry_without_per_write_records": steady,
                "per_write_records": {k: by_kind.get(k, 0) / entries for k in PER_WRITE},
                "bare_hash_per_entry": bare,
                "ratio_total": total / bare,
                "ratio_without_per_write_records": steady / bare,
                "entry_encoding": r.object("ENCODING", sample_entry).decode(),
                "bare_encoding": r.object("ENCODING", bare_keys[0]).decode(),
            }
            out[label] = row
            log(
                f"  memory {label}: {total:,.0f} B/entry all-in, {steady:,.0f} B without "
                f"events/audit/dedupe, bare hash {bare:,.0f} B; steady state "
                f"{steady_state:,.0f} B after {purge_writes} purge writes"
            )
            r.delete(*bare_keys)
            mem.delete_namespace(nsname)
    finally:
        mem.close()
        r.close()
    return out

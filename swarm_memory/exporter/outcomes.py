"""Outcome-log series for the exporter: per namespace, log and strategy, the records and
successes the agent script counts (``lua/agent.lua``), read with plain commands at
scrape time, and the success rate's Wilson 95 % lower bound computed from them.

Labels are bounded: at most :data:`MAX_LOGS` logs per namespace and
:data:`MAX_STRATEGIES` strategies per log get series of their own (by name order); the
rest are summed into ``strategy="_other"`` (no name can start with ``_``, so it never
collides), and logs past the cap are left out and counted in
``swarm_memory_outcome_logs_dropped``. Names are the agents' own log and strategy names,
never a key, agent or op id.
"""

from __future__ import annotations

from typing import Any

from swarm_memory._ops.outcomes import wilson
from swarm_memory.keys import _NAME_RE, NamespaceKeys

MAX_LOGS = 16
MAX_STRATEGIES = 32
OTHER = "_other"

FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "swarm_memory_outcomes_total": (
        "counter",
        "Outcomes recorded (each op id once), by result (success|failure).",
        ("namespace", "log", "strategy", "result"),
    ),
    "swarm_memory_outcome_success_rate": (
        "gauge",
        "Successes / outcomes recorded.",
        ("namespace", "log", "strategy"),
    ),
    "swarm_memory_outcome_success_wilson_lower": (
        "gauge",
        "Lower end of the Wilson 95% interval of the success rate.",
        ("namespace", "log", "strategy"),
    ),
    "swarm_memory_outcome_logs_dropped": (
        "gauge",
        f"Outcome logs past the first {MAX_LOGS} of a namespace, not exported.",
        ("namespace",),
    ),
}


def _s(raw: Any) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _name(text: str) -> bool:
    """A log or strategy name the library could have written (anything else in a hash
    or index is corrupt data, never a label)."""
    return _NAME_RE.fullmatch(text) is not None


def _int(raw: Any) -> int:
    try:
        return int(_s(raw))
    except ValueError:
        return 0


PROBE_REPLIES = 2


def probe(pipe: Any, keys: NamespaceKeys) -> None:
    """Queue the reads of a namespace's outcome-log index on the scrape's pipeline: the
    first MAX_LOGS names (by name; all scores are 0) and how many there are."""
    pipe.zrangebylex(keys.outcome_logs, "-", "+", 0, MAX_LOGS)
    pipe.zcard(keys.outcome_logs)


def series(
    ns: str, log: str, counters: dict[Any, Any], ct: Any
) -> list[tuple[str, float, tuple[str, ...]]]:
    """(family, value, labels) of one log from its counters hash (HGETALL); a hash
    stamped with another creation time is a deleted namespace's: no series."""
    fields = {_s(k): v for k, v in counters.items()}
    if "ct" not in fields or ct is None or _s(fields["ct"]) != _s(ct):
        return []
    per: dict[str, tuple[int, int]] = {}
    for name, value in fields.items():
        if name.startswith("n:") and _name(name[2:]):
            s = name[2:]
            n = max(0, _int(value))  # corrupt counters are clamped, never a failed scrape
            per[s] = (n, min(n, max(0, _int(fields.get("ok:" + s, 0)))))
    names = sorted(per)
    kept, rest = names[:MAX_STRATEGIES], names[MAX_STRATEGIES:]
    if rest:
        per[OTHER] = (sum(per[s][0] for s in rest), sum(per[s][1] for s in rest))
        kept.append(OTHER)
    out: list[tuple[str, float, tuple[str, ...]]] = []
    for s in kept:
        n, ok = per[s]
        out.append(("swarm_memory_outcomes_total", ok, (ns, log, s, "success")))
        out.append(("swarm_memory_outcomes_total", n - ok, (ns, log, s, "failure")))
        if n > 0:
            out.append(("swarm_memory_outcome_success_rate", ok / n, (ns, log, s)))
            out.append(
                ("swarm_memory_outcome_success_wilson_lower", wilson(ok, n)[0], (ns, log, s))
            )
    return out


def namespace_series(
    client: Any, prefix: str, ns: str, probed: list[Any]
) -> list[tuple[str, float, tuple[str, ...]]]:
    """Every outcome series of one namespace, from the ``probe`` replies; a namespace
    with outcome logs costs one more pipeline (their counters; one slot)."""
    keys = NamespaceKeys.of(prefix, ns)
    logs, total = [n for n in map(_s, probed[0]) if _name(n)], int(probed[1])
    out: list[tuple[str, float, tuple[str, ...]]] = []
    if total > len(logs):
        out.append(("swarm_memory_outcome_logs_dropped", total - len(logs), (ns,)))
    if not logs:
        return out
    pipe = client.pipeline(transaction=False)
    pipe.hget(keys.meta, "ct")
    for log in logs:
        pipe.hgetall(keys.outcome_counters(log))
    ct, *hashes = pipe.execute()
    for log, counters in zip(logs, hashes, strict=True):
        out += series(ns, log, counters, ct)
    return out

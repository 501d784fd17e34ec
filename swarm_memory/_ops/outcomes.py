"""Outcome-log flows (``lua/agent.lua``, DESIGN.md decision 11): idempotent records whose
statistics the script keeps exactly (per-strategy counters and ordered durations), and
the pure statistics on top: the Wilson score interval and ``recommend``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from swarm_memory import errors
from swarm_memory._ops.agent import agent_call, digest_of
from swarm_memory._ops.args import op_id_arg
from swarm_memory._ops.effects import Context, Flow
from swarm_memory._ops.records import MalformedReply, decoding
from swarm_memory.agent_models import OutcomeStats, Recommendation
from swarm_memory.keys import _name_arg

MAX_TAGS = 32
MAX_TAG_CHARS = 64
MAX_STRATEGIES = 1000  # per outcome log: bounds stats() replies and exporter series
MAX_CANDIDATES = 1000
MAX_SECONDS = 1e9  # durations (s) and costs, at most: micro-units stay below 2**53
WILSON_Z = 1.959963984540054  # the 97.5th percentile of the standard normal: 95 %


# ------------------------------------------------------------------------- arguments
def log_name_arg(name: object) -> str:
    return _name_arg(name, "outcome log")


def strategy_arg(name: object) -> str:
    return _name_arg(name, "strategy")


def _number(value: object, field: str, maximum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise errors.InvalidInput(
            f"{field} must be a number of seconds or units, not {type(value).__name__}",
            field=field,
            value=value,
        )
    x = float(value)
    if not math.isfinite(x) or x < 0 or x > maximum:
        raise errors.InvalidInput(
            f"{field} must be finite and between 0 and {maximum:g}", field=field, value=value
        )
    return x


def micro_arg(value: object, field: str) -> int | None:
    """Seconds / cost units -> whole micro-units (exact integer sums in Redis)."""
    if value is None:
        return None
    return round(_number(value, field, MAX_SECONDS) * 1_000_000)


def tags_arg(tags: object) -> list[str]:
    if tags is None:
        return []
    if isinstance(tags, str | bytes) or not isinstance(tags, Iterable):
        raise errors.InvalidInput("tags must be a collection of strings", field="tags")
    out: list[str] = []
    for tag in tags:
        if len(out) >= MAX_TAGS:
            raise errors.InvalidInput(f"at most {MAX_TAGS} tags", field="tags")
        if not isinstance(tag, str) or not 1 <= len(tag) <= MAX_TAG_CHARS or not tag.isprintable():
            raise errors.InvalidInput(
                f"each tag must be 1..{MAX_TAG_CHARS} printable characters",
                field="tags",
                value=tag,
            )
        out.append(tag)
    return out


def min_n_arg(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 2**53:
        raise errors.InvalidInput("min_n must be a positive int", field="min_n", value=value)
    return value


def candidates_arg(candidates: object) -> list[str]:
    if isinstance(candidates, str) or not isinstance(candidates, Iterable):
        raise errors.InvalidInput(
            "candidates must be a collection of strategy names", field="candidates"
        )
    names = list(dict.fromkeys(strategy_arg(c) for c in candidates))
    if not names or len(names) > MAX_CANDIDATES:
        raise errors.InvalidInput(
            f"give 1..{MAX_CANDIDATES} candidates", field="candidates", value=len(names)
        )
    return names


def _outcome_keys(ctx: Context, log: str) -> list[str]:
    nk = ctx.keys
    return [nk.outcome_counters(log), nk.outcome_durations(log), nk.outcome_logs, nk.outcome_logs]


# ------------------------------------------------------------------------- outcomes
def record_outcome(
    ctx: Context,
    log: str,
    strategy: str,
    *,
    success: object,
    duration: object,
    cost: object,
    tags: object,
    op_id: str | None,
) -> Flow[int]:
    """Record one outcome; returns the revision it took (a replayed op id: the first
    one's, counted once)."""
    s = strategy_arg(strategy)
    if not isinstance(success, bool):
        raise errors.InvalidInput("success must be True or False", field="success", value=success)
    dur_us, cost_micro = micro_arg(duration, "duration"), micro_arg(cost, "cost")
    tag_list = tags_arg(tags)
    op = op_id_arg(op_id)
    body = {
        "strategy": s,
        "success": success,
        "duration": None if dur_us is None else dur_us / 1e6,
        "cost": None if cost_micro is None else cost_micro / 1e6,
        "tags": tag_list,
        "op_id": op,
    }
    enc = ctx.codec.encode(body, allow_compress=False)
    d, c = "" if dur_us is None else str(dur_us), "" if cost_micro is None else str(cost_micro)
    ok = "1" if success else "0"
    digest = digest_of("outcome", log, s, ok, d, c, *tag_list)
    extra: list[str | bytes | int] = [log, s, ok, d, c, MAX_STRATEGIES, enc.data, enc.fmt]
    f = yield from agent_call(
        ctx, "outcome", _outcome_keys(ctx, log), extra, op_id=op, digest=digest, key=log
    )
    return f.number()


def wilson(successes: int, n: int, z: float = WILSON_Z) -> tuple[float, float]:
    """The Wilson score interval of a success proportion (95 % with the default z)."""
    if n <= 0:
        raise ValueError("n must be positive")
    p = successes / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    margin = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - margin), min(1.0, centre + margin)


def _stats(  # noqa: PLR0917 - one stats reply record, field by field
    s: str, n: int, ok: int, cost: int, cn: int, dn: int, m: Sequence[str]
) -> OutcomeStats:
    low = high = rate = None
    if n > 0:
        low, high = wilson(ok, n)
        rate = ok / n
    median = p90 = None
    if dn > 0:
        median = (int(m[0]) + int(m[1])) / 2 / 1e6
        p90 = int(m[2]) / 1e6
    return OutcomeStats(
        strategy=s,
        n=n,
        successes=ok,
        success_rate=rate,
        wilson_low=low,
        wilson_high=high,
        durations=dn,
        median_duration=median,
        p90_duration=p90,
        costs=cn,
        total_cost=cost / 1e6,
        mean_cost=cost / cn / 1e6 if cn else None,
    )


def outcome_stats(
    ctx: Context, log: str, strategies: Sequence[str] | None
) -> Flow[dict[str, OutcomeStats]]:
    names = [] if strategies is None else [strategy_arg(x) for x in strategies]
    extra: list[str | bytes | int] = [len(names), *names]
    f = yield from agent_call(ctx, "outcome_stats", _outcome_keys(ctx, log), extra, key=log)
    out: dict[str, OutcomeStats] = {}
    with decoding(ctx.keys.outcome_counters(log), **ctx.err()):
        count = f.number()
        if count > max(MAX_STRATEGIES, len(names)) or len(f) != 9 * count:
            raise MalformedReply("stats reply does not match its count")
        for _ in range(count):
            s = f.string()
            n, ok, cost, cn, dn = (f.number() for _ in range(5))
            m = f.strings(3)
            if not 0 <= ok <= n or not 0 <= dn <= n or not 0 <= cn <= n or cost < 0:
                raise MalformedReply(f"inconsistent counters for strategy {s!r}")
            out[s] = _stats(s, n, ok, cost, cn, dn, m)
    return out


def recommend(stats: dict[str, OutcomeStats], candidates: list[str], min_n: int) -> Recommendation:
    """Pick by the best Wilson lower bound among candidates with ``min_n`` records."""
    enough = [c for c in candidates if stats[c].n >= min_n]
    short = [c for c in candidates if stats[c].n < min_n]
    if not enough:
        return Recommendation(
            choice=None,
            enough_data=False,
            reason=(
                f"not enough data: no candidate has {min_n} recorded outcomes "
                f"(have: {', '.join(f'{c}={stats[c].n}' for c in candidates)})"
            ),
            lower_bound=None,
            min_n=min_n,
            stats=stats,
            insufficient=short,
        )

    def rank(c: str) -> tuple[float, float, float, str]:
        st = stats[c]
        med = st.median_duration if st.median_duration is not None else math.inf
        return (-(st.wilson_low or 0.0), -(st.success_rate or 0.0), med, c)

    best = min(enough, key=rank)
    st = stats[best]
    reason = (
        f"{best}: best Wilson 95% lower bound {st.wilson_low:.3f} "
        f"({st.successes}/{st.n} succeeded) among {len(enough)} candidate(s) "
        f"with >= {min_n} records"
    )
    if short:
        reason += f"; not enough data yet for {', '.join(short)}"
    return Recommendation(
        choice=best,
        enough_data=True,
        reason=reason,
        lower_bound=st.wilson_low,
        min_n=min_n,
        stats=stats,
        insufficient=short,
    )


def recommend_flow(
    ctx: Context, log: str, candidates: object, min_n: object
) -> Flow[Recommendation]:
    names, k = candidates_arg(candidates), min_n_arg(min_n)
    stats = yield from outcome_stats(ctx, log, names)
    return recommend(stats, names, k)

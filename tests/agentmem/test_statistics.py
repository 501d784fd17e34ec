"""The statistics behind outcome logs, without I/O: golden Wilson intervals and the
rules ``recommend`` picks by."""

from __future__ import annotations

import pytest

from swarm_memory._ops.outcomes import _stats, recommend, wilson
from swarm_memory.agent_models import OutcomeStats


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [
        (8, 10, 0.490, 0.943),  # the golden value
        (0, 10, 0.000, 0.278),
        (10, 10, 0.722, 1.000),
        (1, 1, 0.207, 1.000),
        (50, 100, 0.404, 0.596),
    ],
)
def test_wilson_golden_intervals(successes: int, n: int, low: float, high: float) -> None:
    lo, hi = wilson(successes, n)
    assert (round(lo, 3), round(hi, 3)) == (low, high)


def test_wilson_needs_data() -> None:
    with pytest.raises(ValueError):
        wilson(0, 0)


def _st(name: str, ok: int, n: int, median_us: int | None = None) -> OutcomeStats:
    m = ["", "", ""] if median_us is None else [str(median_us)] * 3
    return _stats(name, n, ok, 0, 0, 0 if median_us is None else n, m)


def test_recommend_breaks_ties_by_rate_then_median_then_name() -> None:
    stats = {"b": _st("b", 9, 10, 2_000_000), "a": _st("a", 9, 10, 2_000_000)}
    assert recommend(stats, ["b", "a"], 5).choice == "a"  # equal in all else: by name
    stats["b"] = _st("b", 9, 10, 1_000_000)
    assert recommend(stats, ["b", "a"], 5).choice == "b"  # faster median wins the tie


def test_recommend_prefers_a_proven_lower_bound_over_a_lucky_streak() -> None:
    stats = {"steady": _st("steady", 90, 100), "lucky": _st("lucky", 5, 5)}
    # 5/5 has a higher rate but a lower bound of 0.566; 90/100 has 0.826.
    rec = recommend(stats, ["lucky", "steady"], 5)
    assert rec.choice == "steady" and rec.enough_data and rec.insufficient == []
    rec = recommend(stats, ["lucky", "steady"], 10)
    assert rec.choice == "steady" and rec.insufficient == ["lucky"]
    none = recommend(stats, ["lucky", "steady"], 1000)
    assert none.choice is None and not none.enough_data and none.lower_bound is None
    assert none.reason.startswith("not enough data")

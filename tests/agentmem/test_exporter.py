"""Outcome-log series in the exporter: exact counts, bounded labels, and nothing left of
a deleted namespace's logs."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest
from prometheus_client import CollectorRegistry

from swarm_memory import Settings, SwarmMemory
from swarm_memory._ops.outcomes import wilson
from swarm_memory.exporter import SwarmCollector
from swarm_memory.exporter.outcomes import MAX_LOGS, MAX_STRATEGIES, OTHER
from swarm_memory.keys import NamespaceKeys
from tests.ops.test_exporter import sample, scrape


def _scrape(client: fakeredis.FakeRedis, prefix: str) -> dict[Any, float]:
    registry = CollectorRegistry()
    registry.register(SwarmCollector(client, prefix=prefix))
    return scrape(registry)


def test_outcome_series_are_exact_and_bounded() -> None:
    client = fakeredis.FakeRedis()
    settings = Settings(key_prefix="x1")
    mem = SwarmMemory.from_client(client, agent="boss", settings=settings)
    mem.create_namespace("team")
    log = mem.outcomes("alpha", namespace="team")
    for i in range(10):
        log.record("fast", success=i < 8, op_id=f"op{i}")
        log.record("fast", success=i < 8, op_id=f"op{i}")  # a retry: counted once
    for i in range(MAX_STRATEGIES + 3):
        log.record(f"s{i:03d}", success=i % 2 == 0)
    for i in range(MAX_LOGS + 2):
        mem.outcomes(f"log{i:02d}", namespace="team").record("a", success=True)
    samples = _scrape(client, "x1")
    total = "swarm_memory_outcomes_total"
    labels = {"namespace": "team", "log": "alpha", "strategy": "fast"}
    assert sample(samples, total, **labels, result="success") == 8
    assert sample(samples, total, **labels, result="failure") == 2
    assert sample(samples, "swarm_memory_outcome_success_rate", **labels) == 0.8
    lower = sample(samples, "swarm_memory_outcome_success_wilson_lower", **labels)
    assert lower == pytest.approx(wilson(8, 10)[0])
    strategies = {
        dict(lbl)["strategy"]
        for (name, lbl) in samples
        if name == total and dict(lbl)["log"] == "alpha"
    }
    # "fast" sorts before the s-names: it and the first 31 of them, the rest as _other.
    assert len(strategies) == MAX_STRATEGIES + 1 and OTHER in strategies
    other = {"namespace": "team", "log": "alpha", "strategy": OTHER}
    assert (
        sample(samples, total, **other, result="success")
        + sample(samples, total, **other, result="failure")
        == 4
    )  # s031 .. s034
    logs = {dict(lbl)["log"] for (name, lbl) in samples if name == total}
    assert len(logs) == MAX_LOGS
    assert sample(samples, "swarm_memory_outcome_logs_dropped", namespace="team") == 3
    # A deleted namespace's logs leave no series behind.
    mem.delete_namespace("team")
    mem.create_namespace("team")
    after = _scrape(client, "x1")
    assert not [k for k in after if k[0] == total]


def test_corrupt_outcome_counters_never_break_a_scrape() -> None:
    client = fakeredis.FakeRedis()
    mem = SwarmMemory.from_client(client, agent="boss", settings=Settings(key_prefix="x2"))
    mem.create_namespace("team")
    mem.outcomes("o", namespace="team").record("a", success=True)

    nk = NamespaceKeys.of("x2", "team")
    client.hset(
        nk.outcome_counters("o"), mapping={"n:\xff\xfe": 3, "n:b": 2, "ok:b": 9, "n:c": "x"}
    )
    client.zadd(nk.outcome_logs, {b"\xff": 0})
    samples = _scrape(client, "x2")
    total = "swarm_memory_outcomes_total"
    labels = {"namespace": "team", "log": "o"}
    assert sample(samples, total, **labels, strategy="b", result="success") == 2  # clamped
    assert sample(samples, total, **labels, strategy="b", result="failure") == 0
    assert sample(samples, total, **labels, strategy="c", result="success") == 0
    assert {dict(lbl)["strategy"] for (name, lbl) in samples if name == total} == {"a", "b", "c"}
    assert sample(samples, "swarm_memory_exporter_scrape_errors") == 0

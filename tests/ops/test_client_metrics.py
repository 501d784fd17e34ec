"""Client-side instrumentation: ops by op/outcome, latency, conflicts, denials, retries,
lock waits, events delivered, watcher lag; off by default; bounded label sets."""

from __future__ import annotations

import asyncio

import fakeredis
import pytest
from prometheus_client import CollectorRegistry

from swarm_memory import (
    AsyncSwarmMemory,
    ClientMetrics,
    ConflictError,
    PermissionDenied,
    Settings,
    SwarmMemory,
)
from swarm_memory.errors import OutcomeUnknown, QuotaExceeded
from swarm_memory.metrics import outcome_of


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    got = registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


def make(metrics: ClientMetrics | None, agent: str = "planner") -> SwarmMemory:
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    return SwarmMemory.from_client(client, agent=agent, metrics=metrics)


def test_operations_outcomes_latency_conflicts_denials():
    registry = CollectorRegistry()
    metrics = ClientMetrics(registry)
    mem = make(metrics)
    mem.create_namespace("team", default_permission="read")
    ns = mem.namespace("team")
    e = ns.put("plan", 1)
    ns.put("plan", 2, expected_version=e.version)
    with pytest.raises(ConflictError):
        ns.put("plan", 3, expected_version=e.version)
    with pytest.raises(PermissionDenied):
        mem.as_agent("reader").namespace("team").put("plan", 4)
    plan = ns.get("plan")
    assert plan is not None and plan.value == 2

    assert value(registry, "swarm_memory_client_operations_total", op="put", outcome="ok") == 2
    assert (
        value(registry, "swarm_memory_client_operations_total", op="put", outcome="conflict_error")
        == 1
    )
    assert (
        value(
            registry, "swarm_memory_client_operations_total", op="put", outcome="permission_denied"
        )
        == 1
    )
    assert value(registry, "swarm_memory_client_operations_total", op="get", outcome="ok") == 1
    assert value(registry, "swarm_memory_client_conflicts_total", op="put") == 1
    assert value(registry, "swarm_memory_client_denials_total", op="put") == 1
    count = value(registry, "swarm_memory_client_operation_duration_seconds_count", op="put")
    total = value(registry, "swarm_memory_client_operation_duration_seconds_sum", op="put")
    assert count == 4
    assert 0 < total < 5


def test_off_by_default_and_shared_by_identities():
    mem = make(None)
    assert mem._driver.metrics is None
    registry = CollectorRegistry()
    metrics = ClientMetrics(registry)
    mem2 = make(metrics)
    worker = mem2.as_agent("worker")
    assert worker._driver.metrics is metrics
    mem2.create_namespace("n")
    worker.namespace("n").put("k", 1)
    assert value(registry, "swarm_memory_client_operations_total", op="put", outcome="ok") == 1


def test_outcome_labels_are_a_bounded_set():
    assert outcome_of(None) == "ok"
    assert outcome_of(ConflictError("x", current=None)) == "conflict_error"
    assert outcome_of(OutcomeUnknown("x", op_id="o")) == "outcome_unknown"
    assert outcome_of(QuotaExceeded.__new__(QuotaExceeded)) == "quota_exceeded"

    class Mine(ConflictError):
        pass

    assert outcome_of(Mine("x", current=None)) == "conflict_error"  # user subclasses map to ours
    assert outcome_of(ValueError()) == "error"
    assert outcome_of(asyncio.CancelledError()) == "cancelled"


def test_lock_wait_histogram_and_bad_outcome():
    registry = CollectorRegistry()
    metrics = ClientMetrics(registry)
    metrics.observe_lock_wait(0.02, "acquired")
    metrics.observe_lock_wait(3.0, "timeout")
    name = "swarm_memory_client_lock_wait_seconds"
    assert value(registry, name + "_count", outcome="acquired") == 1
    assert value(registry, name + "_bucket", outcome="acquired", le="0.05") == 1
    assert value(registry, name + "_bucket", outcome="timeout", le="2.5") == 0
    assert value(registry, name + "_bucket", outcome="timeout", le="5.0") == 1
    with pytest.raises(ValueError):
        metrics.observe_lock_wait(1.0, "held-by-agent-7")


def test_events_delivered_and_watch_lag_sync():
    registry = CollectorRegistry()
    mem = make(ClientMetrics(registry))
    mem.create_namespace("feed")
    ns = mem.namespace("feed")
    with ns.watch(since=0) as w:
        for i in range(5):
            ns.put(f"k{i}", i)
        got = [w.get(timeout=5) for _ in range(6)]  # ns_create + 5 puts
    assert all(got)
    mem.close()
    assert value(registry, "swarm_memory_client_events_delivered_total", namespace="feed") == 6
    # Set by every feed read; the read that returned the last event left the feed caught up.
    lag = registry.get_sample_value(
        "swarm_memory_client_watch_lag_revisions", {"namespace": "feed"}
    )
    assert lag == 0


async def test_async_client_counts_too():
    registry = CollectorRegistry()
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    mem = AsyncSwarmMemory.from_client(client, agent="a", metrics=ClientMetrics(registry))
    await mem.create_namespace("n")
    ns = mem.namespace("n")
    await ns.put("k", 1)
    with pytest.raises(ConflictError):
        await ns.create("k", 2)
    w = await ns.watch(since=0)
    async with w:
        assert await w.get(timeout=5) is not None
    await mem.close()
    assert value(registry, "swarm_memory_client_operations_total", op="put", outcome="ok") == 1
    assert value(registry, "swarm_memory_client_conflicts_total", op="create") == 1
    assert value(registry, "swarm_memory_client_events_delivered_total", namespace="n") >= 1


def test_retries_are_counted_by_call():
    """A connection that fails once: the driver retries and the metric says so."""
    registry = CollectorRegistry()
    metrics = ClientMetrics(registry)
    mem = make(metrics)
    mem.create_namespace("n")
    real = mem._driver.client.evalsha
    fails = {"left": 1}

    def flaky(*args, **kwargs):
        import redis.exceptions

        if fails["left"]:
            fails["left"] -= 1
            raise redis.exceptions.ConnectionError("boom")
        return real(*args, **kwargs)

    mem._driver.client.evalsha = flaky
    mem.namespace("n").put("k", 1)
    # (labelled by the script that was retried: a put's own, lua/put.lua, since stop 28)
    assert value(registry, "swarm_memory_client_retries_total", call="put") == 1
    assert value(registry, "swarm_memory_client_operations_total", op="put", outcome="ok") == 1


def test_settings_are_untouched():
    # metrics is a construction keyword, not a setting: Settings stays env-driven.
    assert "metrics" not in Settings.model_fields


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_the_call_series_match_prometheus_clients_own_classes():
    # The two per-call series are counted by metrics._CallStats (one lock, exposed at
    # scrape time); in prometheus_client's multiprocess mode its own Counter and
    # Histogram are used. Both must expose the same samples, bucket edges included
    # (a value equal to a bound falls in that bound's bucket).
    from swarm_memory.metrics import OPERATION_BUCKETS, _CallStats, _LibraryCallStats

    ours_registry, library_registry = CollectorRegistry(), CollectorRegistry()
    ours = _CallStats()
    ours_registry.register(ours)
    library = _LibraryCallStats(library_registry)
    seen = [0.0, 0.0004, *OPERATION_BUCKETS, 0.0030001, 11.0, 1e9]
    for i, seconds in enumerate(seen):
        for stats in (ours, library):
            stats.observe("put" if i % 3 else "get", "ok" if i % 2 else "conflict_error", seconds)
    got, want = _samples(ours_registry), _samples(library_registry)
    assert got == want
    assert got[("swarm_memory_client_operation_duration_seconds_count", (("op", "put"),))] == 12
    created = [s for f in ours_registry.collect() for s in f.samples if s.name.endswith("_created")]
    assert len(created) == 4 + 2  # one per (op, outcome) and one per op, as the library's


def test_ok_calls_and_errors_interleaved_give_the_librarys_series_to_the_bit():
    # The drivers count a call that ended "ok" with observe_ok (onto its op's list) and
    # any other with observe: the durations must still add up in the order the calls
    # ended, as the library adds them, so the histogram's sum is the library's exactly.
    import random

    from swarm_memory.metrics import _CallStats, _LibraryCallStats

    rng = random.Random(7)
    for trial in range(200):
        ours_registry, library_registry = CollectorRegistry(), CollectorRegistry()
        ours = _CallStats()
        ours_registry.register(ours)
        library = _LibraryCallStats(library_registry)
        for _ in range(rng.randint(1, 40)):
            seconds, op = rng.uniform(0, 0.05), rng.choice(("put", "get"))
            if rng.random() < 0.25:
                outcome = rng.choice(("conflict_error", "transport_error"))
                ours.observe(op, outcome, seconds)
            else:
                outcome = "ok"
                ours.observe_ok(op, seconds)
            library.observe(op, outcome, seconds)
        assert _samples(ours_registry) == _samples(library_registry), trial


def test_multiprocess_mode_keeps_prometheus_clients_classes(monkeypatch: pytest.MonkeyPatch):
    import swarm_memory.metrics as metrics_module

    monkeypatch.setattr(metrics_module, "_in_process_values", lambda: False)
    registry = CollectorRegistry()
    mem = make(ClientMetrics(registry))
    mem.create_namespace("n")
    mem.namespace("n").put("k", 1)
    assert isinstance(mem._driver.metrics._calls, metrics_module._LibraryCallStats)  # type: ignore[union-attr]
    assert value(registry, "swarm_memory_client_operations_total", op="put", outcome="ok") == 1
    assert value(registry, "swarm_memory_client_operation_duration_seconds_count", op="put") == 1


def test_calls_counted_from_many_threads_are_all_there_and_the_log_stays_bounded():
    # metrics._CallStats logs each "ok" call without a lock (its duration on its op's
    # list) and folds the lists into the counts at _FOLD_AT entries, at every scrape and
    # at every call of another outcome: no call may be lost or counted twice while
    # threads append during a fold, and no list grows past the bound.
    import threading

    from swarm_memory.metrics import _FOLD_AT, _CallStats

    registry = CollectorRegistry()
    stats = _CallStats()
    registry.register(stats)
    per_thread, threads = 5000, 8
    longest = [0]

    def work() -> None:
        for i in range(per_thread):
            if i % 100 == 50:  # an error: it folds every list, under the lock
                stats.observe("put", "conflict_error", 0.002)
            elif i % 2:  # the drivers' path for a call that finished "ok"
                stats.observe_ok("put", 0.001 * (i % 7))
            else:
                stats.observe("put", "ok", 0.001 * (i % 7))
            pending = max((len(v) for v in list(stats._ok.values())), default=0)
            longest[0] = max(longest[0], pending)
            if i % 997 == 0:
                list(registry.collect())  # a scrape while others append

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    total = per_thread * threads
    errors = per_thread // 100 * threads
    ok = value(registry, "swarm_memory_client_operations_total", op="put", outcome="ok")
    assert ok == total - errors
    failed = value(
        registry, "swarm_memory_client_operations_total", op="put", outcome="conflict_error"
    )
    assert failed == errors
    count = _samples(registry)[
        ("swarm_memory_client_operation_duration_seconds_count", (("op", "put"),))
    ]
    assert count == total
    assert longest[0] <= _FOLD_AT + threads  # folded on reaching the bound (each thread
    # may append once more while another folds)

"""LangGraph's own checkpointer conformance suite (langgraph-checkpoint-conformance 0.0.2),
run against both savers on every backend: ``passed_all_base()`` (the 58 tests of put,
put_writes, get_tuple, list and delete_thread) and ``passed_all()`` (81, with
delete_for_runs, copy_thread and prune). The report goes to the terminal in every run,
so CI's log shows it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.report import CapabilityReport

from swarm_memory.langgraph import AsyncSwarmCheckpointSaver, SwarmCheckpointSaver
from tests.langgraph.conftest import Backend

BASE_TESTS = 58
ALL_TESTS = 81


def _counts(report: CapabilityReport) -> tuple[int, int]:
    results = report.results.values()
    return sum(r.tests_passed for r in results), sum(r.tests_failed for r in results)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_conformance_suite_passes_in_full(
    abackend: Backend, mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    backend = abackend

    @checkpointer_test(name=f"swarm-{mode}-{backend.name}")
    async def factory() -> AsyncIterator[SwarmCheckpointSaver | AsyncSwarmCheckpointSaver]:
        # A fresh key prefix per capability suite: the suite reuses thread ids.
        if mode == "sync":
            yield SwarmCheckpointSaver(backend.memory())
        else:
            yield AsyncSwarmCheckpointSaver(backend.async_memory())

    report = await validate(factory)
    passed, failed = _counts(report)
    with capsys.disabled():  # the report shows in CI's output, not only on failure
        report.print_report()
        print(f"{factory.name}: {passed} passed, {failed} failed")
    assert report.passed_all_base(), report.to_dict()
    assert report.passed_all(), report.to_dict()
    assert (passed, failed) == (ALL_TESTS, 0)
    base = sum(
        r.tests_passed
        for cap, r in report.results.items()
        if cap in {"put", "put_writes", "get_tuple", "list", "delete_thread"}
    )
    assert base == BASE_TESTS
    assert backend.guard.calls > 0  # every script call was checked to touch one slot

"""Agent memory across processes on a real redis-server: outcome statistics stay exact
with 6 processes recording at once (every record sent twice with its op id, as a retry
after a lost reply would), and an agent killed with SIGKILL mid-session is resumed by a
new process at its last acknowledged context version, with the events since and its
session's decision log intact."""

from __future__ import annotations

import multiprocessing
import os
import signal
import statistics
import uuid
from typing import Any

import pytest

from swarm_memory import Settings, SwarmMemory
from swarm_memory._ops.outcomes import wilson
from tests.servers import RedisServer

pytestmark = pytest.mark.slow

CTX = multiprocessing.get_context("spawn")
NS = "swarm"
WRITERS = 6
PER_WRITER = 60
SAVES_BEFORE_KILL = 5


def _duration(writer: int, i: int) -> float:
    return ((writer * 37 + i * 11) % 97 + 1) / 10  # 0.1 .. 9.7 s, many ties


def _success(writer: int, i: int) -> bool:
    return (writer + i) % 3 != 0


def _strategy(i: int) -> str:
    return ("fanout", "pipeline")[i % 2]


def _recorder(url: str, prefix: str, writer: int, go: Any) -> None:
    mem = SwarmMemory.from_url(url, agent=f"w{writer}", settings=Settings(key_prefix=prefix))
    log = mem.outcomes("tasks", namespace=NS)
    go.wait(30)
    for i in range(PER_WRITER):
        kw: dict[str, Any] = {
            "success": _success(writer, i),
            "duration": _duration(writer, i),
            "cost": 0.001 * (i % 7),
            "tags": [f"w{writer}"],
            "op_id": f"w{writer}-{i}",
        }
        log.record(_strategy(i), **kw)
        log.record(_strategy(i), **kw)  # the retry of a record whose reply was lost
    mem.close()


def test_outcome_counts_are_exact_with_concurrent_processes(redis_server: RedisServer) -> None:
    prefix = "t" + uuid.uuid4().hex[:12]
    mem = SwarmMemory.from_url(redis_server.url, agent="boss", settings=Settings(key_prefix=prefix))
    try:
        mem.create_namespace(NS)
        go = CTX.Event()
        procs = [
            CTX.Process(target=_recorder, args=(redis_server.url, prefix, w, go))
            for w in range(WRITERS)
        ]
        for p in procs:
            p.start()
        go.set()
        for p in procs:
            p.join(120)
            assert p.exitcode == 0
        stats = mem.outcomes("tasks", namespace=NS).stats()
        for name in ("fanout", "pipeline"):
            recs = [
                (w, i) for w in range(WRITERS) for i in range(PER_WRITER) if _strategy(i) == name
            ]
            st = stats[name]
            ok = sum(_success(w, i) for w, i in recs)
            durations = [_duration(w, i) for w, i in recs]
            assert st.n == len(recs) == WRITERS * PER_WRITER // 2  # each counted once
            assert st.successes == ok
            assert st.median_duration == pytest.approx(statistics.median(durations), abs=1e-9)
            ranked = sorted(durations)
            assert st.p90_duration == pytest.approx(ranked[-(-9 * len(ranked) // 10) - 1])
            assert (st.wilson_low, st.wilson_high) == wilson(ok, len(recs))
            assert st.total_cost == pytest.approx(sum(0.001 * (i % 7) for _, i in recs))
    finally:
        mem.close()


def _doomed_agent(url: str, prefix: str, acked: Any, ready: Any) -> None:
    """Save the context SAVES_BEFORE_KILL times, log decisions in a session, report
    every acknowledged version, then wait to be killed."""
    mem = SwarmMemory.from_url(url, agent="analyst", settings=Settings(key_prefix=prefix))
    ns = mem.namespace(NS)
    ctx = ns.context()
    session = ns.session("job-1")
    session.open(ttl=600)
    version = 0
    for step in range(1, SAVES_BEFORE_KILL + 1):
        entry = ctx.save({"step": step}, expected_version=version)
        version = entry.version
        session.decide({"step": step}, rationale=f"step {step} of the plan")
        acked.value = version  # shared memory: written before the next step, kill or not
    ready.set()
    signal.pause()


def test_killed_agent_resumes_at_its_last_acknowledged_version(redis_server: RedisServer) -> None:
    prefix = "t" + uuid.uuid4().hex[:12]
    settings = Settings(key_prefix=prefix)
    boss = SwarmMemory.from_url(redis_server.url, agent="boss", settings=settings)
    try:
        boss.create_namespace(NS)
        acked, ready = CTX.Value("i", 0), CTX.Event()
        child = CTX.Process(target=_doomed_agent, args=(redis_server.url, prefix, acked, ready))
        child.start()
        try:
            assert ready.wait(60), "the agent process made no progress"
        finally:
            if child.pid is not None and child.is_alive():
                os.kill(child.pid, signal.SIGKILL)
            child.join(30)
        assert child.exitcode == -signal.SIGKILL
        last_acked = acked.value
        # The world moves on while the agent is dead.
        team = boss.namespace(NS)
        team.put("finding", {"by": "boss"})
        team.delete("finding")

        heir = SwarmMemory.from_url(redis_server.url, agent="analyst", settings=settings)
        try:
            resumed = heir.context(namespace=NS).resume()
            context = resumed.context
            assert context is not None and context.version == last_acked == SAVES_BEFORE_KILL
            assert context.value == {"step": SAVES_BEFORE_KILL}
            # Events since the last save: the killed agent's last decision, then the boss's.
            assert [(e.type, e.key) for e in resumed.events] == [
                ("decision", "_session/job-1"),
                ("put", "finding"),
                ("delete", "finding"),
            ]
            session = heir.session("job-1", namespace=NS)
            log = session.decisions(limit=100).decisions
            assert [d.decision for d in log] == [{"step": s} for s in range(1, 6)]
            assert session.decide({"step": 6}).seq == SAVES_BEFORE_KILL + 1  # it goes on
            assert heir.context(namespace=NS).save({"step": 6}, expected_version=5).version == 6
        finally:
            heir.close()
    finally:
        boss.close()

"""Many OS processes writing one key at once, against a real redis-server.

Every worker is a separate process (multiprocessing, "spawn" start method) with its own
``SwarmMemory.from_url`` client and agent name; a barrier releases them together so the
writes really overlap. Nothing may be lost and nothing may be acknowledged twice: the
versions (or counter values) the workers were handed must be exactly 1..N.

The worker functions live at module level so spawned children can import them.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from swarm_memory import ConflictError, Namespace, Settings, SwarmMemory
from tests.servers import RedisServer

pytestmark = pytest.mark.slow

CTX = multiprocessing.get_context("spawn")
NS = "swarm"
WORKERS = 8
PER_WORKER = 250
TOTAL = WORKERS * PER_WORKER
CREATE_THREADS = 2  # per worker process: 16 concurrent create() calls
CAS_ROUNDS = 20
BARRIER_TIMEOUT = 60.0
RUN_TIMEOUT = 120.0

Work = Callable[..., Any]


# ------------------------------------------------------------------- child processes
def _serve(i: int, inbox: Any, results: Any, barrier: Any) -> None:
    """Main loop of worker process ``i``: run each task sent to it until told to stop.

    The processes outlive one test (spawning and importing 8 interpreters costs seconds),
    but every task builds its own client, as agent ``w{i}``, for that test's prefix."""
    while True:
        task = inbox.get()
        if task is None:
            return
        token, work, url, prefix, args = task
        try:
            mem = SwarmMemory.from_url(url, agent=f"w{i}", settings=Settings(key_prefix=prefix))
            try:
                mem.redis.ping()  # connected before the barrier, so the start is simultaneous
                out = work(mem.namespace(NS), i, barrier, *args)
            finally:
                mem.close()
            results.put((token, i, "ok", out))
        except BaseException as exc:
            results.put((token, i, "error", "".join(traceback.format_exception(exc))))


def _count_updates(ns: Namespace, i: int, barrier: Any) -> tuple[list[tuple[int, Any]], int]:
    """PER_WORKER read-modify-write increments: the (version, value) each one produced,
    and how many times the update function ran (attempts, conflicts included)."""
    calls = 0

    def bump(v: Any) -> int:
        nonlocal calls
        calls += 1
        return (v or 0) + 1

    barrier.wait(BARRIER_TIMEOUT)
    out = []
    for _ in range(PER_WORKER):
        entry = ns.update("counter", bump)
        out.append((entry.version, entry.value))
    return out, calls


def _race_create(ns: Namespace, i: int, barrier: Any) -> list[tuple[Any, ...]]:
    """CREATE_THREADS threads, each trying to create the same key once; all threads of
    all workers are released together."""
    outcomes: list[tuple[Any, ...]] = [()] * CREATE_THREADS
    ready = threading.Barrier(CREATE_THREADS + 1, timeout=BARRIER_TIMEOUT)
    go = threading.Barrier(CREATE_THREADS + 1, timeout=BARRIER_TIMEOUT)

    def one(j: int) -> None:
        value = {"owner": f"w{i}-{j}"}
        try:
            setup_error: BaseException | None = None
            try:
                ns.get("claim")  # opens this thread's own connection
            except BaseException as exc:
                setup_error = exc
            ready.wait()
            go.wait()
            if setup_error is not None:
                raise setup_error
            try:
                entry = ns.create("claim", value)
            except ConflictError as exc:
                current = exc.current
                outcomes[j] = (
                    "lost",
                    value,
                    None if current is None else current.value,
                    None if current is None else current.version,
                )
            else:
                outcomes[j] = ("won", value, entry.value, entry.version)
        except BaseException as exc:
            outcomes[j] = ("error", value, "".join(traceback.format_exception(exc)))

    threads = [threading.Thread(target=one, args=(j,)) for j in range(CREATE_THREADS)]
    for t in threads:
        t.start()
    try:
        ready.wait()  # this worker's threads are connected...
        barrier.wait(BARRIER_TIMEOUT)  # ...and so are every other worker's
    except BaseException:
        ready.abort()  # never strand this worker's threads
        go.abort()
        raise
    else:
        go.wait()  # release this worker's threads together with everyone else's
    finally:
        for t in threads:
            t.join()
    return outcomes


def _cas_rounds(ns: Namespace, i: int, barrier: Any, rounds: int) -> list[tuple[Any, ...]]:
    """Each round: everyone reads version v, then everyone CASes against v at once."""
    out: list[tuple[Any, ...]] = []
    for r in range(rounds):
        barrier.wait(BARRIER_TIMEOUT)  # the previous round's writes are all answered
        current = ns.get("cas")
        assert current is not None
        v = current.version
        barrier.wait(BARRIER_TIMEOUT)  # everyone has read v
        try:
            entry = ns.put("cas", {"round": r, "by": i}, expected_version=v)
        except ConflictError as exc:
            seen = None if exc.current is None else exc.current.version
            out.append((r, v, "conflict", seen))
        else:
            out.append((r, v, "ok", entry.version))
    return out


def _count_incrs(ns: Namespace, i: int, barrier: Any) -> list[int]:
    barrier.wait(BARRIER_TIMEOUT)
    return [ns.incr("hits") for _ in range(PER_WORKER)]


# ------------------------------------------------------------------------- parent side
class Crew:
    """WORKERS spawned processes, worker ``i`` always acting as agent ``w{i}``."""

    def __init__(self) -> None:
        self.barrier = CTX.Barrier(WORKERS)
        self.results = CTX.Queue()
        self.inboxes = [CTX.Queue() for _ in range(WORKERS)]
        self.procs = [
            CTX.Process(
                target=_serve,
                args=(i, self.inboxes[i], self.results, self.barrier),
                name=f"swarm-worker-{i}",
                daemon=True,
            )
            for i in range(WORKERS)
        ]
        for p in self.procs:
            p.start()
        self.healthy = True

    def run(self, url: str, prefix: str, work: Work, *args: Any) -> list[Any]:
        """Run ``work`` in every worker at once; their results in worker order. Fails
        with every worker's traceback if any failed."""
        token = uuid.uuid4().hex
        for inbox in self.inboxes:
            inbox.put((token, work, url, prefix, args))
        out: dict[int, Any] = {}
        failures: dict[int, str] = {}
        deadline = time.monotonic() + RUN_TIMEOUT
        while len(out) + len(failures) < WORKERS:
            try:
                got, i, status, payload = self.results.get(
                    timeout=max(0.1, deadline - time.monotonic())
                )
            except queue.Empty:
                self.healthy = False
                missing = sorted(set(range(WORKERS)) - set(out) - set(failures))
                pytest.fail(f"workers {missing} gave no result within {RUN_TIMEOUT}s")
            if got != token:
                continue  # left over from an earlier, failed run
            if status == "ok":
                out[i] = payload
            else:
                failures[i] = payload
                self.barrier.abort()  # release the others instead of waiting for a timeout
        self.barrier.reset()
        assert not failures, "\n".join(
            f"--- worker {i}:\n{tb}" for i, tb in sorted(failures.items())
        )
        return [out[i] for i in range(WORKERS)]

    def close(self) -> None:
        for inbox in self.inboxes:
            with contextlib.suppress(Exception):
                inbox.put(None)
        for p in self.procs:
            p.join(timeout=10)
        for p in self.procs:
            if p.is_alive():
                p.kill()
                p.join()
        for q in (self.results, *self.inboxes):
            q.close()
            q.join_thread()


@pytest.fixture(scope="module")
def crew_holder() -> Iterator[list[Crew]]:
    holder: list[Crew] = []
    try:
        yield holder
    finally:
        for crew in holder:
            crew.close()


@pytest.fixture
def crew(crew_holder: list[Crew]) -> Crew:
    """The module's worker processes, replaced if a previous test left them stuck."""
    if crew_holder and not crew_holder[-1].healthy:
        crew_holder.pop().close()
    if not crew_holder:
        crew_holder.append(Crew())
    return crew_holder[-1]


@pytest.fixture
def swarm(redis_server: RedisServer) -> Iterator[tuple[str, str, Namespace]]:
    """A fresh key prefix and namespace on the session server: (url, prefix, lead's ns)."""
    prefix = "t" + uuid.uuid4().hex[:12]
    mem = SwarmMemory.from_url(redis_server.url, agent="lead", settings=Settings(key_prefix=prefix))
    mem.create_namespace(NS)
    try:
        yield redis_server.url, prefix, mem.namespace(NS)
    finally:
        mem.close()


# ------------------------------------------------------------------------------ tests
def test_concurrent_updates_lose_nothing_and_ack_each_version_once(
    swarm: tuple[str, str, Namespace], crew: Crew
) -> None:
    url, prefix, ns = swarm
    per_worker = crew.run(url, prefix, _count_updates)

    produced = [pair for pairs, _ in per_worker for pair in pairs]
    attempts = sum(calls for _, calls in per_worker)
    assert attempts > TOTAL, "no update ever conflicted: the CAS loop was not exercised"
    assert len(produced) == TOTAL
    for version, value in produced:
        assert value == version, f"update acknowledged version {version} holding {value}"
    versions = [version for version, _ in produced]
    duplicates = {v: n for v, n in Counter(versions).items() if n > 1}
    assert not duplicates, f"versions acknowledged more than once: {duplicates}"
    assert sorted(versions) == list(range(1, TOTAL + 1))

    final = ns.get("counter")
    assert final is not None
    assert (final.value, final.version) == (TOTAL, TOTAL)
    assert ns.stats()["update"] == TOTAL


def test_concurrent_create_has_exactly_one_winner(
    swarm: tuple[str, str, Namespace], crew: Crew
) -> None:
    url, prefix, ns = swarm
    per_worker = crew.run(url, prefix, _race_create)

    outcomes = [o for worker in per_worker for o in worker]
    assert len(outcomes) == WORKERS * CREATE_THREADS
    errors = [o for o in outcomes if o[0] == "error"]
    assert not errors, "\n".join(o[2] for o in errors)
    winners = [o for o in outcomes if o[0] == "won"]
    assert len(winners) == 1, f"expected one winner, got {winners}"
    _, winner_value, stored, version = winners[0]
    assert (stored, version) == (winner_value, 1)
    losers = [o for o in outcomes if o[0] == "lost"]
    assert len(losers) == WORKERS * CREATE_THREADS - 1
    for _, tried, current_value, current_version in losers:
        assert tried != winner_value
        assert (current_value, current_version) == (winner_value, 1)

    final = ns.get("claim")
    assert final is not None
    assert (final.value, final.version) == (winner_value, 1)
    assert ns.stats()["create"] == 1


def test_concurrent_cas_has_exactly_one_winner_per_round(
    swarm: tuple[str, str, Namespace], crew: Crew
) -> None:
    url, prefix, ns = swarm
    ns.put("cas", {"round": None, "by": None})
    per_worker = crew.run(url, prefix, _cas_rounds, CAS_ROUNDS)

    last_winner = None
    for r in range(CAS_ROUNDS):
        rows = [(i, rounds[r]) for i, rounds in enumerate(per_worker)]
        assert all(row[0] == r for _, row in rows)
        read = {row[1] for _, row in rows}
        assert read == {r + 1}, f"round {r}: workers read versions {read}"
        oks = [(i, row) for i, row in rows if row[2] == "ok"]
        assert len(oks) == 1, f"round {r}: {len(oks)} CAS writes succeeded: {oks}"
        assert oks[0][1][3] == r + 2
        for _, row in rows:
            if row[2] == "conflict":
                assert row[3] == r + 2, f"round {r}: conflict reported version {row[3]}"
        last_winner = oks[0][0]

    final = ns.get("cas")
    assert final is not None
    assert final.version == CAS_ROUNDS + 1
    assert final.value == {"round": CAS_ROUNDS - 1, "by": last_winner}
    assert final.updated_by == f"w{last_winner}"
    assert ns.stats()["put"] == 1 + CAS_ROUNDS


def test_concurrent_incr_counts_exactly(swarm: tuple[str, str, Namespace], crew: Crew) -> None:
    url, prefix, ns = swarm
    per_worker = crew.run(url, prefix, _count_incrs)

    values = [v for worker in per_worker for v in worker]
    duplicates = {v: n for v, n in Counter(values).items() if n > 1}
    assert not duplicates, f"incr returned a value more than once: {duplicates}"
    assert sorted(values) == list(range(1, TOTAL + 1))
    for worker in per_worker:
        assert worker == sorted(worker), "one worker's increments must be increasing"

    final = ns.get("hits")
    assert final is not None
    assert (final.value, final.version) == (TOTAL, TOTAL)
    assert ns.stats()["incr"] == TOTAL

"""Locks, leases and transactions across real OS processes on a real redis-server.

* Holders paused with SIGSTOP past their lease, 50 times: tokens strictly increase per
  lock and no write fenced with a stale token is ever accepted (critical sections may
  overlap — that is what a lease means — and are counted, not forbidden).
* Mutual exclusion: a counter incremented with a plain read + put inside the lock by 8
  processes ends exact.
* An agent process killed with SIGKILL: its ephemeral entries and locks are gone after its
  lease, with events a watcher sees.
* Concurrent transactions on overlapping keys serialize: balances equal the committed
  transfers applied in any order, and failed compares changed nothing.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import random
import signal
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from swarm_memory import (
    FencingError,
    LockNotOwned,
    Settings,
    SwarmMemory,
    TransactionConflict,
)
from tests.servers import RedisServer

pytestmark = pytest.mark.slow

CTX = multiprocessing.get_context("spawn")
NS = "coord"
LOCKS = ("lock-a", "lock-b", "lock-c")


@pytest.fixture
def setup(redis_server: RedisServer) -> Iterator[tuple[str, Settings, SwarmMemory]]:
    settings = Settings(key_prefix="c" + uuid.uuid4().hex[:10], lock_poll=0.02, watch_poll=0.1)
    mem = SwarmMemory.from_url(redis_server.url, agent="lead", settings=settings)
    mem.create_namespace(NS, history=10_000)
    try:
        yield redis_server.url, settings, mem
    finally:
        mem.close()


def _run(target: Any, n: int, *args: Any) -> tuple[list[Any], Any]:
    results = CTX.Queue()
    procs = [CTX.Process(target=target, args=(i, results, *args), daemon=True) for i in range(n)]
    for p in procs:
        p.start()
    return procs, results


def _collect(procs: list[Any], results: Any, timeout: float = 120.0) -> list[Any]:
    out = []
    deadline = time.monotonic() + timeout
    for _ in procs:
        status, payload = results.get(timeout=max(deadline - time.monotonic(), 1))
        assert status == "ok", payload
        out.append(payload)
    for p in procs:
        p.join(10)
    return out


# ----------------------------------------------------------------- paused holders
def _fenced_worker(i: int, results: Any, url: str, settings: Settings, stop: Any) -> None:
    try:
        with SwarmMemory.from_url(url, agent=f"w{i}", settings=settings) as mem:
            ns = mem.namespace(NS)
            rng = random.Random(i)
            acquired, accepted, refused, sections = [], 0, 0, []
            while not stop.is_set():
                name = rng.choice(LOCKS)
                lock = ns.lock(name, ttl=0.2, wait=5)
                token = lock.acquire()
                start = time.monotonic()
                acquired.append((name, int(token)))
                time.sleep(0.03)  # the work; a SIGSTOP here outlives the lease
                try:
                    ns.put(f"owner:{name}", {"w": i, "token": int(token)}, fence=token)
                    accepted += 1
                except FencingError:
                    refused += 1
                sections.append((name, start, time.monotonic()))
                with contextlib.suppress(LockNotOwned):
                    lock.release()
            results.put(("ok", (acquired, accepted, refused, sections)))
    except BaseException as exc:
        results.put(("error", "".join(traceback.format_exception(exc))))


def test_paused_holders_never_get_a_stale_write_in(setup: Any) -> None:
    url, settings, mem = setup
    ns = mem.namespace(NS)
    stop = CTX.Event()
    procs, results = _run(_fenced_worker, 8, url, settings, stop)
    pid_of = {f"w{i}": p.pid for i, p in enumerate(procs)}
    pauses = 0
    deadline = time.monotonic() + 50
    while pauses < 50 and time.monotonic() < deadline:
        held = [info for info in ns.locks() if info.holder in pid_of]
        if not held:
            time.sleep(0.005)
            continue
        pid = pid_of[random.choice(held).holder]
        os.kill(pid, signal.SIGSTOP)
        time.sleep(0.3)  # past the 0.2 s lease: another worker takes the lock meanwhile
        os.kill(pid, signal.SIGCONT)
        pauses += 1
    stop.set()
    assert pauses == 50
    outs = _collect(procs, results)
    tokens = Counter(t for out in outs for t in out[0])
    assert all(n == 1 for n in tokens.values())  # no token handed out twice
    refused = sum(out[2] for out in outs)
    accepted = sum(out[1] for out in outs)
    assert refused > 0, "the pauses should have produced stale fenced writes"
    for name in LOCKS:
        history = ns.history(f"owner:{name}")  # newest first, every version kept
        written = [e.value["token"] for e in reversed(history)]
        # In store order, each accepted write's token is newer than every earlier one.
        assert written == sorted(written) and len(set(written)) == len(written)
        assert len(written) == history[0].version
    assert sum(len(ns.history(f"owner:{n}")) for n in LOCKS) == accepted
    overlaps = 0
    for name in LOCKS:
        spans = sorted((s, e) for out in outs for (n, s, e) in out[3] if n == name)
        overlaps += sum(1 for a, b in itertools.pairwise(spans) if b[0] < a[1])
    print(f"pauses=50 accepted={accepted} refused_stale={refused} overlapping_sections={overlaps}")


# ----------------------------------------------------------------- mutual exclusion
def _counter_worker(i: int, results: Any, url: str, settings: Settings, n: int) -> None:
    try:
        with SwarmMemory.from_url(url, agent=f"m{i}", settings=settings) as mem:
            ns = mem.namespace(NS)
            for _ in range(n):
                with ns.lock("counter-lock", ttl=10) as lock:
                    current = ns.get("counter")
                    value = (current.value if current else 0) + 1
                    ns.put("counter", value, fence=lock.token)  # a plain overwrite
            results.put(("ok", n))
    except BaseException as exc:
        results.put(("error", "".join(traceback.format_exception(exc))))


def test_lock_gives_mutual_exclusion_across_processes(setup: Any) -> None:
    url, settings, mem = setup
    procs, results = _run(_counter_worker, 8, url, settings, 100)
    assert sum(_collect(procs, results)) == 800
    entry = mem.namespace(NS).get("counter")
    assert entry is not None and entry.value == 800 and entry.version == 800


# ----------------------------------------------------------------- killed agent
def _doomed_agent(i: int, results: Any, url: str, settings: Settings) -> None:
    try:
        mem = SwarmMemory.from_url(url, agent="doomed", settings=settings)
        mem.lease(0.6)
        ns = mem.namespace(NS)
        ns.put_many({f"claim-{k}": k for k in range(5)}, ephemeral=True)
        ns.lock("job", ttl=60).acquire()
        results.put(("ok", os.getpid()))
        time.sleep(600)
    except BaseException as exc:
        results.put(("error", "".join(traceback.format_exception(exc))))


def test_a_killed_agent_loses_its_ephemeral_keys_and_locks(setup: Any) -> None:
    url, settings, mem = setup
    ns = mem.namespace(NS)
    ns.put("permanent", 1)
    procs, results = _run(_doomed_agent, 1, url, settings)
    status, pid = results.get(timeout=60)
    assert status == "ok", pid
    assert ns.locks()[0].holder == "doomed" and ns.exists("claim-0")
    assert [a.agent for a in mem.agents()] == ["doomed"]
    watch = ns.watch(types={"expire", "unlock", "agent_lost"})
    os.kill(pid, signal.SIGKILL)  # no cleanup at all
    procs[0].join(10)
    got: list[Any] = []
    deadline = time.monotonic() + 10
    while len(got) < 7 and time.monotonic() < deadline:
        ev = watch.get(1.0)
        if ev is not None:
            got.append(ev)
    watch.close()
    assert sorted((e.type, e.key) for e in got) == sorted(
        [("expire", f"claim-{k}") for k in range(5)] + [("unlock", "job"), ("agent_lost", None)]
    )
    assert all(e.agent == "doomed" for e in got)
    assert ns.locks() == [] and not ns.exists("claim-0") and ns.get("permanent").value == 1
    assert mem.agents() == []
    # The watcher (polling every 0.1 s) saw it within lease + a few polls of the kill.


# ----------------------------------------------------------------- transactions
ACCOUNTS = ("acct-a", "acct-b", "acct-c")


def _transfer_worker(i: int, results: Any, url: str, settings: Settings, n: int) -> None:
    try:
        with SwarmMemory.from_url(url, agent=f"t{i}", settings=settings) as mem:
            ns = mem.namespace(NS)
            rng = random.Random(i)
            done: Counter[tuple[str, str]] = Counter()
            conflicts = 0
            while sum(done.values()) < n:
                src, dst = rng.sample(ACCOUNTS, 2)
                cur = ns.get_many([src, dst])
                a, b = cur[src], cur[dst]
                assert a is not None and b is not None
                tx = ns.transaction().check(src, a.version).check(dst, b.version)
                try:
                    tx.put(src, a.value - 1).put(dst, b.value + 1).commit()
                    done[(src, dst)] += 1
                except TransactionConflict:
                    conflicts += 1
            results.put(("ok", (dict(done), conflicts)))
    except BaseException as exc:
        results.put(("error", "".join(traceback.format_exception(exc))))


def test_concurrent_transactions_serialize(setup: Any) -> None:
    url, settings, mem = setup
    ns = mem.namespace(NS)
    ns.put_many(dict.fromkeys(ACCOUNTS, 100))
    procs, results = _run(_transfer_worker, 6, url, settings, 60)
    outs = _collect(procs, results)
    expected = dict.fromkeys(ACCOUNTS, 100)
    touches = Counter[str]()
    for done, _conflicts in outs:
        for (src, dst), k in done.items():
            expected[src] -= k
            expected[dst] += k
            touches[src] += k
            touches[dst] += k
    entries = ns.get_many(ACCOUNTS)
    assert {k: e.value for k, e in entries.items() if e} == expected
    assert sum(expected.values()) == 300
    # Every committed transaction wrote both its keys once: versions count them exactly.
    assert {k: e.version - 1 for k, e in entries.items() if e} == dict(touches)
    assert sum(c for _, c in outs) > 0, "the workers should have raced"


# ----------------------------------------------------------------- single flight
def test_get_or_set_computes_once_under_concurrency(setup: Any) -> None:
    import threading

    _url, _settings, mem = setup
    calls: list[int] = []
    results: list[Any] = []
    start = threading.Barrier(8)

    def slow_factory() -> dict[str, int]:
        calls.append(1)
        time.sleep(0.3)  # the others arrive while this one computes
        return {"answer": 42}

    def agent(i: int) -> None:
        ns = mem.as_agent(f"g{i}").namespace(NS)
        start.wait(10)
        results.append(ns.get_or_set("cache:q", slow_factory, ttl=60, wait=10).value)

    threads = [threading.Thread(target=agent, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [{"answer": 42}] * 8 and len(calls) == 1
    assert mem.namespace(NS).get("cache:q").version == 1

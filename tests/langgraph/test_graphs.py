"""Real LangGraph graphs on SwarmCheckpointSaver / SwarmStore, across processes, against
the tests' own redis-server (and Cluster for the interrupt/resume case).

- an ``interrupt()`` in one process, resumed with ``Command(resume=...)`` in another;
- a swarm of 4 graph processes sharing one store (and a CAS counter that loses nothing);
- ownership: a SIGSTOPped worker whose claim lapsed cannot land a checkpoint after the
  new owner's (its write is refused with ThreadOwnershipLost).
Plus in-process cases: bad input to the checkpointer, the checkpoint feed, thread TTL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import empty_checkpoint

from swarm_memory import InvalidInput
from swarm_memory.langgraph import SwarmCheckpointSaver, SwarmStore, ThreadOwned
from tests.langgraph.conftest import Backend
from tests.langgraph.graph_worker import approval_graph, owner_graph

ROOT = Path(__file__).resolve().parents[2]


def _env(backend: Backend, prefix: str) -> dict[str, str]:
    env = dict(os.environ)
    env["SWARM_MEMORY_KEY_PREFIX"] = prefix
    env["SWARM_MEMORY_CLUSTER"] = "1" if backend.name == "cluster" else "0"
    env["PYTHONPATH"] = str(ROOT)
    return env


def _worker(backend: Backend, prefix: str, *args: str, **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.langgraph.graph_worker", args[0], backend.url, *args[1:]],
        env=_env(backend, prefix),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def _result(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, dict[str, Any]]:
    out, err = proc.communicate(timeout=timeout)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert lines, f"no output (rc {proc.returncode}): {err[-2000:]}"
    return proc.returncode, json.loads(lines[-1])


_REAL = [b for b in ("redis", "cluster") if b in os.environ.get("SWARM_MEMORY_TEST_BACKENDS", b)]


@pytest.fixture(params=_REAL)
def real(request: pytest.FixtureRequest) -> Any:
    backend = Backend(request.param, request)
    yield backend
    backend.close()


@pytest.fixture
def standalone(request: pytest.FixtureRequest) -> Any:
    """One real server is enough for the 4-process swarm and the ownership race (the
    cluster runs the interrupt case and the conformance suite)."""
    backend = Backend("redis", request)
    yield backend
    backend.close()


def test_interrupt_in_one_process_resume_in_another(real: Backend) -> None:
    prefix, thread = "lg" + uuid.uuid4().hex[:8], "approval-1"
    code, first = _result(_worker(real, prefix, "interrupt", thread))
    assert code == 0 and first == {"interrupts": [{"question": "ship it?"}]}
    code, second = _result(_worker(real, prefix, "resume", thread, "yes"))
    assert code == 0 and second == {"steps": ["draft", "ask"], "answer": "yes"}
    # And this process sees the finished thread.
    saver = SwarmCheckpointSaver(real.memory(settings=real.settings(prefix)))
    state = approval_graph(saver).get_state({"configurable": {"thread_id": thread}})
    assert state.values == {"steps": ["draft", "ask"], "answer": "yes"} and not state.next


def test_four_graph_processes_share_one_store(standalone: Backend) -> None:
    real = standalone
    prefix = "lg" + uuid.uuid4().hex[:8]
    per_worker = 5
    threads = {f"w{w}": [f"w{w}-t{i}" for i in range(per_worker)] for w in range(4)}
    procs = [_worker(real, prefix, "swarm", w, *ts) for w, ts in threads.items()]
    for proc in procs:
        code, out = _result(proc)
        assert code == 0, out
    mem = real.memory(settings=real.settings(prefix))
    store = SwarmStore(mem)
    results = store.search(("swarm", "results"), limit=100)
    assert sorted(i.key for i in results) == sorted(t for ts in threads.values() for t in ts)
    assert {i.key: i.value["by"] for i in results} == {
        t: w for w, ts in threads.items() for t in ts
    }
    counter = store.get(("swarm",), "counter")
    assert counter is not None and counter.value == {"n": 4 * per_worker}  # no update lost
    saver = SwarmCheckpointSaver(mem)
    for ts in threads.values():
        for t in ts:
            tup = saver.get_tuple({"configurable": {"thread_id": t}})
            assert tup is not None
            assert tup.checkpoint["channel_values"]["steps"] == [t, "remembered"]


def test_a_paused_owner_cannot_land_a_checkpoint_after_the_new_owners(
    standalone: Backend,
) -> None:
    real = standalone
    prefix, thread, claim_ttl = "lg" + uuid.uuid4().hex[:8], "owned-1", 1.0
    a = _worker(real, prefix, "owner", thread, str(claim_ttl), stdin=subprocess.PIPE)
    try:
        _paused_owner(real, a, prefix, thread, claim_ttl)
    finally:
        if a.poll() is None:
            a.kill()
            a.communicate()


def _paused_owner(
    real: Backend, a: subprocess.Popen[str], prefix: str, thread: str, claim_ttl: float
) -> None:
    assert a.stdout is not None and a.stdin is not None
    assert json.loads(a.stdout.readline()) == {"working": True}  # A holds the claim, mid-step
    os.kill(a.pid, signal.SIGSTOP)  # A (and its claim renewer) freeze
    try:
        mem = real.memory("worker-b", settings=real.settings(prefix))
        b = SwarmCheckpointSaver(mem, ownership=True, claim_ttl=30)
        with pytest.raises(ThreadOwned):
            b.claim(thread)  # A's claim is still live
        time.sleep(claim_ttl * 1.6)  # ... until it lapses
        b.claim(thread, wait=5)
        config: RunnableConfig = {"configurable": {"thread_id": thread}}
        owner_graph(b, wait_for_go=False).invoke({"steps": []}, config)
        b_head = b.get_tuple(config)
        assert b_head is not None
    finally:
        os.kill(a.pid, signal.SIGCONT)
    a.stdin.write("go\n")
    a.stdin.flush()
    code, out = _result(a)
    assert code == 3 and out["error"] == "ThreadOwnershipLost", out
    after = b.get_tuple(config)
    assert after is not None and after.checkpoint["id"] == b_head.checkpoint["id"]
    assert after.checkpoint["channel_values"]["steps"][-1] == "work-b"
    # Nothing of A's after B's first checkpoint: every later checkpoint and write is B's.
    history = list(b.list(config))
    assert all("work-a" not in str(t.checkpoint["channel_values"]) for t in history)
    assert all(w[2] != ["work-a"] for t in history for w in t.pending_writes or [])
    b.release(thread)


# ------------------------------------------------------------------ in-process cases
def _config(thread: str, checkpoint_id: str | None = None) -> Any:
    conf: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": ""}
    if checkpoint_id:
        conf["checkpoint_id"] = checkpoint_id
    return {"configurable": conf}


def test_checkpointer_bad_input_writes_nothing(backend: Backend) -> None:
    mem = backend.memory()
    saver = SwarmCheckpointSaver(mem)
    cp = empty_checkpoint()
    huge = {"blob": "x" * (2 << 20)}  # above max_value_bytes (1 MiB)
    with pytest.raises(InvalidInput):
        saver.put(_config("t-huge"), {**cp, "channel_values": huge}, {}, {"blob": "1"})
    with pytest.raises(InvalidInput):
        saver.put_writes(_config("t-huge", cp["id"]), [("ch", "x" * (2 << 20))], "task")
    with pytest.raises(InvalidInput):
        saver.put_writes(_config("t-nocp"), [("ch", 1)], "task")  # no checkpoint_id
    with pytest.raises(InvalidInput):
        saver.put(_config(""), cp, {}, {})  # empty thread id
    with pytest.raises(TypeError):  # serde refuses what it cannot encode
        saver.put(_config("t-obj"), {**cp, "channel_values": {"f": lambda: 1}}, {}, {"f": "1"})
    assert mem.list_namespaces() == []  # nothing was written, not even a thread
    assert saver.get_tuple(_config("t-huge")) is None
    assert saver.get_tuple(_config("t-none", "no-such-checkpoint")) is None
    saver.put(_config("t-ok"), cp, {}, {})
    assert saver.get_tuple(_config("t-ok", "no-such-checkpoint")) is None
    assert list(saver.list(_config("t-ok", "no-such-checkpoint"))) == []


def test_the_checkpoint_feed_and_thread_ttl(backend: Backend) -> None:
    saver = SwarmCheckpointSaver(backend.memory(), ttl=1.0)
    cp1, cp2 = empty_checkpoint(), empty_checkpoint()
    saver.put(_config("fed"), cp1, {}, {})
    feed = saver.watch("fed", since=0)
    saver.put(_config("fed", cp1["id"]), {**cp2, "id": cp2["id"]}, {}, {})
    seen = [next(feed).checkpoint_id, next(feed).checkpoint_id]
    assert seen == [cp1["id"], cp2["id"]]
    feed.close()  # type: ignore[attr-defined]
    for i in range(3):  # writes refresh the thread's TTL
        time.sleep(0.5)
        saver.put_writes(_config("fed", cp2["id"]), [("ch", i)], f"task-{i}")
    assert saver.get_tuple(_config("fed")) is not None
    time.sleep(1.3)
    assert saver.get_tuple(_config("fed")) is None  # expired: never returned, then deleted
    assert list(saver.list(None)) == []
    assert saver.sweep_expired() == []

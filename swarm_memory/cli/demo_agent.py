"""One agent process of ``swarm-memory demo`` (spawned; reports over a queue).

Every agent walks the whole task board in its own random order, so agents contend for
every task. A task is claimed with compare-and-set (``expected_version``), or, for even
task numbers when the lock API is there, under a fenced lock (``fence=lock.token``): the
store refuses a write whose token is stale. The winner publishes a result on the board,
merges its finding into one shared key of a ``merge``-strategy namespace, marks the task
done (CAS again) and bumps two counters (``incr`` server-side, ``update`` as a CAS loop).
Meanwhile it watches the board's feed and counts the result events of every agent.
Agent memory: every claim attempt is recorded in the board's outcome log ``claims``
(strategy "cas" or "lock", won or lost, how long it took; its op id makes a retry count
once), and the agent saves its working context (progress so far) with compare-and-set.
Memory graph: every agent adds the rule it works by (one shared fact: the script makes
the eight adds one node), each finding as a node in the task's context linked to that
rule, and bundles its findings under its own name.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

from swarm_memory._sync.graph import Graph
from swarm_memory.client import Namespace, SwarmMemory
from swarm_memory.errors import ConflictError, LockError
from swarm_memory.events import Watch
from swarm_memory.settings import Settings

REPORT_EVERY = 0.1  # seconds between progress messages
OUTCOME_LOG = "claims"  # the board's outcome log of claim attempts
CONTEXT_EVERY = 25  # tasks between context saves
RULE = {"rule": "a task's answer is the Collatz step count of its number + 1"}
RULE_CONTEXT = "demo"


def task_key(i: int) -> str:
    return f"task-{i:05d}"


def result_key(i: int) -> str:
    return f"result:{task_key(i)}"


def answer(i: int) -> int:
    """The 'work': Collatz steps of i + 1 (deterministic, so the parent can check it)."""
    n, steps = i + 1, 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


def uses_lock(i: int, locks: bool) -> bool:
    return locks and i % 2 == 0


@dataclass(frozen=True)
class AgentSpec:
    name: str
    index: int
    settings: dict[str, Any]
    board: str
    findings: str
    tasks: int
    since: int  # board revision before the first result: every agent sees every result
    locks: bool
    timeout: float
    graph: str = ""  # the memory graph's namespace


@dataclass
class Tally:
    claimed: list[int] = field(default_factory=list)
    via_lock: int = 0
    lost_races: int = 0
    incrs: int = 0
    updates: int = 0
    merges: int = 0
    seen_keys: set[str] = field(default_factory=set)
    seen_events: int = 0
    phase: str = "starting"
    attempts: dict[str, int] = field(default_factory=dict)  # recorded outcomes by strategy
    context_version: int = 0  # the last acknowledged save of this agent's context
    rule_id: str = ""  # the shared rule's node
    rule_created: bool = False  # this agent's add stored it (exactly one agent's does)
    nodes: int = 0  # findings added to the graph
    coordinator: int = 0  # the parent's pid: an agent that outlives it stops

    def progress(self, tasks: int) -> dict[str, Any]:
        return {
            "claimed": len(self.claimed),
            "via_lock": self.via_lock,
            "lost_races": self.lost_races,
            "seen": len(self.seen_keys),
            "tasks": tasks,
            "phase": self.phase,
        }


def _claim_cas(board: Namespace, i: int, me: str, tally: Tally) -> int | None:
    entry = board.get(task_key(i))
    if entry is None or entry.value.get("state") != "open":
        return None
    try:
        claimed = board.put(
            task_key(i),
            {"task": i, "state": "claimed", "by": me, "via": "cas"},
            expected_version=entry.version,
        )
    except ConflictError:
        tally.lost_races += 1  # another agent's CAS won: never a silent double claim
        return None
    return claimed.version


def _claim_locked(board: Namespace, i: int, me: str, tally: Tally) -> int | None:
    try:
        with board.lock(task_key(i), ttl=10.0, wait=5.0) as lock:
            entry = board.get(task_key(i))
            if entry is None or entry.value.get("state") != "open":
                tally.lost_races += 1
                return None
            claimed = board.put(
                task_key(i),
                {
                    "task": i,
                    "state": "claimed",
                    "by": me,
                    "via": "lock",
                    "token": int(lock.token or 0),
                },
                fence=lock.token,
            )
    except LockError:  # timed out, or the fence was rejected: the store said no
        tally.lost_races += 1
        return None
    tally.via_lock += 1
    return claimed.version


def _drain(watch: Watch, tally: Tally, wait: float = 0.0) -> None:
    ev = watch.get(timeout=wait)
    while ev is not None:
        if ev.key is not None:
            tally.seen_events += 1
            tally.seen_keys.add(ev.key)
        ev = watch.get(timeout=0)


def _save_context(board: Namespace, tally: Tally) -> None:
    """This agent's working context, saved with CAS: it is the only writer, so a conflict
    would mean a lost update (and would raise)."""
    entry = board.context().save(
        {"claimed": len(tally.claimed), "lost_races": tally.lost_races, "phase": tally.phase},
        expected_version=tally.context_version,
    )
    tally.context_version = entry.version


def _claim(board: Namespace, i: int, spec: AgentSpec, tally: Tally) -> int | None:
    """Claim task i and record the attempt's outcome (if it was one: a task already
    taken when read is no attempt)."""
    strategy = "lock" if uses_lock(i, spec.locks) else "cas"
    claim = _claim_locked if strategy == "lock" else _claim_cas
    lost_before = tally.lost_races
    started = time.monotonic()
    version = claim(board, i, spec.name, tally)
    if version is not None or tally.lost_races > lost_before:
        board.outcomes(OUTCOME_LOG).record(
            strategy,
            success=version is not None,
            duration=time.monotonic() - started,
            tags=[spec.name],
            op_id=f"{spec.name}-claim-{i}",
        )
        tally.attempts[strategy] = tally.attempts.get(strategy, 0) + 1
    return version


def _check_coordinator(tally: Tally) -> None:
    """Stop at once when the coordinator is gone (killed, or interrupted before it could
    stop us): an orphaned agent would go on writing to a server nobody watches."""
    if tally.coordinator and os.getppid() != tally.coordinator:
        os._exit(3)


def _remember(memory: Graph, i: int, found: int, spec: AgentSpec, tally: Tally) -> None:
    """The finding as a graph node in the task's context, linked to the rule and bundled
    under this agent's name (op ids: a retried call is applied once)."""
    if not tally.rule_id:
        rule = memory.add(RULE, context=RULE_CONTEXT, kind="rule")
        tally.rule_id, tally.rule_created = rule.id, rule.created is True
    node = memory.add(
        {"task": i, "answer": found},
        context=task_key(i),
        kind="finding",
        tags=[spec.name],
        op_id=f"{spec.name}-node-{i}",
    )
    memory.link(node, tally.rule_id, "follows", op_id=f"{spec.name}-link-{i}")
    memory.bundle(spec.name).add(node, op_id=f"{spec.name}-bundle-{i}")
    tally.nodes += 1


def _work(spec: AgentSpec, mem: SwarmMemory, report: Any, tally: Tally) -> None:
    board = mem.namespace(spec.board)
    memory = mem.graph(spec.graph)
    findings = mem.namespace(spec.findings)
    last = 0.0
    with board.watch("result:*", types=["put"], since=spec.since) as watch:
        tally.phase = "ready"
        report(("ready", spec.name, tally.progress(spec.tasks)))
        order = list(range(spec.tasks))
        random.Random(spec.index).shuffle(order)
        tally.phase = "claiming"
        for n, i in enumerate(order, 1):
            _check_coordinator(tally)
            version = _claim(board, i, spec, tally)
            if version is not None:
                tally.claimed.append(i)
                found = answer(i)
                board.put(result_key(i), {"task": i, "by": spec.name, "answer": found})
                # merge strategy: RFC 7386 patch applied server-side; concurrent patches
                # from every agent into one key must all survive.
                findings.put("summary", {task_key(i): {"by": spec.name, "answer": found}})
                tally.merges += 1
                board.put(
                    task_key(i),
                    {
                        "task": i,
                        "state": "done",
                        "by": spec.name,
                        "via": "lock" if uses_lock(i, spec.locks) else "cas",
                    },
                    expected_version=version,
                )
                board.incr("counter:incr")
                tally.incrs += 1
                board.update("counter:update", lambda v: (v or 0) + 1)
                tally.updates += 1
                _remember(memory, i, found, spec, tally)
            if n % CONTEXT_EVERY == 0:
                _save_context(board, tally)
            _drain(watch, tally)
            if time.monotonic() - last >= REPORT_EVERY:
                last = time.monotonic()
                report(("progress", spec.name, tally.progress(spec.tasks)))
        tally.phase = "watching"
        deadline = time.monotonic() + spec.timeout
        while len(tally.seen_keys) < spec.tasks and time.monotonic() < deadline:
            _check_coordinator(tally)
            _drain(watch, tally, wait=0.1)
            report(("progress", spec.name, tally.progress(spec.tasks)))
    findings.put("agents", {spec.name: {"claimed": len(tally.claimed), "via_lock": tally.via_lock}})
    tally.merges += 1
    tally.phase = "done"
    _save_context(board, tally)


def agent_main(spec: AgentSpec, queue: Any, go: Any) -> None:
    """Process entry point: wait for ``go``, work, report ``done`` (or ``error``)."""
    tally = Tally(coordinator=os.getppid())
    try:
        settings = Settings(**spec.settings)
        with SwarmMemory.from_url(agent=spec.name, settings=settings) as mem:

            def report(message: tuple[str, str, dict[str, Any]]) -> None:
                queue.put(message)
                if message[0] != "ready":
                    return
                waited = 0.0
                while not go.wait(0.25):
                    _check_coordinator(tally)
                    waited += 0.25
                    if waited >= spec.timeout:
                        raise TimeoutError("the coordinator never said go")

            _work(spec, mem, report, tally)
        tally.phase = "done"
        queue.put(
            (
                "done",
                spec.name,
                {
                    **tally.progress(spec.tasks),
                    "claimed_tasks": tally.claimed,
                    "incrs": tally.incrs,
                    "updates": tally.updates,
                    "merges": tally.merges,
                    "seen_events": tally.seen_events,
                    "attempts": tally.attempts,
                    "context_version": tally.context_version,
                    "rule_id": tally.rule_id,
                    "rule_created": tally.rule_created,
                    "nodes": tally.nodes,
                },
            )
        )
    except KeyboardInterrupt:
        queue.put(("error", spec.name, {"error": "interrupted"}))
    except Exception as exc:  # reported to the parent, which fails the run
        queue.put(("error", spec.name, {"error": f"{type(exc).__name__}: {exc}"}))

"""``swarm-memory demo`` (also ``python -m swarm_memory``): a swarm on a shared task board.

N agent processes (``demo_agent``) share one board namespace and one ``merge``-strategy
findings namespace. They claim tasks with CAS or fenced locks, publish results, watch
each other's result events and merge findings into one shared key, while a live table
shows each agent's progress; each records every claim attempt in the board's outcome log
and saves its working context. Then the parent reads the store and compares it with what
the agents acknowledged: every task claimed once, every result and finding there, both
counters exact, every event seen by every agent, every claim attempt counted once in the
outcome log, every context at its last acknowledged version, every finding a node of the
memory graph (recalled by agent, linked to the one shared rule node, in its agent's
bundle). The report ends with the outcome statistics of the two claim strategies and the
newest findings recalled from the graph. Exit 0 on PASS, 7 on FAIL.

With no Redis configured it starts an embedded one (``redis-server`` on a free port when
installed, else an in-process fakeredis TCP server); with ``SWARM_MEMORY_REDIS_URL`` it
uses that server, in namespaces of its own under the ``sm-demo`` prefix, deleted after.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import queue as queue_mod
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from swarm_memory._sync.graph import Graph
from swarm_memory.agent_models import OutcomeStats
from swarm_memory.cli.base import ExitCode, jsonable, redact_url
from swarm_memory.cli.demo_agent import (
    OUTCOME_LOG,
    RULE,
    RULE_CONTEXT,
    AgentSpec,
    agent_main,
    answer,
    result_key,
    task_key,
)
from swarm_memory.client import Namespace, SwarmMemory
from swarm_memory.graph import Node
from swarm_memory.models import Entry
from swarm_memory.settings import Settings
from swarm_memory.testing import embedded_server

PREFIX = "sm-demo"


@dataclass
class Board:
    """What the parent knows about each agent, from its messages."""

    names: list[str]
    tasks: int
    progress: dict[str, dict[str, Any]] = field(default_factory=dict)
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def note(self, kind: str, name: str, data: dict[str, Any]) -> None:
        if kind == "error":
            self.errors[name] = str(data.get("error"))
            return
        self.progress[name] = data
        if kind == "done":
            self.reports[name] = data

    @property
    def finished(self) -> bool:
        return len(self.reports) + len(self.errors) == len(self.names)

    def table(self, elapsed: float) -> Table:
        t = Table(
            title=f"swarm: {len(self.names)} agents, {self.tasks} tasks, {elapsed:.1f}s",
            title_justify="left",
        )
        for column in ("agent", "claimed", "via lock", "lost races", "results seen", "", "phase"):
            t.add_column(
                column, justify="right" if column not in ("agent", "", "phase") else "left"
            )
        for name in self.names:
            p = self.progress.get(name, {})
            seen = int(p.get("seen", 0))
            phase = "error" if name in self.errors else str(p.get("phase", "starting"))
            t.add_row(
                name,
                str(p.get("claimed", 0)),
                str(p.get("via_lock", 0)),
                str(p.get("lost_races", 0)),
                f"{seen}/{self.tasks}",
                ProgressBar(total=self.tasks, completed=seen, width=20),
                phase,
            )
        return t


@contextlib.contextmanager
def _server(url: str | None, embedded: str) -> Iterator[tuple[str, str]]:
    if url:
        yield url, "configured"
        return
    with embedded_server(embedded) as target:
        binary = embedded != "fakeredis" and shutil.which("redis-server") is not None
        yield target, f"embedded {'redis-server' if binary else 'fakeredis'}"


def _seed(mem: SwarmMemory, board: str, findings: str, graph: str, tasks: int) -> int:
    mem.create_namespace(board, default_permission="write")
    mem.create_namespace(findings, default_permission="write", strategy="merge")
    mem.create_graph(graph, link_kinds=["follows"], default_permission="write")
    ns = mem.namespace(board)
    for start in range(0, tasks, 200):
        ns.put_many(
            {
                task_key(i): {"task": i, "state": "open"}
                for i in range(start, min(start + 200, tasks))
            }
        )
    return ns.info().revision


def _run_swarm(
    specs: list[AgentSpec], board: Board, live: Live | None, deadline: float
) -> list[str]:
    ctx = mp.get_context("spawn")  # no fork: the parent may run a fakeredis server thread
    q: Any = ctx.Queue()
    go = ctx.Event()
    procs = [ctx.Process(target=agent_main, args=(s, q, go), daemon=True) for s in specs]
    started = time.monotonic()
    problems: list[str] = []
    try:
        for p in procs:  # inside: a Ctrl-C while starting them stops those started
            p.start()
        ready: set[str] = set()
        while not board.finished:
            if time.monotonic() > deadline:
                problems.append("timed out waiting for the agents")
                break
            try:
                kind, name, data = q.get(timeout=0.1)
            except queue_mod.Empty:
                dead = [
                    s.name
                    for s, p in zip(specs, procs, strict=True)
                    if p.exitcode not in (None, 0) and s.name not in board.errors
                ]
                for name in dead:
                    board.errors[name] = "the process died"
            else:
                board.note(kind, name, data)
                if kind == "ready":
                    ready.add(name)
                    if len(ready) == len(specs):
                        go.set()  # everyone watches the feed now: start together
                elif kind == "error" and not go.is_set():
                    go.set()
            if live is not None:
                live.update(board.table(time.monotonic() - started))
    except BaseException:  # Ctrl-C: stop the agents now, then report "interrupted"
        for p in procs:
            if p.pid is not None:
                p.terminate()
        raise
    finally:
        for p in procs:
            if p.pid is None:  # never started
                continue
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
    problems += [f"{name}: {error}" for name, error in sorted(board.errors.items())]
    return problems


def _verify(
    mem: SwarmMemory,
    board_ns: str,
    findings_ns: str,
    graph_ns: str,
    board: Board,
    *,
    tasks: int,
    locks: bool,
) -> dict[str, tuple[bool, str]]:
    ns: Namespace = mem.namespace(board_ns)
    reports = board.reports
    acked_claims = {i: name for name, r in reports.items() for i in r["claimed_tasks"]}
    n_acked_claims = sum(len(r["claimed_tasks"]) for r in reports.values())
    names = [*map(task_key, range(tasks)), *map(result_key, range(tasks))]
    names += ["counter:incr", "counter:update"]
    stored: dict[str, Entry | None] = {}
    for start in range(0, len(names), 1000):
        stored.update(ns.get_many(names[start : start + 1000]))
    done = {i: stored[task_key(i)] for i in range(tasks)}
    done_by = {i: e.value.get("by") for i, e in done.items() if e and e.value["state"] == "done"}
    res = {i: stored[result_key(i)] for i in range(tasks)}
    incr, update = stored["counter:incr"], stored["counter:update"]
    merged = mem.namespace(findings_ns).get_many(["summary", "agents"])
    summary_entry, agents_entry = merged["summary"], merged["agents"]
    summary = summary_entry.value if summary_entry else {}
    acked_incrs = sum(r["incrs"] for r in reports.values())
    acked_updates = sum(r["updates"] for r in reports.values())
    seen_ok = [r["seen"] == tasks and r["seen_events"] == tasks for r in reports.values()]
    checks = {
        "every task claimed exactly once": (
            n_acked_claims == tasks and done_by == acked_claims,
            f"store {len(done_by)} done, agents acknowledged {n_acked_claims} claims",
        ),
        "one result per task, by its claimer": (
            all(
                _is(res[i], {"task": i, "by": acked_claims.get(i), "answer": answer(i)})
                for i in range(tasks)
            ),
            f"store {sum(1 for e in res.values() if e)} results",
        ),
        "merged findings hold every acknowledged finding": (
            isinstance(summary, dict)
            and len(summary) == tasks
            and all(
                summary.get(task_key(i)) == {"by": acked_claims.get(i), "answer": answer(i)}
                for i in range(tasks)
            ),
            f"store {len(summary) if isinstance(summary, dict) else 0} findings in one merged "
            f"key, agents acknowledged {sum(r['merges'] for r in reports.values()) - len(reports)}",
        ),
        "merged per-agent records all present": (
            agents_entry is not None and set(agents_entry.value) == set(reports),
            f"store {len(agents_entry.value) if agents_entry else 0}, agents {len(reports)}",
        ),
        "incr() counter == acknowledged increments": (
            incr is not None and incr.value == acked_incrs == tasks,
            f"store {incr.value if incr else None}, acknowledged {acked_incrs}",
        ),
        "update() CAS counter == acknowledged updates (and its version)": (
            update is not None and update.value == acked_updates == update.version == tasks,
            f"store {update.value if update else None} at version "
            f"{update.version if update else None}, acknowledged {acked_updates}",
        ),
        "every agent saw every result event, once": (
            bool(seen_ok) and all(seen_ok),
            ", ".join(f"{n} {r['seen_events']}" for n, r in sorted(reports.items())),
        ),
    }
    checks.update(_verify_agent_memory(mem, board_ns, board, n_acked_claims))
    checks.update(_verify_graph(mem.graph(graph_ns), board, tasks))
    if locks:
        expected = len(range(0, tasks, 2))
        via_lock = sum(1 for e in done.values() if e and e.value.get("via") == "lock")
        checks["even tasks claimed under fenced locks"] = (
            via_lock == expected == sum(r["via_lock"] for r in reports.values()),
            f"store {via_lock}, expected {expected}",
        )
    return checks


def outcome_stats(mem: SwarmMemory, board_ns: str) -> dict[str, OutcomeStats]:
    return mem.namespace(board_ns).outcomes(OUTCOME_LOG).stats()


def _verify_agent_memory(
    mem: SwarmMemory, board_ns: str, board: Board, n_acked_claims: int
) -> dict[str, tuple[bool, str]]:
    reports = board.reports
    stats = outcome_stats(mem, board_ns)
    acked: dict[str, int] = {}
    for r in reports.values():
        for strategy, n in r.get("attempts", {}).items():
            acked[strategy] = acked.get(strategy, 0) + n
    won = sum(st.successes for st in stats.values())
    counted = {s: st.n for s, st in stats.items()}
    contexts = {n: mem.context(n, namespace=board_ns).get() for n in sorted(reports)}
    at_last = [
        c is not None
        and c.version == reports[n].get("context_version")
        and c.value
        == {
            "claimed": len(reports[n]["claimed_tasks"]),
            "lost_races": reports[n]["lost_races"],
            "phase": "done",
        }
        for n, c in contexts.items()
    ]
    return {
        "outcome log counts every acknowledged claim attempt once": (
            counted == acked and won == n_acked_claims,
            f"store {counted} ({won} won), agents acknowledged {acked} ({n_acked_claims} won)",
        ),
        "every agent's context at its last acknowledged version": (
            bool(at_last) and all(at_last),
            ", ".join(
                f"{n} v{c.version if c else None}/{reports[n].get('context_version')}"
                for n, c in contexts.items()
            ),
        ),
    }


def _recall_all(g: Graph, **filters: Any) -> list[Node]:
    nodes: list[Node] = []
    cursor: str | None = None
    while True:
        page = g.recall(**filters, limit=1000, cursor=cursor)
        nodes += page.nodes
        if page.cursor is None:
            return nodes
        cursor = page.cursor


def _verify_graph(g: Graph, board: Board, tasks: int) -> dict[str, tuple[bool, str]]:
    reports = board.reports
    stats = g.stats()
    rule_ids = {r["rule_id"] for r in reports.values()}
    created = sum(1 for r in reports.values() if r["rule_created"])
    rules = _recall_all(g, kind="rule", context=RULE_CONTEXT)
    per_agent: dict[str, bool] = {}
    for name, r in sorted(reports.items()):
        found = _recall_all(g, agent=name, kind="finding")
        claimed = set(r["claimed_tasks"])
        per_agent[name] = (
            len(found) == len(claimed) == r["nodes"]
            and {n.content["task"] for n in found} == claimed
            and all(n.content["answer"] == answer(n.content["task"]) for n in found)
            and {n.id for n in g.bundle(name).nodes()} == {n.id for n in found}
        )
    return {
        "the rule every agent added is one graph node": (
            len(rule_ids) == 1
            and created == 1
            and [(n.id, n.content) for n in rules] == [(*rule_ids, RULE)],
            f"{len(rules)} rule node(s), stored by {created} of {len(reports)} agents' adds",
        ),
        "every finding a graph node, recalled by agent, in its bundle": (
            bool(per_agent) and all(per_agent.values()),
            ", ".join(f"{n} {'ok' if ok else 'MISMATCH'}" for n, ok in per_agent.items()),
        ),
        "graph sizes: one node per task + the rule, one link per finding": (
            stats.nodes == tasks + 1 and stats.links == tasks,
            f"{stats.nodes} nodes, {stats.links} links",
        ),
    }


def _is(entry: Entry | None, value: Any) -> bool:
    return entry is not None and entry.value == value


def run(
    *,
    agents: int = 4,
    tasks: int = 200,
    url: str | None = None,
    embedded: str = "auto",
    timeout: float = 120.0,
    as_json: bool = False,
    settings: Settings | None = None,
) -> int:
    """Run the demo; returns the exit code (0 PASS, 7 FAIL)."""
    base = settings or Settings()
    out = Console(highlight=False, soft_wrap=True)
    interactive = out.is_terminal and not as_json
    locks = hasattr(Namespace, "lock")
    run_id = uuid.uuid4().hex[:8]
    board_ns, findings_ns = f"demo-{run_id}-board", f"demo-{run_id}-findings"
    graph_ns = f"demo-{run_id}-memory"
    with _server(url, embedded) as (target, kind):
        settings = base.model_copy(update={"redis_url": target, "key_prefix": PREFIX})
        if not as_json:
            out.print(
                f"swarm_memory demo: {agents} agents, {tasks} tasks, "
                f"{'configured Redis' if kind == 'configured' else kind} "
                f"({redact_url(target)})"
            )
        with SwarmMemory.from_url(agent="coordinator", settings=settings) as mem:
            try:
                since = _seed(mem, board_ns, findings_ns, graph_ns, tasks)
                dump = settings.model_dump()
                specs = [
                    AgentSpec(
                        f"agent-{i}",
                        i,
                        dump,
                        board_ns,
                        findings_ns,
                        tasks,
                        since,
                        locks,
                        timeout,
                        graph=graph_ns,
                    )
                    for i in range(agents)
                ]
                board = Board([s.name for s in specs], tasks)
                started = time.perf_counter()
                deadline = time.monotonic() + timeout
                if interactive:
                    with Live(board.table(0), console=out, refresh_per_second=8) as live:
                        problems = _run_swarm(specs, board, live, deadline)
                else:
                    problems = _run_swarm(specs, board, None, deadline)
                elapsed = time.perf_counter() - started
                checks = (
                    _verify(mem, board_ns, findings_ns, graph_ns, board, tasks=tasks, locks=locks)
                    if not problems
                    else {}
                )
                revision = mem.namespace(board_ns).info().revision
                outcomes = outcome_stats(mem, board_ns) if not problems else {}
                recalled = (
                    mem.graph(graph_ns).recall(kind="finding", limit=3).nodes
                    if not problems
                    else []
                )
            finally:
                if kind == "configured":
                    for name in (board_ns, findings_ns, graph_ns):
                        with contextlib.suppress(Exception):
                            mem.delete_namespace(name)
    ok = not problems and all(passed for passed, _ in checks.values())
    if as_json:
        print(
            json.dumps(
                {
                    "ok": ok,
                    "agents": agents,
                    "tasks": tasks,
                    "server": kind,
                    "seconds": round(elapsed, 3),
                    "revision": revision,
                    "problems": problems,
                    "checks": {name: {"ok": p, "detail": d} for name, (p, d) in checks.items()},
                    "outcomes": jsonable(outcomes),
                    "recalled": [
                        {"agent": n.agent, "context": n.context, "content": n.content}
                        for n in recalled
                    ],
                    "per_agent": {
                        n: {k: r[k] for k in ("claimed", "via_lock", "lost_races", "seen")}
                        for n, r in sorted(board.reports.items())
                    },
                }
            )
        )
    else:
        _print_summary(
            out,
            board,
            checks,
            problems,
            tasks=tasks,
            elapsed=elapsed,
            revision=revision,
            interactive=interactive,
            outcomes=outcomes,
            recalled=recalled,
        )
    return int(ExitCode.OK if ok else ExitCode.CHECK_FAILED)


def _print_summary(
    out: Console,
    board: Board,
    checks: dict[str, tuple[bool, str]],
    problems: list[str],
    *,
    tasks: int,
    elapsed: float,
    revision: int,
    interactive: bool,
    outcomes: dict[str, OutcomeStats],
    recalled: list[Node],
) -> None:
    if not interactive:  # the live table already showed these on a terminal
        for name in board.names:
            r = board.reports.get(name)
            if r:
                out.print(
                    f"  {name}: claimed {r['claimed']} ({r['via_lock']} under a lock), "
                    f"lost {r['lost_races']} races, saw {r['seen']}/{tasks} results"
                )
    for problem in problems:
        out.print(f"  [FAIL] {problem}", markup=False)
    for name, (passed, detail) in checks.items():
        out.print(f"  [{'ok' if passed else 'FAIL'}] {name} ({detail})", markup=False)
    for st in outcomes.values():
        out.print(
            f"  outcomes ({OUTCOME_LOG}, {st.strategy}): {st.n} attempts, "
            f"{st.successes} won ({100 * (st.success_rate or 0):.1f}%, Wilson 95% "
            f"[{st.wilson_low or 0:.3f}, {st.wilson_high or 0:.3f}]), median "
            f"{1000 * (st.median_duration or 0):.1f} ms, "
            f"p90 {1000 * (st.p90_duration or 0):.1f} ms",
            markup=False,
        )
    for node in recalled:
        out.print(
            f"  recalled from the memory graph: {node.agent} found {node.context} -> "
            f"{node.content.get('answer')} (confidence {node.confidence:g})",
            markup=False,
        )
    out.print(f"  {tasks} tasks in {elapsed:.2f}s; board revision {revision}")
    if not problems and all(p for p, _ in checks.values()):
        out.print("PASS: no update was lost.")
    else:
        out.print("FAIL: LOST OR UNVERIFIED UPDATES (see above)", markup=False)
        print("swarm-memory: demo: verification failed", file=sys.stderr)

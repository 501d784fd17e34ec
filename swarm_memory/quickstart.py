"""``python -m swarm_memory``: a small swarm that shows what the core guarantees.

N agent processes share one namespace on one Redis: they claim tasks with ``create``
(exactly one winner each), record results, bump a shared counter with ``update`` (a CAS
loop) and a second one with ``incr`` (server-side), then the parent checks, from the
store, that no acknowledged update was lost.

With ``SWARM_MEMORY_REDIS_URL`` set it uses that server (in its own namespace, which it
deletes afterwards); otherwise it starts an embedded one (``redis-server`` on a free port
if installed, else an in-process fakeredis TCP server).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

from swarm_memory.client import SwarmMemory
from swarm_memory.errors import ConflictError
from swarm_memory.settings import Settings
from swarm_memory.testing import embedded_server


def _agent(url: str, prefix: str, namespace: str, agent: str, tasks: int) -> dict[str, Any]:
    settings = Settings(redis_url=url, key_prefix=prefix)
    with SwarmMemory.from_url(agent=agent, settings=settings) as mem:
        ns = mem.namespace(namespace)
        claimed = updates = incrs = 0
        for t in range(tasks):
            try:
                ns.create(f"claim:task-{t:04d}", agent)
            except ConflictError:
                continue  # another agent won this task: never a silent double claim
            claimed += 1
            ns.put(f"result:task-{t:04d}", {"by": agent, "answer": t * t})
            ns.update("progress", lambda v: (v or 0) + 1)
            updates += 1
            ns.incr("done")
            incrs += 1
        return {"agent": agent, "claimed": claimed, "updates": updates, "incrs": incrs}


@contextlib.contextmanager
def _server(url: str | None, embedded: str) -> Iterator[tuple[str, str]]:
    if url:
        yield url, "configured"
        return
    with embedded_server(embedded) as target:
        yield target, "embedded"


def run(agents: int, tasks: int, url: str | None, embedded: str = "auto") -> int:
    prefix = "sm-quickstart"
    namespace = f"board-{uuid.uuid4().hex[:8]}"
    with _server(url, embedded) as (target, kind):
        print(f"swarm_memory quickstart: {agents} agents, {tasks} tasks, {kind} Redis")
        settings = Settings(redis_url=target, key_prefix=prefix)
        with SwarmMemory.from_url(agent="coordinator", settings=settings) as mem:
            mem.create_namespace(namespace, default_permission="write", history=3)
            started = time.perf_counter()
            ctx = mp.get_context("spawn")
            with ctx.Pool(agents) as pool:
                reports = pool.starmap(
                    _agent,
                    [(target, prefix, namespace, f"agent-{i}", tasks) for i in range(agents)],
                )
            elapsed = time.perf_counter() - started
            ns = mem.namespace(namespace)
            claims = sum(1 for _ in ns.keys("claim:*"))
            results = sum(1 for _ in ns.keys("result:*"))
            progress = ns.get("progress")
            done = ns.get("done")
            acked_updates = sum(r["updates"] for r in reports)
            acked_incrs = sum(r["incrs"] for r in reports)
            for r in reports:
                print(f"  {r['agent']:>9}: claimed {r['claimed']:4d} tasks")
            checks = {
                "every task claimed exactly once": claims == tasks
                and sum(r["claimed"] for r in reports) == tasks,
                "one result per claimed task": results == tasks,
                "update() CAS counter == acknowledged updates": (
                    progress is not None and progress.value == acked_updates == tasks
                ),
                "incr() counter == acknowledged increments": (
                    done is not None and done.value == acked_incrs == tasks
                ),
                "versions == acknowledged writes": (
                    progress is not None and progress.version == acked_updates
                ),
            }
            for name, ok in checks.items():
                print(f"  [{'ok' if ok else 'FAIL'}] {name}")
            print(f"  {tasks} tasks in {elapsed:.2f}s; revision {ns.info().revision}")
            if kind == "configured":
                mem.delete_namespace(namespace)
            if all(checks.values()):
                print("no update was lost.")
                return 0
            print("LOST UPDATES DETECTED", file=sys.stderr)
            return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swarm_memory", description=__doc__)
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument(
        "--url", default=os.environ.get("SWARM_MEMORY_REDIS_URL"), help="Redis URL (optional)"
    )
    parser.add_argument(
        "--embedded",
        choices=["auto", "redis-server", "fakeredis"],
        default="auto",
        help="which embedded server to start when no URL is configured",
    )
    args = parser.parse_args(argv)
    return run(args.agents, args.tasks, args.url, args.embedded)


if __name__ == "__main__":
    raise SystemExit(main())

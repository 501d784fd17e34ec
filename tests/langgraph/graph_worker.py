"""Graph processes for test_graphs.py: ``python -m tests.langgraph.graph_worker CMD URL ...``.

The key prefix (and cluster mode) come from SWARM_MEMORY_* variables. Each command prints
one JSON line with what it saw; errors print {"error": <class name>, ...} and exit 3.
"""

from __future__ import annotations

import json
import operator
import sys
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.store.base import BaseStore
from langgraph.types import Command, interrupt

from swarm_memory import ConflictError
from swarm_memory.langgraph import SwarmCheckpointSaver, SwarmStore, ThreadOwnershipLost


class State(TypedDict, total=False):
    steps: Annotated[list[str], operator.add]
    answer: str


def approval_graph(saver: SwarmCheckpointSaver) -> Any:
    def draft(state: State) -> State:
        return {"steps": ["draft"]}

    def ask(state: State) -> State:
        answer = interrupt({"question": "ship it?"})  # pauses the run here
        return {"steps": ["ask"], "answer": answer}

    builder = StateGraph(State)
    builder.add_node("draft", draft)
    builder.add_node("ask", ask)
    builder.add_edge(START, "draft")
    builder.add_edge("draft", "ask")
    builder.add_edge("ask", END)
    return builder.compile(checkpointer=saver)


def swarm_graph(saver: SwarmCheckpointSaver, store: SwarmStore, worker: str) -> Any:
    def remember(state: State, *, store: BaseStore) -> State:
        thread = state["steps"][0]
        store.put(("swarm", "results"), thread, {"by": worker})
        # A shared counter, read -> compute -> write with expected_version: never loses one.
        while True:
            item = store.get(("swarm",), "counter")
            version = getattr(item, "version", 0) if item else 0
            count = (item.value["n"] if item else 0) + 1
            try:
                store.put(("swarm",), "counter", {"n": count}, expected_version=version)  # type: ignore[call-arg]
                break
            except ConflictError:
                continue
        return {"steps": ["remembered"]}

    builder = StateGraph(State)
    builder.add_node("remember", remember)
    builder.add_edge(START, "remember")
    builder.add_edge("remember", END)
    return builder.compile(checkpointer=saver, store=store)


def owner_graph(saver: SwarmCheckpointSaver, wait_for_go: bool) -> Any:
    def work(state: State) -> State:
        if wait_for_go:
            print(json.dumps({"working": True}), flush=True)
            sys.stdin.readline()  # the test pauses this process here, then lets it go
        return {"steps": ["work-" + ("a" if wait_for_go else "b")]}

    builder = StateGraph(State)
    builder.add_node("work", work)
    builder.add_edge(START, "work")
    builder.add_edge("work", END)
    return builder.compile(checkpointer=saver)


def main(argv: list[str]) -> int:
    cmd, url = argv[0], argv[1]
    if cmd == "interrupt":
        thread = argv[2]
        with SwarmCheckpointSaver.from_url(url) as saver:
            out = approval_graph(saver).invoke(
                {"steps": []}, {"configurable": {"thread_id": thread}}
            )
            print(json.dumps({"interrupts": [i.value for i in out["__interrupt__"]]}))
    elif cmd == "resume":
        thread = argv[2]
        with SwarmCheckpointSaver.from_url(url) as saver:
            graph = approval_graph(saver)
            config = {"configurable": {"thread_id": thread}}
            out = graph.invoke(Command(resume=argv[3]), config)
            print(json.dumps({"steps": out["steps"], "answer": out["answer"]}))
    elif cmd == "swarm":
        worker, threads = argv[2], argv[3:]
        with SwarmCheckpointSaver.from_url(url, agent=worker) as saver:
            store = SwarmStore.from_url(url, agent=worker)
            graph = swarm_graph(saver, store, worker)
            for thread in threads:
                graph.invoke({"steps": [thread]}, {"configurable": {"thread_id": thread}})
            store.close()
            print(json.dumps({"done": threads}))
    elif cmd == "owner":
        thread, claim_ttl = argv[2], float(argv[3])
        saver = SwarmCheckpointSaver.from_url(
            url, agent="worker-a", ownership=True, claim_ttl=claim_ttl
        )
        saver.claim(thread)
        try:
            owner_graph(saver, wait_for_go=True).invoke(
                {"steps": []}, {"configurable": {"thread_id": thread}}
            )
        except ThreadOwnershipLost as exc:
            print(json.dumps({"error": type(exc).__name__, "reason": exc.reason}), flush=True)
            return 3
        print(json.dumps({"landed": True}), flush=True)
    else:
        raise SystemExit(f"unknown command {cmd}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

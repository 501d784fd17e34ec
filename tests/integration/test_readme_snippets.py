"""Every Python snippet in the README runs, and runs again right after (a reader who
pastes the quick start twice must not meet a ConflictError the README did not expect).

The snippets run in README order in one shared namespace of names, each block twice in a
row, against a redis-server of the tests' own (the README's ``redis://localhost:6379/0``
becomes its URL) under a key prefix of this test. The names a snippet leaves to the
reader are given here: ``url``, ``worker_mem``, ``rev``, and stand-ins for the reader's
functions (``handle``, ``save``, ``on_event``, ``work``, ``alert``, ``compute``).

Snippets show blocking loops (``for ev in ns.watch(...)``, ``for msg in inbox``) as a
reader would write them. So that they end, each top-level statement runs on its own and
``handle`` ends the statement it runs in at its second call; a peer thread plays the
other agents (it writes ``task-*`` keys, sends the worker messages and answers requests
sent to the worker), so such a loop always has a second item coming. The metrics
snippet's port 9100 becomes 0 (any free port): tests never take a fixed port.

The section "Testing your agents" holds a pytest example, which tests/plugin runs.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import inspect
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from swarm_memory import AsyncSwarmMemory, SwarmMemory, SwarmMemoryError
from tests.servers import RedisServer

README = Path(__file__).resolve().parents[2] / "README.md"
SKIPPED_SECTIONS = ("## Testing your agents",)


def snippets() -> list[tuple[int, str]]:
    """(line, code) of every ```python block outside the skipped sections."""
    text = README.read_text()
    found = []
    for match in re.finditer(r"```python\n(.*?)```", text, re.S):
        section = text.rfind("\n## ", 0, match.start())
        heading = text[section + 1 : text.index("\n", section + 1)]
        if not heading.startswith(SKIPPED_SECTIONS):
            found.append((text.count("\n", 0, match.start()) + 1, match.group(1)))
    return found


class _Break(Exception):
    """Raised by the ``handle`` stand-in: ends the statement that runs the loop."""


class _Handle:
    def __init__(self) -> None:
        self.calls = 0
        self.seen: list[Any] = []

    def __call__(self, item: Any) -> None:
        self.seen.append(item)
        self.calls += 1
        if self.calls >= 2:
            raise _Break


class _Peer(threading.Thread):
    """The other agents of the README's examples, until stopped."""

    def __init__(self, url: str) -> None:
        super().__init__(name="readme-peer", daemon=True)
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.planner = SwarmMemory.from_url(url, agent="peer")
        self.worker = SwarmMemory.from_url(url, agent="worker")

    def run(self) -> None:
        inbox = self.worker.inbox(consumer="peer", idle=30)
        i = 0
        while not self.stop.is_set():
            i += 1
            # (refused until the first snippet has created the namespace)
            with contextlib.suppress(SwarmMemoryError):
                self.planner.namespace("team").put(f"task-{i % 10}", i)
            try:
                self.planner.send("worker", {"tick": i})
                msg = inbox.receive(timeout=0.02)
                if msg is not None:
                    if msg.reply_to:
                        self.worker.reply(msg, {"a": 2})
                    inbox.ack(msg)
            except Exception as exc:  # reported by the test, not swallowed
                self.errors.append(exc)
                return

    def close(self) -> None:
        self.stop.set()
        self.join(timeout=10)
        self.planner.close()
        self.worker.close()


def _run_statement(stmt: ast.stmt, names: dict[str, Any], loop: asyncio.AbstractEventLoop) -> Any:
    module = ast.Module(body=[stmt], type_ignores=[])
    # dont_inherit: the README's code runs as a reader's module would, without this file's
    # `from __future__ import annotations` (LangGraph resolves a state class's annotations).
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    if isinstance(stmt, ast.Expr):
        code = compile(ast.Expression(stmt.value), "<README>", "eval", flags, dont_inherit=True)
    else:
        code = compile(module, "<README>", "exec", flags, dont_inherit=True)
    result = eval(code, names)  # the README's own code
    if code.co_flags & inspect.CO_COROUTINE:
        result = loop.run_until_complete(result)
    return result


@pytest.fixture
def readme_env(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("SWARM_MEMORY_KEY_PREFIX", "rd" + uuid.uuid4().hex[:10])
    monkeypatch.delenv("SWARM_MEMORY_REDIS_URL", raising=False)
    yield redis_server.url


def test_every_readme_snippet_runs_twice_in_a_row(readme_env: str) -> None:
    url = readme_env
    blocks = snippets()
    assert len(blocks) >= 6, "the README's snippets were not found"
    loop = asyncio.new_event_loop()
    peer = _Peer(url)
    memories: dict[int, Any] = {}
    servers: list[Any] = []
    handle = _Handle()
    names: dict[str, Any] = {
        "__name__": "readme",
        "url": url,
        "worker_mem": SwarmMemory.from_url(url, agent="worker"),
        "rev": 0,
        "handle": handle,
        "save": lambda cursor: None,
        "on_event": lambda event: None,
        "work": lambda: {"done": True},
        "alert": lambda lock: None,
        "compute": lambda: 42,
    }
    peer.start()
    try:
        for line, text in blocks:
            code = text.replace("redis://localhost:6379/0", url)
            code = code.replace("start_http_server(9100", "start_http_server(0")
            tree = ast.parse(code, filename=f"README.md:{line}", mode="exec")
            # The async example rebinds mem and ns to async ones: its names stay its own.
            block_names = dict(names) if "await " in code else names
            for attempt in (1, 2):
                for stmt in tree.body:
                    handle.calls = 0
                    where = f"README.md:{line + stmt.lineno} (run {attempt})"
                    try:
                        result = _run_statement(stmt, block_names, loop)
                    except _Break:
                        continue
                    except Exception as exc:
                        raise AssertionError(f"{where}: {exc!r}") from exc
                    if isinstance(result, tuple) and hasattr(result[0], "shutdown"):
                        servers.append(result[0])  # start_http_server's (server, thread)
                    for value in block_names.values():
                        if isinstance(value, SwarmMemory | AsyncSwarmMemory):
                            memories[id(value)] = value
        assert not peer.errors, peer.errors
        # The loops really ran over items (handle saw events and messages).
        assert any(type(x).__name__ == "Event" for x in handle.seen)
        assert any(type(x).__name__ == "Message" for x in handle.seen)
    finally:
        peer.close()
        for server in servers:
            server.shutdown()
            server.server_close()
        for memory in memories.values():
            if isinstance(memory, SwarmMemory):
                memory.close()
            else:
                loop.run_until_complete(memory.close())
        names["worker_mem"].close()
        loop.close()


def test_the_snippet_harness_sees_the_quick_start() -> None:
    """The harness must find the quick start (so a README reshuffle cannot empty it)."""
    codes = [code for _, code in snippets()]
    assert any("SwarmMemory.from_url" in code and "create_namespace" in code for code in codes)
    assert not any("def test_" in code for code in codes)

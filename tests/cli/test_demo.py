"""`swarm-memory demo`: the main job, on the embedded server, a configured one, and a
terminal (live table); and its verification really fails when updates are missing."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import time

from swarm_memory import Settings, SwarmMemory
from swarm_memory.cli.demo import PREFIX, Board, _seed, _verify
from tests.cli.conftest import interruptible

ENV_NO_URL = {k: v for k, v in os.environ.items() if not k.startswith("SWARM_MEMORY_")}


def _demo(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "swarm_memory.cli", *args],
        capture_output=True, text=True, timeout=180, env=env, check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_demo_json_on_the_embedded_server():
    started = time.monotonic()
    out = _demo("demo", "--agents", "3", "--tasks", "30", "-o", "json", env=ENV_NO_URL)
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] is True and report["problems"] == []
    assert report["server"].startswith("embedded")
    assert all(c["ok"] for c in report["checks"].values()) and len(report["checks"]) >= 7
    per_agent = report["per_agent"]
    assert sum(a["claimed"] for a in per_agent.values()) == 30
    assert all(a["seen"] == 30 for a in per_agent.values())
    # Agent memory: every claim attempt in the outcome log, every context saved.
    assert "outcome log counts every acknowledged claim attempt once" in report["checks"]
    assert "every agent's context at its last acknowledged version" in report["checks"]
    outcomes = report["outcomes"]
    assert set(outcomes) == {"cas", "lock"}
    assert sum(o["successes"] for o in outcomes.values()) == 30
    for o in outcomes.values():
        assert o["n"] >= o["successes"] > 0 and 0 <= o["wilson_low"] <= o["success_rate"]
        assert o["median_duration"] > 0
    # Memory graph: every finding a node, the shared rule one node, the newest recalled.
    for check in (
        "the rule every agent added is one graph node",
        "every finding a graph node, recalled by agent, in its bundle",
        "graph sizes: one node per task + the rule, one link per finding",
    ):
        assert report["checks"][check]["ok"] is True
    recalled = report["recalled"]
    assert len(recalled) == 3 and all(r["agent"].startswith("agent-") for r in recalled)
    assert all(r["context"].startswith("task-") and "answer" in r["content"] for r in recalled)
    assert time.monotonic() - started < 60


def test_demo_plain_output_against_a_configured_url(redis_server):
    out = _demo("--url", redis_server.url, "demo", "--agents", "2", "--tasks", "10", env=ENV_NO_URL)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "configured Redis" in out.stdout and "PASS: no update was lost." in out.stdout
    assert "outcomes (claims, cas):" in out.stdout and "Wilson 95%" in out.stdout
    assert "recalled from the memory graph: agent-" in out.stdout
    assert "\x1b[" not in out.stdout  # not a terminal: no colours, no live redraws
    client = redis_server.client()
    assert [k for k in client.scan_iter(f"{PREFIX}:{{demo-*") if b"registry" not in k] == []


def test_demo_live_table_on_a_terminal():
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "swarm_memory", "--agents", "2", "--tasks", "20"],
        stdin=follower, stdout=follower, stderr=follower,
        # (COLUMNS and LINES as the terminal's size: rich takes them over the terminal's,
        # and a run under xdist passed COLUMNS=80 on, wrapping "results seen" in two)
        env={**ENV_NO_URL, "TERM": "xterm", "COLUMNS": "120", "LINES": "40"},
    )  # fmt: skip
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(timeout=120) == 0
    screen = b"".join(chunks).decode(errors="replace")
    assert "results seen" in screen and "agent-1" in screen  # the live table
    assert "PASS: no update was lost." in screen


def test_verification_catches_missing_updates(redis_server):
    """The checks compare the store with what agents acknowledged: fabricate
    acknowledgements the store does not have, and every check must fail."""
    settings = Settings(redis_url=redis_server.url, key_prefix="cdemo" + str(os.getpid()))
    with SwarmMemory.from_url(agent="coordinator", settings=settings) as mem:
        _seed(mem, "b", "f", "g", 4)
        board = Board(["agent-0"], 4)
        board.reports["agent-0"] = {
            "claimed": 4, "via_lock": 0, "lost_races": 0, "seen": 4, "seen_events": 4,
            "claimed_tasks": [0, 1, 2, 3], "incrs": 4, "updates": 4, "merges": 5,
            "rule_id": "0" * 24, "rule_created": True, "nodes": 4,
        }  # fmt: skip
        checks = _verify(mem, "b", "f", "g", board, tasks=4, locks=False)
        failed = [name for name, (ok, _detail) in checks.items() if not ok]
        assert failed == [n for n in checks if n != "every agent saw every result event, once"]
        # One increment acknowledged but not in the store is caught too.
        ns = mem.namespace("b")
        for _ in range(3):
            ns.incr("counter:incr")
        checks = _verify(mem, "b", "f", "g", board, tasks=4, locks=False)
        assert checks["incr() counter == acknowledged increments"][0] is False
        ns.incr("counter:incr")
        checks = _verify(mem, "b", "f", "g", board, tasks=4, locks=False)
        assert checks["incr() counter == acknowledged increments"][0] is True


def test_ctrl_c_stops_the_demo_with_exit_130(redis_server):
    proc = interruptible(
        [sys.executable, "-m", "swarm_memory.cli", "--url", redis_server.url, "demo",
         "--agents", "2", "--tasks", "20000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV_NO_URL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert "swarm_memory demo:" in proc.stdout.readline()
        time.sleep(2.0)  # agents started (spawned) and claiming
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().endswith("swarm-memory: error: interrupted")
    client = redis_server.client()  # it still cleaned up the configured server
    assert [k for k in client.scan_iter(f"{PREFIX}:{{demo-*") if b"registry" not in k] == []


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_agents_stop_when_the_coordinator_is_killed(redis_server):
    """kill -9 of the demo's coordinator (no cleanup can run): its agent processes notice
    the parent is gone and exit, instead of writing on for minutes (they once did, and
    their 30,000 entries slowed the rest of the test run)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "swarm_memory.cli", "--url", redis_server.url, "demo",
         "--agents", "2", "--tasks", "3000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV_NO_URL,
    )  # fmt: skip
    agents: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(agents) < 2 and time.monotonic() < deadline:
            # spawn's resource tracker is a child too: agents run demo_agent's spawn_main
            agents = [
                pid for pid in _children(proc.pid) if b"multiprocessing-fork" in _cmdline(pid)
            ]
            time.sleep(0.1)
        assert len(agents) == 2
        time.sleep(1.5)  # working
        proc.kill()
        proc.wait(timeout=10)
        deadline = time.monotonic() + 15
        while any(_running(pid) for pid in agents) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_running(pid) for pid in agents)
    finally:
        for pid in [proc.pid, *agents]:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)
        # Nothing was cleaned up (kill -9): delete its namespaces, for the other tests.
        settings = Settings(redis_url=redis_server.url, key_prefix=PREFIX)
        with SwarmMemory.from_url(agent="coordinator", settings=settings) as mem:
            for name in mem.list_namespaces():
                if name.startswith("demo-"):
                    mem.delete_namespace(name)

"""watch (resumable, Ctrl-C), audit, stats, locks, agents, exporter wiring."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.cli.conftest import interruptible, one_error_line


def test_watch_prints_cursors_and_resumes_from_them(run):
    run("ns", "create", "team")
    for i in range(4):
        run("put", "team", f"k{i}", str(i))
    res = run("watch", "team", "k*", "--since", "0", "--type", "put", "--count", "2", "-o", "json")
    first = [json.loads(line) for line in res.stdout.splitlines()]
    assert [(e["type"], e["key"], e["value"]) for e in first] == [
        ("put", "k0", 0),
        ("put", "k1", 1),
    ]
    assert f"--since {first[-1]['cursor']}" in res.stderr
    # Resume right after the printed cursor: the rest, each once, nothing repeated.
    res = run("watch", "team", "--since", first[-1]["cursor"], "--timeout", "0.3", "-o", "json")
    rest = [json.loads(line) for line in res.stdout.splitlines()]
    assert [e["key"] for e in rest] == ["k2", "k3"]
    # A revision works too; --type filters; the table output is one line per event.
    res = run("watch", "team", "--since", "0", "--type", "ns_create", "--timeout", "0.3")
    assert len(res.stdout.splitlines()) == 1 and "ns_create" in res.stdout
    run("watch", "team", "--since", "not-a-cursor", "--count", "1", code=2)
    run("watch", "ghost", "--count", "1", code=3)


def test_watch_follows_live_writes_and_stops_cleanly_on_ctrl_c(run):
    run("ns", "create", "team")
    proc = interruptible(
        [sys.executable, "-m", "swarm_memory.cli", "-o", "json", "watch", "team"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **run.env},
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 20
        line = ""
        while not line and time.monotonic() < deadline:
            run("put", "team", "live", "1")  # until the watcher is up and sees one
            time.sleep(0.3)
            if proc.poll() is not None:
                break
            os.set_blocking(proc.stdout.fileno(), False)
            line = proc.stdout.readline()
        assert json.loads(line)["key"] == "live"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "resume with: --since " in err


def test_audit_and_stats(run):
    run("ns", "create", "team")
    run("put", "team", "a", "1")
    run("--agent", "other", "put", "team", "b", "2")
    run("delete", "team", "a", "--yes")
    records = run.json("audit", "team")
    assert [(r["agent"], r["action"], r["key"]) for r in records[:3]] == [
        ("cli", "delete", "a"), ("other", "put", "b"), ("cli", "put", "a"),
    ]  # fmt: skip
    assert [r["key"] for r in run.json("audit", "team", "--agent", "other")] == ["b"]
    assert len(run.json("audit", "team", "--limit", "1")) == 1
    run("ns", "create", "second")
    stats = run.json("stats")
    assert set(stats) == {"team", "second"}
    assert stats["team"]["keys"] == 1 and stats["team"]["put"] == 2
    assert set(run.json("stats", "second")) == {"second"}
    assert "counter" in run("stats").stdout


def test_locks_and_agents(run):
    run("ns", "create", "team")
    assert run.json("locks", "team") == []
    with run.memory("holder") as mem:
        ns = mem.namespace("team")
        with ns.lock("task-7", ttl=30) as lock:
            locks = run.json("locks", "team")
            assert [(x["name"], x["holder"], x["token"]) for x in locks] == [
                ("task-7", "holder", int(lock.token))
            ]
        assert run.json("locks", "team") == []
        mem.heartbeat(30)
        agents = run.json("agents")
        assert [(a["agent"], a["alive"]) for a in agents] == [("holder", True)]
        assert "holder" in run("agents", "--all").stdout


def test_exporter_is_wired(run):
    res = run("exporter", "--help")
    assert "--port" in res.stdout
    proc = run.proc("exporter", "--port", "not-a-port")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["-m", "swarm_memory.cli", "exporter"], id="swarm-memory-exporter"),
        pytest.param(["-m", "swarm_memory.exporter"], id="python-m-exporter"),
    ],
)
def test_exporter_help_is_click_styled(run, argv):
    """Like every other command (click), for both documented ways to start it."""
    proc = subprocess.run(
        [sys.executable, *argv, "--help"],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, **run.env},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: swarm-memory exporter [OPTIONS]"), proc.stdout
    for flag in ("--url", "--port", "--addr", "--prefix", "--cluster"):
        assert flag in proc.stdout, flag


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["-m", "swarm_memory.cli", "exporter"], id="swarm-memory-exporter"),
        pytest.param(["-m", "swarm_memory.exporter"], id="python-m-exporter"),
    ],
)
def test_exporter_on_a_busy_port_says_which(run, argv):
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, *argv, "--port", str(port), "--addr", "127.0.0.1"],
            capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, **run.env},
        )  # fmt: skip
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    line = one_error_line(proc.stderr)
    assert f"127.0.0.1:{port}" in line and "Address already in use" in line
    assert "--port" in line


def test_version_and_help(run):
    assert "swarm-memory" in run("--version").stdout
    out = run("--help").stdout
    for command in ("ns", "get", "put", "watch", "export", "import", "doctor", "demo"):
        assert command in out

"""The README's main job runs and verifies its own invariants, on both embedded servers."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("embedded", ["redis-server", "fakeredis"])
def test_quickstart_runs_and_loses_nothing(embedded):
    env = {k: v for k, v in os.environ.items() if k != "SWARM_MEMORY_REDIS_URL"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "swarm_memory",
            "--agents",
            "3",
            "--tasks",
            "40",
            "--embedded",
            embedded,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("[ok]") == 5 and "FAIL" not in out.stdout
    assert "no update was lost." in out.stdout


def test_quickstart_uses_the_configured_url(redis_server):
    env = {**os.environ, "SWARM_MEMORY_REDIS_URL": redis_server.url}
    out = subprocess.run(
        [sys.executable, "-m", "swarm_memory", "--agents", "2", "--tasks", "20"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "configured Redis" in out.stdout
    # It cleans up after itself on a server it did not start.
    client = redis_server.client()
    assert [k for k in client.scan_iter("sm-quickstart:{board-*") if b"registry" not in k] == []

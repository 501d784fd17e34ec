"""The README's main job (`swarm-memory demo`, also `python -m swarm_memory`) runs and
verifies its own invariants, on both embedded servers and on a configured one."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "swarm_memory", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )


@pytest.mark.parametrize("embedded", ["redis-server", "fakeredis"])
def test_main_job_runs_and_loses_nothing(embedded):
    env = {k: v for k, v in os.environ.items() if k != "SWARM_MEMORY_REDIS_URL"}
    out = _run(["--agents", "3", "--tasks", "40", "--embedded", embedded], env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"embedded {embedded}" in out.stdout
    assert out.stdout.count("[ok]") >= 7 and "FAIL" not in out.stdout
    assert "PASS: no update was lost." in out.stdout
    assert "Traceback" not in out.stderr


def test_main_job_uses_the_configured_url_and_cleans_up(redis_server):
    env = {**os.environ, "SWARM_MEMORY_REDIS_URL": redis_server.url}
    out = _run(["--agents", "2", "--tasks", "20"], env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "configured Redis" in out.stdout
    # It cleans up after itself on a server it did not start.
    client = redis_server.client()
    assert [k for k in client.scan_iter("sm-demo:*") if not k.endswith(b":registry")] == []
    assert client.zcard("sm-demo:registry") == 0

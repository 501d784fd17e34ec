"""CLI fixtures: the CLI in-process (click's CliRunner) or as a real process, against the
session's redis-server (never 6379), each test under its own key prefix."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from click.testing import CliRunner, Result

from swarm_memory import Settings, SwarmMemory
from swarm_memory.cli import cli
from tests.servers import RedisServer
from tests.support import snapshot


@dataclass
class Cli:
    server: RedisServer
    prefix: str

    @property
    def env(self) -> dict[str, str]:
        return {
            "SWARM_MEMORY_REDIS_URL": self.server.url,
            "SWARM_MEMORY_KEY_PREFIX": self.prefix,
            "SWARM_MEMORY_AGENT": "cli",
            "SWARM_MEMORY_OUTPUT": "table",
        }

    def __call__(
        self, *args: str, code: int = 0, input: str | None = None, env: dict[str, str] | None = None
    ) -> Result:
        """Run in-process; assert the exit code (and that no exception escaped)."""
        result = CliRunner().invoke(cli, list(args), input=input, env={**self.env, **(env or {})})
        assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
        if result.exception is not None:
            assert isinstance(result.exception, SystemExit), result.exception
        return result

    def json(self, *args: str, code: int = 0, input: str | None = None) -> Any:
        return json.loads(self(*args, "-o", "json", code=code, input=input).stdout)

    def proc(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run as a real process (`python -m swarm_memory.cli`), stdin closed."""
        return subprocess.run(
            [sys.executable, "-m", "swarm_memory.cli", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env, **(env or {})},
            check=False,
        )

    def memory(self, agent: str = "cli") -> SwarmMemory:
        settings = Settings(redis_url=self.server.url, key_prefix=self.prefix)
        return SwarmMemory.from_url(agent=agent, settings=settings)

    def snapshot(self) -> dict[bytes, Any]:
        client = self.server.client()
        try:
            return snapshot(client, self.prefix)
        finally:
            client.close()


@pytest.fixture
def run(redis_server: RedisServer) -> Iterator[Cli]:
    yield Cli(redis_server, "c" + uuid.uuid4().hex[:12])


def one_error_line(stderr: str) -> str:
    """The CLI's error contract: exactly one line, ours, no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("swarm-memory: error: "), stderr
    return lines[0]


def interruptible(args: list[str], **kwargs: Any) -> subprocess.Popen[str]:
    """Popen for a test that sends SIGINT (Ctrl-C): the child starts with SIGINT's default
    disposition even when this test run was started with it ignored (a background job of
    a non-interactive shell, e.g. `bash .ci/run &`): an exec'd child inherits "ignore",
    and Python then installs no KeyboardInterrupt handler, so the Ctrl-C is lost."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:  # a handler (not SIG_IGN) becomes SIG_DFL across exec
        return subprocess.Popen(args, text=True, **kwargs)
    finally:
        signal.signal(signal.SIGINT, previous)

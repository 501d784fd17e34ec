"""Every bad input of the issue, as a real process: one line on stderr, no traceback, the
documented exit code, and the password never printed anywhere."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from swarm_memory.cli.base import redact_url, scrub
from tests.cli.conftest import Cli, one_error_line
from tests.servers import RedisServer, free_port

PASSWORD = "s3cr3t-Pw-never-shown"


class LockedServer(RedisServer):
    """A redis-server with requirepass (tests.servers' readiness probe has no password)."""

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        probe = redis.Redis(port=self.port, password=PASSWORD, socket_timeout=0.5)
        try:
            while True:
                assert self.process is not None and self.process.poll() is None, self.read_log()
                try:
                    if probe.ping():
                        return
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
        finally:
            probe.close()


@pytest.fixture(scope="module")
def locked_server() -> Iterator[RedisServer]:
    with LockedServer(["--requirepass", PASSWORD]) as server:
        yield server


def _fails(run: Cli, code: int, *args: str, env: dict[str, str] | None = None) -> str:
    proc = run.proc(*args, env=env)
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert PASSWORD not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout
    return one_error_line(proc.stderr)


def test_malformed_json_value(run):
    run("ns", "create", "team")
    before = run.snapshot()
    line = _fails(run, 2, "put", "team", "k", '{"a": 1,}')
    assert "not valid JSON" in line and "line 1 column" in line
    assert "NaN is not allowed" in _fails(run, 2, "put", "team", "k", "NaN")
    assert run.snapshot() == before


def test_unknown_namespace(run):
    assert "namespace 'ghost' not found" in _fails(run, 3, "get", "ghost", "k")
    assert "not found" in _fails(run, 3, "ns", "delete", "ghost", "--yes")


@pytest.mark.parametrize(
    "url",
    [
        "foo://127.0.0.1:1/0",
        "http://x",
        "redis://127.0.0.1:notaport/0",
        f"ftp://u:{PASSWORD}@h/0",
        f"redis://u:{PASSWORD}@127.0.0.1:1/0?sockettimeout=1",
    ],
)
@pytest.mark.parametrize("cluster", ["0", "1"])
def test_bad_url(run, url, cluster):
    env = {"SWARM_MEMORY_REDIS_URL": url, "SWARM_MEMORY_CLUSTER": cluster}
    line = _fails(run, 2, "ns", "list", env=env)
    assert "invalid Redis URL" in line


@pytest.mark.parametrize("command", [("ns", "list"), ("put", "t", "k", "1"), ("get", "t", "k")])
def test_cluster_flag_against_a_standalone_server(run, command):
    line = _fails(run, 2, "--cluster", *command)
    assert "not a Redis Cluster" in line and "SWARM_MEMORY_CLUSTER" in line


def test_cluster_flag_against_nothing(run):
    url = f"redis://127.0.0.1:{free_port()}/0"
    line = _fails(run, 6, "--cluster", "ns", "list", env={"SWARM_MEMORY_REDIS_URL": url})
    assert "connection refused" in line.lower()


def test_no_url_and_bad_settings(run):
    assert "SWARM_MEMORY_REDIS_URL" in _fails(
        run, 2, "ns", "list", env={"SWARM_MEMORY_REDIS_URL": ""}
    )
    line = _fails(run, 2, "ns", "list", env={"SWARM_MEMORY_SOCKET_TIMEOUT": "soon"})
    assert "SWARM_MEMORY_SOCKET_TIMEOUT" in line


@pytest.mark.parametrize("command", [("ns", "list"), ("doctor",), ("get", "team", "k")])
def test_wrong_password(run, locked_server, command):
    url = f"redis://default:wrong-{PASSWORD}@127.0.0.1:{locked_server.port}/0"
    line = _fails(run, 6, *command, env={"SWARM_MEMORY_REDIS_URL": url})
    assert "refused the credentials" in line
    nopass = f"redis://127.0.0.1:{locked_server.port}/0"
    assert "refused the credentials" in _fails(
        run, 6, *command, env={"SWARM_MEMORY_REDIS_URL": nopass}
    )


def test_right_password_works_and_is_redacted(run, locked_server):
    url = f"redis://default:{PASSWORD}@127.0.0.1:{locked_server.port}/0"
    env = {"SWARM_MEMORY_REDIS_URL": url}
    for args in (("ns", "create", "team"), ("-o", "json", "doctor"), ("doctor",)):
        proc = run.proc(*args, env=env)
        assert proc.returncode == 0, proc.stderr
        assert PASSWORD not in proc.stdout + proc.stderr
    assert "redis://default:***@127.0.0.1" in run.proc("doctor", env=env).stdout


@pytest.mark.parametrize("command", [("ns", "list"), ("doctor",), ("put", "t", "k", "1")])
def test_unreachable_redis(run, command):
    url = f"redis://user:{PASSWORD}@127.0.0.1:{free_port()}/0"
    env = {"SWARM_MEMORY_REDIS_URL": url, "SWARM_MEMORY_RETRY_ATTEMPTS": "2"}
    assert "connection refused" in _fails(run, 6, *command, env=env).lower()


def test_redaction():
    assert redact_url("redis://user:pw@host:6379/0") == "redis://user:***@host:6379/0"
    assert redact_url("redis://:pw@host/0") == "redis://:***@host/0"
    assert redact_url("rediss://user@host/0") == "rediss://user@host/0"
    assert redact_url("redis://host/0?password=pw&db=1") == "redis://host/0?password=***&db=1"
    text = "failed for redis://a:topsecret@h:1/0 (topsecret)\nsecond line"
    assert (
        scrub(text, "redis://a:topsecret@h:1/0")
        == "failed for redis://a:***@h:1/0 (***) second line"
    )

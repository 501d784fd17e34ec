"""Building a client from a URL: every failure is a SwarmMemoryError, no I/O needed to
find it, no password in it; async clients get redis-py's async retry object."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import warnings
from typing import Any

import pytest
import redis.asyncio.retry

from swarm_memory import AsyncSwarmMemory, InvalidInput, Settings, SwarmMemory
from swarm_memory.errors import InvalidURL

SECRET = "pw-never-shown"
CLIENTS = [pytest.param(SwarmMemory, id="sync"), pytest.param(AsyncSwarmMemory, id="async")]

BAD_URLS = [
    pytest.param("http://x", "scheme", id="http-scheme"),
    pytest.param(f"foo://u:{SECRET}@127.0.0.1:1/0", "scheme", id="mistyped-scheme"),
    pytest.param("redis//127.0.0.1:6379/0", "scheme", id="no-colon"),
    pytest.param(f"redis://u:{SECRET}@127.0.0.1:notaport/0", "port", id="port-not-a-number"),
    pytest.param("redis://127.0.0.1:99999/0", "port", id="port-out-of-range"),
    pytest.param(f"redis://u:{SECRET}@127.0.0.1:1/0?sockettimeout=3", "sockettimeout", id="query"),
]


@pytest.mark.parametrize("cls", CLIENTS)
@pytest.mark.parametrize(("url", "named"), BAD_URLS)
@pytest.mark.parametrize("cluster", [False, True], ids=["standalone", "cluster"])
def test_bad_url_is_an_invalid_url(cls: Any, url: str, named: str, cluster: bool) -> None:
    with pytest.raises(InvalidURL) as info:
        cls.from_url(url, agent="a", settings=Settings(cluster=cluster))
    err = info.value
    assert isinstance(err, InvalidInput) and err.field == "url"
    assert err.message.startswith("invalid Redis URL ")
    assert named in err.message.lower()
    assert SECRET not in err.message and SECRET not in str(err.value)


def test_async_client_gets_the_async_retry_and_no_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mem = AsyncSwarmMemory.from_url("redis://127.0.0.1:1", agent="a")
    retry = mem.redis.connection_pool.connection_kwargs["retry"]
    assert isinstance(retry, redis.asyncio.retry.Retry)
    assert retry._retries == 0  # tenacity is the one retry layer
    asyncio.run(mem.close())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # The async cluster client does not connect until its first command.
        cluster = AsyncSwarmMemory.from_url(
            "redis://127.0.0.1:1", agent="a", settings=Settings(cluster=True)
        )
    assert isinstance(cluster.redis.retry, redis.asyncio.retry.Retry)


def test_async_from_url_is_warning_free_in_a_fresh_interpreter() -> None:
    """The issue's own check: warnings as errors, a fresh process (no filters of ours)."""
    code = (
        "from swarm_memory import AsyncSwarmMemory; "
        "AsyncSwarmMemory.from_url('redis://127.0.0.1:1', agent='a')"
    )
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_settings_repr_and_str_hide_the_url_password():
    from swarm_memory import Settings

    s = Settings(redis_url="rediss://user:s3cret@h:6380/0?password=p4ss&ssl_ca_certs=/ca.pem")
    for shown in (repr(s), str(s), f"{s!r}"):
        assert "s3cret" not in shown and "p4ss" not in shown
        assert "user:***@h:6380" in shown and "ssl_ca_certs" in shown
    assert s.redis_url is not None and "s3cret" in s.redis_url  # the value itself is intact

"""Redis Sentinel is first-class: the ``redis+sentinel://`` URL on the sync and async
clients, and a failover under load with a lagging replica, with and without
``wait_replicas``.

The failover scenario (bounded: about 10 s each): a writer puts distinct keys through
the Sentinel URL; the replica is SIGSTOPped (it lags) while the writer goes on; the
primary is killed with SIGKILL and the replica resumed, so the Sentinels promote the
replica that missed the latest writes. Afterwards every acknowledged key is read back
from the new primary. Each run prints acknowledged / lost counts.

- ``wait_replicas=1``: a write is acknowledged only once the replica has it (WAIT on the
  same connection), so a lagging replica means NotReplicated, not an acknowledgement:
  **0 acknowledged writes lost**. (After the failover no replica is left, so writes
  reach the new primary but raise NotReplicated: the test requires that too.)
- ``wait_replicas=0`` (the control): writes acknowledged while the replica lagged are
  lost by the failover, as docs/guarantees.md says; the test requires that some were,
  which shows the scenario is able to lose writes at all.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from swarm_memory import (
    AsyncSwarmMemory,
    InvalidURL,
    NotReplicated,
    Settings,
    SwarmMemory,
    SwarmMemoryError,
)
from swarm_memory.keys import NamespaceKeys
from tests.servers import RedisSentinelGroup


@pytest.fixture
def group() -> Iterator[RedisSentinelGroup]:
    """A group of its own, for a test that fails its primary over."""
    with RedisSentinelGroup() as g:
        yield g


@pytest.fixture(scope="module")
def steady_group() -> Iterator[RedisSentinelGroup]:
    """One group for the tests that leave its topology as it was (each in a key prefix
    of its own): starting one, sentinels agreeing, takes ~7 s."""
    with RedisSentinelGroup() as g:
        yield g


def _settings(**kw: object) -> Settings:
    return Settings(
        key_prefix="st" + uuid.uuid4().hex[:8],
        socket_timeout=1.0,
        connect_timeout=1.0,
        retry_attempts=2,
        **kw,  # type: ignore[arg-type]
    )


def test_sentinel_url_sync_and_async(steady_group: RedisSentinelGroup):
    group = steady_group
    settings = _settings()
    mem = SwarmMemory.from_url(group.url, agent="a", settings=settings)
    try:
        mem.create_namespace("team")
        mem.namespace("team").put("k", {"v": 1})
    finally:
        mem.close()

    async def read() -> object:
        amem = AsyncSwarmMemory.from_url(group.url, agent="a", settings=settings)
        try:
            entry = await amem.namespace("team").get("k")
            # the script call went over the pipelined connection to the primary
            wire = amem._driver.pipe.wire  # type: ignore[union-attr]
            assert wire is not None and not wire.closed
            return None if entry is None else entry.value
        finally:
            await amem.close()

    import asyncio

    assert asyncio.run(read()) == {"v": 1}


def test_bad_sentinel_urls_are_refused_before_any_io():
    for url in (
        "redis+sentinel://127.0.0.1:26379",  # no service name
        "redis+sentinel://127.0.0.1:notaport/mymaster",
        "redis+sentinel://127.0.0.1/mymaster/x",
        "redis+sentinel://127.0.0.1/mymaster?bogus=1",
        "redis+sentinel://:s3cret@/mymaster",
    ):
        with pytest.raises(InvalidURL) as info:
            SwarmMemory.from_url(url, agent="a")
        assert "s3cret" not in str(info.value)
    with pytest.raises(InvalidURL):
        SwarmMemory.from_url(
            "redis+sentinel://127.0.0.1/mymaster", agent="a", settings=Settings(cluster=True)
        )


def test_sentinel_hosts_parse_ipv6_with_and_without_a_port():
    from swarm_memory._sentinel import DEFAULT_PORT, parse

    target = parse("redis+sentinel://[::1],[fe80::2]:26380,h:7/mymaster")
    assert target.hosts == [("::1", DEFAULT_PORT), ("fe80::2", 26380), ("h", 7)]
    for bad in ("redis+sentinel://[::1]x/m", "redis+sentinel://[::1]:/m", "redis+sentinel://[]/m"):
        with pytest.raises(InvalidURL):
            parse(bad)


# 8 KiB per write: a SIGSTOPped replica's socket buffer (about 128 KiB) fills within a few
# dozen writes, so the rest waits in the primary's output buffer and dies with it. With
# small values a slow (loaded) run could fit in the buffer and lose nothing.
PAD = "x" * 8192


class Writer(threading.Thread):
    """Puts k0, k1, ... through the Sentinel URL until stopped; records what was
    acknowledged and what failed (a failed write is simply not counted)."""

    def __init__(self, url: str, settings: Settings) -> None:
        super().__init__(name="sentinel-writer", daemon=True)
        self.mem = SwarmMemory.from_url(url, agent="w", settings=settings)
        self.mem.create_namespace("load")
        self.ns = self.mem.namespace("load")
        self.acked: list[int] = []
        self.failed = 0
        self.last_error: SwarmMemoryError | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            try:
                self.ns.put(f"k{i}", {"i": i, "pad": PAD})
                self.acked.append(i)
            except SwarmMemoryError as exc:
                self.failed += 1
                self.last_error = exc
                time.sleep(0.01)
            i += 1

    def acked_after(self, mark: int) -> int:
        return sum(1 for i in self.acked if i > mark)


@pytest.mark.parametrize("wait_replicas", [1, 0], ids=["wait_replicas=1", "no-wait"])
def test_failover_with_a_lagging_replica(group: RedisSentinelGroup, wait_replicas: int):
    settings = _settings(wait_replicas=wait_replicas, wait_timeout=0.3)
    writer = Writer(group.url, settings)
    old_port = group.primary_port()
    primary = group.server(old_port)
    replica = next(s for s in group.servers if s is not primary)
    writer.start()
    try:
        time.sleep(0.5)
        replica.pause()  # the replica lags from here on
        time.sleep(1.0)
        assert primary.process is not None
        os.kill(primary.process.pid, signal.SIGKILL)  # the primary dies with what it had
        replica.resume()
        new_primary = group.wait_for_new_primary(old_port)
        mark = writer.acked[-1] if writer.acked else -1
        failed_at_mark = writer.failed

        def served() -> bool:  # the new primary answers the writer
            if wait_replicas:  # no replica is left: WAIT can only fail, NotReplicated
                return writer.failed - failed_at_mark >= 5 and isinstance(
                    writer.last_error, NotReplicated
                )
            return writer.acked_after(mark) >= 20

        deadline = time.monotonic() + 20  # every Sentinel learns the new primary, then
        while not served() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert served(), f"the new primary did not serve the writer: {writer.last_error!r}"
    finally:
        writer.stop.set()
        writer.join(10)
        writer.mem.close()
    raw = new_primary.client()
    keys = NamespaceKeys.of(settings.key_prefix, "load")
    try:
        present = {i for i in writer.acked if raw.exists(keys.entry(f"k{i}"))}
    finally:
        raw.close()
    lost = len(writer.acked) - len(present)
    print(
        f"\nsentinel failover, wait_replicas={wait_replicas}: acknowledged "
        f"{len(writer.acked)}, lost {lost}, failed (not acknowledged) {writer.failed}; "
        f"last error: {writer.last_error!r}"
    )
    if wait_replicas:
        assert lost == 0
    else:
        assert lost > 0, "the control lost nothing: the scenario did not make the replica lag"


def test_the_cli_and_the_exporter_take_a_sentinel_url(steady_group: RedisSentinelGroup):
    group = steady_group
    from click.testing import CliRunner
    from prometheus_client import CollectorRegistry, generate_latest

    from swarm_memory.cli import cli
    from swarm_memory.exporter import SwarmCollector, make_client

    settings = _settings()
    env = {"SWARM_MEMORY_REDIS_URL": group.url, "SWARM_MEMORY_KEY_PREFIX": settings.key_prefix}
    runner = CliRunner()
    for args in (["ns", "create", "team"], ["put", "team", "k", '{"v": 1}']):
        result = runner.invoke(cli, args, env=env)
        assert result.exit_code == 0, result.output + result.stderr
    result = runner.invoke(cli, ["-o", "json", "get", "team", "k"], env=env)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["value"] == {"v": 1}
    client = make_client(settings, group.url)
    try:
        registry = CollectorRegistry()
        registry.register(SwarmCollector(client, prefix=settings.key_prefix))
        text = generate_latest(registry).decode()
    finally:
        client.close()
    assert 'swarm_memory_namespace_entries{namespace="team"} 1.0' in text
    assert "swarm_memory_redis_up 1.0" in text

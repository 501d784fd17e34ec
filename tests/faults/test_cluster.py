"""Redis Cluster under faults: WAIT-based durability, a failover to a lagging replica,
and a slot migration (reshard) under load. Each scenario is bounded (about 10 s) and
prints acknowledged / lost / failed counts.

- ``wait_replicas`` works on Cluster: the write and its WAIT go down one connection to
  the primary that owns the namespace's slot (a cluster client would send the keyless
  WAIT to some other node).
- Failover with the replica lagging (SIGSTOPped), then the primary SIGKILLed: with
  ``wait_replicas=1`` no acknowledged write is lost; without it (the control) the writes
  acknowledged while the replica lagged are lost.
- Reshard: the namespace's slot migrates to another primary key batch by key batch while
  a writer runs. Redis answers TRYAGAIN/ASK/MOVED meanwhile; the one retry layer retries
  them (the op id makes that safe), so writes slow down but none fails and none is lost.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
import redis
from redis.crc import key_slot

from swarm_memory import NotReplicated, Settings, SwarmMemory, SwarmMemoryError
from swarm_memory.keys import NamespaceKeys
from tests.servers import RedisCluster, RedisServer

NS = "load"


def _settings(**kw: object) -> Settings:
    return Settings(
        key_prefix="cf" + uuid.uuid4().hex[:8],
        cluster=True,
        socket_timeout=1.0,
        connect_timeout=1.0,
        **kw,  # type: ignore[arg-type]
    )


def _probe(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, decode_responses=True)


def _owner(cluster: RedisCluster, settings: Settings) -> tuple[int, RedisServer]:
    """(slot, primary server) of the test namespace."""
    slot = key_slot(NamespaceKeys.of(settings.key_prefix, NS).meta.encode())
    probe = _probe(cluster.ports[0])
    try:
        for start, end, primary, *_replicas in probe.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                port = int(primary[1])
                return slot, next(s for s in cluster.servers if s.port == port)
    finally:
        probe.close()
    raise AssertionError(f"slot {slot} has no owner")


def _replica_of(cluster: RedisCluster, primary: RedisServer) -> RedisServer:
    for server in cluster.servers:
        probe = _probe(server.port)
        try:
            info = probe.info("replication")
        finally:
            probe.close()
        if info.get("role") == "slave" and int(info.get("master_port", 0)) == primary.port:
            return server
    raise AssertionError(f"no replica of {primary.port}")


def _wait(ready: object, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ready():  # type: ignore[operator]
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"{what} not done after {timeout}s")


@pytest.fixture
def cluster6() -> Iterator[RedisCluster]:
    """Three primaries with a replica each; a dead primary fails over within ~1 s."""
    with RedisCluster(nodes=6, replicas=1, node_timeout_ms=1000) as cluster:
        yield cluster


# 8 KiB per write: a SIGSTOPped replica's socket buffer (about 128 KiB) fills within a few
# dozen writes, so the rest waits in the primary's output buffer and dies with it. With
# small values a slow (loaded) run could fit in the buffer and lose nothing.
PAD = "x" * 8192


class Writer(threading.Thread):
    def __init__(self, cluster: RedisCluster, settings: Settings) -> None:
        super().__init__(name="cluster-writer", daemon=True)
        self.mem = SwarmMemory.from_url(cluster.url, agent="w", settings=settings)
        self.mem.create_namespace(NS)
        self.ns = self.mem.namespace(NS)
        self.acked: list[int] = []
        self.errors: Counter[str] = Counter()
        self.slowest = 0.0  # seconds, the longest acknowledged write (retries included)
        self.failed = 0
        self.last_error: SwarmMemoryError | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                self.ns.put(f"k{i}", {"i": i, "pad": PAD})
                self.acked.append(i)
                self.slowest = max(self.slowest, time.monotonic() - started)
            except SwarmMemoryError as exc:
                self.failed += 1
                self.errors[type(exc).__name__] += 1
                self.last_error = exc
                time.sleep(0.01)
            i += 1

    def finish(self) -> None:
        self.stop.set()
        self.join(20)
        self.mem.close()

    def lost(self, cluster: RedisCluster, settings: Settings) -> int:
        client = cluster.client()
        keys = NamespaceKeys.of(settings.key_prefix, NS)
        try:
            return sum(1 for i in self.acked if not client.exists(keys.entry(f"k{i}")))
        finally:
            client.close()


def test_wait_replicas_on_cluster(cluster6: RedisCluster):
    settings = _settings(wait_replicas=1, wait_timeout=0.3)
    mem = SwarmMemory.from_url(cluster6.url, agent="a", settings=settings)
    try:
        mem.create_namespace(NS)
        ns = mem.namespace(NS)
        assert ns.put("k", 1).version == 1  # the replica acknowledged it
        _slot, primary = _owner(cluster6, settings)
        replica = _replica_of(cluster6, primary)
        replica.pause()
        try:
            with pytest.raises(NotReplicated) as info:
                ns.put("k", 2, op_id="op-2")
            assert info.value.acked == 0 and info.value.required == 1
        finally:
            replica.resume()
        entry = ns.get("k")
        assert entry is not None and entry.value == 2  # applied on the primary
    finally:
        mem.close()


@pytest.mark.parametrize("wait_replicas", [1, 0], ids=["wait_replicas=1", "no-wait"])
def test_cluster_failover_with_a_lagging_replica(cluster6: RedisCluster, wait_replicas: int):
    settings = _settings(wait_replicas=wait_replicas, wait_timeout=0.3, retry_attempts=4)
    writer = Writer(cluster6, settings)
    _slot, primary = _owner(cluster6, settings)
    replica = _replica_of(cluster6, primary)
    writer.start()
    try:
        time.sleep(0.5)
        replica.pause()
        time.sleep(1.0)
        assert primary.process is not None
        os.kill(primary.process.pid, signal.SIGKILL)
        replica.resume()

        def promoted() -> bool:
            probe = _probe(replica.port)
            try:
                return bool(probe.info("replication").get("role") == "master")
            finally:
                probe.close()

        _wait(promoted, "replica promotion")
        mark, failed_at_mark = (writer.acked[-1] if writer.acked else -1), writer.failed

        def served() -> bool:
            if wait_replicas:  # the new primary has no replica: WAIT can only fail
                return writer.failed - failed_at_mark >= 5 and isinstance(
                    writer.last_error, NotReplicated
                )
            return sum(1 for i in writer.acked if i > mark) >= 20

        _wait(served, f"writes against the new primary ({writer.errors})")
    finally:
        writer.finish()
    lost = writer.lost(cluster6, settings)
    print(
        f"\ncluster failover, wait_replicas={wait_replicas}: acknowledged {len(writer.acked)}, "
        f"lost {lost}, failed (not acknowledged) {writer.failed}"
    )
    if wait_replicas:
        assert lost == 0
    else:
        assert lost > 0, "the control lost nothing: the scenario did not make the replica lag"


def _migrate_slot(cluster: RedisCluster, slot: int, src: RedisServer, dst: RedisServer) -> int:
    """Move ``slot`` from ``src`` to ``dst`` the way redis-cli's reshard does, a few keys
    at a time with a pause between batches (so writes meet the migration). Returns the
    number of keys moved."""
    s, d = _probe(src.port), _probe(dst.port)
    moved = 0
    try:
        src_id, dst_id = s.execute_command("CLUSTER", "MYID"), d.execute_command("CLUSTER", "MYID")
        d.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        while keys := s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            s.execute_command("MIGRATE", "127.0.0.1", dst.port, "", 0, 5000, "KEYS", *keys)
            moved += len(keys)
            time.sleep(0.01)
        for server in cluster.servers:
            p = _probe(server.port)
            try:
                p.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
            finally:
                p.close()
    finally:
        s.close()
        d.close()
    return moved


def test_reshard_under_load():
    with RedisCluster() as cluster:
        settings = _settings(retry_attempts=12, retry_backoff=0.02, retry_backoff_max=0.2)
        writer = Writer(cluster, settings)
        slot, src = _owner(cluster, settings)
        dst = next(s for s in cluster.servers if s is not src)
        writer.start()
        try:
            time.sleep(0.5)
            started = time.monotonic()
            moved = _migrate_slot(cluster, slot, src, dst)
            window = time.monotonic() - started
            after = len(writer.acked)
            time.sleep(0.5)
        finally:
            writer.finish()
        assert _owner(cluster, settings)[1] is dst
        lost = writer.lost(cluster, settings)
        print(
            f"\nreshard of slot {slot} ({moved} keys in {window:.2f} s) under load: "
            f"acknowledged {len(writer.acked)}, lost {lost}, failed {writer.failed} "
            f"{dict(writer.errors)}; slowest acknowledged write {writer.slowest:.2f} s"
        )
        assert lost == 0 and writer.failed == 0
        # Multi-key scripts meet TRYAGAIN while the slot's keys are split between the two
        # nodes: the writes in flight then waited (retried) through the migration.
        assert writer.slowest >= window / 2 and len(writer.acked) > after

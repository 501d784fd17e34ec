"""WAIT-based durability (DESIGN.md decision 10), on a real primary + replica."""

from __future__ import annotations

import time
import uuid

import pytest

from swarm_memory import NotReplicated, OpIdReused, Settings, SwarmMemory
from swarm_memory._ops.args import handed_out
from tests.servers import RedisServer


@pytest.fixture(scope="module")
def primary_and_replica():
    with (
        RedisServer() as primary,
        RedisServer(["--replicaof", "127.0.0.1", str(primary.port)]) as replica,
    ):
        client = replica.client()
        deadline = time.monotonic() + 15
        while client.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "replica never connected"
            time.sleep(0.05)
        yield primary, replica


def test_write_waits_for_the_replica(primary_and_replica):
    primary, replica = primary_and_replica
    settings = Settings(key_prefix="t" + uuid.uuid4().hex[:8], wait_replicas=1, wait_timeout=2)
    with SwarmMemory.from_url(primary.url, agent="a", settings=settings) as mem:
        mem.create_namespace("d")
        e = mem.namespace("d").put("k", {"v": 1})
    # Acknowledged by the replica before put() returned: it is there, no polling needed.
    entry_key = f"{settings.key_prefix}:{{d}}:e:k"
    meta = replica.client().hget(entry_key, "m")  # packed: the version first
    assert meta is not None and meta.split(b" ")[0] == b"1" and e.version == 1


def test_too_few_replicas_raises_not_replicated_but_write_is_applied(primary_and_replica):
    primary, replica = primary_and_replica
    settings = Settings(key_prefix="t" + uuid.uuid4().hex[:8], wait_replicas=1, wait_timeout=0.3)
    with SwarmMemory.from_url(primary.url, agent="a", settings=settings) as mem:
        mem.create_namespace("d")
        ns = mem.namespace("d")
        replica.pause()
        try:
            with pytest.raises(NotReplicated) as exc:
                ns.put("k", 1, op_id="op-1")
        finally:
            replica.resume()
        assert (exc.value.required, exc.value.acked, exc.value.op_id) == (1, 0, "op-1")
        stored = ns.get("k")
        assert stored is not None and stored.value == 1  # applied on the primary
        again = ns.put("k", 1, op_id="op-1")  # replay: deduped, and now replicated
        stored = ns.get("k")
        assert again.version == 1 and stored is not None and stored.version == 1
        # Under an op id the client made (sent without a request digest), the error
        # gives it out with its request's digest: the replay answers the first outcome,
        # another request under it is refused.
        replica.pause()
        try:
            with pytest.raises(NotReplicated) as exc:
                ns.put("g", 1)
        finally:
            replica.resume()
        assert handed_out(exc.value.op_id) is not None
        assert ns.put("g", 1, op_id=exc.value.op_id).version == 1
        with pytest.raises(OpIdReused):
            ns.put("g", 2, op_id=exc.value.op_id)
        stored = ns.get("g")
        assert stored is not None and stored.version == 1

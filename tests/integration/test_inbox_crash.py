"""A consumer process killed mid-batch loses nothing: another consumer of the same agent
gets every message it had not acknowledged, and handlers that dedupe by message id
apply each message's side effect exactly once (real redis-server, SIGKILL)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import uuid
from typing import Any

import pytest

from swarm_memory import ConflictError, Message, Namespace, Settings, SwarmMemory
from tests.servers import RedisServer

pytestmark = pytest.mark.slow

CTX = multiprocessing.get_context("spawn")
N = 200
BATCH = 50
ACKED_BEFORE_KILL = 70
NS = "effects"


def handle(ns: Namespace, msg: Message) -> bool:
    """The side effect of a message, deduped by its id: the ``done:<id>`` entry is created
    once; a redelivered message finds it and does nothing. True if it applied."""
    ns.incr(f"runs:{msg.id}")  # how often a handler ran for it (at least once)
    try:
        ns.create(f"done:{msg.id}", msg.body)
    except ConflictError:
        return False
    return True


def _doomed_consumer(url: str, prefix: str, progress: Any) -> None:
    """Handle and acknowledge messages one by one; report progress; get killed."""
    mem = SwarmMemory.from_url(url, agent="worker", settings=Settings(key_prefix=prefix))
    ns = mem.namespace(NS)
    inbox = mem.inbox(consumer="doomed", idle=60.0, batch=BATCH)
    for acked, msg in enumerate(inbox):
        handle(ns, msg)
        if acked == ACKED_BEFORE_KILL:
            # Side effect applied, not acknowledged: redelivery must not apply it twice.
            progress.set()
            signal.pause()
        inbox.ack(msg)


def test_killed_consumer_mid_batch_loses_nothing_and_effects_apply_once(
    redis_server: RedisServer,
) -> None:
    prefix = "t" + uuid.uuid4().hex[:12]
    settings = Settings(key_prefix=prefix)
    sender = SwarmMemory.from_url(redis_server.url, agent="boss", settings=settings)
    worker = SwarmMemory.from_url(redis_server.url, agent="worker", settings=settings)
    try:
        sender.create_namespace(NS, default_permission="write")
        sent = [sender.send("worker", {"task": i}).id for i in range(N)]

        progress = CTX.Event()
        child = CTX.Process(target=_doomed_consumer, args=(redis_server.url, prefix, progress))
        child.start()
        try:
            assert progress.wait(60), "the consumer process made no progress"
        finally:
            if child.pid is not None and child.is_alive():
                os.kill(child.pid, signal.SIGKILL)
            child.join(10)
        assert child.exitcode == -signal.SIGKILL

        # Acknowledged messages are deleted: what is left is exactly what the dead
        # consumer had not acknowledged (its unfinished batch) plus what it never read.
        raw = worker.redis
        stream = f"{prefix}:{{@inbox:worker}}:stream"
        unacked = [i.decode() for i, _ in raw.xrange(stream)]
        assert len(unacked) == N - ACKED_BEFORE_KILL
        pending = raw.xpending(stream, "agent")
        assert pending["pending"] > 1  # killed in the middle of a batch

        survivor = worker.inbox(consumer="survivor", idle=0.3, batch=BATCH)
        ns = worker.namespace(NS)
        received: list[Message] = []
        applied = 0
        while len(received) < len(unacked):
            msg = survivor.receive(10.0)
            assert msg is not None, f"only {len(received)} of {len(unacked)} redelivered"
            received.append(msg)
            applied += handle(ns, msg)
            survivor.ack(msg)
        assert survivor.receive(0) is None  # and nothing more
        ids = [m.id for m in received]
        assert sorted(ids) == sorted(unacked) and len(set(ids)) == len(ids)
        assert [m.id for m in received if m.deliveries > 1] == unacked[: pending["pending"]]
        assert applied == N - ACKED_BEFORE_KILL - 1  # the one in flight was done already

        done = sorted(k.removeprefix("done:") for k in ns.keys("done:*"))
        assert done == sorted(sent)  # every message's effect, exactly once
        runs = ns.get_many([f"runs:{i}" for i in sent])
        counts = [e.value for e in runs.values() if e is not None]
        assert len(counts) == N and sum(counts) == N + 1  # one message ran twice
        assert raw.xlen(stream) == 0
        assert raw.xpending(stream, "agent")["pending"] == 0
    finally:
        sender.close()
        worker.close()

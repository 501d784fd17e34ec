"""Exactly-once writes under lost replies, against a real redis-server (DESIGN.md decision 6).

A :class:`~tests.faultproxy.FaultProxy` sits between the client and the server: the
write reaches Redis and runs, but its reply is swallowed and the connection cut. The one
retry layer (tenacity) must resend it with the same op id, and the write script must
answer with the first outcome instead of applying the write again. Every test then looks
at the server directly (a raw client on the real port, never through the proxy): the
entry's version, the namespace revision, the events stream and the stats counters must
all show exactly one application.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

from swarm_memory import (
    AsyncSwarmMemory,
    OpIdReused,
    OutcomeUnknown,
    Settings,
    SwarmMemory,
    TransportError,
)
from swarm_memory._ops.args import handed_out
from swarm_memory.keys import NamespaceKeys
from tests.faultproxy import FaultProxy
from tests.servers import RedisServer

NS = "team"
SOCKET_TIMEOUT = 1.0
# The command a script call goes out as on a real server (Settings.script_mode "auto":
# the Functions library); "EVALSHA" with script_mode="eval".
SCRIPT_CALL = "FCALL"
OPS = ["put", "incr", "put_many", "delete", "update"]


# ---------------------------------------------------------------------------- helpers
def _prefix() -> str:
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def proxy(redis_server: RedisServer) -> Iterator[FaultProxy]:
    with FaultProxy(redis_server.host, redis_server.port) as p:
        yield p


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A plain client on the real server port (not through the proxy), for assertions."""
    client = redis_server.client()
    yield client
    client.close()


class Server:
    """What the server holds for one namespace, read with a raw client."""

    def __init__(self, raw: redis.Redis, prefix: str, namespace: str = NS) -> None:
        self.raw = raw
        self.keys = NamespaceKeys.of(prefix, namespace)

    def revision(self) -> int:
        return int(self.raw.hget(self.keys.meta, "rev") or 0)

    def entry(self, key: str) -> dict[bytes, bytes]:
        return self.raw.hgetall(self.keys.entry(key))

    def version(self, key: str) -> int:
        """The stored version: the first of the packed metadata (lua/_lib.lua)."""
        return int(self.entry(key)[b"m"].split(b" ")[0])

    def events(self) -> list[dict[bytes, bytes]]:
        return [fields for _id, fields in self.raw.xrange(self.keys.events)]

    def stats(self) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.raw.hgetall(self.keys.stats).items()}

    def op_records(self) -> int:
        return int(self.raw.hlen(self.keys.ops))


def _settings(prefix: str, **kw: Any) -> Settings:
    return Settings(key_prefix=prefix, socket_timeout=SOCKET_TIMEOUT, **kw)


def _warm_up(mem: SwarmMemory) -> None:
    """Load the scripts on the server (so the write goes out as one FCALL, never after a
    FUNCTION LOAD) and open the connection (so CLIENT SETINFO is behind us).
    Uses its own namespace: the one under test starts from a clean slate."""
    mem.create_namespace("warm")
    w = mem.namespace("warm")
    w.put("w", 0)
    w.get("w")


async def _awarm_up(mem: AsyncSwarmMemory) -> None:
    await mem.create_namespace("warm")
    w = mem.namespace("warm")
    await w.put("w", 0)
    await w.get("w")


def _setup(ns: Any, op: str) -> None:
    """State an op needs before the faulty call (sync handle)."""
    if op == "delete":
        ns.put("k", 1)


async def _asetup(ns: Any, op: str) -> None:
    if op == "delete":
        await ns.put("k", 1)


def _arm(proxy: FaultProxy, op: str, op_id: str) -> None:
    """Swallow the reply of the write script call.

    ``update`` reads before it writes, and the read is an FCALL too: match the op id
    (a bulk-string argument only the write carries) so the write's reply is the one lost.
    """
    proxy.drop_next_reply(op_id if op == "update" else SCRIPT_CALL)


def _act(ns: Any, op: str, op_id: str | None) -> Any:
    if op == "put":
        return ns.put("k", 1, op_id=op_id)
    if op == "incr":
        return ns.incr("k", op_id=op_id)
    if op == "put_many":
        return ns.put_many({"k": 1, "k2": 2}, op_id=op_id)
    if op == "delete":
        return ns.delete("k", op_id=op_id)
    if op == "update":
        return ns.update("k", lambda v: (v or 0) + 1, op_id=op_id)
    raise AssertionError(op)


def _act_other(ns: Any, op: str, op_id: str) -> Any:
    """A request other than ``_act``'s under the same op id."""
    if op == "put":
        return ns.put("k", 2, op_id=op_id)
    if op == "incr":
        return ns.incr("k", 2, op_id=op_id)
    if op == "put_many":
        return ns.put_many({"k": 1}, op_id=op_id)
    if op == "delete":
        return ns.delete("k2", op_id=op_id)
    raise AssertionError(op)


async def _aact(ns: Any, op: str, op_id: str) -> Any:
    if op == "put":
        return await ns.put("k", 1, op_id=op_id)
    if op == "incr":
        return await ns.incr("k", op_id=op_id)
    if op == "put_many":
        return await ns.put_many({"k": 1, "k2": 2}, op_id=op_id)
    if op == "delete":
        return await ns.delete("k", op_id=op_id)
    if op == "update":
        return await ns.update("k", lambda v: (v or 0) + 1, op_id=op_id)
    raise AssertionError(op)


def _check_result(op: str, result: Any) -> None:
    """The call returned the outcome of the one application."""
    if op in ("put", "update"):
        assert (result.key, result.value, result.version) == ("k", 1, 1)
    elif op == "incr":
        assert result == 1  # 2 would mean the increment ran twice
    elif op == "put_many":
        assert {k: (e.value, e.version) for k, e in result.items()} == {"k": (1, 1), "k2": (2, 1)}
        assert result["k"].mod_revision == result["k2"].mod_revision
    elif op == "delete":
        assert result is True  # False would mean a second delete found nothing
    else:
        raise AssertionError(op)


def _check_applied_once(
    srv: Server,
    op: str,
    rev_before: int,
    events_before: list[dict[bytes, bytes]],
    setup_puts: int = 0,
) -> None:
    """The server shows exactly one application of ``op``."""
    assert srv.revision() == rev_before + 1, "the namespace revision must advance by one"
    new = srv.events()[len(events_before) :]
    kinds = [(ev[b"t"], ev[b"k"], int(ev[b"v"])) for ev in new]
    if op == "put_many":
        assert sorted(kinds) == [(b"put", b"k", 1), (b"put", b"k2", 1)]
        assert srv.version("k2") == 1 and srv.entry("k2")[b"v"] == b"2"
    elif op == "delete":
        assert kinds == [(b"delete", b"k", 1)]
        assert srv.entry("k") == {}
    else:
        assert kinds == [(b"put", b"k", 1)]
    if op != "delete":
        entry = srv.entry("k")
        assert srv.version("k") == 1
        assert entry[b"v"] == b"1"  # incr/update: 1, never 2
    if op == "delete":
        setup_puts += 1  # _setup's put
    expected_stats = {op: 1} if not setup_puts else {"put": setup_puts, op: 1}
    assert srv.stats() == expected_stats


# --------------------------------------------------------------- lost reply, retried
@pytest.mark.parametrize("op", OPS)
def test_lost_reply_is_retried_and_applied_once(
    op: str, proxy: FaultProxy, raw: redis.Redis
) -> None:
    prefix = _prefix()
    mem = SwarmMemory.from_url(proxy.url, agent="a", settings=_settings(prefix))
    try:
        _warm_up(mem)
        mem.create_namespace(NS)
        ns = mem.namespace(NS)
        _setup(ns, op)
        srv = Server(raw, prefix)
        rev_before, events_before = srv.revision(), srv.events()
        op_id = f"op-{op}-{uuid.uuid4().hex}"

        _arm(proxy, op, op_id)
        result = _act(ns, op, op_id)

        assert proxy.dropped == 1, "the proxy must really have swallowed a reply"
        _check_result(op, result)
        _check_applied_once(srv, op, rev_before, events_before)
        assert ns.stats()[op] == 1
        assert raw.hexists(srv.keys.ops, op_id), "the op id's outcome is recorded"
    finally:
        mem.close()


@pytest.mark.parametrize("op", OPS)
async def test_lost_reply_is_retried_and_applied_once_async(
    op: str, proxy: FaultProxy, raw: redis.Redis
) -> None:
    prefix = _prefix()
    mem = AsyncSwarmMemory.from_url(proxy.url, agent="a", settings=_settings(prefix))
    try:
        await _awarm_up(mem)
        await mem.create_namespace(NS)
        ns = mem.namespace(NS)
        await _asetup(ns, op)
        srv = Server(raw, prefix)
        rev_before, events_before = srv.revision(), srv.events()
        op_id = f"op-{op}-{uuid.uuid4().hex}"

        _arm(proxy, op, op_id)
        result = await _aact(ns, op, op_id)

        assert proxy.dropped == 1, "the proxy must really have swallowed a reply"
        _check_result(op, result)
        _check_applied_once(srv, op, rev_before, events_before)
        assert (await ns.stats())[op] == 1
    finally:
        await mem.close()


def test_generated_op_id_survives_a_lost_reply(proxy: FaultProxy, raw: redis.Redis) -> None:
    """No op id from the caller: the generated one must be reused by the retry."""
    prefix = _prefix()
    mem = SwarmMemory.from_url(proxy.url, agent="a", settings=_settings(prefix))
    try:
        _warm_up(mem)
        mem.create_namespace(NS)
        ns = mem.namespace(NS)
        srv = Server(raw, prefix)
        rev_before, events_before = srv.revision(), srv.events()
        proxy.drop_next_reply(SCRIPT_CALL)
        assert ns.incr("k") == 1
        assert proxy.dropped == 1
        _check_applied_once(srv, "incr", rev_before, events_before)
        assert srv.op_records() == 1  # one op id, recorded once
    finally:
        mem.close()


# ------------------------------------------------------------------ paused server
def test_write_in_flight_while_server_paused_is_applied_once() -> None:
    """The server stops answering (SIGSTOP) longer than socket_timeout while an incr is
    in flight: the first attempt times out but stays queued in the server's socket
    buffer, and the retry lands next to it once the server resumes. Exactly one
    increment may come out of it."""
    prefix = _prefix()
    with RedisServer() as server:
        raw = server.client()
        mem = SwarmMemory.from_url(server.url, agent="a", settings=_settings(prefix))
        try:
            mem.create_namespace(NS)
            ns = mem.namespace(NS)
            ns.put("warm", 0)  # scripts cached, connection open
            srv = Server(raw, prefix)
            rev_before, events_before = srv.revision(), srv.events()

            outcome: dict[str, Any] = {}

            def write() -> None:
                started = time.monotonic()
                try:
                    outcome["result"] = ns.incr("k")
                except BaseException as exc:
                    outcome["error"] = exc
                outcome["elapsed"] = time.monotonic() - started

            server.pause()
            try:
                worker = threading.Thread(target=write, daemon=True)
                worker.start()
                time.sleep(1.5 * SOCKET_TIMEOUT)
                assert worker.is_alive(), "the write cannot finish while the server is stopped"
            finally:
                server.resume()
            worker.join(timeout=30)
            assert not worker.is_alive()

            assert "error" not in outcome, f"write failed: {outcome.get('error')!r}"
            assert outcome["result"] == 1
            assert outcome["elapsed"] >= 1.4 * SOCKET_TIMEOUT  # it really spanned the pause
            _check_applied_once(srv, "incr", rev_before, events_before, setup_puts=1)
        finally:
            mem.close()
            raw.close()


# ------------------------------------------------------------------ OutcomeUnknown
@pytest.mark.parametrize("op", ["put", "incr", "put_many", "delete"])
def test_outcome_unknown_then_replay_returns_first_outcome(
    op: str, proxy: FaultProxy, raw: redis.Redis
) -> None:
    """retry_attempts=1: the lost reply cannot be retried, so the caller learns that the
    outcome is unknown, with the op id; replaying that op id returns the first outcome.

    This is also the behavioural proof that from_url turned redis-py's own retries off:
    with them on, redis-py would resend the script on a new connection and the call
    would return normally instead of raising OutcomeUnknown.
    """
    prefix = _prefix()
    mem = SwarmMemory.from_url(proxy.url, agent="a", settings=_settings(prefix, retry_attempts=1))
    try:
        _warm_up(mem)
        mem.create_namespace(NS)
        ns = mem.namespace(NS)
        _setup(ns, op)
        srv = Server(raw, prefix)
        rev_before, events_before = srv.revision(), srv.events()
        accepted = proxy.connections_accepted

        proxy.drop_next_reply(SCRIPT_CALL)
        with pytest.raises(OutcomeUnknown) as info:
            _act(ns, op, None)
        err = info.value
        assert proxy.dropped == 1
        assert isinstance(err.op_id, str) and err.op_id
        assert err.op_id in err.message
        assert proxy.connections_accepted == accepted, (
            "nothing reconnected to resend the write: redis-py's own retries are off"
        )
        # Redis ran the write before its reply was lost.
        _check_applied_once(srv, op, rev_before, events_before)

        replay = _act(ns, op, err.op_id)
        _check_result(op, replay)
        _check_applied_once(srv, op, rev_before, events_before)  # still exactly once
        assert ns.stats()[op] == 1
        # The op id the client made goes out with its request's digest (the write sent
        # none: _ops/entries.py, write), so another request under it is refused.
        assert handed_out(err.op_id) is not None
        with pytest.raises(OpIdReused):
            _act_other(ns, op, err.op_id)
        _check_applied_once(srv, op, rev_before, events_before)
    finally:
        mem.close()


async def test_outcome_unknown_then_replay_returns_first_outcome_async(
    proxy: FaultProxy, raw: redis.Redis
) -> None:
    prefix = _prefix()
    mem = AsyncSwarmMemory.from_url(
        proxy.url, agent="a", settings=_settings(prefix, retry_attempts=1)
    )
    try:
        await _awarm_up(mem)
        await mem.create_namespace(NS)
        ns = mem.namespace(NS)
        srv = Server(raw, prefix)
        rev_before, events_before = srv.revision(), srv.events()
        accepted = proxy.connections_accepted

        proxy.drop_next_reply(SCRIPT_CALL)
        with pytest.raises(OutcomeUnknown) as info:
            await ns.incr("k")
        assert proxy.dropped == 1
        assert proxy.connections_accepted == accepted
        _check_applied_once(srv, "incr", rev_before, events_before)

        assert await ns.incr("k", op_id=info.value.op_id) == 1
        _check_applied_once(srv, "incr", rev_before, events_before)
    finally:
        await mem.close()


def test_control_redis_py_retries_on_hide_the_lost_reply(
    proxy: FaultProxy, raw: redis.Redis
) -> None:
    """Control for the test above: the same lost reply through a client whose redis-py
    retries are ON is resent behind our back (same op id, so still applied once) and
    no OutcomeUnknown is raised. So OutcomeUnknown there really shows they are off."""
    prefix = _prefix()
    client = redis.Redis(
        host=proxy.host, port=proxy.port, socket_timeout=SOCKET_TIMEOUT, retry=Retry(NoBackoff(), 3)
    )
    mem = SwarmMemory.from_client(client, agent="a", settings=_settings(prefix, retry_attempts=1))
    try:
        _warm_up(mem)
        mem.create_namespace(NS)
        ns = mem.namespace(NS)
        srv = Server(raw, prefix)
        rev_before, events_before = srv.revision(), srv.events()
        proxy.drop_next_reply(SCRIPT_CALL)
        assert ns.incr("k") == 1
        assert proxy.dropped == 1
        _check_applied_once(srv, "incr", rev_before, events_before)
    finally:
        client.close()


async def test_from_url_turns_redis_py_retries_off(redis_server: RedisServer) -> None:
    settings = Settings(key_prefix=_prefix())
    mem = SwarmMemory.from_url(redis_server.url, agent="a", settings=settings)
    amem = AsyncSwarmMemory.from_url(redis_server.url, agent="a", settings=settings)
    try:
        assert isinstance(mem.redis, redis.Redis)
        assert isinstance(amem.redis, redis.asyncio.Redis)
        for client in (mem.redis, amem.redis):
            retry = client.connection_pool.connection_kwargs["retry"]
            assert retry.get_retries() == 0
        mem.create_namespace(NS)
        await amem.namespace(NS).put("k", 1)
        # The connections actually in use carry that policy too.
        sync_conn = mem.redis.connection_pool.get_connection()
        try:
            assert sync_conn.retry.get_retries() == 0
        finally:
            mem.redis.connection_pool.release(sync_conn)
        async_conn = await amem.redis.connection_pool.get_connection()
        try:
            assert async_conn.retry.get_retries() == 0
        finally:
            await amem.redis.connection_pool.release(async_conn)
    finally:
        mem.close()
        await amem.close()


# ------------------------------------------------------------------ replayed op ids
def test_replayed_op_id_returns_the_first_outcome(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    """No faults: the caller deliberately sends one op id twice (same request: the first
    outcome both times), then with a different value: refused with OpIdReused, never an
    Entry describing a state that did not exist."""
    prefix = _prefix()
    mem = SwarmMemory.from_url(redis_server.url, agent="a", settings=Settings(key_prefix=prefix))
    try:
        mem.create_namespace(NS)
        ns = mem.namespace(NS)
        srv = Server(raw, prefix)
        rev_before, events_before = srv.revision(), srv.events()

        first = ns.put("k", 1, op_id="x")
        second = ns.put("k", 1, op_id="x")
        with pytest.raises(OpIdReused) as exc:
            ns.put("k", 2, op_id="x")
        assert exc.value.op_id == "x" and exc.value.key == "k"
        with pytest.raises(OpIdReused):
            ns.put("other", 1, op_id="x")  # another key is another request too

        assert first.version == second.version == 1
        assert first.mod_revision == second.mod_revision == rev_before + 1
        assert first.updated_at == second.updated_at
        assert second.value == 1
        _check_applied_once(srv, "put", rev_before, events_before)  # value in Redis stays 1
        current = ns.get("k")
        assert current is not None and (current.value, current.version) == (1, 1)
        assert ns.get("other") is None
    finally:
        mem.close()


def test_replayed_update_reports_the_value_it_wrote(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    """update() with a caller-chosen op id, replayed after its effect landed: the replay's
    fn sees the new state and computes something else, but the answer is the first
    outcome, value included (CAS loops have the written value echoed into the record)."""
    prefix = _prefix()
    mem = SwarmMemory.from_url(redis_server.url, agent="a", settings=Settings(key_prefix=prefix))
    try:
        mem.create_namespace(NS)
        ns = mem.namespace(NS)
        ns.put("n", 10)
        first = ns.update("n", lambda v: v + 1, op_id="u1")
        replay = ns.update("n", lambda v: v + 1, op_id="u1")
        assert (first.value, first.version) == (11, 2)
        assert (replay.value, replay.version, replay.mod_revision) == (
            11,
            2,
            first.mod_revision,
        )
        n = ns.get("n")
        assert n is not None and n.value == 11
    finally:
        mem.close()


# ------------------------------------------------------- never sent: not OutcomeUnknown
def test_refused_connection_is_unreachable_not_outcome_unknown() -> None:
    """Nothing listens on the port: no byte of the write can have reached a server, so
    the write was not applied — TransportError ("not sent"), never OutcomeUnknown."""
    from tests.servers import free_port

    url = f"redis://127.0.0.1:{free_port()}"
    mem = SwarmMemory.from_url(url, agent="a", settings=_settings(_prefix(), retry_attempts=2))
    try:
        with pytest.raises(TransportError) as info:
            mem.namespace(NS).put("k", 1, op_id="never-sent")
        assert not isinstance(info.value, OutcomeUnknown)
        assert "not sent" in info.value.message
    finally:
        mem.close()


async def test_refused_connection_is_unreachable_not_outcome_unknown_async() -> None:
    from tests.servers import free_port

    url = f"redis://127.0.0.1:{free_port()}"
    mem = AsyncSwarmMemory.from_url(url, agent="a", settings=_settings(_prefix()))
    try:
        with pytest.raises(TransportError) as info:
            await mem.namespace(NS).incr("k")
        assert not isinstance(info.value, OutcomeUnknown)
    finally:
        await mem.close()


def test_sent_then_refused_stays_outcome_unknown(proxy: FaultProxy, raw: redis.Redis) -> None:
    """The first attempt reached Redis (its reply was lost), the retries found the port
    closed: the first one may have applied, so the outcome stays unknown."""
    prefix = _prefix()
    mem = SwarmMemory.from_url(proxy.url, agent="a", settings=_settings(prefix, retry_attempts=3))
    try:
        _warm_up(mem)
        mem.create_namespace(NS)
        ns = mem.namespace(NS)
        proxy.stop_listening()  # the pooled connection stays; reconnects are refused
        proxy.drop_next_reply(SCRIPT_CALL)  # the write reaches Redis, its reply is lost
        with pytest.raises(OutcomeUnknown):
            ns.put("k", 1)
        assert proxy.dropped == 1
        assert raw.exists(NamespaceKeys.of(prefix, NS).entry("k"))  # it was applied
    finally:
        mem.close()

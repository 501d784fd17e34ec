"""AsyncDriver: performs the effects flows yield against a redis.asyncio client.

What the sync and async drivers share (error mapping, the retry policy, WAIT, the
script observers) lives in ``_drive.py``; this is only the I/O.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio
import redis.exceptions as rexc
from redis.asyncio.observability import recorder as _recorder
from redis.asyncio.observability.recorder import record_error_count, record_operation_duration
from redis.asyncio.retry import Retry as NoRetry
from redis.backoff import NoBackoff
from tenacity import AsyncRetrying, stop_after_attempt

from swarm_memory import errors
from swarm_memory._drive import (
    AUTH_PROBE,
    RETRYABLE,
    Attempts,
    DriverBase,
    auth_probe_args,
    call_name,
    cannot_fcall,
    direct_pool,
    eviction_policy_error,
    final_error,
    is_denial,
    lacks_read_only_scripts,
    located,
    pack,
    recording_off,
    refused_by_acl,
    wire_args,
)
from swarm_memory._held import AsyncHeldConnections
from swarm_memory._ops.effects import (
    CallUser,
    Command,
    Flow,
    Listen,
    ScriptCall,
    Sleep,
    Unlisten,
    WaitBell,
)
from swarm_memory._pipeline import AsyncScriptPipe
from swarm_memory._synchronization import acall_user, asleep
from swarm_memory.metrics import outcome_of
from swarm_memory.scripts import library
from swarm_memory.settings import Settings

T = TypeVar("T")

# The doorbell effects, made once (``Listen | WaitBell | Unlisten`` in an isinstance made a
# new union type at every effect the flow loop looked at).
_BELL_EFFECTS = (Listen, WaitBell, Unlisten)

# redis-py's observability known off: its recording helpers would return at once, and
# their arguments (the connection's address, its db as text) cost ~0.4 µs a call.
_recording_off = recording_off(_recorder)


class AsyncDriver(DriverBase):
    """Runs flows against a redis.asyncio client (standalone or cluster)."""

    def __init__(
        self, client: redis.asyncio.Redis | redis.asyncio.RedisCluster, settings: Settings
    ) -> None:
        super().__init__(settings)
        self.client = client
        self.is_cluster = "Cluster" in type(client).__name__
        # The pool script calls take connections from directly (None: execute_command).
        self.direct = direct_pool(client)
        # Script calls pipelined over one connection where that is equivalent (_pipeline).
        self.pipe = AsyncScriptPipe.open(self.direct, settings)
        # The direct path's connections (sync: kept checked out between calls, _held).
        self.held = AsyncHeldConnections.of(self.direct) if self.direct is not None else None

    async def run(self, flow: Flow[T]) -> T:
        # With metrics on, the flow is timed here and its outcome counted: a wrapping
        # generator cost ~0.8 µs a call, on every effect the flow yields.
        metrics = self.metrics
        start = time.perf_counter() if metrics is not None else 0.0
        send: Any = None
        throw: BaseException | None = None
        bells: list[Any] = []  # pub/sub handles the flow opened (Listen): closed at the end
        try:
            while True:
                try:
                    effect = flow.throw(throw) if throw is not None else flow.send(send)
                except StopIteration as stop:
                    result: T = stop.value
                    break
                send, throw = None, None
                if isinstance(effect, CallUser):
                    try:
                        send = await acall_user(effect.fn)
                    except Exception as exc:
                        throw = exc
                    continue
                try:
                    if isinstance(effect, _BELL_EFFECTS):
                        send = await self._bell(effect, bells)
                    else:
                        send = await self.perform(effect)
                except errors.SwarmMemoryError as exc:
                    throw = exc
        except BaseException as exc:
            if metrics is not None:
                op = getattr(flow, "__name__", "flow")
                metrics.observe_operation(op, outcome_of(exc), time.perf_counter() - start, exc)
            raise
        finally:
            for handle in bells:
                with contextlib.suppress(Exception):
                    await handle.aclose()
        if metrics is not None:
            metrics.observe_ok(getattr(flow, "__name__", "flow"), time.perf_counter() - start)
        return result

    async def _bell(self, effect: Listen | WaitBell | Unlisten, bells: list[Any]) -> Any:
        """Lock doorbells: a private pub/sub connection per waiting flow. Failures only
        turn the wait into a sleep: the flow polls, the doorbell is a hint."""
        if isinstance(effect, Listen):
            handle = self.client.pubsub()
            bells.append(handle)
            # On failure the waits below just sleep; the flow's attempts still poll.
            with contextlib.suppress(rexc.RedisError):
                await handle.ssubscribe(effect.channel)
            return handle
        if isinstance(effect, Unlisten):
            if effect.handle in bells:
                bells.remove(effect.handle)
            with contextlib.suppress(Exception):
                await effect.handle.aclose()
            return None
        handle = effect.handle
        # Cluster pub/sub reads per shard; a standalone asyncio PubSub has no such method.
        read = getattr(handle, "get_sharded_message", handle.get_message)
        deadline = time.monotonic() + effect.seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = await read(ignore_subscribe_messages=True, timeout=left)
            except (rexc.RedisError, OSError, RuntimeError):
                await asleep(max(left, 0))
                return False
            if msg is not None and msg.get("data") == effect.message:
                return True
        return False

    async def _check_eviction_policy(self) -> None:
        """Once per client, before its first write: refuse a server that may evict any
        key. A server that hides CONFIG (a managed Redis, an ACL) is not refused."""
        # On a Cluster, every primary: a namespace's slot may sit on (or move to) any one.
        where = {"target_nodes": "primaries"} if self.is_cluster else {}
        try:
            reply = await self.client.config_get("maxmemory-policy", **where)
        except (rexc.RedisError, rexc.RedisClusterException):
            reply = None
        self.policy_error = eviction_policy_error(reply, self.settings)
        self.policy_checked = True

    async def perform(self, effect: ScriptCall | Command | Sleep) -> Any:
        if isinstance(effect, Sleep):
            await asleep(effect.seconds)
            return None
        if isinstance(effect, ScriptCall):
            if effect.op_id is not None:
                if not self.policy_checked:
                    await self._check_eviction_policy()
                if self.policy_error is not None:
                    raise self.policy_error
            self.notify(effect)
        # The retry machinery (the Attempts record, the callable it retries) is made only
        # once a first attempt failed: ~0.3 µs a call otherwise, for nothing.
        attempts: Attempts | None = None
        try:
            try:
                # the fast path: no retry machinery unless it fails
                if isinstance(effect, ScriptCall):
                    return await self._script(effect)
                return await self.client.execute_command(*effect.args)
            except RETRYABLE as exc:
                attempts = Attempts()
                attempts.failed(exc)
                if self.settings.retry_attempts <= 1:
                    raise
            fn: Callable[[], Any] = (
                (lambda: self._script(effect))
                if isinstance(effect, ScriptCall)
                else (lambda: self.client.execute_command(*effect.args))
            )
            kwargs = self.retry_kwargs()
            kwargs["stop"] = stop_after_attempt(self.settings.retry_attempts - 1)
            async for attempt in AsyncRetrying(**kwargs):
                with attempt:
                    if self.metrics is not None:
                        self.metrics.count_retry(call_name(effect))
                    try:
                        return await fn()
                    except RETRYABLE as exc:
                        attempts.failed(exc)
                        raise
        except (rexc.RedisError, rexc.RedisClusterException) as exc:
            maybe_sent = attempts is not None and attempts.maybe_sent
            raise final_error(effect, exc, maybe_sent=maybe_sent) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _node_client(self, key: str) -> tuple[str, Any]:
        """(name, a plain client) of the Cluster primary that owns ``key``'s slot."""
        node = self.client.get_node_from_key(key)
        client = self.node_clients.get(node.name)
        if client is None:
            options = {
                k: v
                for k, v in self.client.get_connection_kwargs().items()
                if k not in ("host", "port", "retry")
            }
            # redis-py's own retries stay off (the one retry layer is ours): the cluster's
            # connection options may carry a Retry that sleeps through a dead primary.
            client = redis.asyncio.Redis(
                host=node.host, port=node.port, retry=NoRetry(NoBackoff(), 0), **options
            )
            self.node_clients[node.name] = client
        return node.name, client

    async def aclose(self) -> None:
        """Close what the driver opened itself (the Cluster primaries' WAIT clients, the
        pipelined connection)."""
        if self.pipe is not None:
            await self.pipe.aclose()
        if self.held is not None:
            await self.held.release_all()
        clients, self.node_clients = list(self.node_clients.values()), {}
        for client in clients:
            await client.aclose()

    async def probe_auth(self, agent: str) -> str:
        """authenticated | cooperative (see ``_drive.AUTH_PROBE``); logged once per client."""
        try:
            return await self._probe_auth(agent)
        except (rexc.RedisError, rexc.RedisClusterException) as exc:
            raise final_error(Command(("EVAL",)), exc) from exc

    async def _probe_auth(self, agent: str) -> str:
        args = auth_probe_args(self.settings.key_prefix, agent)
        return self.learnt_auth_mode(await self.client.eval(AUTH_PROBE, 0, *args), agent)

    async def _script(self, call: ScriptCall) -> Any:
        script = call.script
        if self.auth_mode is None:
            agent = call.args[script.agent_arg]
            await self._probe_auth(agent.decode() if isinstance(agent, bytes) else str(agent))
        args = script.identity_args(call.args, self.settings.key_prefix)
        if self.script_mode is None:
            self.script_mode = self.mode_to_try(self.client)
        if self.script_mode == "functions":
            # The library is loaded when a call finds it missing, not before every
            # client's first call: FUNCTION LOAD compiles it (~2 ms of the server's time).
            try:
                return await self._send(call, args, functions=True)
            except rexc.ResponseError as exc:
                if not cannot_fcall(exc):
                    raise located(call, exc, functions=True) from exc
            # Nothing ran. Not loaded yet, or gone since (a restart, a flush, a failover
            # to a node that never had it): load it and resend. A server without
            # Functions, or a user that may not load or call them (an agent's ACL user,
            # when no admin's client loaded it): EVALSHA from now on.
            if await self._load_library():
                try:
                    return await self._send(call, args, functions=True)
                except rexc.ResponseError as exc:
                    if not cannot_fcall(exc):
                        raise located(call, exc, functions=True) from exc
            self.script_mode = "eval"
        try:
            return await self._send(call, args, functions=False)
        except rexc.NoScriptError:
            raise
        except rexc.ResponseError as exc:
            raise located(call, exc, functions=False) from exc

    async def _load_library(self) -> bool:
        """FUNCTION LOAD the scripts' library (every primary of a Cluster). False when the
        server refuses it: no Functions (an older Redis), or an ACL user without FUNCTION."""
        try:
            await self.client.function_load(library().source, replace=True)
        except rexc.ResponseError:
            return False
        return True

    def _send(self, call: ScriptCall, args: list[Any], *, functions: bool) -> Awaitable[Any]:
        """The call's reply. (In the async driver a plain function, not a coroutine: its
        common case hands back what its one send gives to wait on, on the pipe the
        reply's future itself, so a write makes and resumes no coroutine below
        ``_script``.)"""
        if (
            functions
            and self.direct is not None
            and not call.readonly
            and (call.op_id is None or not self.settings.wait_replicas)
        ):
            # The common case, as _once sends it (an FCALL on a connection of the pool),
            # without its layers and copies of the arguments; on the pipe, without a
            # coroutine between this and the reply's future.
            command = ("FCALL", call.script.function, len(call.keys), *call.keys, *args)
            if self.pipe is not None:
                return self.pipe.call("FCALL", pack(command))
            return self._direct(command)
        return self._send_other(call, args, functions=functions)

    async def _send_other(self, call: ScriptCall, args: list[Any], *, functions: bool) -> Any:
        """:meth:`_send` for all but its common case: reads, EVALSHA, WAIT, no direct pool."""
        n = len(call.keys)
        if (
            functions
            and self.direct is not None
            and self.read_only_scripts
            and (call.op_id is None or not self.settings.wait_replicas)
        ):
            # A read where the server is known to take FCALL_RO: the readonly branch below,
            # its first send made here (the same command, without _once and its copies).
            try:
                reply = await self._direct(
                    ("FCALL_RO", call.script.function + "_ro", n, *call.keys, *args)
                )
            except rexc.ResponseError as exc:
                if not lacks_read_only_scripts(exc):
                    raise
                self.read_only_scripts = False
                return await self._once(
                    call, n, [*call.keys, *args], functions=True, readonly=False
                )
            if not is_denial(reply):
                return reply
            return await self._audit_denial(call, n, [*call.keys, *args], reply, functions=True)
        # A direct send packs str and int as they are; redis-py's path is given bytes.
        wire = [*call.keys, *args] if self.direct is not None else wire_args(call.keys, args)
        script = call.script
        if script.sha not in self.loaded and not functions:
            await self.client.script_load(script.source)
            self.loaded.add(script.sha)
        if call.op_id is not None and self.settings.wait_replicas:
            # One pipeline = one connection: WAIT then counts this very write.
            node, target = self._node_client(call.keys[0]) if self.is_cluster else ("", self.client)
            pipe = target.pipeline(transaction=False)
            if functions:
                pipe.execute_command(*_fcall(call, call.readonly), n, *wire)
            else:
                pipe.execute_command(*_evalsha(call), n, *wire)
            pipe.execute_command(*self.wait_args())
            try:
                reply, acked = await pipe.execute()
            except rexc.NoScriptError:
                self.loaded.discard(script.sha)
                raise rexc.ConnectionError("script cache was flushed; reloading") from None
            except (rexc.MovedError, rexc.ConnectionError, rexc.TimeoutError):
                if self.is_cluster:  # the slot moved or its primary failed: relearn, retry
                    stale = self.node_clients.pop(node, None)
                    with contextlib.suppress(Exception):
                        if stale is not None:
                            await stale.aclose()
                        await self.client.nodes_manager.initialize()
                raise
            self.acked(call, acked)
            return reply
        if call.readonly and self.read_only_scripts is not False:
            try:
                reply = await self._once(call, n, wire, functions=functions, readonly=True)
            except rexc.ResponseError as exc:
                if not lacks_read_only_scripts(exc):
                    raise
                self.read_only_scripts = False
            else:
                self.read_only_scripts = True
                if not is_denial(reply):
                    return reply
                return await self._audit_denial(call, n, wire, reply, functions=functions)
        return await self._once(call, n, wire, functions=functions, readonly=False)

    async def _audit_denial(
        self, call: ScriptCall, n: int, wire: list[Any], reply: Any, *, functions: bool
    ) -> Any:
        """A read-only call's denial (``reply``), sent again with writes so that the denial
        is audited (_drive.py); Redis refusing that (a read-only user) leaves ``reply``."""
        try:
            return await self._once(call, n, wire, functions=functions, readonly=False)
        except rexc.ResponseError as exc:
            if not refused_by_acl(exc):
                raise
            return reply

    async def _once(
        self, call: ScriptCall, n: int, wire: list[Any], *, functions: bool, readonly: bool
    ) -> Any:
        """FCALL or EVALSHA (their _RO forms if ``readonly``); EVAL once the script cache
        lost the script."""
        script, c = call.script, self.client
        if functions:
            if self.direct is not None:
                return await self._direct((*_fcall(call, readonly), n, *wire))
            return await c.execute_command(*_fcall(call, readonly), n, *wire)
        evalsha, source_eval = (c.evalsha_ro, c.eval_ro) if readonly else (c.evalsha, c.eval)
        try:
            if self.direct is not None:
                command = "EVALSHA_RO" if readonly else "EVALSHA"
                return await self._direct((command, script.sha, n, *wire))
            return await evalsha(script.sha, n, *wire)
        except rexc.NoScriptError:
            # EVAL also caches the script on the node that ran it (also after a failover).
            return await source_eval(script.source, n, *wire)

    async def _direct(self, command: tuple[Any, ...]) -> Any:
        """One command on a connection of :attr:`direct` (see ``_drive.direct_pool``): what
        execute_command does for it, without its generic parts. redis-py's connection
        does the rest: it connects (and reconnects) in ``get_connection`` /
        ``send_packed_command``, disconnects on a failed send or read (a reply not read
        is never left on a pooled connection), and raises the server's error replies;
        its observability hooks record the call as execute_command would."""
        packed = pack(command)
        if self.pipe is not None:
            return await self.pipe.call(command[0], packed)
        held = self.held
        assert held is not None  # set with self.direct
        start = time.monotonic()
        conn = await held.get(start)
        try:
            await conn.send_packed_command([packed])
            reply = await conn.read_response()
        except Exception as exc:
            await record_error_count(
                server_address=getattr(conn, "host", None),
                server_port=getattr(conn, "port", None),
                network_peer_address=getattr(conn, "host", None),
                network_peer_port=getattr(conn, "port", None),
                error_type=exc,
                retry_attempts=0,
                is_internal=False,
            )
            raise
        finally:
            end = time.monotonic()
            await held.put(conn, end)
        if _recording_off():  # what record_operation_duration checks first
            return reply
        await record_operation_duration(
            command_name=command[0],
            duration_seconds=end - start,
            server_address=getattr(conn, "host", None),
            server_port=getattr(conn, "port", None),
            db_namespace=str(conn.db),
        )
        return reply


def _fcall(call: ScriptCall, readonly: bool) -> tuple[str, str]:
    if readonly:
        return "FCALL_RO", call.script.function + "_ro"
    return "FCALL", call.script.function


def _evalsha(call: ScriptCall) -> tuple[str, str]:
    return ("EVALSHA_RO" if call.readonly else "EVALSHA"), call.script.sha

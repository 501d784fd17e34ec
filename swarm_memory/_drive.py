"""The one place where sync and async differ: performing the effects flows yield.

Also the one place that maps low-level redis-py errors to ours, and the one retry layer
(tenacity, DESIGN.md decision 6): transport errors are retried with the same op id, which
the write script dedupes, so a retried write is applied at most once. When retries run
out, a write raises :class:`OutcomeUnknown` and a read :class:`TransportError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import redis
import redis.asyncio
import redis.exceptions as rexc
from tenacity import (
    AsyncRetrying,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from swarm_memory import errors
from swarm_memory._ops import CallUser, Command, Flow, Listen, ScriptCall, Sleep, Unlisten, WaitBell
from swarm_memory.settings import Settings

if TYPE_CHECKING:
    from swarm_memory.metrics import ClientMetrics

T = TypeVar("T")
ScriptObserver = Callable[[str, list[str], list[Any]], None]

_RETRYABLE = (rexc.ConnectionError, rexc.TimeoutError)


def _failed_connecting(exc: BaseException) -> bool:
    """True when ``exc`` was raised while a connection was being set up (connect, the
    handshake, the pool's health check), so no byte of our command reached the server.

    redis-py's exceptions do not say this, and their messages differ between versions;
    the call path does: every supported redis-py (8.x, sync and asyncio, standalone
    and cluster) sends a command only after ``get_connection``/``connect`` returned.
    """
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        module = tb.tb_frame.f_globals.get("__name__", "")
        if code.co_name in _CONNECT_FRAMES and module.startswith("redis."):
            return True
        tb = tb.tb_next
    return False


_CONNECT_FRAMES = frozenset({"connect", "get_connection", "connect_check_health", "on_connect"})


def setup_error(exc: BaseException) -> errors.SwarmMemoryError:
    """Map an error raised while a client sets itself up: the sync RedisCluster connects
    when it is built, the async one on its first command.

    redis-py's cluster setup errors are not RedisErrors and carry no attributes: the
    server's "cluster mode is not enabled" reply is known only by its text.
    """
    if isinstance(exc, rexc.RedisClusterException):
        if "cluster mode is not enabled" in str(exc).lower():
            return errors.ClusterModeMismatch(
                "the server is not a Redis Cluster (cluster mode is not enabled on it), "
                "but the client was told it is: unset SWARM_MEMORY_CLUSTER (--no-cluster)",
                configured_cluster=True,
                server_cluster=False,
            )
        return errors.TransportError(f"Redis Cluster unreachable: {exc}")
    if isinstance(exc, rexc.AuthenticationError):
        return errors.TransportError(f"Redis refused the credentials: {exc}")
    if isinstance(exc, _RETRYABLE):
        return errors.TransportError(f"Redis unreachable: {exc}")
    return errors.ServerError(f"Redis refused the command: {exc}")


def _final_error(
    effect: ScriptCall | Command, exc: BaseException, *, maybe_sent: bool = True
) -> errors.SwarmMemoryError:
    """Map a redis-py error that survived the retry policy. ``maybe_sent`` is False when
    every attempt failed before its command could reach the server: a write that was
    never sent was not applied, so it is "unreachable", not "outcome unknown"."""
    if isinstance(exc, rexc.RedisClusterException):
        return setup_error(exc)
    if isinstance(exc, rexc.AuthenticationError):
        return errors.TransportError(f"Redis refused the credentials: {exc}")
    if isinstance(exc, _RETRYABLE):
        op_id = effect.op_id if isinstance(effect, ScriptCall) else None
        is_write = op_id is not None or (isinstance(effect, Command) and effect.write)
        if is_write and maybe_sent and op_id is not None:
            return errors.OutcomeUnknown(
                f"no reply from Redis after retries; the write may or may not be applied "
                f"(retry with op_id={op_id!r} to learn its outcome): {exc}",
                op_id=op_id,
            )
        if is_write and maybe_sent:
            return errors.TransportError(f"Redis unreachable; write outcome unknown: {exc}")
        if is_write:
            return errors.TransportError(
                f"Redis unreachable after retries; the write was not sent: {exc}"
            )
        return errors.TransportError(f"Redis unreachable after retries: {exc}")
    return errors.ServerError(f"Redis refused the command: {exc}")


class _Attempts:
    """Whether any attempt of one effect may have reached the server (see
    :func:`_failed_connecting`)."""

    __slots__ = ("maybe_sent",)

    def __init__(self) -> None:
        self.maybe_sent = False

    def failed(self, exc: BaseException) -> None:
        if not _failed_connecting(exc):
            self.maybe_sent = True


def _call_name(effect: object) -> str:
    """The retries metric's label: a script name, a Redis command name or the effect's
    kind (bounded sets)."""
    if isinstance(effect, ScriptCall):
        return effect.script.name
    if isinstance(effect, Command):
        return str(effect.args[0]).upper()
    return type(effect).__name__.lower()


class _Base:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.observers: list[ScriptObserver] = []
        # Scripts are SCRIPT LOADed once per client before their first EVALSHA (on Cluster,
        # redis-py sends SCRIPT LOAD to every primary), so the NOSCRIPT error path is only
        # taken after a server restart or failover; it then falls back to EVAL.
        self.loaded: set[str] = set()
        self.hub: Any = None  # the event hub (events.py), made on first watch()
        # Opt-in client metrics (metrics.py); None costs one attribute check per call.
        self.metrics: ClientMetrics | None = None

    def _notify(self, call: ScriptCall) -> None:
        call.script.check(call.keys, call.args)
        for observer in self.observers:
            observer(call.script.name, call.keys, call.args)

    def _check_durable(self, client: Any) -> None:
        if self.settings.wait_replicas and "Cluster" in type(client).__name__:
            # WAIT must run on the connection of the primary that ran the script; on
            # Cluster that is not the connection redis-py would pick for a keyless WAIT.
            raise errors.InvalidOption(
                "wait_replicas is supported on standalone Redis (and Sentinel), not Cluster",
                field="wait_replicas",
                value=self.settings.wait_replicas,
            )

    def _acked(self, call: ScriptCall, acked: Any) -> None:
        required = self.settings.wait_replicas
        if int(acked) < required:
            assert call.op_id is not None
            raise errors.NotReplicated(
                f"write applied on the primary but only {int(acked)} of {required} replicas "
                f"acknowledged it within {self.settings.wait_timeout}s",
                op_id=call.op_id,
                required=required,
                acked=int(acked),
            )

    def _wait_args(self) -> tuple[str, int, int]:
        return ("WAIT", self.settings.wait_replicas, int(self.settings.wait_timeout * 1000))

    def _retry_kwargs(self) -> dict[str, Any]:
        s = self.settings
        return {
            "stop": stop_after_attempt(s.retry_attempts),
            "wait": wait_random_exponential(multiplier=s.retry_backoff, max=s.retry_backoff_max),
            "retry": retry_if_exception_type(_RETRYABLE),
            "reraise": True,
        }


class SyncDriver(_Base):
    """Runs flows against a sync redis-py client (standalone or cluster)."""

    def __init__(self, client: redis.Redis | redis.RedisCluster, settings: Settings) -> None:
        super().__init__(settings)
        self._check_durable(client)
        self.client = client
        # The same client, for the calls whose type hints differ between the redis-py
        # versions we support (pubsub() and execute_command() are untyped before 8.2):
        # one spelling that type-checks on all of them, without version-bound ignores.
        self._untyped: Any = client

    def run(self, flow: Flow[T]) -> T:
        if self.metrics is not None:
            flow = self.metrics.measure(flow)
        send: Any = None
        throw: BaseException | None = None
        bells: list[Any] = []  # pub/sub handles the flow opened (Listen): closed at the end
        try:
            while True:
                try:
                    effect = flow.throw(throw) if throw is not None else flow.send(send)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
                send, throw = None, None
                if isinstance(effect, CallUser):
                    try:
                        send = effect.fn()
                    except Exception as exc:
                        throw = exc
                    if inspect.iscoroutine(send):
                        send.close()  # never run: say why instead of storing a coroutine
                        send, throw = (
                            None,
                            errors.InvalidInput(
                                "the function returned a coroutine: use AsyncSwarmMemory for "
                                "async functions",
                                field="factory",
                            ),
                        )
                    continue
                try:
                    if isinstance(effect, Listen | WaitBell | Unlisten):
                        send = self._bell(effect, bells)
                    else:
                        send = self.perform(effect)
                except errors.SwarmMemoryError as exc:
                    throw = exc
        finally:
            for handle in bells:
                with contextlib.suppress(Exception):
                    handle.close()

    def _bell(self, effect: Listen | WaitBell | Unlisten, bells: list[Any]) -> Any:
        """Lock doorbells: a private pub/sub connection per waiting flow. Failures only
        turn the wait into a sleep: the flow polls, the doorbell is a hint."""
        if isinstance(effect, Listen):
            handle = self._untyped.pubsub()
            bells.append(handle)
            # On failure the waits below just sleep; the flow's attempts still poll.
            with contextlib.suppress(rexc.RedisError):
                handle.ssubscribe(effect.channel)
            return handle
        if isinstance(effect, Unlisten):
            if effect.handle in bells:
                bells.remove(effect.handle)
            with contextlib.suppress(Exception):
                effect.handle.close()
            return None
        deadline = time.monotonic() + effect.seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = effect.handle.get_sharded_message(
                    ignore_subscribe_messages=True, timeout=left
                )
            except (rexc.RedisError, OSError, RuntimeError):
                time.sleep(max(left, 0))
                return False
            if msg is not None and msg.get("data") == effect.message:
                return True
        return False

    def perform(self, effect: ScriptCall | Command | Sleep) -> Any:
        if isinstance(effect, Sleep):
            time.sleep(effect.seconds)
            return None
        if isinstance(effect, ScriptCall):
            self._notify(effect)
            fn: Callable[[], Any] = lambda: self._script(effect)  # noqa: E731
        else:
            fn = lambda: self._untyped.execute_command(*effect.args)  # noqa: E731
        attempts = _Attempts()
        try:
            try:
                return fn()  # the fast path: no retry machinery unless the first try fails
            except _RETRYABLE as exc:
                attempts.failed(exc)
                if self.settings.retry_attempts <= 1:
                    raise
            kwargs = self._retry_kwargs()
            kwargs["stop"] = stop_after_attempt(self.settings.retry_attempts - 1)
            for attempt in Retrying(**kwargs):
                with attempt:
                    if self.metrics is not None:
                        self.metrics.count_retry(_call_name(effect))
                    try:
                        return fn()
                    except _RETRYABLE as exc:
                        attempts.failed(exc)
                        raise
        except (rexc.RedisError, rexc.RedisClusterException) as exc:
            raise _final_error(effect, exc, maybe_sent=attempts.maybe_sent) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _script(self, call: ScriptCall) -> Any:
        n = len(call.keys)
        script = call.script
        if script.sha not in self.loaded:
            self.client.script_load(script.source)
            self.loaded.add(script.sha)
        if call.op_id is not None and self.settings.wait_replicas:
            # One pipeline = one connection: WAIT then counts this very write.
            pipe = self.client.pipeline(transaction=False)
            pipe.evalsha(script.sha, n, *call.keys, *call.args)
            pipe.execute_command(*self._wait_args())
            try:
                reply, acked = pipe.execute()
            except rexc.NoScriptError:
                self.loaded.discard(script.sha)
                raise rexc.ConnectionError("script cache was flushed; reloading") from None
            self._acked(call, acked)
            return reply
        try:
            return self.client.evalsha(script.sha, n, *call.keys, *call.args)
        except rexc.NoScriptError:
            # EVAL also caches the script on the node that ran it (also after a failover).
            return self.client.eval(script.source, n, *call.keys, *call.args)


class AsyncDriver(_Base):
    """Runs flows against a redis.asyncio client (standalone or cluster)."""

    def __init__(
        self, client: redis.asyncio.Redis | redis.asyncio.RedisCluster, settings: Settings
    ) -> None:
        super().__init__(settings)
        self._check_durable(client)
        self.client = client

    async def run(self, flow: Flow[T]) -> T:
        if self.metrics is not None:
            flow = self.metrics.measure(flow)
        send: Any = None
        throw: BaseException | None = None
        bells: list[Any] = []  # as in SyncDriver.run
        try:
            while True:
                try:
                    effect = flow.throw(throw) if throw is not None else flow.send(send)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
                send, throw = None, None
                if isinstance(effect, CallUser):
                    try:
                        send = effect.fn()
                        if inspect.isawaitable(send):
                            send = await send
                    except Exception as exc:
                        throw = exc
                    continue
                try:
                    if isinstance(effect, Listen | WaitBell | Unlisten):
                        send = await self._bell(effect, bells)
                    else:
                        send = await self.perform(effect)
                except errors.SwarmMemoryError as exc:
                    throw = exc
        finally:
            for handle in bells:
                with contextlib.suppress(Exception):
                    await handle.aclose()

    async def _bell(self, effect: Listen | WaitBell | Unlisten, bells: list[Any]) -> Any:
        """As SyncDriver._bell, on redis.asyncio (Cluster pub/sub reads per shard)."""
        if isinstance(effect, Listen):
            handle = self.client.pubsub()
            bells.append(handle)
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
        read = getattr(handle, "get_sharded_message", handle.get_message)
        deadline = time.monotonic() + effect.seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = await read(ignore_subscribe_messages=True, timeout=left)
            except (rexc.RedisError, OSError, RuntimeError):
                await asyncio.sleep(max(left, 0))
                return False
            if msg is not None and msg.get("data") == effect.message:
                return True
        return False

    async def perform(self, effect: ScriptCall | Command | Sleep) -> Any:
        if isinstance(effect, Sleep):
            await asyncio.sleep(effect.seconds)
            return None
        if isinstance(effect, ScriptCall):
            self._notify(effect)
            fn: Callable[[], Awaitable[Any]] = lambda: self._script(effect)  # noqa: E731
        else:
            fn = lambda: self.client.execute_command(*effect.args)  # noqa: E731
        attempts = _Attempts()
        try:
            try:
                return await fn()  # the fast path, as in SyncDriver.perform
            except _RETRYABLE as exc:
                attempts.failed(exc)
                if self.settings.retry_attempts <= 1:
                    raise
            kwargs = self._retry_kwargs()
            kwargs["stop"] = stop_after_attempt(self.settings.retry_attempts - 1)
            async for attempt in AsyncRetrying(**kwargs):
                with attempt:
                    if self.metrics is not None:
                        self.metrics.count_retry(_call_name(effect))
                    try:
                        return await fn()
                    except _RETRYABLE as exc:
                        attempts.failed(exc)
                        raise
        except (rexc.RedisError, rexc.RedisClusterException) as exc:
            raise _final_error(effect, exc, maybe_sent=attempts.maybe_sent) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _script(self, call: ScriptCall) -> Any:
        n = len(call.keys)
        script = call.script
        if script.sha not in self.loaded:
            await self.client.script_load(script.source)
            self.loaded.add(script.sha)
        if call.op_id is not None and self.settings.wait_replicas:
            pipe = self.client.pipeline(transaction=False)
            pipe.evalsha(script.sha, n, *call.keys, *call.args)
            pipe.execute_command(*self._wait_args())
            try:
                reply, acked = await pipe.execute()
            except rexc.NoScriptError:
                self.loaded.discard(script.sha)
                raise rexc.ConnectionError("script cache was flushed; reloading") from None
            self._acked(call, acked)
            return reply
        try:
            return await self.client.evalsha(script.sha, n, *call.keys, *call.args)
        except rexc.NoScriptError:
            return await self.client.eval(script.source, n, *call.keys, *call.args)

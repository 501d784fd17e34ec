"""Pipelined script calls: one connection per async driver that many tasks share.

redis.asyncio gives every call in flight its own pool connection: a checkout (an
asyncio.Lock), a write, a read awaited under a timeout (a TimerHandle per call), a
release. With 50 tasks on one client that was 35-45 % of a put's client time
(docs/performance.md, "Async pipelining"). Here each script call (FCALL / FCALL_RO /
EVALSHA / EVALSHA_RO, sent by ``AsyncDriver._direct``) is queued on one connection and
written at the end of the event loop turn that issued it, with every other call of that
turn in one system call (the first ``FLUSH_EVERY`` calls of a busier turn ahead of the
rest, as soon as there are that many); one asyncio Protocol reads the replies, in the
order the calls were written, into their futures: what the NATS client does over its
connection.

The same semantics as the pool path, for everything the driver relies on:

* The connection is made by redis-py's own ``Connection`` of the client's pool (TLS,
  AUTH / HELLO, SELECT, client name, a Sentinel's primary lookup: its ``on_connect``);
  only then is its socket taken over. A failure while connecting is raised from
  redis-py's ``connect`` frames, which ``_drive._failed_connecting`` reads as "nothing
  was sent", in every task that waited for that connection.
* Error replies are redis-py's exception classes, made by its parser's ``parse_error``
  (NoScriptError, NoPermissionError, ...); a Sentinel primary demoted to a replica
  (READONLY) is a ConnectionError, as ``SentinelManagedConnection`` makes it.
* A lost connection fails every call in flight with ConnectionError (maybe sent: the
  retry layer resends with the same op id); the next call connects again.
* A call without a reply after the connection's ``socket_timeout`` (the client's;
  Settings.socket_timeout for clients built from a URL) fails with TimeoutError and the
  connection is dropped, failing the calls behind it (their replies would follow the
  late one, which can no longer be matched).
* A cancelled caller leaves its place in the order: its reply is read and dropped.

Used only where ``_drive.direct_pool`` sends script calls directly (standalone and
Sentinel clients) and the connection speaks RESP2 without health checks
(:meth:`AsyncScriptPipe.open`); never for WAIT pipelines, blocking commands or
anything else, which stay on redis-py. Settings.pipeline turns it off.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from collections import deque
from collections.abc import Awaitable
from typing import Any

import hiredis
import redis.exceptions as rexc
from redis.asyncio.observability import recorder as _recorder
from redis.asyncio.observability.recorder import record_error_count, record_operation_duration

from swarm_memory._drive import recording_off
from swarm_memory.settings import Settings

try:  # the text redis-py matches (8.x); the READONLY reply is the common case anyway
    from redis.sentinel import DEMOTED_MASTER_UNBLOCKED_ERROR
except ImportError:  # pragma: no cover
    DEMOTED_MASTER_UNBLOCKED_ERROR = "UNBLOCKED force unblock from blocking operation"

_MORE = object()  # hiredis: no complete reply buffered yet
# redis-py's asyncio observability known off: its duration helper would return at once,
# so a call skips it, the coroutine it makes and the work of its arguments (as the
# drivers' direct sends do; _drive.recording_off).
_recording_off = recording_off(_recorder)
_DEMOTED = "The previous master is now a slave"  # redis-py's text for it
# A turn's first FLUSH_EVERY calls are written as soon as there are that many, the rest at
# the turn's end (EARLY_CHUNKS: how many chunks a turn writes ahead of its end), so Redis
# runs the first while the client is still building the rest. One write per turn left the
# two taking turns: with 50 tasks, Redis idled while the client built its calls, and the
# client while Redis ran them. 50 tasks' puts with the client and Redis on two CPUs:
# 0.82x-0.92x the wall time of one write per turn in three runs; on one CPU, where each
# early write wakes Redis on the client's own CPU, 0.97x-1.02x. Writing every chunk of 16
# ahead (stop 30's first version) was no quicker on two CPUs (0.85x-0.92x in the same
# runs) and cost 3-6 % on one. `python -m bench.pipe_chunks`; docs/performance.md, "The
# async pipe writes in chunks, stop 30".
FLUSH_EVERY = 16
EARLY_CHUNKS = 1


def _usable(pool: Any) -> bool:
    """Whether a connection of ``pool`` may be shared this way: RESP2 (RESP3 may push
    messages between replies: invalidations, maintenance notifications), no periodic
    health check (redis-py would PING before a command on an idle connection), no
    custom connect function, and one of redis-py's own asyncio connection classes (TCP,
    TLS, Unix socket, a Sentinel's primary)."""
    kwargs = getattr(pool, "connection_kwargs", {})
    if kwargs.get("protocol") not in (None, 2, "2"):
        return False
    if kwargs.get("health_check_interval"):
        return False
    if kwargs.get("redis_connect_func") is not None:
        return False
    cls = getattr(pool, "connection_class", None)
    return cls is not None and cls.__module__.startswith("redis.asyncio.")


class _Wire(asyncio.Protocol):
    """One connected socket: writes packed commands, reads replies into futures (FIFO)."""

    def __init__(self, writer: Any, conn: Any, loop: asyncio.AbstractEventLoop) -> None:
        # The StreamWriter stays referenced: collected with its transport open, it
        # would close it.
        self.writer = writer
        self.transport = writer.transport
        self.loop = loop
        self.closed = False
        self.timeout: float | None = conn.socket_timeout or None
        self.where = conn._host_error()
        self.demotable = bool(getattr(getattr(conn, "connection_pool", None), "is_master", False))
        self.reader = hiredis.Reader(
            protocolError=rexc.InvalidResponse,
            replyError=conn._parser.parse_error,
            notEnoughData=_MORE,
        )
        # (future, deadline) per call written and not yet answered, oldest first.
        self.pending: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.timer: asyncio.TimerHandle | None = None
        self.out: list[bytes] = []  # packed commands not written yet (see send)
        # Chunks of this turn written ahead of its end. (A _flush is scheduled for the
        # turn's end exactly while ``out`` holds calls or this is above 0.)
        self.early = 0

    # -- calls
    def send(self, packed: bytes) -> asyncio.Future[Any]:
        if self.closed:
            raise rexc.ConnectionError(f"Connection to {self.where} closed before write")
        fut = self.loop.create_future()
        if self.timeout is None:
            self.pending.append((fut, 0.0))
        else:
            deadline = self.loop.time() + self.timeout
            self.pending.append((fut, deadline))
            if self.timer is None:  # one timer, for the oldest call only (see _expire)
                self.timer = self.loop.call_at(deadline, self._expire)
        # Written at the end of the event loop turn: the commands of every task that
        # sent one in this turn go out in one system call (a send() per command cost
        # more than all of this module's own code); a turn's first FLUSH_EVERY ahead.
        out = self.out
        out.append(packed)
        if len(out) == 1:
            if not self.early:  # (else this turn's _flush is scheduled already)
                self.loop.call_soon(self._flush)
        elif len(out) >= FLUSH_EVERY and self.early < EARLY_CHUNKS:
            self.early += 1
            self._write()
        return fut

    def _flush(self) -> None:
        self.early = 0
        if self.out:
            self._write()

    def _write(self) -> None:
        out, self.out = self.out, []
        if not self.closed:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _expire(self) -> None:
        self.timer = None
        if self.closed or not self.pending:
            return
        deadline = self.pending[0][1]
        if deadline > self.loop.time():
            self.timer = self.loop.call_at(deadline, self._expire)
            return
        self.fail(
            lambda: rexc.TimeoutError(f"Timeout reading from {self.where}"),
            lambda: rexc.ConnectionError(
                f"Connection to {self.where} dropped: a call before this one timed out"
            ),
        )

    def fail(self, first: Any, rest: Any = None) -> None:
        """Close the connection and fail every call in flight: the oldest with
        ``first()``, the others with ``rest()`` (a new exception each)."""
        if not self.closed:
            self.closed = True
            self.transport.abort()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        make = first
        while self.pending:
            fut, _ = self.pending.popleft()
            if not fut.done():
                fut.set_exception(make())
            make = rest or first

    # -- asyncio.Protocol
    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        pending = self.pending
        try:
            reply = reader.gets()
            while reply is not _MORE:
                fut, _ = pending.popleft()
                if not fut.done():
                    if isinstance(reply, rexc.ResponseError):
                        if self.demotable and (
                            isinstance(reply, rexc.ReadOnlyError)
                            or str(reply).startswith(DEMOTED_MASTER_UNBLOCKED_ERROR)
                        ):
                            # As SentinelManagedConnection: reconnect through the Sentinels.
                            fut.set_exception(rexc.ConnectionError(_DEMOTED))
                            self.fail(lambda: rexc.ConnectionError(_DEMOTED))
                            return
                        fut.set_exception(reply)
                    else:
                        fut.set_result(reply)
                reply = reader.gets()
        except rexc.InvalidResponse as exc:  # not RESP: nothing more can be matched
            error = exc
            self.fail(lambda: copy.copy(error))
        except IndexError:  # a reply no call waits for
            self.fail(lambda: rexc.InvalidResponse(f"unexpected reply from {self.where}"))

    def eof_received(self) -> bool:
        return False  # the transport closes itself: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        why = f"Error while reading from {self.where} : {exc}" if exc else None
        text = why or f"Connection closed by server ({self.where})."
        self.closed = True
        self.fail(lambda: rexc.ConnectionError(text))


class AsyncScriptPipe:
    """The driver's pipelined channel for script calls (see the module docstring)."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.wire: _Wire | None = None
        self.conn: Any = None  # the redis-py Connection that connected the current wire
        self.connecting: asyncio.Task[_Wire] | None = None

    @classmethod
    def open(cls, pool: Any, settings: Settings) -> AsyncScriptPipe | None:
        """A channel over connections of ``pool`` (``_drive.direct_pool``: None for
        clients whose script calls go through execute_command), or None where it
        would not be equivalent or Settings.pipeline is off."""
        if pool is None or not settings.pipeline or not _usable(pool):
            return None
        return cls(pool)

    def call(self, name: str, packed: bytes) -> Awaitable[Any]:
        """Send one packed command; its reply, or the exception it raised, to await.
        Not a coroutine itself: on an open wire, with redis-py's observability off (no
        duration or error to record), it hands back the wire's future of the reply,
        one coroutine fewer per call to make and resume."""
        wire = self.wire
        if (
            wire is not None
            and not wire.closed
            and wire.loop is asyncio.get_running_loop()
            and _recording_off()
        ):
            return wire.send(packed)
        return self._call(name, packed)

    async def _call(self, name: str, packed: bytes) -> Any:
        """:meth:`call`, connecting first, recording the call where recording is on."""
        wire = self.wire
        if wire is None or wire.closed or wire.loop is not asyncio.get_running_loop():
            wire = await self._connected()
        fut = wire.send(packed)
        start = time.monotonic()
        conn = self.conn
        try:
            reply = await fut
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
        if _recording_off():
            return reply
        await record_operation_duration(
            command_name=name,
            duration_seconds=time.monotonic() - start,
            server_address=getattr(conn, "host", None),
            server_port=getattr(conn, "port", None),
            db_namespace=str(getattr(conn, "db", 0)),
        )
        return reply

    async def _connected(self) -> _Wire:
        """The open wire, connecting one (one connect for every task that needs it).
        A wire or a connect of another event loop (a client reused under a new
        ``asyncio.run``) is dropped: its socket and futures belong to that loop."""
        loop = asyncio.get_running_loop()
        old = self.wire
        if old is not None and old.loop is not loop:
            self.wire = None
            old.closed = True
            with contextlib.suppress(Exception):
                old.transport.abort()
        task = self.connecting
        if task is not None and task.get_loop() is not loop:
            task = self.connecting = None
        if task is None:
            task = loop.create_task(self._connect())
            task.add_done_callback(_retrieved)
            self.connecting = task
        try:
            return await asyncio.shield(task)
        except Exception as exc:
            # Each waiter raises its own copy, with the connect's traceback: its frames
            # (redis-py's connect / on_connect) say that nothing was sent.
            try:
                mine = copy.copy(exc)
            except Exception:  # an exception type that cannot be copied: the shared one
                raise exc from exc.__cause__
            raise mine.with_traceback(exc.__traceback__) from exc.__cause__
        finally:
            if task.done() and self.connecting is task:
                self.connecting = None

    async def _connect(self) -> _Wire:
        conn = self.pool.make_connection()
        await conn.connect()
        reader, writer = conn._reader, conn._writer
        # on_connect read every reply of its handshake: nothing may be left over.
        if writer is None or reader is None or reader._buffer or reader.at_eof():
            await conn.disconnect(nowait=True)
            raise rexc.ConnectionError(f"Connection to {conn._host_error()} lost after connect")
        wire = _Wire(writer, conn, asyncio.get_running_loop())
        writer.transport.set_protocol(wire)
        # The socket is the wire's now; the Connection object only describes it.
        conn._reader = conn._writer = None
        self.wire, self.conn = wire, conn
        return wire

    async def aclose(self) -> None:
        """Drop the connection (failing calls in flight); the next call reconnects."""
        task = self.connecting
        if task is not None and task.get_loop() is asyncio.get_running_loop():
            await asyncio.wait([task])  # let it finish (within the connect timeout)
        wire, self.wire = self.wire, None
        if wire is None:
            return
        if wire.loop is not asyncio.get_running_loop():  # another loop's (see _connected)
            wire.closed = True
            with contextlib.suppress(Exception):
                wire.transport.abort()
            return
        wire.fail(lambda: rexc.ConnectionError("Connection closed by the client"))


class ScriptPipe:
    """The sync twin (``scripts/unasync.py``): sync clients have no pipelined channel."""

    @classmethod
    def open(cls, pool: Any, settings: Settings) -> ScriptPipe | None:
        return None

    def call(self, name: str, packed: bytes) -> Any:  # pragma: no cover - never made
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - never made
        pass


def _retrieved(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # a connect error no caller awaited is not logged as unretrieved

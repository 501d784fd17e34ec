"""Sync TCP connections whose socket timeout the kernel keeps (stop 33).

redis-py gives a connection's ``socket_timeout`` to its socket with ``settimeout``, and
CPython then polls such a socket before every send and every receive: two ``poll()``
calls a command beside its ``sendto`` and ``recvfrom`` (strace of 1,000 puts: 2,233
polls). :class:`KernelTimeoutConnection` asks redis-py for a blocking socket and sets the
same timeout with ``SO_SNDTIMEO`` / ``SO_RCVTIMEO``, which the kernel applies to each
blocking send and receive with no call of its own: ~1.5-2.5 µs of client CPU less a
round trip on the development VM (docs/performance.md, "A socket timeout without polls").

The timeout means what it meant: a send or a receive that waits longer fails, and the
connection is dropped. redis-py reports a receive the kernel cut short as a
ConnectionError of EAGAIN; this class reports it as redis-py reports its own timeouts,
a TimeoutError. Only where the socket is a plain TCP one that redis-py's ``Connection``
makes, on Linux and macOS (whose ``struct timeval`` is two longs); elsewhere (TLS, Unix
sockets, Sentinel, Cluster, async clients) redis-py keeps its own timeouts.
"""

from __future__ import annotations

import errno
import socket
import struct
import sys
from typing import Any

import redis
from redis import exceptions as rexc

_TIMED_OUT = frozenset({errno.EAGAIN, errno.EWOULDBLOCK})


# (redis-py's classes are Any to mypy: pyproject.toml says why)
class KernelTimeoutConnection(redis.Connection):  # type: ignore[misc]
    """A redis-py ``Connection`` whose socket blocks, with its timeout kept by the kernel
    (``kernel_timeout`` seconds; redis-py's own ``socket_timeout`` is None)."""

    def __init__(self, *, kernel_timeout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kernel_timeout = kernel_timeout

    def _connect(self) -> socket.socket:
        sock: socket.socket = super()._connect()
        # (at least 1 µs: a zero timeval is no timeout at all)
        micros = max(1, round(self.kernel_timeout * 1_000_000))
        timeval = struct.pack("ll", *divmod(micros, 1_000_000))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        return sock

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except rexc.ConnectionError as exc:
            if _timed_out(exc):
                raise rexc.TimeoutError("Timeout reading from socket") from exc
            raise

    def send_packed_command(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().send_packed_command(*args, **kwargs)
        except rexc.ConnectionError as exc:
            if _timed_out(exc):
                raise rexc.TimeoutError("Timeout writing to socket") from exc
            raise


def _timed_out(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it came from) is a blocking socket's EAGAIN: the kernel's
    timeout, not a broken connection."""
    seen: BaseException | None = exc
    for _ in range(8):  # (a short chain: bounded all the same)
        if seen is None:
            return False
        if isinstance(seen, BlockingIOError) and seen.errno in _TIMED_OUT:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def use_kernel_timeouts(client: Any) -> None:
    """Give a sync standalone client we built (no connection made yet) connections of
    :class:`KernelTimeoutConnection` where its pool makes plain TCP ones with a timeout."""
    if sys.platform not in ("linux", "darwin"):
        return
    pool = getattr(client, "connection_pool", None)
    if pool is None or pool.connection_class is not redis.Connection:
        return
    kwargs = pool.connection_kwargs
    timeout = kwargs.get("socket_timeout")
    if not timeout:
        return
    kwargs["kernel_timeout"] = float(timeout)
    kwargs["socket_timeout"] = None
    pool.connection_class = KernelTimeoutConnection

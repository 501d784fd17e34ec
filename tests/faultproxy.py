"""A loopback TCP proxy that can swallow a reply, for testing retries of non-idempotent calls.

``FaultProxy(host, port)`` listens on a free 127.0.0.1 port and forwards bytes both ways,
two threads per connection. ``drop_next_reply()`` arms it: the next command a client sends
(on any connection, after arming) is forwarded to Redis and runs, but the first bytes Redis
sends back on that connection are discarded and both sides of that connection are closed.
The client sees its connection die (redis-py raises ``ConnectionError``) without ever
learning whether the command ran: exactly the ambiguous failure a retry layer must handle.

Arm between commands: a reply still in flight from a command sent before arming is not
dropped, because only a connection whose client sent bytes after arming is a target.
Mind that redis-py sends handshake commands (``CLIENT SETINFO`` ...) when it opens a new
connection: arm after the client has connected (e.g. after a PING) to hit a real command,
or pass ``command="SET"`` to target only a chunk that carries that command.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType
from typing import Self

__all__ = ["FaultProxy"]

_CHUNK = 65536


class _Link:
    """One proxied connection: the client's socket and ours to the server."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.target = False  # sent a (matching) command after the proxy was armed
        self.closed = False
        self.lock = threading.Lock()

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


class FaultProxy:
    """Forward 127.0.0.1:<port> to ``target_host:target_port``; can drop a reply on demand."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.dropped = 0
        self.connections_accepted = 0
        self._lock = threading.Lock()
        self._armed = 0  # how many replies are still to be dropped
        self._match: bytes | None = None
        self._links: set[_Link] = set()
        self._closing = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self._listener.settimeout(0.1)  # lets the accept loop notice close()
        self.port: int = self._listener.getsockname()[1]
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"faultproxy-{self.port}", daemon=True
        )
        self._accept_thread.start()

    # -- public API ------------------------------------------------------------------

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def armed(self) -> bool:
        with self._lock:
            return self._armed > 0

    @property
    def active_connections(self) -> int:
        with self._lock:
            return len(self._links)

    def drop_next_reply(self, command: str | None = None, *, times: int = 1) -> None:
        """Swallow the next reply (``times`` replies) and close its connection.

        With ``command`` (e.g. ``"SET"``, ``"EVALSHA"``), only a connection whose client
        sent a chunk carrying that RESP-encoded command name becomes a target.
        """
        if times < 1:
            raise ValueError("times must be >= 1")
        match = None
        if command is not None:
            name = command.upper().encode()
            match = b"$%d\r\n%s\r\n" % (len(name), name)
        with self._lock:
            self._armed = times
            self._match = match
            for link in self._links:
                link.target = False

    def disarm(self) -> None:
        with self._lock:
            self._armed = 0
            self._match = None
            for link in self._links:
                link.target = False

    def close_connections(self) -> None:
        """Abruptly close every proxied connection (the listener stays up)."""
        with self._lock:
            links = list(self._links)
        for link in links:
            link.close()

    def stop_listening(self) -> None:
        """Refuse new connections; the proxied ones stay up. Safe to call twice."""
        self._closing.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        if self._accept_thread.is_alive():
            self._accept_thread.join(timeout=2)

    def close(self) -> None:
        """Stop listening and close every proxied connection. Safe to call twice."""
        self.stop_listening()
        self.close_connections()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FaultProxy(port={self.port} -> {self.target_host}:{self.target_port})"

    # -- plumbing --------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection((self.target_host, self.target_port), 5)
            except OSError:
                with contextlib.suppress(OSError):
                    client.close()
                continue
            upstream.settimeout(None)
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(client, upstream)
            with self._lock:
                if self._closing.is_set():
                    link.close()
                    return
                self._links.add(link)
                self.connections_accepted += 1
            for target, name in ((self._pump_up, "up"), (self._pump_down, "down")):
                threading.Thread(
                    target=target, args=(link,), name=f"faultproxy-{self.port}-{name}", daemon=True
                ).start()

    def _forget(self, link: _Link) -> None:
        link.close()
        with self._lock:
            self._links.discard(link)

    def _pump_up(self, link: _Link) -> None:
        """Client -> server. Marks the link as a drop target before forwarding."""
        try:
            while True:
                data = link.client.recv(_CHUNK)
                if not data:
                    break
                with self._lock:
                    if self._armed and (self._match is None or self._match in data.upper()):
                        link.target = True
                link.upstream.sendall(data)
        except OSError:
            pass
        finally:
            self._forget(link)

    def _pump_down(self, link: _Link) -> None:
        """Server -> client. Swallows the first chunk on a target link, then cuts it."""
        try:
            while True:
                data = link.upstream.recv(_CHUNK)
                if not data:
                    break
                with self._lock:
                    drop = self._armed > 0 and link.target
                    if drop:
                        self._armed -= 1
                        self.dropped += 1
                        link.target = False
                        if not self._armed:
                            self._match = None
                if drop:
                    break
                link.client.sendall(data)
        except OSError:
            pass
        finally:
            self._forget(link)

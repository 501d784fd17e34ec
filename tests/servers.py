"""Throwaway real Redis servers for tests: one standalone server, or a 3-node cluster.

Every server started here runs on a free loopback port (never 6379), in its own temp
dir, with persistence off; ``stop()`` (or leaving the ``with`` block) kills it and
removes the dir. An ``atexit`` hook stops anything a test forgot, so no process outlives
the test run unless the interpreter itself is killed with SIGKILL.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis
import redis.cluster
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = [
    "RedisCluster",
    "RedisSentinelGroup",
    "RedisServer",
    "SentinelServer",
    "ServerStartError",
    "free_port",
    "port_is_free",
    "redis_server_available",
]

CLUSTER_BUS_OFFSET = 10000
CLUSTER_SLOTS = 16384
_RESERVED_PORTS = frozenset({6379, 6379 + CLUSTER_BUS_OFFSET})
_START_ATTEMPTS = 3  # a freshly probed port can be taken before redis-server binds it

_live: weakref.WeakSet[RedisServer] = weakref.WeakSet()


def _stop_leftovers() -> None:
    for server in list(_live):
        server.stop()


atexit.register(_stop_leftovers)


def redis_server_available() -> bool:
    """True when both ``redis-server`` and ``redis-cli`` are on PATH."""
    return shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None


def port_is_free(port: int) -> bool:
    """True when a loopback TCP socket can bind ``port`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(need_bus: bool = False) -> int:
    """A loopback TCP port that is free right now (never 6379).

    With ``need_bus``, port + 10000 (the Redis Cluster bus port) is free too.
    """
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port in _RESERVED_PORTS:
            continue
        if not need_bus:
            return port
        bus = port + CLUSTER_BUS_OFFSET
        if bus <= 65535 and bus not in _RESERVED_PORTS and port_is_free(bus):
            return port
        # The kernel hands out ephemeral ports high up; probe below the range too.
        candidate = port - 30000
        if (
            candidate > 1024
            and candidate not in _RESERVED_PORTS
            and port_is_free(candidate)
            and port_is_free(candidate + CLUSTER_BUS_OFFSET)
        ):
            return candidate
    raise RuntimeError("no free loopback port found")


class RedisServer:
    """One ``redis-server`` subprocess on 127.0.0.1 at a free port, persistence off.

    ``extra_args`` are appended to the command line; ``{dir}`` and ``{port}`` in them are
    replaced by the server's temp dir and port. ``start()`` retries on a new port when
    another process grabbed the probed one first.
    """

    def __init__(
        self,
        extra_args: list[str] | None = None,
        *,
        need_bus: bool = False,
        binary: str = "redis-server",
        startup_timeout: float = 10.0,
    ) -> None:
        self.extra_args: list[str] = list(extra_args or [])
        self.need_bus = need_bus
        self.binary = binary
        self.startup_timeout = startup_timeout
        self.port: int = 0
        self.dir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._paused = False

    # -- addresses -------------------------------------------------------------------

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path | None:
        return None if self.dir is None else self.dir / "redis.log"

    def read_log(self, name: str = "redis.log") -> str:
        path = None if self.dir is None else self.dir / name
        if path is None or not path.exists():
            return ""
        return path.read_text(errors="replace")

    def client(self, **kwargs: object) -> redis.Redis:
        """A sync redis-py client for this server (caller closes it)."""
        return redis.Redis(host=self.host, port=self.port, **kwargs)

    # -- lifecycle -------------------------------------------------------------------

    def _argv(self, port: int, workdir: Path) -> list[str]:
        return [
            self.binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--protected-mode", "no",
            "--daemonize", "no",
            "--dir", str(workdir),
            "--logfile", str(workdir / "redis.log"),
            *(arg.replace("{dir}", str(workdir)).replace("{port}", str(port))
              for arg in self.extra_args),
        ]  # fmt: skip

    def spawn(self) -> None:
        """Start the process without waiting for it to answer (see ``wait_ready``)."""
        if self.process is not None:
            raise RuntimeError("server already started")
        self.port = free_port(self.need_bus)
        self.dir = Path(tempfile.mkdtemp(prefix=f"swarm-redis-{self.port}-"))
        with (self.dir / "stdio.log").open("wb") as stdio:
            self.process = subprocess.Popen(
                self._argv(self.port, self.dir),
                stdin=subprocess.DEVNULL,
                stdout=stdio,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
            )
        _live.add(self)

    def wait_ready(self) -> None:
        """Poll PING until the server answers; raise if it died or took too long."""
        process = self.process
        if process is None:
            raise RuntimeError("server not started")
        deadline = time.monotonic() + self.startup_timeout
        probe = _probe(self.port)
        try:
            while True:
                if process.poll() is not None:
                    output = self.read_log("stdio.log") + self.read_log()
                    raise ServerStartError(
                        f"redis-server on port {self.port} exited with "
                        f"{process.returncode}:\n{output}",
                        port_clash="already in use" in output.lower(),
                    )
                try:
                    if probe.ping():
                        return
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"redis-server on port {self.port} not ready after "
                        f"{self.startup_timeout}s:\n{self.read_log()}"
                    )
                time.sleep(0.02)
        finally:
            probe.close()

    def start(self) -> Self:
        """Start the server and wait until it answers PING. Retries on a port race."""
        for attempt in range(_START_ATTEMPTS):
            self.spawn()
            try:
                self.wait_ready()
            except ServerStartError as error:
                self.stop()
                if not error.port_clash or attempt == _START_ATTEMPTS - 1:
                    raise
            except BaseException:
                self.stop()
                raise
            else:
                return self
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Terminate (then kill) the process and remove its dir. Safe to call twice."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                # A SIGSTOPped process would hold SIGTERM pending until continued.
                os.kill(process.pid, signal.SIGCONT)
                process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        self._paused = False
        _live.discard(self)
        workdir, self.dir = self.dir, None
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def crash_and_restart(self, before_restart: Callable[[Path], None] | None = None) -> None:
        """SIGKILL the server (no shutdown, no save), then start it again on the same port
        and dir, so it loads whatever its data files hold. ``before_restart(dir)`` may
        change those files first (e.g. put back an older snapshot: lost writes)."""
        process, workdir = self.process, self.dir
        if process is None or workdir is None:
            raise RuntimeError("server not started")
        os.kill(process.pid, signal.SIGCONT)
        process.kill()
        process.wait(timeout=10)
        if before_restart is not None:
            before_restart(workdir)
        with (workdir / "stdio.log").open("ab") as stdio:
            self.process = subprocess.Popen(
                self._argv(self.port, workdir),
                stdin=subprocess.DEVNULL,
                stdout=stdio,
                stderr=subprocess.STDOUT,
                cwd=workdir,
            )
        self.wait_ready()

    def pause(self) -> None:
        """SIGSTOP the server: connections stay open but nothing is answered."""
        if self.process is None:
            raise RuntimeError("server not started")
        os.kill(self.process.pid, signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT a paused server."""
        if self.process is None:
            raise RuntimeError("server not started")
        os.kill(self.process.pid, signal.SIGCONT)
        self._paused = False

    @property
    def paused(self) -> bool:
        return self._paused

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RedisServer(port={self.port}, running={self.running})"


class ServerStartError(RuntimeError):
    """redis-server exited during startup; ``port_clash`` when it lost its port to a race."""

    def __init__(self, message: str, *, port_clash: bool = False) -> None:
        super().__init__(message)
        self.port_clash = port_clash


def _probe(port: int) -> redis.Redis:
    """A short-timeout client with redis-py's own retries off, for readiness polling."""
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        socket_connect_timeout=0.5,
        socket_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


class RedisCluster:
    """``redis-server`` nodes in cluster mode, slots all assigned: three masters by
    default; with ``replicas=1`` and six nodes, three masters with a replica each."""

    def __init__(
        self,
        extra_args: list[str] | None = None,
        *,
        nodes: int = 3,
        replicas: int = 0,
        node_timeout_ms: int = 5000,
        startup_timeout: float = 20.0,
    ) -> None:
        if nodes // (replicas + 1) < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 masters")
        self.extra_args: list[str] = list(extra_args or [])
        self.replicas = replicas
        self.node_count = nodes
        self.node_timeout_ms = node_timeout_ms
        self.startup_timeout = startup_timeout
        self.servers: list[RedisServer] = []

    @property
    def ports(self) -> list[int]:
        return [server.port for server in self.servers]

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}"

    def client(self, **kwargs: object) -> redis.cluster.RedisCluster:
        """A sync cluster client seeded with the first node (caller closes it)."""
        return redis.cluster.RedisCluster(
            host=self.host,
            port=self.ports[0],
            **kwargs,
        )

    def start(self) -> Self:
        try:
            self._start_nodes()
            self._create()
            self._wait_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_nodes(self) -> None:
        for _ in range(self.node_count):
            server = RedisServer(
                [
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "{dir}/nodes-{port}.conf",
                    "--cluster-node-timeout", str(self.node_timeout_ms),
                    *self.extra_args,
                ],
                need_bus=True,
                startup_timeout=self.startup_timeout,
            )  # fmt: skip
            self.servers.append(server)
            server.start()

    def _create(self) -> None:
        cmd = [
            "redis-cli",
            "--cluster", "create",
            *(f"127.0.0.1:{port}" for port in self.ports),
            "--cluster-replicas", str(self.replicas),
            "--cluster-yes",
        ]  # fmt: skip
        result = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=self.startup_timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                "redis-cli --cluster create failed "
                f"({result.returncode}):\n{result.stdout.decode(errors='replace')}"
                f"{result.stderr.decode(errors='replace')}"
            )

    def _node_ready(self, port: int) -> bool:
        probe = _probe(port)
        try:
            info = _parse_cluster_info(probe.cluster("INFO"))
        except redis.exceptions.RedisError:
            return False
        finally:
            probe.close()
        if not (
            info.get("cluster_state") == "ok"
            and info.get("cluster_slots_assigned") == str(CLUSTER_SLOTS)
            and info.get("cluster_slots_ok") == str(CLUSTER_SLOTS)
            and info.get("cluster_known_nodes") == str(self.node_count)
        ):
            return False
        if self.replicas:  # a replica counts once it has synced with its primary
            probe = _probe(port)
            try:
                replication = probe.info("replication")
            except redis.exceptions.RedisError:
                return False
            finally:
                probe.close()
            if replication.get("role") == "slave":
                return bool(replication.get("master_link_status") == "up")
        return True

    def _wait_ok(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while not all(self._node_ready(port) for port in self.ports):
            if time.monotonic() > deadline:
                logs = "\n".join(s.read_log()[-2000:] for s in self.servers)
                raise TimeoutError(f"cluster not ok after {self.startup_timeout}s:\n{logs}")
            time.sleep(0.05)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        self.servers = []

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RedisCluster(ports={self.ports})"


def _parse_cluster_info(reply: object) -> dict[str, str]:
    """CLUSTER INFO as a dict; redis-py already parses it, but not in every version."""
    if isinstance(reply, dict):
        return {str(key): str(value) for key, value in reply.items()}
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    info: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = value.strip()
    return info


class SentinelServer(RedisServer):
    """One ``redis-server --sentinel`` monitoring ``primary_port`` as ``service``."""

    def __init__(
        self,
        primary_port: int,
        *,
        service: str = "mymaster",
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
    ) -> None:
        super().__init__()
        self.primary_port = primary_port
        self.service = service
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms

    def _argv(self, port: int, workdir: Path) -> list[str]:
        s = self.service
        conf = workdir / "sentinel.conf"  # Sentinel rewrites its config: a file of its own
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\n"
            f"dir {workdir}\nlogfile {workdir / 'redis.log'}\n"
            f"sentinel monitor {s} 127.0.0.1 {self.primary_port} {self.quorum}\n"
            f"sentinel down-after-milliseconds {s} {self.down_after_ms}\n"
            f"sentinel failover-timeout {s} {self.failover_timeout_ms}\n"
            f"sentinel parallel-syncs {s} 1\n"
        )
        return [self.binary, str(conf), "--sentinel"]


class RedisSentinelGroup:
    """A primary, one replica and three Sentinels (quorum 2), all on free loopback ports.

    ``url`` is the ``redis+sentinel://`` URL of the group; :meth:`primary` is whichever
    server the Sentinels name as primary now (it changes after a failover).
    """

    def __init__(self, service: str = "mymaster", down_after_ms: int = 1000) -> None:
        self.service = service
        self.down_after_ms = down_after_ms
        self.servers: list[RedisServer] = []
        self.sentinels: list[SentinelServer] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    def start(self) -> Self:
        try:
            primary = RedisServer().start()
            self.servers.append(primary)
            replica = RedisServer(["--replicaof", "127.0.0.1", str(primary.port)]).start()
            self.servers.append(replica)
            self._wait(lambda: self._info(replica).get("master_link_status") == "up", "replica")
            for _ in range(3):
                sentinel = SentinelServer(
                    primary.port, service=self.service, down_after_ms=self.down_after_ms
                )
                self.sentinels.append(sentinel.start())
            self._wait(self._sentinels_agree, "sentinels")
        except BaseException:
            self.stop()
            raise
        return self

    def _sentinels_agree(self) -> bool:
        for sentinel in self.sentinels:
            probe = _probe(sentinel.port)
            try:
                replicas = probe.execute_command("SENTINEL", "REPLICAS", self.service)
                others = probe.execute_command("SENTINEL", "SENTINELS", self.service)
            finally:
                probe.close()
            if len(replicas) < 1 or len(others) < len(self.sentinels) - 1:
                return False
        return True

    @staticmethod
    def _info(server: RedisServer) -> dict[str, Any]:
        probe = _probe(server.port)
        try:
            info: dict[str, Any] = probe.info("replication")
            return info
        finally:
            probe.close()

    @staticmethod
    def _wait(ready: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.exceptions.RedisError, OSError):
                if ready():
                    return
            time.sleep(0.05)
        raise TimeoutError(f"{what} not ready after {timeout}s")

    def primary_port(self) -> int:
        probe = _probe(self.sentinels[0].port)
        try:
            _host, port = probe.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
            return int(port)
        finally:
            probe.close()

    def server(self, port: int) -> RedisServer:
        return next(s for s in self.servers if s.port == port)

    def wait_for_new_primary(self, old_port: int, timeout: float = 20.0) -> RedisServer:
        """Block until the Sentinels name another primary and it accepts writes."""

        def promoted() -> bool:
            port = self.primary_port()
            return port != old_port and self._info(self.server(port)).get("role") == "master"

        self._wait(promoted, "failover", timeout)
        return self.server(self.primary_port())

    def stop(self) -> None:
        for server in [*self.sentinels, *self.servers]:
            server.stop()
        self.sentinels, self.servers = [], []

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

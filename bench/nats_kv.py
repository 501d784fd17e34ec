"""The peer users pick instead of a Redis library: NATS JetStream KV (nats-py, async).

Family ``nats``: 50 asyncio tasks on one connection each side, one key per task (the
shape of the ``async`` family), all cases interleaved in the same rounds:

- ``base.async.cas_xadd`` / ``base.async.hgetall``: the bare redis.asyncio baselines;
- ``peer.nats.kv.put`` (``kv.put``), ``peer.nats.kv.update`` (``kv.update(last=rev)``:
  compare-and-set on the key's revision), ``peer.nats.kv.get``;
- ``ours.async.put``, ``ours.async.cas_put`` (``put(expected_version=...)``),
  ``ours.async.get``.

The bucket is a throwaway (``bench_<pid>_<random>``, history 1), created for the run and
deleted afterwards; no other stream is touched. Where the server comes from
(``--nats``): ``own`` (default) starts ``nats-server -js`` on a free loopback port in a
temp dir (pinned like redis-server under ``--taskset``) and stops it; a URL uses that
server (e.g. the machine's ``nats://127.0.0.1:4222``); ``none`` leaves the peer out. No
nats-py, no nats-server binary or an unreachable server: the family prints one line
saying so and runs without the peer.

Storage: ``memory`` (``--nats-storage``, default), because the Redis server of the run
has persistence off; ``file`` is the JetStream default (writes reach the page cache, not
fsync'd per write).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.baselines import TASKS
from bench.core import NAMESPACE
from bench.harness import Case, Ctx, Sample, encode, timed_tasks
from swarm_memory import AsyncSwarmMemory

Log = Callable[[str], None]


class NatsServer:
    """A throwaway ``nats-server -js`` on a free loopback port (its own store dir)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="swarm-bench-nats-"))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"nats://127.0.0.1:{self.port}"
        argv = ["nats-server", "-a", "127.0.0.1", "-p", str(self.port), "-js"]
        argv += ["-sd", str(self.dir), "-l", str(self.dir / "nats.log")]
        self.process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.process.returncode}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                break
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("nats-server did not start within 10 s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


def start_server(spec: str, log: Log) -> tuple[str | None, NatsServer | None]:
    """(URL to use or None, the server we started or None) for ``--nats SPEC``."""
    if spec == "none":
        log("peer NATS JetStream KV: left out (--nats none)")
        return None, None
    if spec != "own":
        return spec, None
    if shutil.which("nats-server") is None:
        log("peer NATS JetStream KV: no nats-server on PATH (apt-get install nats-server)")
        return None, None
    try:
        server = NatsServer()
    except RuntimeError as exc:
        log(f"peer NATS JetStream KV: could not start nats-server: {exc}")
        return None, None
    return server.url, server


async def _quiet(exc: Exception) -> None:
    """nats-py's error callback: a failure to connect is raised to the caller, who says
    it in one line (the default callback logs a traceback per attempt)."""


async def _connect(url: str) -> Any:
    import nats

    # nats-py's first connect retries a refused server until max_reconnect_attempts is
    # passed, and 0 means without end (only the setup's 10 s wait_for stopped it): one
    # retry, 0.1 s later, then NoServersError.
    return await nats.connect(
        url,
        connect_timeout=1,
        allow_reconnect=False,
        max_reconnect_attempts=1,
        reconnect_time_wait=0.1,
        error_cb=_quiet,
    )


def _storage(kind: str) -> Any:
    from nats.js.api import StorageType

    return StorageType.MEMORY if kind == "memory" else StorageType.FILE


def peer_cases(ctx: Ctx, url: str | None, storage: str, log: Log) -> list[Case]:
    """The NATS KV cases, or [] (with a printed line) when the peer cannot run."""
    if url is None:
        return []
    try:
        import nats  # noqa: F401
    except ImportError:
        log("peer NATS JetStream KV: nats-py not installed (pip install -e '.[bench]')")
        return []
    bucket = f"bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    keys = [f"k{i}" for i in range(TASKS)]  # get and put
    cas_keys = [f"c{i}" for i in range(TASKS)]  # update: their revisions are tracked here
    data = encode(ctx.value).encode()
    revisions: dict[str, int] = {}

    async def setup() -> None:
        nc = await _connect(url)
        try:
            kv = await nc.jetstream().create_key_value(
                bucket=bucket, history=1, storage=_storage(storage)
            )
            for k in keys + cas_keys:
                revisions[k] = await kv.put(k, data)
        finally:
            await nc.close()

    try:
        asyncio.run(asyncio.wait_for(setup(), 10))
    except Exception as exc:  # unreachable, no JetStream, ...: said, then left out
        log(f"peer NATS JetStream KV: unavailable at {url} ({type(exc).__name__}: {exc})")
        return []

    async def put_task(kv: Any, key: str, n: int) -> None:
        for _ in range(n):
            await kv.put(key, encode(ctx.value).encode())

    async def update_task(kv: Any, key: str, n: int) -> None:
        for _ in range(n):
            revisions[key] = await kv.update(key, encode(ctx.value).encode(), last=revisions[key])

    async def get_task(kv: Any, key: str, n: int) -> None:
        for _ in range(n):
            json.loads((await kv.get(key)).value)

    def runner(task: Any, keys: list[str]) -> Callable[[int], Sample]:
        async def main(n: int) -> Sample:
            nc = await _connect(url)
            try:
                kv = await nc.jetstream().key_value(bucket)
                return await timed_tasks(lambda k, count: task(kv, k, count), keys, n)
            finally:
                await nc.close()

        return lambda n: asyncio.run(main(n))

    def close() -> None:
        async def drop() -> None:
            nc = await _connect(url)
            try:
                await nc.jetstream().delete_key_value(bucket)
            finally:
                await nc.close()

        try:
            asyncio.run(asyncio.wait_for(drop(), 10))
        except Exception as exc:
            log(f"peer NATS JetStream KV: could not delete bucket {bucket}: {exc}")

    note = f"{TASKS} tasks, {storage} storage, history 1"
    return [
        Case("peer.nats.kv.put", runner(put_task, keys), vs=("base.async.cas_xadd",), note=note),
        Case("peer.nats.kv.update", runner(update_task, cas_keys), vs=("base.async.cas_xadd",)),
        Case("peer.nats.kv.get", runner(get_task, keys), vs=("base.async.hgetall",), close=close),
    ]


def ours_cas_case(ctx: Ctx) -> Case:
    """``put(expected_version=v)`` per task on its own key: a CAS put that succeeds."""
    from swarm_memory import SwarmMemory

    keys = [ctx.fresh("acas-ours") for _ in range(TASKS)]
    mem = SwarmMemory.from_url(ctx.url, agent="bench")
    mem.create_namespace(NAMESPACE, exist_ok=True)
    ns = mem.namespace(NAMESPACE)
    versions = {k: ns.put(k, ctx.value).version for k in keys}
    mem.close()
    value = ctx.value

    async def task(ns: Any, key: str, n: int) -> None:
        for _ in range(n):
            versions[key] = (await ns.put(key, value, expected_version=versions[key])).version

    async def main(n: int) -> Sample:
        amem = AsyncSwarmMemory.from_url(ctx.url, agent="bench")
        try:
            ans = amem.namespace(NAMESPACE)
            return await timed_tasks(lambda k, count: task(ans, k, count), keys, n)
        finally:
            await amem.close()

    return Case(
        "ours.async.cas_put",
        lambda n: asyncio.run(main(n)),
        vs=("base.async.cas_xadd",),
        note=f"{TASKS} tasks, put(expected_version=)",
    )


# Ratios against the peer, added to our cases of the family (they name the peer only
# when it ran).
OURS_VS_PEER = {
    "ours.async.put": "peer.nats.kv.put",
    "ours.async.cas_put": "peer.nats.kv.update",
    "ours.async.get": "peer.nats.kv.get",
}

"""LangGraph checkpointer step benchmark: ``python -m bench.langgraph_steps``.

One *step* is what a graph super-step costs its checkpointer: ``put`` (a checkpoint with
3 channels, 1 of them new) + ``put_writes`` (2 writes of one task) + ``get_tuple`` (the
thread's latest). Each LangGraph thread runs its steps one after another; ``1`` and ``16``
threads run concurrently (OS threads sharing one sync saver, or tasks sharing one async
saver). Savers: ours (a ``redis-server`` this script starts on a free loopback port),
LangGraph's Postgres saver 3.2.0 (a throwaway database on the local PostgreSQL at
127.0.0.1:5432 — skipped with a printed line when none is reachable; connection pools of
16), the SQLite saver 3.1.2 (a file in a temp dir) and InMemorySaver. Prints steps/s,
p99 step latency and the ratio of ours to each peer, per row.

    pip install -e '.[test,bench]'
    python -m bench.langgraph_steps [--seconds 2] [--pg DSN] [--no-pg]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint
from langgraph.checkpoint.memory import InMemorySaver

from swarm_memory import AsyncSwarmMemory, Settings, SwarmMemory
from swarm_memory.langgraph import AsyncSwarmCheckpointSaver, SwarmCheckpointSaver

CONCURRENCY = (1, 16)


def _step_args(saver: BaseCheckpointSaver[Any], thread: str, parent: str | None, i: int) -> Any:
    cp = empty_checkpoint()
    version = saver.get_next_version(None if i == 0 else f"{i:032}.0", None)
    cp["channel_values"] = {
        "messages": [f"message {j}" for j in range(i % 8)],
        "step": i,
        "topic": "langgraph on redis",
    }
    cp["channel_versions"] = {"messages": version, "step": version, "topic": "1"}
    conf: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": ""}
    if parent:
        conf["checkpoint_id"] = parent
    new = {"step": version} if i else {"messages": version, "step": version, "topic": "1"}
    return {"configurable": conf}, cp, {"source": "loop", "step": i, "parents": {}}, new


def _sync_worker(saver: Any, stop: float, lat: list[float]) -> None:
    thread, parent, i = uuid.uuid4().hex, None, 0
    while time.perf_counter() < stop:
        t0 = time.perf_counter()
        config, cp, md, new = _step_args(saver, thread, parent, i)
        stored = saver.put(config, cp, md, new)
        saver.put_writes(stored, [("messages", ["hi"]), ("step", i)], f"task-{i}")
        got = saver.get_tuple({"configurable": {"thread_id": thread, "checkpoint_ns": ""}})
        assert got is not None and got.checkpoint["id"] == cp["id"], "stale read"
        parent, i = cp["id"], i + 1
        lat.append(time.perf_counter() - t0)


async def _async_worker(saver: Any, stop: float, lat: list[float]) -> None:
    thread, parent, i = uuid.uuid4().hex, None, 0
    while time.perf_counter() < stop:
        t0 = time.perf_counter()
        config, cp, md, new = _step_args(saver, thread, parent, i)
        stored = await saver.aput(config, cp, md, new)
        await saver.aput_writes(stored, [("messages", ["hi"]), ("step", i)], f"task-{i}")
        got = await saver.aget_tuple({"configurable": {"thread_id": thread, "checkpoint_ns": ""}})
        assert got is not None and got.checkpoint["id"] == cp["id"], "stale read"
        parent, i = cp["id"], i + 1
        lat.append(time.perf_counter() - t0)


def run_sync(saver: Any, threads: int, seconds: float) -> tuple[float, float]:
    lats: list[list[float]] = [[] for _ in range(threads)]
    stop = time.perf_counter() + seconds
    workers = [
        threading.Thread(target=_sync_worker, args=(saver, stop, lats[k])) for k in range(threads)
    ]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return _summary(lats, time.perf_counter() - t0)


async def run_async(saver: Any, threads: int, seconds: float) -> tuple[float, float]:
    lats: list[list[float]] = [[] for _ in range(threads)]
    stop = time.perf_counter() + seconds
    t0 = time.perf_counter()
    await asyncio.gather(*(_async_worker(saver, stop, lats[k]) for k in range(threads)))
    return _summary(lats, time.perf_counter() - t0)


def _summary(lats: list[list[float]], elapsed: float) -> tuple[float, float]:
    flat = sorted(x for lat in lats for x in lat)
    p99 = flat[min(len(flat) - 1, int(len(flat) * 0.99))] if flat else float("nan")
    return len(flat) / elapsed, p99


# ------------------------------------------------------------------ savers
@contextlib.contextmanager
def sync_savers(url: str, pg: str | None, tmp: str) -> Iterator[dict[str, Any]]:
    savers: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        mem = SwarmMemory.from_url(url, agent="bench", settings=Settings(key_prefix="lgb"))
        stack.callback(mem.close)
        savers["swarm_memory"] = SwarmCheckpointSaver(mem)
        if pg:
            from langgraph.checkpoint.postgres import PostgresSaver
            from psycopg.rows import dict_row
            from psycopg_pool import ConnectionPool

            pool = ConnectionPool(
                pg,
                min_size=16,
                max_size=16,
                kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
                open=True,
            )
            stack.callback(pool.close)
            saver = PostgresSaver(pool)  # type: ignore[arg-type]
            saver.setup()
            savers["postgres"] = saver
        from langgraph.checkpoint.sqlite import SqliteSaver

        conn = sqlite3.connect(os.path.join(tmp, "sync.db"), check_same_thread=False)
        stack.callback(conn.close)
        savers["sqlite"] = SqliteSaver(conn)
        savers["in_memory"] = InMemorySaver()
        yield savers


@contextlib.asynccontextmanager
async def async_savers(url: str, pg: str | None, tmp: str) -> AsyncIterator[dict[str, Any]]:
    savers: dict[str, Any] = {}
    async with contextlib.AsyncExitStack() as stack:
        mem = AsyncSwarmMemory.from_url(url, agent="bench", settings=Settings(key_prefix="lgb"))
        stack.push_async_callback(mem.close)
        savers["swarm_memory"] = AsyncSwarmCheckpointSaver(mem)
        if pg:
            from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
            from psycopg.rows import dict_row
            from psycopg_pool import AsyncConnectionPool

            pool = AsyncConnectionPool(
                pg,
                min_size=16,
                max_size=16,
                kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
                open=False,
            )
            await pool.open()
            stack.push_async_callback(pool.close)
            saver = AsyncPostgresSaver(pool)  # type: ignore[arg-type]
            await saver.setup()
            savers["postgres"] = saver
        import aiosqlite
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        conn = await aiosqlite.connect(os.path.join(tmp, "async.db"))
        stack.push_async_callback(conn.close)
        savers["sqlite"] = AsyncSqliteSaver(conn)
        savers["in_memory"] = InMemorySaver()
        yield savers


@contextlib.contextmanager
def postgres_database(dsn: str | None) -> Iterator[str | None]:
    """A throwaway database on the server of ``dsn`` (dropped afterwards), or None."""
    if dsn is None:
        yield None
        return
    try:
        import psycopg
    except ImportError:
        print("postgres: skipped (pip install 'swarm-memory[bench]' for psycopg)")
        yield None
        return
    try:
        admin = psycopg.connect(dsn, autocommit=True, connect_timeout=3)
    except Exception as exc:
        print(f"postgres: skipped ({dsn} not reachable: {str(exc).strip()[:120]})")
        yield None
        return
    name = f"lgbench_{os.getpid()}"
    with admin:
        admin.execute(f"CREATE DATABASE {name}")
        try:
            base, _, _ = dsn.rpartition("/")
            yield f"{base}/{name}"
        finally:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _row(mode: str, n: int, name: str, rate: float, p99: float) -> None:
    line = f"{mode:<5} {n:>2} threads {name:<13} {rate:>9.0f} steps/s  p99 {p99 * 1e3:6.2f} ms"
    print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per row and saver")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--no-pg", action="store_true")
    args = parser.parse_args(argv)
    from tests.servers import RedisServer, redis_server_available

    if not redis_server_available():
        print("redis-server not on PATH")
        return 2
    rows: list[tuple[str, int, str, float, float]] = []
    with (
        RedisServer() as server,
        tempfile.TemporaryDirectory() as tmp,
        postgres_database(None if args.no_pg else args.pg) as pg,
    ):
        with sync_savers(server.url, pg, tmp) as savers:
            for n in CONCURRENCY:
                for name, saver in savers.items():
                    rate, p99 = run_sync(saver, n, args.seconds)
                    rows.append(("sync", n, name, rate, p99))
                    _row("sync", n, name, rate, p99)

        async def go() -> None:
            async with async_savers(server.url, pg, tmp) as asavers:
                for n in CONCURRENCY:
                    for name, saver in asavers.items():
                        rate, p99 = await run_async(saver, n, args.seconds)
                        rows.append(("async", n, name, rate, p99))
                        _row("async", n, name, rate, p99)

        asyncio.run(go())
    print()
    print("ratio = swarm_memory steps/s over the peer's, same run")
    by = {(m, n, name): rate for m, n, name, rate, _ in rows}
    for mode in ("sync", "async"):
        for n in CONCURRENCY:
            ours = by[(mode, n, "swarm_memory")]
            parts = [
                f"{peer} {ours / by[(mode, n, peer)]:.2f}x"
                for peer in ("postgres", "sqlite", "in_memory")
                if (mode, n, peer) in by
            ]
            print(f"{mode:<5} {n:>2} threads: " + ", ".join(parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

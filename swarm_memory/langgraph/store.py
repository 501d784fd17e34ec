"""LangGraph stores on swarm_memory: ``SwarmStore`` (over a
:class:`~swarm_memory.SwarmMemory`) and ``AsyncSwarmStore`` (over an
:class:`~swarm_memory.AsyncSwarmMemory`). Layout and costs: ``_store_core``."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Iterable, Mapping
from typing import Any, Literal, TypeVar

from langgraph.store.base import (
    NOT_PROVIDED,
    BaseStore,
    IndexConfig,
    NotProvided,
    Op,
    PutOp,
    Result,
    TTLConfig,
)

from swarm_memory import AsyncSwarmMemory, Settings, SwarmMemory
from swarm_memory.langgraph import _names as names
from swarm_memory.langgraph._flow import (
    Flow,
    Handles,
    check_memory,
    run_async,
    run_on_loop,
    run_sync,
)
from swarm_memory.langgraph._store_core import (
    StoreCore,
    VersionedItem,
    validate_labels,
)

T = TypeVar("T")


def _put_op(
    store: BaseStore,
    namespace: tuple[str, ...],
    key: str,
    value: Mapping[str, Any],
    *,
    index: Literal[False] | list[str] | None,
    ttl: float | NotProvided | None,
) -> PutOp:
    validate_labels(namespace)
    if ttl is NOT_PROVIDED:
        ttl = (store.ttl_config or {}).get("default_ttl")
    return PutOp(namespace, key, dict(value), index=index, ttl=ttl)  # type: ignore[arg-type]


class _StoreBase(BaseStore):
    supports_ttl = True
    _core: StoreCore

    def _init(
        self,
        memory: Any,
        prefix: str,
        index: IndexConfig | None,
        ttl: TTLConfig | None,
        owns_memory: bool,
    ) -> None:
        self.memory = memory
        self.index_config = index
        self.ttl_config = ttl
        self._owns_memory = owns_memory
        self._core = StoreCore(names.validate_prefix(prefix), Handles(memory), index, ttl)


class SwarmStore(_StoreBase):
    """A LangGraph ``BaseStore`` over a :class:`~swarm_memory.SwarmMemory`.

    ``index``: LangGraph's ``IndexConfig`` (``dims``, ``embed``, ``fields``) for semantic
    search; ``ttl``: ``TTLConfig`` (``default_ttl`` minutes, ``refresh_on_read``,
    ``sweep_interval_minutes`` for :meth:`start_ttl_sweeper`). Items come back as
    :class:`VersionedItem` (``.version``); ``put(..., expected_version=n)`` writes only
    over version ``n`` (0: only if absent) and raises ConflictError otherwise.
    The ``a*`` methods run the sync ones in a worker thread.
    """

    def __init__(
        self,
        memory: SwarmMemory,
        *,
        prefix: str = "lgs",
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
        _owns_memory: bool = False,
    ) -> None:
        check_memory(memory, want_async=False)
        self._init(memory, prefix, index, ttl, _owns_memory)
        self._sweeper: threading.Thread | None = None
        self._stop_sweeper = threading.Event()
        self._lock = threading.Lock()  # the semantic cache is not shared between threads

    @classmethod
    def from_url(
        cls,
        url: str | None = None,
        *,
        agent: str = "langgraph",
        settings: Settings | None = None,
        **options: Any,
    ) -> SwarmStore:
        memory = SwarmMemory.from_url(url, agent=agent, settings=settings)
        return cls(memory, _owns_memory=True, **options)

    def _run(self, flow: Flow[T]) -> T:
        with self._lock:
            return run_sync(self._core.handles, flow)

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        return self._run(self._core.batch(list(ops)))

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return await asyncio.to_thread(self.batch, list(ops))

    def put(
        self,
        namespace: tuple[str, ...],
        key: str,
        value: Mapping[str, Any],
        index: Literal[False] | list[str] | None = None,
        *,
        ttl: float | NotProvided | None = NOT_PROVIDED,
        expected_version: int | None = None,
    ) -> None:
        """Store ``value``; with ``expected_version``, only over that version (0: only if
        absent), else ConflictError carrying the current entry."""
        op = _put_op(self, namespace, key, value, index=index, ttl=ttl)
        expected = None if expected_version is None else {(namespace, key): expected_version}
        self._run(self._core.apply([op], expected))

    def put_versioned(
        self,
        namespace: tuple[str, ...],
        key: str,
        value: Mapping[str, Any],
        *,
        expected_version: int | None = None,
        index: Literal[False] | list[str] | None = None,
        ttl: float | NotProvided | None = NOT_PROVIDED,
    ) -> int:
        """:meth:`put` that returns the new version."""
        op = _put_op(self, namespace, key, value, index=index, ttl=ttl)
        expected = None if expected_version is None else {(namespace, key): expected_version}
        written = self._run(self._core.apply([op], expected))
        entry = written[(namespace, key)]
        assert entry is not None
        return entry.version

    async def aput(
        self,
        namespace: tuple[str, ...],
        key: str,
        value: Mapping[str, Any],
        index: Literal[False] | list[str] | None = None,
        *,
        ttl: float | NotProvided | None = NOT_PROVIDED,
        expected_version: int | None = None,
    ) -> None:
        await asyncio.to_thread(
            self.put, namespace, key, value, index, ttl=ttl, expected_version=expected_version
        )

    def sweep_ttl(self) -> int:
        """Remove expired items now; returns how many."""
        return self._run(self._core.sweep())

    def start_ttl_sweeper(self, sweep_interval_minutes: float | None = None) -> threading.Thread:
        """Sweep every ``sweep_interval_minutes`` (default: the TTLConfig's, else 5) in a
        daemon thread until :meth:`stop_ttl_sweeper`."""
        minutes = sweep_interval_minutes or (self.ttl_config or {}).get("sweep_interval_minutes")
        interval = float(minutes or 5) * 60.0
        self._stop_sweeper.clear()

        def loop() -> None:
            while not self._stop_sweeper.wait(interval):
                try:
                    self.sweep_ttl()
                except Exception:  # a failed sweep is retried at the next interval
                    continue

        self._sweeper = threading.Thread(target=loop, name="swarm-store-sweeper", daemon=True)
        self._sweeper.start()
        return self._sweeper

    def stop_ttl_sweeper(self, timeout: float | None = None) -> bool:
        self._stop_sweeper.set()
        if self._sweeper is not None:
            self._sweeper.join(timeout)
            return not self._sweeper.is_alive()
        return True

    def close(self) -> None:
        self.stop_ttl_sweeper()
        self._run(self._core.close())
        if self._owns_memory:
            self.memory.close()

    def __enter__(self) -> SwarmStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncSwarmStore(_StoreBase):
    """The async twin of :class:`SwarmStore`, over an
    :class:`~swarm_memory.AsyncSwarmMemory` (same options). ``batch`` may be called from
    other threads while its event loop runs."""

    def __init__(
        self,
        memory: AsyncSwarmMemory,
        *,
        prefix: str = "lgs",
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
        _owns_memory: bool = False,
    ) -> None:
        check_memory(memory, want_async=True)
        self._init(memory, prefix, index, ttl, _owns_memory)
        self._sweeper: asyncio.Task[None] | None = None
        self._alock = asyncio.Lock()
        try:
            self.loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self.loop = None

    @classmethod
    def from_url(
        cls,
        url: str | None = None,
        *,
        agent: str = "langgraph",
        settings: Settings | None = None,
        **options: Any,
    ) -> AsyncSwarmStore:
        memory = AsyncSwarmMemory.from_url(url, agent=agent, settings=settings)
        return cls(memory, _owns_memory=True, **options)

    async def _arun(self, flow: Flow[T]) -> T:
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        async with self._alock:
            return await run_async(self._core.handles, flow)

    def _sync(self, coro: Awaitable[T]) -> T:
        return run_on_loop(self.loop, coro, "AsyncSwarmStore")

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return await self._arun(self._core.batch(list(ops)))

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        return self._sync(self.abatch(list(ops)))

    async def aput(
        self,
        namespace: tuple[str, ...],
        key: str,
        value: Mapping[str, Any],
        index: Literal[False] | list[str] | None = None,
        *,
        ttl: float | NotProvided | None = NOT_PROVIDED,
        expected_version: int | None = None,
    ) -> None:
        """See :meth:`SwarmStore.put`."""
        await self.aput_versioned(
            namespace, key, value, expected_version=expected_version, index=index, ttl=ttl
        )

    async def aput_versioned(
        self,
        namespace: tuple[str, ...],
        key: str,
        value: Mapping[str, Any],
        *,
        expected_version: int | None = None,
        index: Literal[False] | list[str] | None = None,
        ttl: float | NotProvided | None = NOT_PROVIDED,
    ) -> int:
        op = _put_op(self, namespace, key, value, index=index, ttl=ttl)
        expected = None if expected_version is None else {(namespace, key): expected_version}
        written = await self._arun(self._core.apply([op], expected))
        entry = written[(namespace, key)]
        assert entry is not None
        return entry.version

    async def sweep_ttl(self) -> int:
        return await self._arun(self._core.sweep())

    async def start_ttl_sweeper(
        self, sweep_interval_minutes: float | None = None
    ) -> asyncio.Task[None]:
        minutes = sweep_interval_minutes or (self.ttl_config or {}).get("sweep_interval_minutes")
        interval = float(minutes or 5) * 60.0

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    await self.sweep_ttl()
                except Exception:  # a failed sweep is retried at the next interval
                    continue

        self._sweeper = asyncio.get_running_loop().create_task(loop())
        return self._sweeper

    async def stop_ttl_sweeper(self) -> bool:
        task, self._sweeper = self._sweeper, None
        if task is not None:
            task.cancel()
            with _suppress_cancel():
                await task
        return True

    async def aclose(self) -> None:
        await self.stop_ttl_sweeper()
        await self._arun(self._core.close())
        if self._owns_memory:
            await self.memory.close()

    async def __aenter__(self) -> AsyncSwarmStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class _suppress_cancel:  # noqa: N801 - used like contextlib.suppress
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: object, tb: object) -> bool:
        return exc_type is asyncio.CancelledError


__all__ = ["AsyncSwarmStore", "SwarmStore", "VersionedItem"]

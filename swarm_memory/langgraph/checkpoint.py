"""LangGraph checkpointers on swarm_memory: ``SwarmCheckpointSaver`` (over a
:class:`~swarm_memory.SwarmMemory`) and ``AsyncSwarmCheckpointSaver`` (over an
:class:`~swarm_memory.AsyncSwarmMemory`). Layout and costs: ``_checkpoint_core``."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from datetime import timedelta
from typing import Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from swarm_memory import AsyncSwarmMemory, Event, Settings, SwarmMemory
from swarm_memory.errors import InvalidInput
from swarm_memory.langgraph import _names as names
from swarm_memory.langgraph._checkpoint_core import CheckpointCore, SaverOptions
from swarm_memory.langgraph._checkpoint_prune import next_version
from swarm_memory.langgraph._flow import (
    Flow,
    Handles,
    check_memory,
    run_async,
    run_on_loop,
    run_sync,
)

T = TypeVar("T")


def _seconds(value: float | timedelta | None, field: str) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
        raise InvalidInput(
            f"{field} must be a positive number of seconds", field=field, value=value
        )
    return float(seconds)


def _options(
    *,
    prefix: str,
    ttl: float | timedelta | None,
    ownership: bool,
    claim_ttl: float | timedelta,
    claim_wait: float,
    max_events: int,
) -> SaverOptions:
    if isinstance(max_events, bool) or not isinstance(max_events, int) or max_events < 1:
        raise InvalidInput(
            "max_events must be a positive int", field="max_events", value=max_events
        )
    return SaverOptions(
        prefix=names.validate_prefix(prefix),
        ttl=_seconds(ttl, "ttl"),
        ownership=bool(ownership),
        claim_ttl=_seconds(claim_ttl, "claim_ttl") or 30.0,
        claim_wait=claim_wait,
        max_events=max_events,
    )


class CheckpointEvent:
    """A checkpoint landed on a watched thread (``saver.watch(thread_id)``)."""

    __slots__ = ("checkpoint_id", "checkpoint_ns", "cursor", "event", "thread_id")

    def __init__(self, thread_id: str, event: Event) -> None:
        parsed = names.parse_checkpoint_key(event.key or "")
        self.thread_id = thread_id
        self.checkpoint_ns, self.checkpoint_id = parsed or ("", "")
        self.cursor = event.cursor  # watch(since=cursor) resumes right after it
        self.event = event

    @property
    def config(self) -> RunnableConfig:
        return {
            "configurable": {
                "thread_id": self.thread_id,
                "checkpoint_ns": self.checkpoint_ns,
                "checkpoint_id": self.checkpoint_id,
            }
        }

    def __repr__(self) -> str:
        return (
            f"CheckpointEvent(thread_id={self.thread_id!r}, checkpoint_ns="
            f"{self.checkpoint_ns!r}, checkpoint_id={self.checkpoint_id!r})"
        )


class _Base(BaseCheckpointSaver[str]):
    _core: CheckpointCore

    def __init__(
        self,
        memory: Any,
        *,
        serde: SerializerProtocol | None,
        prefix: str,
        ttl: float | timedelta | None,
        ownership: bool,
        claim_ttl: float | timedelta,
        claim_wait: float,
        max_events: int,
        owns_memory: bool,
    ) -> None:
        super().__init__(serde=serde)
        self.memory = memory
        self._owns_memory = owns_memory
        self._core = CheckpointCore(
            self.serde,
            _options(
                prefix=prefix,
                ttl=ttl,
                ownership=ownership,
                claim_ttl=claim_ttl,
                claim_wait=claim_wait,
                max_events=max_events,
            ),
            Handles(memory),
        )

    def get_next_version(self, current: str | None, channel: None) -> str:
        return next_version(current)

    def _pattern(self, checkpoint_ns: str | None) -> str:
        return names.checkpoint_pattern(checkpoint_ns)


class SwarmCheckpointSaver(_Base):
    """A LangGraph checkpointer over a :class:`~swarm_memory.SwarmMemory`.

    ``ttl``: seconds (or timedelta) a thread lives after its last ``put``/``put_writes``;
    None keeps threads until deleted. ``ownership=True``: a worker claims each thread it
    writes (a fenced lock, ``claim_ttl`` seconds, renewed in the background) and the
    store refuses the writes of a worker whose claim lapsed or was taken over
    (:class:`~swarm_memory.langgraph.ThreadOwnershipLost`); a thread another worker holds
    raises :class:`~swarm_memory.langgraph.ThreadOwned` after ``claim_wait`` seconds.
    ``max_events``: checkpoint-feed events each thread keeps for ``watch``.

    The ``a*`` methods run the sync ones in a worker thread; use
    :class:`AsyncSwarmCheckpointSaver` in async code.
    """

    def __init__(
        self,
        memory: SwarmMemory,
        *,
        serde: SerializerProtocol | None = None,
        prefix: str = "lg",
        ttl: float | timedelta | None = None,
        ownership: bool = False,
        claim_ttl: float | timedelta = 30.0,
        claim_wait: float = 0.0,
        max_events: int = 1000,
        _owns_memory: bool = False,
    ) -> None:
        check_memory(memory, want_async=False)
        super().__init__(
            memory,
            serde=serde,
            prefix=prefix,
            ttl=ttl,
            ownership=ownership,
            claim_ttl=claim_ttl,
            claim_wait=claim_wait,
            max_events=max_events,
            owns_memory=_owns_memory,
        )

    @classmethod
    def from_url(
        cls,
        url: str | None = None,
        *,
        agent: str = "langgraph",
        settings: Settings | None = None,
        **options: Any,
    ) -> SwarmCheckpointSaver:
        """Connect to ``url`` (or ``SWARM_MEMORY_REDIS_URL``) as ``agent``; ``close()``
        closes that connection."""
        memory = SwarmMemory.from_url(url, agent=agent, settings=settings)
        return cls(memory, _owns_memory=True, **options)

    def _run(self, flow: Flow[T]) -> T:
        return run_sync(self._core.handles, flow)

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._run(self._core.get_tuple(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        return iter(self._run(self._core.list_tuples(config, filter, before, limit)))

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self._run(self._core.put(config, checkpoint, metadata, new_versions))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self._run(self._core.put_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        self._run(self._core.delete_thread(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._run(self._core.delete_for_runs(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._run(self._core.copy_thread(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self._run(self._core.prune(thread_ids, strategy))

    # The a* twins: the sync calls in a worker thread.
    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        flow = self._core.list_tuples(config, filter, before, limit)
        for item in await asyncio.to_thread(self._run, flow):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await asyncio.to_thread(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await asyncio.to_thread(self.prune, thread_ids, strategy=strategy)

    # Beyond BaseCheckpointSaver.
    def claim(self, thread_id: str, *, wait: float | None = 0.0) -> int:
        """Take the thread's ownership claim (waiting up to ``wait`` s; None = as long as it
        takes) and return its fencing token. Raises ThreadOwned."""
        return self._run(self._core.claim(thread_id, wait)).token

    def release(self, thread_id: str) -> None:
        """Give the thread's claim back (a no-op when not held)."""
        self._run(self._core.release(thread_id))

    def watch(
        self, thread_id: str, *, checkpoint_ns: str | None = None, since: int | str | None = None
    ) -> Iterator[CheckpointEvent]:
        """Checkpoints landing on ``thread_id`` (of ``checkpoint_ns``, or all), in order,
        each once; ``since``: a revision or a ``CheckpointEvent.cursor`` to resume after.
        Raises NamespaceNotFound for a thread that does not exist (yet)."""
        name, _ = self._core.thread_ns(thread_id)
        watch = self.memory.namespace(name).watch(self._pattern(checkpoint_ns), since=since)
        with watch:
            for event in watch:
                if event.type == "put":
                    yield CheckpointEvent(thread_id, event)

    def sweep_expired(self) -> builtins.list[str]:
        """Delete every thread whose TTL ran out (reads never return them anyway); returns
        their ids. Walks every thread: run it periodically, not per step."""
        return self._run(self._core.sweep_expired())

    def close(self) -> None:
        for thread_id in list(self._core.claims):
            self.release(thread_id)
        if self._owns_memory:
            self.memory.close()

    def __enter__(self) -> SwarmCheckpointSaver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncSwarmCheckpointSaver(_Base):
    """The async twin of :class:`SwarmCheckpointSaver`, over an
    :class:`~swarm_memory.AsyncSwarmMemory` (same options). Its sync methods may be called
    from other threads while its event loop runs (as LangGraph's sync API does)."""

    def __init__(
        self,
        memory: AsyncSwarmMemory,
        *,
        serde: SerializerProtocol | None = None,
        prefix: str = "lg",
        ttl: float | timedelta | None = None,
        ownership: bool = False,
        claim_ttl: float | timedelta = 30.0,
        claim_wait: float = 0.0,
        max_events: int = 1000,
        _owns_memory: bool = False,
    ) -> None:
        check_memory(memory, want_async=True)
        super().__init__(
            memory,
            serde=serde,
            prefix=prefix,
            ttl=ttl,
            ownership=ownership,
            claim_ttl=claim_ttl,
            claim_wait=claim_wait,
            max_events=max_events,
            owns_memory=_owns_memory,
        )
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
    ) -> AsyncSwarmCheckpointSaver:
        memory = AsyncSwarmMemory.from_url(url, agent=agent, settings=settings)
        return cls(memory, _owns_memory=True, **options)

    async def _arun(self, flow: Flow[T]) -> T:
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        return await run_async(self._core.handles, flow)

    def _sync(self, coro: Awaitable[T]) -> T:
        return run_on_loop(self.loop, coro, "AsyncSwarmCheckpointSaver")

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self._arun(self._core.get_tuple(config))

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        for item in await self._arun(self._core.list_tuples(config, filter, before, limit)):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await self._arun(self._core.put(config, checkpoint, metadata, new_versions))

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await self._arun(self._core.put_writes(config, writes, task_id, task_path))

    async def adelete_thread(self, thread_id: str) -> None:
        await self._arun(self._core.delete_thread(thread_id))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await self._arun(self._core.delete_for_runs(run_ids))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await self._arun(self._core.copy_thread(source_thread_id, target_thread_id))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await self._arun(self._core.prune(thread_ids, strategy))

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._sync(self.aget_tuple(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        flow = self._core.list_tuples(config, filter, before, limit)
        return iter(self._sync(self._arun(flow)))

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self._sync(self.aput(config, checkpoint, metadata, new_versions))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self._sync(self.aput_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        self._sync(self.adelete_thread(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._sync(self.adelete_for_runs(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._sync(self.acopy_thread(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self._sync(self.aprune(thread_ids, strategy=strategy))

    async def claim(self, thread_id: str, *, wait: float | None = 0.0) -> int:
        """See :meth:`SwarmCheckpointSaver.claim`."""
        return (await self._arun(self._core.claim(thread_id, wait))).token

    async def release(self, thread_id: str) -> None:
        await self._arun(self._core.release(thread_id))

    async def watch(
        self, thread_id: str, *, checkpoint_ns: str | None = None, since: int | str | None = None
    ) -> AsyncIterator[CheckpointEvent]:
        """See :meth:`SwarmCheckpointSaver.watch`."""
        name, _ = self._core.thread_ns(thread_id)
        watch = await self.memory.namespace(name).watch(self._pattern(checkpoint_ns), since=since)
        async with watch:
            async for event in watch:
                if event.type == "put":
                    yield CheckpointEvent(thread_id, event)

    async def sweep_expired(self) -> builtins.list[str]:
        return await self._arun(self._core.sweep_expired())

    async def aclose(self) -> None:
        for thread_id in list(self._core.claims):
            await self.release(thread_id)
        if self._owns_memory:
            await self.memory.close()

    async def __aenter__(self) -> AsyncSwarmCheckpointSaver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

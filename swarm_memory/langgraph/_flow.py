"""One code path for the sync and the async LangGraph adapters (DESIGN.md decision 12).

The checkpointer and store logic is written once, as generator *flows* that yield
:class:`Call` requests (a public method of a ``SwarmMemory`` / namespace / transaction,
with its arguments) and receive the result, or the exception, back. :func:`run_sync` drives
a flow against a :class:`~swarm_memory.SwarmMemory`, :func:`run_async` against an
:class:`~swarm_memory.AsyncSwarmMemory`: the only place where sync and async differ.
Everything goes through the public API only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import AsyncIterator, Awaitable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from swarm_memory import AsyncSwarmMemory, SwarmMemory

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Call:
    """``memory.<method>(*args, **kwargs)`` when ``namespace`` is None, else the same on
    ``memory.namespace(namespace)`` (or on ``obj``, a lock, when given). ``collect``: the
    method returns an iterator (``keys``) to be gathered into a list."""

    namespace: str | None
    method: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    collect: bool = False
    obj: Any = None
    async_method: str | None = None  # the async driver calls this one instead


@dataclass(frozen=True, slots=True)
class Tx:
    """A transaction on one namespace: compares, then puts (key -> (value, ttl, fence)) and
    deletes (key -> fence), committed in one script call."""

    namespace: str
    checks: Mapping[str, int]
    puts: Mapping[str, tuple[Any, float | None, int | None]]
    deletes: Mapping[str, int | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Gather:
    """Several independent requests; the async driver runs them concurrently. Each
    result is the value or the exception it raised."""

    calls: tuple[Call | Tx, ...]


Request = Call | Tx | Gather
Flow = Generator[Request, Any, T]


class Handles:
    """Namespace handles by name, so a hot thread does not build one per call."""

    _MAX = 4096

    def __init__(self, memory: Any) -> None:
        self.memory = memory
        self._by_name: dict[str, Any] = {}

    def get(self, name: str) -> Any:
        handle = self._by_name.get(name)
        if handle is None:
            if len(self._by_name) >= self._MAX:
                self._by_name.clear()
            handle = self._by_name[name] = self.memory.namespace(name)
        return handle


def _tx(handle: Any, req: Tx) -> Any:
    tx = handle.transaction()
    for key, version in req.checks.items():
        tx.check(key, version)
    for key, (value, ttl, fence) in req.puts.items():
        tx.put(key, value, ttl=ttl, fence=fence)
    for key, fence in req.deletes.items():
        tx.delete(key, fence=fence)
    return tx


def _target(handles: Handles, req: Call) -> Any:
    if req.obj is not None:
        return req.obj
    return handles.memory if req.namespace is None else handles.get(req.namespace)


def _call_sync(handles: Handles, req: Call | Tx) -> Any:
    if isinstance(req, Tx):
        return _tx(handles.get(req.namespace), req).commit()
    target = _target(handles, req)
    result = getattr(target, req.method)(*req.args, **req.kwargs)
    return list(result) if req.collect else result


def run_sync(handles: Handles, flow: Flow[T]) -> T:
    """Drive ``flow`` against a :class:`SwarmMemory` (``handles.memory``)."""
    send: Any = None
    error: BaseException | None = None
    while True:
        try:
            req = flow.throw(error) if error is not None else flow.send(send)
        except StopIteration as stop:
            result: T = stop.value
            return result
        send, error = None, None
        try:
            if isinstance(req, Gather):
                send = [_try_sync(handles, r) for r in req.calls]
            else:
                send = _call_sync(handles, req)
        except Exception as exc:
            error = exc


def _try_sync(handles: Handles, req: Call | Tx) -> Any:
    try:
        return _call_sync(handles, req)
    except Exception as exc:
        return exc


async def _call_async(handles: Handles, req: Call | Tx) -> Any:
    if isinstance(req, Tx):
        return await _tx(handles.get(req.namespace), req).commit()
    target = _target(handles, req)
    result = getattr(target, req.async_method or req.method)(*req.args, **req.kwargs)
    if req.collect:
        items: AsyncIterator[Any] = result
        return [item async for item in items]
    return await result


async def run_async(handles: Handles, flow: Flow[T]) -> T:
    """Drive ``flow`` against an :class:`AsyncSwarmMemory` (``handles.memory``)."""
    send: Any = None
    error: BaseException | None = None
    while True:
        try:
            req = flow.throw(error) if error is not None else flow.send(send)
        except StopIteration as stop:
            result: T = stop.value
            return result
        send, error = None, None
        try:
            if isinstance(req, Gather):
                send = list(
                    await asyncio.gather(
                        *(_call_async(handles, r) for r in req.calls), return_exceptions=True
                    )
                )
            else:
                send = await _call_async(handles, req)
        except Exception as exc:
            error = exc


def run_on_loop(loop: asyncio.AbstractEventLoop | None, coro: Awaitable[T], owner: str) -> T:
    """Run ``coro`` on ``loop`` from another thread and wait for it: how an async saver or
    store serves LangGraph's sync methods. Refused on the loop's own thread (it would
    deadlock) or before the loop is known."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if loop is None or running is loop:
        if hasattr(coro, "close"):
            coro.close()
        raise asyncio.InvalidStateError(
            f"synchronous calls to {owner} are only allowed from a thread other than its "
            "event loop's; use the a* methods (or the sync class) there"
        )
    future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(
        coro,  # type: ignore[arg-type]
        loop,
    )
    return future.result()


def check_memory(memory: object, want_async: bool) -> None:
    """Raise TypeError unless ``memory`` is the client kind the adapter drives."""
    kind = AsyncSwarmMemory if want_async else SwarmMemory
    if not isinstance(memory, kind):
        raise TypeError(f"expected a {kind.__name__}, got {type(memory).__name__}")


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch

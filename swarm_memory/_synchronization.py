"""The thread-versus-task differences, and nothing else (the httpcore way).

The async shells in ``_async/`` are the source; ``scripts/unasync.py`` writes the sync
ones in ``_sync/`` by renaming ``AsyncX`` to ``X`` (and ``asleep`` to ``sleep``, ...) and
dropping ``async``/``await``. Each async primitive here has a sync twin of the same
shape, so that renaming is all the generated code needs:

=======================  ===============================  ===========================
async (source)           sync (generated)                 what
=======================  ===============================  ===========================
``AsyncSignal``          ``Signal``                       set / is_set / clear / wait
``AsyncQueue``           ``Queue``                        put from the reader, get(timeout)
``AsyncBackground``      ``Background``                   a task / a daemon thread
                                                          (``cooperative``: True / False)
``asleep``               ``sleep``                        asyncio.sleep / time.sleep
``ayield_turn``          ``yield_turn``                   let ready tasks run / nothing
``ainvoke``              ``invoke``                       call a callback (await it if async)
``acall_user``           ``call_user``                    a flow's CallUser function
=======================  ===============================  ===========================
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import queue
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from swarm_memory import errors

T = TypeVar("T")

EMPTY: Any = object()
"""What ``Queue.get`` / ``AsyncQueue.get`` return when ``timeout`` passed first."""


# ------------------------------------------------------------------------------ async
class AsyncSignal:
    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def clear(self) -> None:
        self._event.clear()

    async def wait(self, timeout: float | None = None) -> bool:
        """True once set; False if ``timeout`` seconds passed first."""
        if timeout is None:
            await self._event.wait()
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        return self._event.is_set()


class AsyncQueue(Generic[T]):
    """A deque and the futures of the tasks waiting on it: the hub's hand-off to each
    async watch, on every event, for every watcher. ``asyncio.Queue`` does the same with
    more per item (maxsize, putters, the ``join`` counter and event): about 1 µs a put
    and get, times watchers, on each event's latency. Not thread-safe (neither is
    ``asyncio.Queue``): the hub and the watches run on one loop."""

    def __init__(self) -> None:
        self._items: deque[T] = deque()
        self._waiters: deque[asyncio.Future[None]] = deque()

    def put(self, item: T) -> None:
        self._items.append(item)
        self._wake_one()

    def _wake_one(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():  # a wait that ended (timeout, cancel) is skipped
                waiter.set_result(None)
                return

    async def get(self, timeout: float | None = None) -> T:
        """The next item, or :data:`EMPTY` after ``timeout`` seconds.

        An item that is there is taken at once; a wait with a timeout runs in this task
        under ``asyncio.timeout`` (``wait_for`` wrapped each such wait in a new task: a
        subscription waits with one for every event). A timeout cancels only the wait
        for a wake-up: the items stay in the queue, so none is lost."""
        if self._items:
            return self._items.popleft()
        if timeout is None:
            return await self._take()
        try:
            async with asyncio.timeout(timeout):  # bounds the whole wait, however woken
                return await self._take()
        except TimeoutError:
            return EMPTY  # type: ignore[no-any-return]

    async def _take(self) -> T:
        items = self._items
        while not items:  # woken with nothing left: another waiter took it
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:  # the timeout's cancellation, or the caller's
                self._left(waiter)
                raise
        return items.popleft()

    def _left(self, waiter: asyncio.Future[None]) -> None:
        """A wait ended without taking an item. A put may have woken it as it ended: pass
        that wake-up on, so another waiter does not sleep with an item queued."""
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)
        if self._items:
            self._wake_one()


class AsyncBackground:
    """``fn()`` as a task of the running loop. :meth:`stop` cancels it and waits."""

    # What it wakes runs when it gives up its turn (ayield_turn), before it goes on.
    cooperative = True

    def __init__(self, fn: Callable[[], Awaitable[None]], name: str) -> None:
        self._task = asyncio.get_running_loop().create_task(_coroutine(fn), name=name)

    def done(self) -> bool:
        return self._task.done()

    def is_current(self) -> bool:
        return asyncio.current_task() is self._task

    async def stop(self) -> None:
        if self.is_current():
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task


async def _coroutine(fn: Callable[[], Awaitable[None]]) -> None:
    await fn()


async def asleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def ayield_turn() -> None:
    """Let the tasks that are ready run before this one goes on (one loop turn): the hub
    calls it after handing events on, so the woken watchers run before its next read."""
    await asyncio.sleep(0)


async def ainvoke(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a user callback; await what it returns if it is awaitable."""
    result = fn(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


async def acall_user(fn: Callable[[], Any]) -> Any:
    """A flow's ``CallUser`` function (a get_or_set factory): sync or async."""
    return await ainvoke(fn)


# ------------------------------------------------------------------------------- sync
class Signal:
    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def clear(self) -> None:
        self._event.clear()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)


class Queue(Generic[T]):
    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[T] = queue.SimpleQueue()

    def put(self, item: T) -> None:
        self._queue.put(item)

    def get(self, timeout: float | None = None) -> T:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return EMPTY  # type: ignore[no-any-return]


class Background:
    """``fn()`` on a daemon thread. A thread cannot be cancelled: :meth:`stop` waits for
    ``fn`` to return, so ``fn`` must watch a stop :class:`Signal` (every loop here does)."""

    # What it wakes runs only once it blocks: a thread cannot hand the GIL on.
    cooperative = False

    def __init__(self, fn: Callable[[], None], name: str) -> None:
        self._thread = threading.Thread(target=fn, name=name, daemon=True)
        self._thread.start()

    def done(self) -> bool:
        return not self._thread.is_alive()

    def is_current(self) -> bool:
        return threading.current_thread() is self._thread

    def stop(self) -> None:
        if not self.is_current():
            self._thread.join(5)


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def yield_turn() -> None:
    """Nothing: a thread cannot hand the GIL to the watchers it woke (released here, it
    is mostly taken back at once), and they run as soon as the reader next blocks."""


def invoke(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a user callback (the sync client calls it as it is)."""
    return fn(*args)


def call_user(fn: Callable[[], Any]) -> Any:
    """A flow's ``CallUser`` function. A coroutine function cannot run here: say so
    instead of storing a coroutine object."""
    result = fn()
    if inspect.iscoroutine(result):
        result.close()  # never run
        raise errors.InvalidInput(
            "the function returned a coroutine: use AsyncSwarmMemory for async functions",
            field="factory",
        )
    return result

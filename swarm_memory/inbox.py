"""Inbox and AsyncInbox: one consumer's view of the calling agent's own inbox.

Thin shells over the flows in ``_inbox.py`` (the same ones for both). Get one with
``mem.inbox()``; see :class:`Inbox` for the delivery rules.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from swarm_memory import _inbox
from swarm_memory._inbox import InboxContext, InboxState
from swarm_memory._ops import Flow
from swarm_memory.models import Message


class _InboxBase:
    def __init__(
        self,
        run: Callable[[Flow[Any]], Any],
        ctx: InboxContext,
        state: InboxState,
        *,
        idle: float,
        batch: int,
    ) -> None:
        self._idle_ms = _inbox.idle_arg(idle)
        self._batch = _inbox.batch_arg(batch)
        self._run = run
        self._ctx = ctx
        self._state = state

    @property
    def owner(self) -> str:
        """The agent whose inbox this is (always the caller)."""
        return self._state.owner

    @property
    def consumer(self) -> str:
        """The consumer name this inbox reads as."""
        return self._state.consumer

    @property
    def idle(self) -> float:
        return self._idle_ms / 1000

    @property
    def batch(self) -> int:
        return self._batch

    def _receive(self, timeout: float | None) -> Flow[Message | None]:
        wait = _inbox.timeout_arg(timeout)
        return _inbox.receive(self._ctx, self._state, wait, self._idle_ms, self._batch)

    def _request(
        self, to_agent: str, message: Any, timeout: float, op_id: str | None
    ) -> Flow[Message]:
        return _inbox.request(
            self._ctx,
            self._state,
            to_agent,
            message,
            timeout=timeout,
            idle_ms=self._idle_ms,
            batch=self._batch,
            op_id=op_id,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(owner={self.owner!r}, consumer={self.consumer!r})"


class Inbox(_InboxBase):
    """The calling agent's inbox, read as one consumer (``mem.inbox()``).

    At-least-once: :meth:`receive` hands out a message and it stays pending until you
    :meth:`ack` it. A message that is not acknowledged within ``idle`` seconds (its
    consumer died or stalled) is delivered again, to whichever consumer of this agent
    reads next, with ``deliveries`` counting up: make handlers idempotent (dedupe by
    ``Message.id``). Redelivered messages come before new ones. Up to ``batch`` messages
    are taken per round trip and handed out one by one, so keep ``batch`` times the
    handling time below ``idle``.

    Not thread-safe: give each thread its own ``consumer`` name.
    """

    def receive(self, timeout: float | None = None) -> Message | None:
        """The next message, waiting up to ``timeout`` seconds (None: forever); None if
        none arrived. Raises InvalidInput, TransportError."""
        result: Message | None = self._run(self._receive(timeout))
        return result

    def ack(self, *messages: Message | str) -> int:
        """Acknowledge (and delete) messages, given as ``Message`` or id; returns how many
        were still pending. A ``Message`` is acknowledged in the inbox it was delivered to:
        only that inbox's owner may (else PermissionDenied)."""
        result: int = self._run(_inbox.ack(self._ctx, self._state, messages))
        return result

    def request(
        self, to_agent: str, message: Any, timeout: float = 30.0, *, op_id: str | None = None
    ) -> Message:
        """Send ``message`` with ``reply_to`` = you and a fresh ``correlation_id``, wait for
        the reply carrying it, acknowledge and return it. Messages that arrive meanwhile
        stay buffered (unacknowledged) in this inbox for :meth:`receive`, in order.
        Raises RequestTimeout (a late reply then arrives like any message)."""
        result: Message = self._run(self._request(to_agent, message, timeout, op_id))
        return result

    def __iter__(self) -> Iterator[Message]:
        """``for msg in inbox:`` blocks for each message, forever (ack each one)."""
        return self

    def __next__(self) -> Message:
        msg = self.receive(None)
        assert msg is not None  # receive(None) waits until there is one
        return msg


class AsyncInbox(_InboxBase):
    """:class:`Inbox` for ``AsyncSwarmMemory``: the same methods, awaited, and
    ``async for msg in inbox``."""

    async def receive(self, timeout: float | None = None) -> Message | None:
        """See :meth:`Inbox.receive`."""
        run: Callable[[Flow[Message | None]], Awaitable[Message | None]] = self._run
        return await run(self._receive(timeout))

    async def ack(self, *messages: Message | str) -> int:
        """See :meth:`Inbox.ack`."""
        run: Callable[[Flow[int]], Awaitable[int]] = self._run
        return await run(_inbox.ack(self._ctx, self._state, messages))

    async def request(
        self, to_agent: str, message: Any, timeout: float = 30.0, *, op_id: str | None = None
    ) -> Message:
        """See :meth:`Inbox.request`."""
        run: Callable[[Flow[Message]], Awaitable[Message]] = self._run
        return await run(self._request(to_agent, message, timeout, op_id))

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        msg = await self.receive(None)
        assert msg is not None
        return msg

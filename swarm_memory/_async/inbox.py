"""AsyncInbox: one consumer's view of the calling agent's own inbox.

A thin shell over the flows in ``_ops/inbox.py``; state and checks in ``_handles.InboxBase``.
Get one with ``mem.inbox()``.
"""

from __future__ import annotations

from typing import Any

from swarm_memory._handles import InboxBase
from swarm_memory._ops import inbox as _inbox
from swarm_memory.models import Message


class AsyncInbox(InboxBase):
    """The calling agent's inbox, read as one consumer (``mem.inbox()``).

    At-least-once: :meth:`receive` hands out a message and it stays pending until you
    :meth:`ack` it. A message that is not acknowledged within ``idle`` seconds (its
    consumer died or stalled) is delivered again, to whichever consumer of this agent
    reads next, with ``deliveries`` counting up: make handlers idempotent (dedupe by
    ``Message.id``). Redelivered messages come before new ones. Up to ``batch`` messages
    are taken per round trip and handed out one by one, so keep ``batch`` times the
    handling time below ``idle``.

    Not safe to share between threads or tasks: give each its own ``consumer`` name.
    """

    async def receive(self, timeout: float | None = None) -> Message | None:
        """The next message, waiting up to ``timeout`` seconds (None: forever); None if
        none arrived. Raises InvalidInput, TransportError."""
        result: Message | None = await self._run(self._receive(timeout))
        return result

    async def ack(self, *messages: Message | str) -> int:
        """Acknowledge (and delete) messages, given as ``Message`` or id; returns how many
        were still pending. A ``Message`` is acknowledged in the inbox it was delivered to:
        only that inbox's owner may (else PermissionDenied)."""
        result: int = await self._run(_inbox.ack(self._ctx, self._state, messages))
        return result

    async def request(
        self, to_agent: str, message: Any, timeout: float = 30.0, *, op_id: str | None = None
    ) -> Message:
        """Send ``message`` with ``reply_to`` = you and a fresh ``correlation_id``, wait for
        the reply carrying it, acknowledge and return it. Messages that arrive meanwhile
        stay buffered (unacknowledged) in this inbox for :meth:`receive`, in order.
        Raises RequestTimeout (a late reply then arrives like any message)."""
        result: Message = await self._run(self._request(to_agent, message, timeout, op_id))
        return result

    def __aiter__(self) -> AsyncInbox:
        """``async for msg in inbox:`` waits for each message, forever (ack each one)."""
        return self

    async def __anext__(self) -> Message:
        msg = await self.receive(None)
        assert msg is not None  # receive(None) waits until there is one
        return msg

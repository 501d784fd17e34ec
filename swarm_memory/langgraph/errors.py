"""Errors of the LangGraph adapters, in the swarm_memory tree::

LockError
├── LockTimeout
│   └── ThreadOwned            ownership mode: another worker holds the thread's claim
└── FencingError
    └── ThreadOwnershipLost    ownership mode: this worker's claim lapsed or was taken
                               over; its put / put_writes was refused, nothing written
ConflictError
    (SwarmStore.put(..., expected_version=) raises it, carrying the current entry)
"""

from __future__ import annotations

from typing import Any

from swarm_memory.errors import FencingError, LockTimeout


class ThreadOwned(LockTimeout):
    """The thread's claim is held by another worker (``.holder``, ``.thread_id``)."""

    def __init__(self, message: str, *, thread_id: str, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.thread_id = thread_id


class ThreadOwnershipLost(FencingError):
    """A write of a worker whose claim on ``thread_id`` lapsed or was taken over was
    refused by the store (``.reason``: ``"stale"`` or ``"not_held"``). Nothing was
    written; stop working on the thread (``claim()`` it again to take it back)."""

    def __init__(self, message: str, *, thread_id: str, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.thread_id = thread_id

    @classmethod
    def from_fencing(cls, thread_id: str, exc: FencingError) -> ThreadOwnershipLost:
        why = {
            "stale": "another worker has claimed it since",
            "not_held": "the claim lapsed (its lease expired or was released)",
        }.get(exc.reason, exc.reason)
        return cls(
            f"write to thread {thread_id!r} refused: this worker no longer owns it ({why}); "
            "nothing was written",
            thread_id=thread_id,
            lock=exc.lock,
            token=exc.token,
            latest=exc.latest,
            reason=exc.reason,
            namespace=exc.namespace,
            key=exc.key,
            agent=exc.agent,
        )

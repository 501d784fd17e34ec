"""LangGraph on swarm_memory (``pip install 'swarm-memory[langgraph]'``).

- :class:`SwarmCheckpointSaver` / :class:`AsyncSwarmCheckpointSaver`: LangGraph
  checkpointers, one swarm_memory namespace (one hash tag) per thread, ``put`` and
  ``put_writes`` one atomic script each; thread TTL, fenced thread ownership, a checkpoint
  feed (``watch``).
- :class:`SwarmStore` / :class:`AsyncSwarmStore`: LangGraph ``BaseStore`` (items, search
  with filters and semantic search, TTL, versions with ``expected_version``).
"""

from __future__ import annotations

try:
    import langgraph.checkpoint.base  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "swarm_memory.langgraph needs LangGraph: pip install 'swarm-memory[langgraph]'"
    ) from exc

from swarm_memory.langgraph.checkpoint import (
    AsyncSwarmCheckpointSaver,
    CheckpointEvent,
    SwarmCheckpointSaver,
)
from swarm_memory.langgraph.errors import ThreadOwned, ThreadOwnershipLost
from swarm_memory.langgraph.store import AsyncSwarmStore, SwarmStore, VersionedItem

__all__ = [
    "AsyncSwarmCheckpointSaver",
    "AsyncSwarmStore",
    "CheckpointEvent",
    "SwarmCheckpointSaver",
    "SwarmStore",
    "ThreadOwned",
    "ThreadOwnershipLost",
    "VersionedItem",
]

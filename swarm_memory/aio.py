"""The async client's public home: :class:`AsyncSwarmMemory` and :class:`AsyncNamespace`
(the same names and signatures as ``client.py``, awaited). The source is
``_async/memory.py``; the sync client is generated from it."""

from swarm_memory._async.memory import AsyncNamespace, AsyncSwarmMemory

__all__ = ["AsyncNamespace", "AsyncSwarmMemory"]

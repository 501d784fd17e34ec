"""The sync client's public home: :class:`SwarmMemory` and :class:`Namespace`.

They are generated (``_sync/memory.py``, by ``scripts/unasync.py``) from the async
source in ``_async/memory.py``; edit that one.
"""

from swarm_memory._sync.memory import Namespace, SwarmMemory

__all__ = ["Namespace", "SwarmMemory"]

"""Inbox and AsyncInbox: one consumer's view of the calling agent's own inbox (public
home; the async source is ``_async/inbox.py``, the sync one is generated from it)."""

from swarm_memory._async.inbox import AsyncInbox
from swarm_memory._sync.inbox import Inbox

__all__ = ["AsyncInbox", "Inbox"]

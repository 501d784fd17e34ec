"""Locks, leases and transactions, sync and async: their public home.

A :class:`Lock` is a lease with a fencing token (DESIGN.md decision 7): the token
strictly increases per lock, and the store refuses writes fenced with a token whose lease
was lost or superseded (``ns.put(..., fence=lock.token)``). The async handles
(``_async/lock.py``) are the source; the sync ones are generated from them. What they
share that is not I/O lives in ``_handles.py``.
"""

from swarm_memory._async.lock import AsyncLease, AsyncLock, AsyncTransaction
from swarm_memory._sync.lock import Lease, Lock, Transaction

__all__ = [
    "AsyncLease",
    "AsyncLock",
    "AsyncTransaction",
    "Lease",
    "Lock",
    "Transaction",
]

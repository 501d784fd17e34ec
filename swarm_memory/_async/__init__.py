"""The async client, the source of the sync one.

``scripts/unasync.py`` writes ``swarm_memory/_sync/`` from these modules (``--check`` in
CI fails when it is stale). Edit here, never there; the thread-versus-task differences
live in ``swarm_memory/_synchronization.py``.

driver   runs flows: performs their effects, the one retry layer
memory   AsyncSwarmMemory and AsyncNamespace (the public client)
lock     AsyncLock, AsyncLease, AsyncTransaction
events   AsyncHub (one feed reader per pool), AsyncWatch, AsyncSubscription
inbox    AsyncInbox
graph    AsyncGraph, AsyncBundle (the memory graph)
semantic AsyncSemanticIndex (semantic recall over a graph)
"""

"""Watching a namespace's change feed, sync and async: the public home of watches,
subscriptions and hubs. The feed's I/O-free core is ``_feed.py``; the async shells
(``_async/events.py``) are the source of the generated sync ones."""

from swarm_memory._async.events import AsyncHub, AsyncSubscription, AsyncWatch
from swarm_memory._feed import FeedCore, OnError, Subscriber
from swarm_memory._ops.args import pattern_arg, types_arg
from swarm_memory._sync.events import Hub, Subscription, Watch

__all__ = [
    "AsyncHub",
    "AsyncSubscription",
    "AsyncWatch",
    "FeedCore",
    "Hub",
    "OnError",
    "Subscriber",
    "Subscription",
    "Watch",
    "pattern_arg",
    "types_arg",
]

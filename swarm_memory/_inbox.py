"""temporary: re-exports for the shells until they import swarm_memory._ops.inbox
directly (and the argument checks from swarm_memory._ops.args)."""

from swarm_memory._ops.args import batch_arg, consumer_arg, correlation_arg, idle_arg, timeout_arg
from swarm_memory._ops.effects import InboxContext
from swarm_memory._ops.inbox import (
    CONSUMER_GC_MS,
    GROUP,
    POLL_FIRST,
    POLL_MAX,
    InboxState,
    ack,
    default_consumer,
    delete_inbox,
    inbox_info,
    inbox_page,
    open_inbox,
    receive,
    reply,
    request,
    send,
)

__all__ = [
    "CONSUMER_GC_MS",
    "GROUP",
    "POLL_FIRST",
    "POLL_MAX",
    "InboxContext",
    "InboxState",
    "ack",
    "batch_arg",
    "consumer_arg",
    "correlation_arg",
    "default_consumer",
    "delete_inbox",
    "idle_arg",
    "inbox_info",
    "inbox_page",
    "open_inbox",
    "receive",
    "reply",
    "request",
    "send",
    "timeout_arg",
]

"""I/O-free flows: every operation as a generator of effects (DESIGN.md decision 12).

A flow checks its input, yields effects (script calls, commands, sleeps, doorbell waits),
is sent their results, and returns the operation's result; it never touches a socket, so
the sync and async clients share every decision here and differ only in how
``_drive.py`` performs the effects (the httpx/httpcore layout). Split by concern, the way
h11 splits a protocol:

* ``effects``    the effect types, ``Flow``, ``Context`` / ``InboxContext``, ``AgentSession``
* ``args``       every argument check, ``<what>_arg``
* ``records``    one decoder per record shape in replies (named fields, bounded)
* ``replies``    each script's reply tags: outcomes, and a tag -> error table
* ``namespaces`` create / info / update / grant / revoke / clear / delete; the sweeper
* ``entries``    the write and read paths: put ... rollback, get ... key listing
* ``events``     the event feed, broadcast, audit, snapshot
* ``coord``      locks, leases and presence, heartbeats, transactions, get_or_set
* ``inbox``      per-agent inboxes

Below, temporary: re-exports for the shells until they import swarm_memory._ops.<area>
directly.
"""

from swarm_memory._ops.args import bool_arg as _bool_arg
from swarm_memory._ops.args import new_op_id, op_id_arg, since_arg, ttl_arg, version_arg
from swarm_memory._ops.effects import (
    AgentSession,
    CallUser,
    Command,
    Context,
    Effect,
    Flow,
    Incoming,
    Listen,
    Resolver,
    ScriptCall,
    Sleep,
    Unlisten,
    WaitBell,
    bind_lease,
)
from swarm_memory._ops.entries import (
    create,
    delete,
    exists,
    get,
    get_many,
    history,
    incr,
    key_page,
    put,
    put_many,
    rollback,
    touch,
    update,
)
from swarm_memory._ops.events import (
    EventPage,
    audit,
    broadcast,
    doorbell_events,
    read_events,
    snapshot,
)
from swarm_memory._ops.namespaces import (
    clear_namespace,
    create_namespace,
    delete_namespace,
    grant,
    list_namespaces,
    namespace_info,
    revoke,
    stats,
    sweep,
    update_namespace,
)
from swarm_memory._ops.records import parse_op_record, unpack

__all__ = [
    "AgentSession",
    "CallUser",
    "Command",
    "Context",
    "Effect",
    "EventPage",
    "Flow",
    "Incoming",
    "Listen",
    "Resolver",
    "ScriptCall",
    "Sleep",
    "Unlisten",
    "WaitBell",
    "_bool_arg",
    "audit",
    "bind_lease",
    "broadcast",
    "clear_namespace",
    "create",
    "create_namespace",
    "delete",
    "delete_namespace",
    "doorbell_events",
    "exists",
    "get",
    "get_many",
    "grant",
    "history",
    "incr",
    "key_page",
    "list_namespaces",
    "namespace_info",
    "new_op_id",
    "op_id_arg",
    "parse_op_record",
    "put",
    "put_many",
    "read_events",
    "revoke",
    "rollback",
    "since_arg",
    "snapshot",
    "stats",
    "sweep",
    "touch",
    "ttl_arg",
    "unpack",
    "update",
    "update_namespace",
    "version_arg",
]

"""temporary: re-exports for the shells until they import swarm_memory._ops.coord
directly (``lock_ttl_arg`` keeps its old ``(ttl, ctx)`` signature here)."""

from swarm_memory._ops import args as _args
from swarm_memory._ops.args import LOCK_MODES as MODES
from swarm_memory._ops.args import wait_arg
from swarm_memory._ops.coord import (
    LockState,
    TxPlan,
    acquire,
    commit,
    extend,
    force_release,
    get_or_set,
    lease_beat,
    lease_leave,
    list_locks,
    presence_beat,
    presence_leave,
    presence_list,
    release,
    tx_compare,
    tx_write,
)
from swarm_memory._ops.effects import Context


def lock_ttl_arg(ttl: object, ctx: Context) -> int:
    return _args.lock_ttl_arg(ttl, ctx.settings)


__all__ = [
    "MODES",
    "LockState",
    "TxPlan",
    "acquire",
    "commit",
    "extend",
    "force_release",
    "get_or_set",
    "lease_beat",
    "lease_leave",
    "list_locks",
    "lock_ttl_arg",
    "presence_beat",
    "presence_leave",
    "presence_list",
    "release",
    "tx_compare",
    "tx_write",
    "wait_arg",
]

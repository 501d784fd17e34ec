"""Namespace flows: create / inspect / update / grant / revoke / clear / delete / list,
and the sweeper (expired entries, then agents whose lease ran out).

Each is one call of ``lua/ns.lua``, ``lua/purge.lua`` (in batches), ``lua/sweep.lua``,
``lua/reap.lua`` or ``lua/lru.lua`` (in batches), plus the single-key commands on the
namespace registry, which lives outside every namespace's slot (DESIGN.md decision 1).
The "info" reply's decoder is here too.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any

from swarm_memory import errors
from swarm_memory._ops.args import (
    agents_arg,
    bool_arg,
    history_arg,
    level_arg,
    limit_arg,
    namespace_arg,
    new_op_id,
    over_quota_arg,
    permissions_arg,
    strategy_arg,
    ttl_arg,
)
from swarm_memory._ops.effects import Command, Context, Flow, ScriptCall
from swarm_memory._ops.records import Fields, decoding, pairs, text
from swarm_memory._ops.replies import GRAPH, LRU, NS, PURGE, REAP, SWEEP, Failure
from swarm_memory.codec import JSON_FORMAT
from swarm_memory.keys import GraphKeys, registry_key
from swarm_memory.models import NamespaceInfo, SweepResult, ms_to_datetime
from swarm_memory.scripts import load
from swarm_memory.settings import Settings


# ---------------------------------------------------------------------------- sweeping
def _entry_keys(ctx: Context, names: list[str]) -> list[str]:
    nk = ctx.keys
    return nk.fixed() + [x for k in names for x in (nk.entry(k), nk.history(k))]


def sweep(ctx: Context, *, max_rounds: int = 1000) -> Flow[SweepResult]:
    """Remove expired entries from every index, with an ``expire`` event each."""
    s = ctx.settings
    fail = Failure(ctx, "sweep", "read")
    candidates: list[str] = []
    expired: list[str] = []
    for _ in range(max_rounds):
        args: list[str | bytes | int] = [ctx.agent, s.audit_maxlen, s.stream_maxlen, s.sweep_batch]
        keys = _entry_keys(ctx, candidates)
        call = ScriptCall(load("sweep"), keys, [*args, *candidates], new_op_id())
        f = SWEEP.check((yield call), fail)
        with decoding(ctx.keys.expiry, **ctx.err()):  # names from the expiry index
            n_expired, leases_due = f.number(), f.next()
            expired += f.strings(n_expired)
            candidates = f.strings()
        if GRAPH_EXPIRY in candidates:  # the memory graph's earliest expiry is due
            candidates = [c for c in candidates if c != GRAPH_EXPIRY]
            yield from sweep_graph(ctx, max_rounds)
        if not candidates:
            lost = (yield from _reap(ctx, max_rounds)) if leases_due else []
            return SweepResult(expired, more=False, lost_agents=lost)
    return SweepResult(expired, more=True)


# A rebuild of the eviction-order index starts over when the namespace's policy is
# switched again while it runs; after this many restarts in one call it gives up.
MAX_ORDER_RESTARTS = 16


def rebuild_order(ctx: Context) -> Flow[None]:
    """Finish the eviction-order index of a namespace switched to evict-oldest
    (``lua/lru.lua``): a batch of the key index's names per call, until none is left.
    Any writer may run it (an evict-oldest write that finds it unfinished does); runs
    side by side are harmless, each adds what the other may not have."""
    s = ctx.settings
    fail = Failure(ctx, "lru_rebuild", "write")
    token, restarts = "", 0
    names: list[str] = []
    while True:
        args: list[str | bytes | int] = [ctx.agent, s.audit_maxlen, token, s.clear_batch]
        call = ScriptCall(load("lru"), _entry_keys(ctx, names), [*args, *names], new_op_id())
        f = LRU.check((yield call), fail)
        if f.tag == b"done":
            return
        last = names[-1] if names else None  # the walk goes on past the names passed
        with decoding(ctx.keys.index, **ctx.err()):
            started, names = f.string(), f.strings()
        if started != token:
            restarts += bool(token)  # the first reply names the token to start from
            if restarts > MAX_ORDER_RESTARTS:
                raise errors.ServerError(
                    "the eviction-order index could not be rebuilt: the namespace's "
                    f"over-quota policy was switched {restarts} times while it ran",
                    **ctx.err(),
                )
            token = started
        elif last is not None and names and names[0] <= last:
            # The same walk must move forward (lexicographic, as the index orders them):
            # a reply that does not would make this loop run forever.
            raise errors.ServerError(
                f"the eviction-order rebuild did not advance past {last!r}", **ctx.err()
            )


# The member of the expiry index that stands for the namespace's memory graph (scored
# with its earliest node expiry, lua/graph.lua): no entry key can hold a NUL.
GRAPH_EXPIRY = "\0graph"


def graph_keys(ctx: Context) -> list[str]:
    """The keys every lua/graph.lua call gets: the namespace's, then the graph's."""
    return ctx.keys.fixed() + GraphKeys.of(ctx.settings.key_prefix, ctx.namespace).fixed()


def sweep_graph(ctx: Context, max_rounds: int) -> Flow[int]:
    """Remove expired graph nodes with their links, index entries and bundle
    memberships, a ``node_expire`` event each (lua/graph.lua "sweep"). Returns how many."""
    s = ctx.settings
    fail = Failure(ctx, "sweep", "read")
    removed = 0
    for _ in range(max_rounds):
        args: list[str | bytes | int] = [
            ctx.agent, "sweep", "", "", int(s.dedupe_window * 1000), s.stream_maxlen,
            s.audit_maxlen, s.event_value_max, s.sweep_batch,
        ]  # fmt: skip
        f = GRAPH.check((yield ScriptCall(load("graph"), graph_keys(ctx), args, None)), fail)
        removed += f.number()
        if not f.number():
            break
    return removed


def _reap(ctx: Context, max_rounds: int) -> Flow[list[str]]:
    """The sweeper's second half: agents whose lease here ran out lose their ephemeral
    entries and lock holds (lua/reap.lua). Returns the agents found gone."""
    s = ctx.settings
    fail = Failure(ctx, "sweep", "read")
    dead, names, lost = "", list[str](), list[str]()
    for _ in range(max_rounds):
        args: list[str | bytes | int] = [ctx.agent, s.audit_maxlen, s.stream_maxlen, s.sweep_batch]
        keys = _entry_keys(ctx, names)
        call = ScriptCall(load("reap"), keys, [*args, dead, *names], new_op_id())
        f = REAP.check((yield call), fail)
        _removed, was_lost = f.number(), f.number()
        if was_lost:
            lost.append(dead)
        with decoding(ctx.keys.lease, **ctx.err()):  # agents and names from the lease index
            dead, names = f.string(), f.strings()
        if not dead:
            break
    return lost


def sweep_quietly(ctx: Context) -> Flow[None]:
    """Opportunistic sweep after a reply said expired entries are due; never fails the
    operation that triggered it."""
    with contextlib.suppress(errors.SwarmMemoryError):
        yield from sweep(ctx, max_rounds=2)


# ---------------------------------------------------------------------- configuration
_FIELD_OF = {
    "default_permission": "dp",
    "strategy": "strat",
    "ttl": "ttl",
    "max_keys": "mk",
    "max_bytes": "mb",
    "history": "hd",
    "over_quota": "oq",
    "max_events": "em",
    "require_lock": "rl",
    "audit_maxlen": "am",
    "dedupe_window": "dw",
}


def _option_text(settings: Settings, name: str, value: Any) -> str:
    """One namespace option, checked, as its stored text."""
    if name == "default_permission":
        return level_arg(value, "default_permission")
    if name == "strategy":
        return strategy_arg(value)
    if name == "over_quota":
        return over_quota_arg(value)
    if name == "ttl":
        return str(ttl_arg(value, settings) or 0)
    if name == "require_lock":
        return "1" if bool_arg(value, "require_lock") else "0"
    if name == "history":
        return str(history_arg(value))
    if name == "dedupe_window":
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or not value > 0:
            raise errors.InvalidInput(
                "dedupe_window must be a number of seconds > 0", field=name, value=value
            )
        return str(limit_arg(max(1, round(value * 1000)), name))
    return str(limit_arg(value, name))


def config_fields(settings: Settings, options: Mapping[str, Any]) -> list[str]:
    """Namespace options -> the ``field value ...`` list the ns script stores."""
    out: list[str] = []
    for name, value in options.items():
        if name not in _FIELD_OF:
            raise errors.InvalidOption(f"unknown namespace option {name!r}", field=name)
        out += [_FIELD_OF[name], _option_text(settings, name, value)]
    return out


def _ns_call(ctx: Context, action: str, extra: list[str]) -> Flow[Fields]:
    s = ctx.settings
    args: list[str | bytes | int] = [ctx.agent, s.audit_maxlen, s.stream_maxlen, action, *extra]
    op_id = new_op_id() if action != "info" else None
    reply = yield ScriptCall(load("ns"), ctx.keys.fixed(), args, op_id, action == "info")
    required = "read" if action == "info" else "admin"
    return NS.check(reply, Failure(ctx, "ns_" + action, required))


def create_namespace(
    ctx: Context,
    *,
    default_permission: str = "write",
    permissions: Mapping[str, str] | None = None,
    strategy: str = "latest-wins",
    ttl: float | timedelta | None = None,
    max_keys: int | None = None,
    max_bytes: int | None = None,
    history: int = 0,
    over_quota: str = "reject",
    max_events: int | None = None,
    require_lock: bool = False,
    exist_ok: bool = False,
) -> Flow[NamespaceInfo]:
    namespace_arg(ctx.namespace)
    config = {
        "default_permission": default_permission,
        "strategy": strategy,
        "ttl": ttl,
        "max_keys": max_keys,
        "max_bytes": max_bytes,
        "history": history,
        "over_quota": over_quota,
        "max_events": max_events,
        "require_lock": require_lock,
    }
    s = ctx.settings
    # Retention is the namespace's, stored now from this (the creating) client's settings
    # unless given: a writer with other settings no longer changes it (each script reads
    # the stored limits first).
    stored = {
        "max_events": max_events if max_events is not None else s.stream_maxlen,
        "audit_maxlen": s.audit_maxlen,
        "dedupe_window": s.dedupe_window,
    }
    fields = config_fields(s, {**config, **stored})
    if strategy == "merge" and ctx.codec.codec.name != JSON_FORMAT:
        raise errors.InvalidOption(
            "the merge strategy needs the JSON codec", field="strategy", value=strategy
        )
    acl = permissions_arg(permissions, required=False)
    args: list[str | bytes | int] = [ctx.agent, s.audit_maxlen, s.stream_maxlen, "create", ""]
    reply = yield ScriptCall(
        load("ns"), ctx.keys.fixed(), [*args, *fields, "--", *acl], new_op_id()
    )
    existed = NS.check(reply, Failure(ctx, "ns_create", "admin")).tag == b"exists"
    if existed and not exist_ok:
        raise errors.NamespaceExists(f"namespace {ctx.namespace!r} exists", **ctx.err())
    # The registry lives outside the namespace slot, so it is a separate single-key
    # command (decision 1). ZADD NX is idempotent; create with exist_ok repairs it.
    yield Command(("ZADD", registry_key(s.key_prefix), "NX", 0, ctx.namespace), True)
    info = yield from namespace_info(ctx)
    if existed:
        _check_same_config(ctx, info, config, dict(zip(acl[::2], acl[1::2], strict=True)))
    return info


def _check_same_config(
    ctx: Context, info: NamespaceInfo, config: Mapping[str, Any], acl: Mapping[str, str]
) -> None:
    """``exist_ok=True`` on an existing namespace: every requested setting must be the
    stored one, or the caller would go on believing in settings (a read-only auditor, a
    history depth) that are not there. Requested permissions are compared agent by agent;
    grants made since creation to other agents are not a difference."""
    differences: dict[str, tuple[Any, Any]] = {}
    for name, want in config.items():
        if name == "max_events" and want is None:
            continue  # not given: the stored one came from the creator's stream_maxlen
        have = getattr(info, name)
        if _option_text(ctx.settings, name, have) != _option_text(ctx.settings, name, want):
            differences[name] = (have, want)
    for agent, level in acl.items():
        have = info.permissions.get(agent)
        if have != level:
            differences[f"permissions[{agent!r}]"] = (have, level)
    if differences:
        listed = "; ".join(
            f"{name} is {have!r}, requested {want!r}" for name, (have, want) in differences.items()
        )
        raise errors.NamespaceConfigMismatch(
            f"namespace {ctx.namespace!r} exists with other settings: {listed}. Nothing was "
            "changed; change settings with update_namespace() and permissions with grant()",
            differences=differences,
            **ctx.err(),
        )


def _namespace_info(name: str, f: Fields) -> NamespaceInfo:
    """The ns script's "info" reply: HGETALL of the meta, acl and stats hashes."""
    meta = {k: text(v) for k, v in pairs(f.next()).items()}
    acl = {k: level_arg(text(v)) for k, v in pairs(f.next()).items()}
    stats = {k: int(v) for k, v in pairs(f.next()).items()}
    ttl_ms = int(meta["ttl"])
    return NamespaceInfo(
        name=name,
        default_permission=level_arg(meta["dp"]),
        permissions=acl,
        strategy=strategy_arg(meta["strat"]),
        ttl=ttl_ms / 1000 if ttl_ms else None,
        max_keys=int(meta["mk"]) or None,
        max_bytes=int(meta["mb"]) or None,
        history=int(meta["hd"]),
        over_quota=over_quota_arg(meta["oq"]),
        max_events=int(meta.get("em", "0")) or None,
        revision=int(meta["rev"]),
        keys=int(meta["n"]),
        bytes=int(meta["b"]),
        created_at=ms_to_datetime(int(meta["ct"])),
        created_by=meta["cb"],
        stats=stats,
        require_lock=meta.get("rl") == "1",
        audit_maxlen=int(meta.get("am", "0")) or None,
        dedupe_window=int(meta.get("dw", "0")) / 1000 or None,
    )


def namespace_info(ctx: Context) -> Flow[NamespaceInfo]:
    f = yield from _ns_call(ctx, "info", [])
    # meta, acl and stats: the meta hash is named (the message says which field failed)
    with decoding(ctx.keys.meta, **ctx.err()):
        return _namespace_info(ctx.namespace, f)


def update_namespace(ctx: Context, options: Mapping[str, Any]) -> Flow[NamespaceInfo]:
    fields = config_fields(ctx.settings, options)
    if options.get("strategy") == "merge" and ctx.codec.codec.name != JSON_FORMAT:
        raise errors.InvalidOption("the merge strategy needs the JSON codec", field="strategy")
    yield from _ns_call(ctx, "update", fields)
    if options.get("over_quota") == "evict-oldest":
        yield from rebuild_order(ctx)  # a switch to it left the index unfinished
    return (yield from namespace_info(ctx))


def grant(ctx: Context, permissions: Mapping[str, str]) -> Flow[None]:
    yield from _ns_call(ctx, "grant", permissions_arg(permissions, required=True))


def revoke(ctx: Context, agents: Iterable[str]) -> Flow[None]:
    yield from _ns_call(ctx, "revoke", agents_arg(agents))


def _purge(ctx: Context, mode: str) -> Flow[int]:
    s = ctx.settings
    fail = Failure(ctx, "ns_" + mode, "admin")
    names: list[str] = []
    removed = 0
    while True:
        args: list[str | bytes | int] = [ctx.agent, s.audit_maxlen, s.stream_maxlen, mode]
        args += [s.clear_batch, *names]
        call = ScriptCall(load("purge"), _entry_keys(ctx, names), args, new_op_id())
        f = PURGE.check((yield call), fail)
        removed += f.number()
        if f.tag == b"dropped":
            return removed
        with decoding(ctx.keys.index, **ctx.err()):
            names = f.strings()
        if not names and mode == "clear":
            return removed


def clear_namespace(ctx: Context) -> Flow[int]:
    """Delete every entry (admin). Each batch is atomic; the whole is not (see docs)."""
    return (yield from _purge(ctx, "clear"))


def delete_namespace(ctx: Context) -> Flow[None]:
    """Mark the namespace deleted (atomically: no read or write succeeds after this),
    then remove its keys in batches, then unlist it. Re-running finishes a partial delete."""
    try:
        yield from _ns_call(ctx, "delete", [])
    except errors.NamespaceNotFound:
        state = yield Command(("HGET", ctx.keys.meta, "state"))
        if state != b"deleting":
            raise
    yield from _drop_agent_keys(ctx)
    yield from _purge(ctx, "delete")
    graph = GraphKeys.of(ctx.settings.key_prefix, ctx.namespace).fixed()
    yield Command(("DEL", *graph), True)  # the memory graph's keys (one slot: the namespace's)
    yield Command(("ZREM", registry_key(ctx.settings.key_prefix), ctx.namespace), True)


def _drop_agent_keys(ctx: Context) -> Flow[None]:
    """Delete the agent-memory keys (lua/agent.lua: outcome logs, sessions and their
    logs), found through their own indexes. Runs while the namespace is marked
    "deleting", when no script adds to them (every one finds no namespace) and no
    create_namespace can start a new one; re-running a delete finishes it."""
    nk = ctx.keys
    families: list[tuple[str, Callable[[str], tuple[str, ...]]]] = [
        (nk.outcome_logs, lambda n: (nk.outcome_counters(n), nk.outcome_durations(n))),
        (nk.sessions, lambda n: (nk.session(n), nk.session_log(n))),
    ]
    for index, owned in families:
        while True:
            names = yield Command(("ZRANGE", index, 0, 99))
            if not names:
                break
            with decoding(index, **ctx.err()):
                keys = [k for raw in names for k in owned(text(raw))]
            yield Command(("DEL", *keys), True)
            yield Command(("ZREM", index, *names), True)
    yield Command(("DEL", nk.session_expiry), True)


def list_namespaces(ctx_for: Callable[[str], Context], prefix: str) -> Flow[list[str]]:
    """Names of namespaces this agent may read (checked by the info script per name).
    A namespace whose own keys are corrupt is listed (it exists; its calls say what is
    wrong); a registry member that is no namespace name is CorruptData naming the
    registry."""
    registry = registry_key(prefix)
    names = yield Command(("ZRANGE", registry, 0, -1))
    visible = []
    for raw in names:
        with decoding(registry):
            name = text(raw)
            ctx = ctx_for(name)
        try:
            yield from _ns_call(ctx, "info", [])
        except (errors.PermissionDenied, errors.NamespaceNotFound):
            continue
        except errors.CorruptData:
            pass
        visible.append(name)
    return visible


def stats(ctx: Context) -> Flow[dict[str, int]]:
    info = yield from namespace_info(ctx)
    return {"keys": info.keys, "bytes": info.bytes, "revision": info.revision, **info.stats}

"""swarm_memory's core operations, measured beside the bare baselines.

``ours.put`` runs with every piece of default bookkeeping on (permission check, dedupe
record, version + revision, key/LRU index, event + doorbell, audit, stats); the
namespace keeps no history (``history=0``, the default).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.baselines import BATCH, TASKS
from bench.harness import Case, Ctx, Sample, encode, timed, timed_tasks
from swarm_memory import AsyncSwarmMemory, SwarmMemory

NAMESPACE = "bench-core"


def memory(ctx: Ctx, **kwargs: Any) -> SwarmMemory:
    return SwarmMemory.from_url(ctx.url, agent="bench", **kwargs)


def single_cases(ctx: Ctx) -> list[Case]:
    mem = memory(ctx)
    mem.create_namespace(NAMESPACE, exist_ok=True)
    ns = mem.namespace(NAMESPACE)
    kput, kget = ctx.fresh("put"), ctx.fresh("get")
    ns.put(kget, ctx.value)
    value = ctx.value
    cases = [
        Case(
            "ours.put",
            lambda n: timed(lambda: ns.put(kput, value), n),
            vs=("base.cas_xadd", "base.hset"),
            note="latest-wins, all bookkeeping",
        ),
        Case(
            "ours.get", lambda n: timed(lambda: ns.get(kget), n), vs=("base.hgetall", "base.hget")
        ),
    ]
    floor = _floor_put_case(ctx, mem)
    if floor is not None:
        cases.append(floor)
    metrics_case = _metrics_case(ctx, value, ns)
    if metrics_case is not None:
        cases.append(metrics_case)
    cases.append(_identity_case(ctx, value, mem, ns))
    return cases


def _floor_put_case(ctx: Ctx, mem: SwarmMemory) -> Case | None:
    """``floor.put``: a Redis Function making exactly a put's Redis calls with its key
    names and arguments and no logic around them (bench/server_cost.py), sent by bare
    redis-py: the most a put could reach end to end if its script did nothing but those
    calls and its client cost what a bare EVALSHA does. None (skipped, said so) on a
    server without Functions."""
    from bench.server_cost import load_floor_library, write_floors

    r = ctx.raw()
    if not load_floor_library(r, "floor.put"):
        r.close()
        return None
    floor_put, _ = write_floors(r, mem.settings.key_prefix, encode(ctx.value))
    return Case(
        "floor.put",
        lambda n: timed(floor_put, n),
        vs=("base.cas_xadd",),
        note="a put's Redis calls alone, bare redis-py",
        close=r.close,
    )


def _metrics_case(ctx: Ctx, value: Any, plain: Any) -> Case | None:
    """``put`` with client-side metrics on (``ClientMetrics(registry)`` as ``metrics=``),
    if swarm_memory.metrics has landed.

    A 3 % difference is below the round-to-round noise of a shared VM, so this case
    alternates blocks of 8 calls with and without metrics *inside* each run and reports
    ``ab_ratio`` = time without / time with (1.0 = free; 0.97 = 3 % cost)."""
    try:
        from prometheus_client import CollectorRegistry

        from swarm_memory.metrics import ClientMetrics
    except ImportError:
        return None
    try:
        mem = SwarmMemory.from_url(
            ctx.url,
            agent="bench",
            metrics=ClientMetrics(CollectorRegistry()),
        )
    except TypeError:  # the module exists but from_url takes no metrics= yet
        return None
    ns = mem.namespace(NAMESPACE)
    key, plain_key = ctx.fresh("putm"), ctx.fresh("putp")

    def run(n: int) -> Sample:
        ns.put(key, value)
        plain.put(plain_key, value)
        with_m = without = 0.0
        clock = time.perf_counter
        for _ in range(max(1, n // 8)):
            t0 = clock()
            for _ in range(8):
                ns.put(key, value)
            t1 = clock()
            for _ in range(8):
                plain.put(plain_key, value)
            t2 = clock()
            with_m, without = with_m + (t1 - t0), without + (t2 - t1)
        return Sample(with_m, max(1, n // 8) * 8, {"ab_ratio": without / with_m})

    return Case(
        "ours.put+metrics",
        run,
        vs=("base.cas_xadd",),
        note="blocks of 8 puts alternating with plain puts; cost = 1 - ab_ratio",
        close=mem.close,
    )


def _identity_case(ctx: Ctx, value: Any, admin: SwarmMemory, plain: Any) -> Case:
    """``put`` as an agent's own ACL user (authenticated mode: users from ``acl.plan``,
    on the server the bench started), alternating blocks of 8 with the same put through a
    put script whose identity check is skipped (``if identity_refused()`` made
    ``if false``; the identity ARGV still travels). ``ab_ratio`` = time without the
    check / time with it (0.98 = the check costs 2 % of a put). ``acl_user_ratio`` = a
    put by the default user (cooperative) / the same put by the agent's ACL user: the
    whole price of authenticated mode (the check and Redis's per-command key-pattern
    checks inside the script), measured in the same alternation.

    Both arms run FCALL, as a put does: the unchecked arm's function is in a second
    library, the scripts' library with the check made ``if false`` and another tag in its
    names. (Until stop 28 the unchecked arm changed only the script's EVALSHA source, and
    the agent's client, which FCALLs the library ``acl.apply`` loads, ran the checked
    function in both arms: the ratio measured nothing.)"""
    import dataclasses

    from swarm_memory import acl
    from swarm_memory._ops import entries
    from swarm_memory.scripts import library, load

    agent = "bench-id"
    admin.namespace(NAMESPACE).grant({agent: "write"})
    users = [u for u in acl.plan(acl.read_maps(admin.redis)) if u.agent == agent]
    password = acl.apply(admin.redis, users).get(agent) or acl.rotate(admin.redis, agent)
    host_port = ctx.url.split("://", 1)[1]
    mem = SwarmMemory.from_url(f"redis://{agent}:{password}@{host_port}", agent=agent)
    if mem.auth_mode() != "authenticated":
        raise RuntimeError("the bench agent's ACL user is not authenticated")
    ns = mem.namespace(NAMESPACE)
    lib, check = library(), "if identity_refused() then"
    if lib.source.count(check) != 1:
        raise RuntimeError("the library's identity check moved: update bench/core.py")
    tag = "unchecked000"  # (a library tag's length: 12)
    admin.redis.function_load(
        lib.source.replace(lib.tag, tag).replace(check, "if false then"), replace=True
    )
    put = load("put")
    unchecked = dataclasses.replace(put, function=f"sm{tag}_put")
    _check_arms(mem, put.function, unchecked.function)

    def load_unchecked(name: str) -> Any:
        return unchecked if name == "put" else load(name)

    key, plain_key = ctx.fresh("puti"), ctx.fresh("putc")
    scope = vars(entries)

    def run(n: int) -> Sample:
        ns.put(key, value)
        plain.put(plain_key, value)
        with_check = without = default_user = 0.0
        clock = time.perf_counter
        for _ in range(max(1, n // 8)):
            t0 = clock()
            for _ in range(8):
                ns.put(key, value)
            t1 = clock()
            scope["load"] = load_unchecked  # what entries.put's flow calls load() through
            try:
                for _ in range(8):
                    ns.put(key, value)
            finally:
                scope["load"] = load
            t2 = clock()
            for _ in range(8):
                plain.put(plain_key, value)
            t3 = clock()
            with_check += t1 - t0
            without += t2 - t1
            default_user += t3 - t2
        extra = {"ab_ratio": without / with_check, "acl_user_ratio": default_user / with_check}
        return Sample(with_check, max(1, n // 8) * 8, extra)

    def close() -> None:
        mem.close()
        admin.close()

    return Case(
        "ours.put+identity",
        run,
        vs=("base.cas_xadd",),
        note="as an agent's ACL user; blocks of 8 alternating with the check skipped; "
        "cost = 1 - ab_ratio",
        close=close,
    )


def _check_arms(mem: SwarmMemory, checked: str, unchecked: str) -> None:
    """The identity A/B's two arms differ as they must: the agent's ACL user, naming
    another agent, is refused by the checked put and let through by the unchecked one
    (``denied identity`` / anything else), or the case stops."""
    from swarm_memory.keys import NamespaceKeys, identity_key

    nk = NamespaceKeys.of(mem.settings.key_prefix, NAMESPACE)
    keys = [*nk.put_fixed(), nk.entry("id-probe"), nk.history("id-probe")]
    other = "bench-id-other"
    limits = "60000 10000 10000 1048576 1024"
    for function, refused in ((checked, True), (unchecked, False)):
        args = [other, f"id-probe-{function}", limits, "P   json", "id-probe", "1", "-"]
        reply = mem.redis.execute_command(
            "FCALL", function, len(keys), *keys, *args, identity_key(mem.settings.key_prefix, other)
        )
        if (reply[:2] == [b"denied", b"identity"]) != refused:
            raise RuntimeError(f"identity A/B: {function} answered {reply[:2]!r}")


def metrics_available() -> bool:
    try:
        import swarm_memory.metrics  # noqa: F401
    except ImportError:
        return False
    return True


def batch_cases(ctx: Ctx) -> list[Case]:
    mem = memory(ctx)
    mem.create_namespace(NAMESPACE, exist_ok=True)
    ns = mem.namespace(NAMESPACE)
    wkeys = {ctx.fresh("pm"): ctx.value for _ in range(BATCH)}
    rkeys = [ctx.fresh("gm") for _ in range(BATCH)]
    ns.put_many(dict.fromkeys(rkeys, ctx.value))
    return [
        Case(
            "ours.put_many(100)",
            lambda n: timed(lambda: ns.put_many(wkeys), n),
            items=BATCH,
            vs=("base.cas_xadd.x100",),
            note="one script call, one revision",
        ),
        Case(
            "ours.get_many(100)",
            lambda n: timed(lambda: ns.get_many(rkeys), n),
            items=BATCH,
            vs=("base.hgetall.x100",),
            close=mem.close,
        ),
    ]


def async_cases(ctx: Ctx) -> list[Case]:
    mem = memory(ctx)
    mem.create_namespace(NAMESPACE, exist_ok=True)
    wkeys = [ctx.fresh("ap") for _ in range(TASKS)]
    rkeys = [ctx.fresh("ag") for _ in range(TASKS)]
    mem.namespace(NAMESPACE).put_many(dict.fromkeys(rkeys, ctx.value))
    mem.close()
    value = ctx.value

    def runner(kind: str, keys: list[str]) -> Any:
        async def task(ns: Any, key: str, n: int) -> None:
            for _ in range(n):
                if kind == "put":
                    await ns.put(key, value)
                else:
                    await ns.get(key)

        async def main(n: int) -> Sample:
            amem = AsyncSwarmMemory.from_url(ctx.url, agent="bench")
            try:
                ns = amem.namespace(NAMESPACE)
                return await timed_tasks(lambda k, count: task(ns, k, count), keys, n)
            finally:
                await amem.close()

        return lambda n: asyncio.run(main(n))

    return [
        Case(
            "ours.async.put",
            runner("put", wkeys),
            vs=("base.async.cas_xadd",),
            note=f"{TASKS} tasks",
        ),
        Case("ours.async.get", runner("get", rkeys), vs=("base.async.hgetall",)),
    ]

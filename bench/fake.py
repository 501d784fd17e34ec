"""The same operations on fakeredis (in-process, Lua via lupa) — what the test suite's
``fake`` backend costs — beside the real server, interleaved. The ratio fake / real says
how much faster (> 1) or slower (< 1) the in-process fake is than loopback Redis.
"""

from __future__ import annotations

from bench.baselines import BATCH
from bench.harness import Case, Ctx, timed
from swarm_memory import SwarmMemory

NAMESPACE = "bench-fake"


def _ops(prefix: str, mem: SwarmMemory, ctx: Ctx, vs: str | None) -> list[Case]:
    mem.create_namespace(NAMESPACE, exist_ok=True)
    ns = mem.namespace(NAMESPACE)
    value = ctx.value
    ns.put("get", value)
    many = {f"pm-{i}": value for i in range(BATCH)}
    ns.put_many(many)
    names = list(many)

    def against(op: str) -> tuple[str, ...]:
        return (f"{vs}.{op}",) if vs else ()

    return [
        Case(f"{prefix}.put", lambda n: timed(lambda: ns.put("put", value), n), vs=against("put")),
        Case(f"{prefix}.get", lambda n: timed(lambda: ns.get("get"), n), vs=against("get")),
        Case(f"{prefix}.incr", lambda n: timed(lambda: ns.incr("hits"), n), vs=against("incr")),
        Case(
            f"{prefix}.put_many(100)",
            lambda n: timed(lambda: ns.put_many(many), n),
            items=BATCH,
            vs=against("put_many(100)"),
        ),
        Case(
            f"{prefix}.get_many(100)",
            lambda n: timed(lambda: ns.get_many(names), n),
            items=BATCH,
            vs=against("get_many(100)"),
            close=mem.close,
        ),
    ]


def fake_cases(ctx: Ctx) -> list[Case]:
    import fakeredis

    real = SwarmMemory.from_url(ctx.url, agent="bench")
    fake = SwarmMemory.from_client(fakeredis.FakeRedis(), agent="bench")
    return _ops("real", real, ctx, None) + _ops("fake", fake, ctx, "real")

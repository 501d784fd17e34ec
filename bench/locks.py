"""swarm_memory's lock (a lease with a fencing token): acquire + release, uncontended.

Measured only when ``Namespace.lock`` exists (the lock API is landing separately); the
suite prints "not available" otherwise. Peers and the bare baseline are in
``peers.py`` / ``baselines.py`` and run in the same family.
"""

from __future__ import annotations

from bench.core import NAMESPACE, memory
from bench.harness import Case, Ctx, timed
from swarm_memory.client import Namespace


def available() -> bool:
    return callable(getattr(Namespace, "lock", None))


def lock_cases(ctx: Ctx) -> list[Case]:
    if not available():
        return []
    mem = memory(ctx)
    mem.create_namespace(NAMESPACE, exist_ok=True)
    ns = mem.namespace(NAMESPACE)
    name = ctx.fresh("ourlock").replace(":", "-")

    def cycle() -> None:
        with ns.lock(name, ttl=10.0) as lock:
            if not lock.token:  # a FencingToken (int > 0) while held
                raise RuntimeError("lock held without a fencing token")

    return [
        Case(
            "ours.lock",
            lambda n: timed(cycle, n),
            vs=("base.lock", "peer.redis-py.Lock"),
            note="acquire + release, fencing token",
            close=mem.close,
        )
    ]

"""Recall equals a brute-force filter over the same random graph (Hypothesis), on every
backend through both clients, with the per-call scan budget small enough that paging
and partial pages are exercised."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import swarm_memory._ops.graph as graph_ops
from swarm_memory.models import ms_to_datetime

AGENTS = ["a1", "a2", "a3"]
CONTEXTS = ["c1", "c2"]
KINDS = ["fact", "plan"]
TAGS = ["x", "y", "z"]
CONFS = [0.0, 0.3, 0.30000000000000004, 0.5, 0.9, 1.0]
_names = itertools.count()

node_spec = st.tuples(
    st.sampled_from(AGENTS),
    st.sampled_from(CONTEXTS),
    st.sampled_from(KINDS),
    st.sampled_from(CONFS),
    st.sets(st.sampled_from(TAGS), max_size=3),
    st.booleans(),  # deleted afterwards
    st.one_of(st.none(), st.integers(0, 4)),  # valid_from (days after T0)
    st.one_of(st.none(), st.integers(1, 5)),  # invalid_at (days after T0)
)
T0 = datetime(2026, 1, 1, tzinfo=UTC)
query = st.fixed_dictionaries(
    {},
    optional={
        "agent": st.sampled_from(AGENTS),
        "context": st.sampled_from(CONTEXTS),
        "kind": st.sampled_from(KINDS),
        "tags": st.sets(st.sampled_from(TAGS), min_size=1, max_size=2),
        "min_confidence": st.sampled_from(CONFS),
        "since": st.integers(0, 100),  # a percentile of the creation times
        "until": st.integers(0, 100),
        "valid_at": st.integers(-1, 6),  # days after T0
    },
)


def _brute(nodes, q, times):
    out = []
    for n in nodes:
        if "agent" in q and n.agent != q["agent"]:
            continue
        if "context" in q and n.context != q["context"]:
            continue
        if "kind" in q and n.kind != q["kind"]:
            continue
        if "tags" in q and not set(q["tags"]) <= set(n.tags):
            continue
        if "min_confidence" in q and n.confidence < q["min_confidence"]:
            continue
        if "since" in q and n.created_ms < times["since"]:
            continue
        if "until" in q and n.created_ms > times["until"]:
            continue
        if "valid_at" in q:
            at = T0 + timedelta(days=q["valid_at"])
            if n.valid_from is not None and n.valid_from > at:
                continue
            if n.invalid_at is not None and n.invalid_at <= at:
                continue
        out.append(n)
    out.sort(key=lambda n: (n.created_ms, n.id), reverse=True)
    return [n.id for n in out]


@settings(
    max_examples=4,
    deadline=None,
    # No shrinking: each replay rebuilds a graph on a real server; the failing example is
    # reported as drawn.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), specs=st.lists(node_spec, min_size=1, max_size=25))
def test_recall_equals_a_brute_force_filter(env, data, specs):
    mem = env.mem()
    name = f"g{next(_names)}"
    mem.create_graph(name)
    graphs = {a: env.mem(a).graph(name) for a in AGENTS}
    live = []
    for i, (agent, ctx, kind, conf, tags, deleted, vf, ia) in enumerate(specs):
        n = graphs[agent].add(
            {"i": i},
            context=ctx,
            kind=kind,
            confidence=conf,
            tags=tags,
            valid_from=None if vf is None else T0 + timedelta(days=vf),
            invalid_at=None if ia is None else T0 + timedelta(days=ia),
        )
        if deleted:
            graphs[agent].delete(n)
        else:
            live.append(n)
    g = graphs["a1"]
    ms = sorted(n.created_ms for n in live) or [0]
    old = graph_ops.SCAN_BUDGET
    try:
        # Random filter combinations, then every validity day on its own (the window's
        # ends are days: each boundary is hit).
        fixed = [{"valid_at": day} for day in range(-1, 7)]
        for i in range(8 + len(fixed)):
            q = data.draw(query) if i < 8 else fixed[i - 8]
            graph_ops.SCAN_BUDGET = data.draw(st.sampled_from([2, 5, 1000]))
            limit = data.draw(st.sampled_from([1, 3, 50]))
            times = {
                k: ms[min(len(ms) - 1, q[k] * len(ms) // 100)] for k in ("since", "until") if k in q
            }
            args = {k: v for k, v in q.items() if k not in ("since", "until", "valid_at")}
            if "valid_at" in q:
                args["valid_at"] = T0 + timedelta(days=q["valid_at"])
            if "since" in times:
                args["since"] = ms_to_datetime(times["since"])
            if "until" in times:
                args["until"] = ms_to_datetime(times["until"]) + timedelta(microseconds=500)
            got, cursor = [], None
            for _page in range(200):
                page = g.recall(limit=limit, cursor=cursor, **args)
                assert len(page) <= limit
                got += [n.id for n in page]
                cursor = page.cursor
                if cursor is None:
                    break
            assert got == _brute(live, q, times), (q, times)
    finally:
        graph_ops.SCAN_BUDGET = old

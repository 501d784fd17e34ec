"""Agent context, sessions and outcome logs on every backend, through both clients."""

from __future__ import annotations

import math
from typing import Any

import pytest

from swarm_memory import (
    ConflictError,
    CorruptData,
    EventsTrimmed,
    InvalidInput,
    InvalidName,
    InvalidTTL,
    OpIdReused,
    PermissionDenied,
    QuotaExceeded,
    SessionNotOpen,
)
from swarm_memory.keys import NamespaceKeys
from tests.support import must


def _team(env: Any, agent: str = "planner", **kw: Any) -> Any:
    mem = env.mem(agent)
    mem.create_namespace("team", **kw)
    return mem


# ---------------------------------------------------------------------- contexts
def test_context_saves_with_cas_and_resumes_with_the_events_since(env):
    mem = _team(env)
    ns = mem.namespace("team")
    ctx = ns.context()
    first = ctx.save({"step": 1, "big": 123456789012345678, "empty": []})
    assert first.version == 1 and ctx.key == "_context/planner"
    second = ctx.save({"step": 2, "big": 123456789012345678, "empty": []}, expected_version=1)
    assert second.version == 2
    with pytest.raises(ConflictError) as info:
        ctx.save({"step": 3}, expected_version=1)  # a stale save never passes silently
    assert must(info.value.current).version == 2
    # Work happens while the agent is away: another agent writes.
    other = env.mem("worker").namespace("team")
    other.put("task-1", "done")
    other.put("task-2", "done")
    other.delete("task-1")
    resumed = mem.context(namespace="team").resume()
    assert must(resumed.context).version == 2
    assert must(resumed.context).value == {"step": 2, "big": 123456789012345678, "empty": []}
    assert [(e.type, e.key) for e in resumed.events] == [
        ("put", "task-1"),
        ("put", "task-2"),
        ("delete", "task-1"),
    ]
    assert resumed.complete
    # Paged: the cursor goes on exactly where the page ended.
    page = ctx.resume(limit=2)
    assert [e.key for e in page.events] == ["task-1", "task-2"] and not page.complete
    rest = ctx.resume(since=page.cursor)
    assert [(e.type, e.key) for e in rest.events] == [("delete", "task-1")]
    other.put("task-3", 1)
    assert [e.key for e in ctx.resume(since=rest.cursor).events] == ["task-3"]
    assert ctx.get() == resumed.context


def test_context_of_an_agent_that_never_saved_is_none_with_no_events(env):
    mem = _team(env)
    mem.namespace("team").put("x", 1)
    resumed = mem.context("ghost", namespace="team").resume()
    assert resumed.context is None and resumed.events == [] and resumed.complete
    mem.namespace("team").put("y", 1)
    assert [e.key for e in mem.namespace("team").context().resume(since=resumed.cursor).events] == [
        "y"
    ]


def test_context_permissions(env):
    mem = _team(env, default_permission="none", permissions={"reader": "read", "writer": "write"})
    mem.namespace("team").context().save({"secret": 1})
    # Visibility is the namespace's: readers may resume another agent's context ...
    reader = env.mem("reader")
    assert must(reader.context("planner", namespace="team").get()).value == {"secret": 1}
    # ... an agent without read may not, and one without write may not save.
    with pytest.raises(PermissionDenied):
        env.mem("stranger").context("planner", namespace="team").resume()
    with pytest.raises(PermissionDenied):
        reader.context(namespace="team").save({"mine": 1})
    # Only its owner saves a context, even with write permission.
    before = env.snapshot()
    with pytest.raises(PermissionDenied) as info:
        env.mem("writer").context("planner", namespace="team").save({"forged": 1})
    assert info.value.action == "context_save"
    assert env.snapshot() == before


# ---------------------------------------------------------------------- sessions
def test_session_decision_log_is_ordered_paged_and_closes(env):
    mem = _team(env)
    ns = mem.namespace("team")
    s = ns.session("task-42")
    info = s.open(ttl=600, meta={"task": 42})
    assert (info.state, info.opened_by, info.decisions, info.meta) == (
        "open",
        "planner",
        0,
        {"task": 42},
    )
    assert info.expires_at is not None
    worker = env.mem("worker").session("task-42", namespace="team")
    made = []
    for i in range(7):
        who = s if i % 2 == 0 else worker
        made.append(
            who.decide(
                {"step": i},
                rationale=f"because {i}",
                inputs={"seen": [i, 0.30000000000000004]},
                outcome=f"op-{i}",
            )
        )
    assert [d.seq for d in made] == list(range(1, 8))
    got, after = [], None
    while True:
        page = s.decisions(after=after, limit=3)
        got += page.decisions
        if page.next is None:
            break
        after = page.next
    assert got == made
    assert [d.agent for d in got] == ["planner", "worker"] * 3 + ["planner"]
    assert got[3].inputs == {"seen": [3, 0.30000000000000004]} and got[3].outcome == "op-3"
    assert [x.id for x in ns.sessions()] == ["task-42"]
    assert s.close() == 7
    with pytest.raises(SessionNotOpen) as closed:
        s.decide("late")
    assert closed.value.state == "closed"
    assert must(s.info()).state == "closed"
    assert len(s.decisions(limit=100).decisions) == 7  # readable after close
    with pytest.raises(SessionNotOpen):
        s.close()
    with pytest.raises(SessionNotOpen) as exists:
        s.open()
    assert exists.value.state == "exists"


def test_session_ttl_expires_session_and_log(env):
    mem = _team(env)
    ns = mem.namespace("team")
    s = ns.session()
    s.open(ttl=0.3)
    s.decide("a")
    keep = ns.session("keep")
    keep.open()
    assert sorted(x.id for x in ns.sessions()) == sorted([s.id, "keep"])
    env.sleep(0.5)
    assert s.info() is None
    with pytest.raises(SessionNotOpen) as info:
        s.decide("b")
    assert info.value.state == "absent"
    assert [x.id for x in ns.sessions()] == ["keep"]
    nk = NamespaceKeys.of(env.prefix, "team")
    assert env.raw.exists(nk.session(s.id), nk.session_log(s.id)) == 0
    s.open(ttl=60)  # the id may be reused once expired, starting empty
    assert s.decisions().decisions == []


def test_decide_replayed_op_id_appends_once(env):
    ns = _team(env).namespace("team")
    s = ns.session("s")
    s.open()
    one = s.decide("x", op_id="d-1")
    again = s.decide("x", op_id="d-1")
    assert again == one
    with pytest.raises(OpIdReused):
        s.decide("y", op_id="d-1")
    assert len(s.decisions().decisions) == 1


# ---------------------------------------------------------------------- outcomes
def test_outcome_stats_are_exact_and_retries_count_once(env):
    log = _team(env).namespace("team").outcomes("routing")
    durations = [3.0, 1.0, 2.0, 10.0, 4.0, 5.0, 9.0, 6.0, 8.0, 7.0]
    for i, d in enumerate(durations):
        log.record("fast", success=i < 8, duration=d, cost=0.25, tags=["a"], op_id=f"f{i}")
    for i in range(3):  # retries of recorded ops (a timeout, say): counted once
        log.record(
            "fast", success=i < 8, duration=durations[i], cost=0.25, tags=["a"], op_id=f"f{i}"
        )
    with pytest.raises(OpIdReused):
        log.record("fast", success=False, duration=1.0, op_id="f0")
    ns = env.mem("planner").namespace("team")
    ns.put("k", 1, op_id="w0")  # op ids are one space per namespace, across scripts
    with pytest.raises(OpIdReused):
        log.record("fast", success=True, op_id="w0")
    with pytest.raises(OpIdReused):
        ns.put("k", 2, op_id="f1")
    log.record("slow", success=True)  # no duration, no cost
    stats = log.stats()
    fast = stats["fast"]
    assert (fast.n, fast.successes, fast.success_rate) == (10, 8, 0.8)
    assert round(must(fast.wilson_low), 3) == 0.490 and round(must(fast.wilson_high), 3) == 0.943
    assert fast.median_duration == 5.5 and fast.p90_duration == 9.0
    assert (fast.costs, fast.total_cost, fast.mean_cost) == (10, 2.5, 0.25)
    slow = stats["slow"]
    assert (slow.n, slow.durations, slow.median_duration, slow.mean_cost) == (1, 0, None, None)
    assert list(stats) == ["fast", "slow"]
    none = log.stats(["never"])["never"]
    assert (none.n, none.success_rate, none.wilson_low) == (0, None, None)


def test_recommend_picks_the_best_lower_bound_and_says_when_data_is_short(env):
    log = _team(env).namespace("team").outcomes("plans")
    for i in range(20):
        log.record("steady", success=i < 18)  # 18/20: lower bound 0.699
    for _ in range(4):
        log.record("lucky", success=True)  # 4/4, but only 4 records
    for i in range(30):
        log.record("meh", success=i < 20)  # 20/30: lower bound 0.488
    rec = log.recommend(["steady", "lucky", "meh"], min_n=10)
    assert rec.choice == "steady" and rec.enough_data
    assert rec.insufficient == ["lucky"] and "not enough data yet for lucky" in rec.reason
    assert round(must(rec.lower_bound), 3) == round(must(rec.stats["steady"].wilson_low), 3)
    short = log.recommend(["lucky", "new"], min_n=10)
    assert short.choice is None and not short.enough_data
    assert "not enough data" in short.reason and short.insufficient == ["lucky", "new"]


def test_outcome_log_of_a_recreated_namespace_starts_empty(env):
    mem = _team(env)
    log = mem.namespace("team").outcomes("o")
    log.record("a", success=True, duration=1.0)
    mem.delete_namespace("team")
    mem.create_namespace("team")
    assert mem.outcomes("o", namespace="team").stats() == {}
    mem.outcomes("o", namespace="team").record("a", success=False, duration=2.0)
    a = mem.outcomes("o", namespace="team").stats()["a"]
    assert (a.n, a.successes, a.median_duration) == (1, 0, 2.0)


def test_outcome_and_session_permissions(env):
    mem = _team(env, default_permission="none", permissions={"reader": "read"})
    mem.outcomes("o", namespace="team").record("a", success=True)
    s = mem.session("s", namespace="team")
    s.open()
    s.decide("x")
    before = env.snapshot()
    with pytest.raises(PermissionDenied):
        env.mem("reader").session("s", namespace="team").decide("y")
    with pytest.raises(PermissionDenied):
        env.mem("reader").session("s", namespace="team").close()
    for read in (
        lambda m: list(m.namespace("team").sessions()),
        lambda m: m.session("s", namespace="team").decisions(),
        lambda m: m.session("s", namespace="team").info(),
    ):
        with pytest.raises(PermissionDenied):
            read(env.mem("stranger"))
        read(env.mem("reader"))
    with pytest.raises(PermissionDenied):
        env.mem("reader").outcomes("o", namespace="team").record("a", success=True)
    with pytest.raises(PermissionDenied):
        env.mem("stranger").outcomes("o", namespace="team").stats()
    with pytest.raises(PermissionDenied):
        env.mem("reader").session("s", namespace="team").open()
    assert env.mem("reader").outcomes("o", namespace="team").stats()["a"].n == 1
    assert env.guard.by_script["agent"] >= 10  # every agent-memory call hashed to one slot
    after = env.snapshot()
    # Denials are counted and audited, nothing else changes.
    changed = {k for k in after if after[k] != before.get(k)}
    nk = NamespaceKeys.of(env.prefix, "team")
    assert {k.decode() for k in changed} <= {nk.stats, nk.audit}


BAD_RECORDS: list[tuple[str, dict[str, Any], type[Exception]]] = [
    ("a", {"success": True, "duration": math.nan}, InvalidInput),
    ("a", {"success": True, "duration": math.inf}, InvalidInput),
    ("a", {"success": True, "duration": -1.0}, InvalidInput),
    ("a", {"success": True, "cost": -0.5}, InvalidInput),
    ("a", {"success": True, "cost": "1"}, InvalidInput),
    ("a", {"success": 1}, InvalidInput),
    ("a", {"success": True, "tags": ["t"] * 33}, InvalidInput),
    ("a", {"success": True, "tags": "abc"}, InvalidInput),
    ("a", {"success": True, "tags": ["x" * 65]}, InvalidInput),
    ("a", {"success": True, "op_id": ""}, InvalidInput),
    ("bad name", {"success": True}, InvalidName),
    ("a\x00b", {"success": True}, InvalidName),
    ("", {"success": True}, InvalidName),
]


def test_bad_input_is_refused_before_redis(env):
    mem = _team(env)
    ns = mem.namespace("team")
    log = ns.outcomes("o")
    s = ns.session("s")
    s.open()
    before = env.snapshot()
    for strategy, kw, exc in BAD_RECORDS:
        with pytest.raises(exc):
            log.record(strategy, **kw)
    for bad in ("", "no spaces", "{x}", "x" * 200):
        with pytest.raises(InvalidName):
            ns.outcomes(bad)
        with pytest.raises(InvalidName):
            ns.session(bad)
        with pytest.raises(InvalidName):
            ns.context(bad)
    with pytest.raises(InvalidInput):
        log.recommend("abc", min_n=3)
    with pytest.raises(InvalidInput):
        log.recommend(["a"], min_n=0)
    with pytest.raises(InvalidInput):
        log.recommend([], min_n=3)
    with pytest.raises(InvalidTTL):
        ns.session("t").open(ttl=-1)
    with pytest.raises(InvalidInput):
        s.decide({"x": math.nan})
    with pytest.raises(InvalidInput):
        s.decide("x", rationale=5)
    with pytest.raises(InvalidInput):
        s.decisions(after="garbage")
    with pytest.raises(InvalidInput):
        ns.context().save({"x": math.inf})
    with pytest.raises(InvalidInput):
        ns.context().resume(limit=0)
    assert env.snapshot() == before


def test_corrupt_outcome_and_session_data_names_the_key(env):
    mem = _team(env)
    ns = mem.namespace("team")
    log = ns.outcomes("o")
    log.record("a", success=True, duration=1.0)
    nk = NamespaceKeys.of(env.prefix, "team")
    env.raw.hset(nk.outcome_counters("o"), "n:a", "lots")
    with pytest.raises(CorruptData) as info:
        log.stats()
    assert info.value.key == nk.outcome_counters("o")
    before = env.snapshot()
    with pytest.raises(CorruptData) as info:
        log.record("a", success=True)
    assert info.value.key == nk.outcome_counters("o")
    assert env.snapshot() == before  # nothing written
    env.raw.hset(nk.outcome_counters("o"), "n:a", "1")
    env.raw.zrem(nk.outcome_durations("o"), "a\x00")  # the strategy's sentinel
    with pytest.raises(CorruptData) as info:
        log.stats()
    assert info.value.key == nk.outcome_durations("o")
    s = ns.session("s")
    s.open()
    env.raw.hset(nk.session("s"), "st", "sideways")
    with pytest.raises(CorruptData) as info:
        s.decide("x")
    assert info.value.key == nk.session("s")
    env.raw.delete(nk.session_log("s"))
    env.raw.set(nk.session_log("s"), "not a stream")
    env.raw.hset(nk.session("s"), "st", "open")
    before = env.snapshot()
    with pytest.raises(CorruptData) as info:
        s.decide("x")
    assert info.value.key == nk.session_log("s")
    assert env.snapshot() == before


def test_delete_namespace_removes_every_agent_memory_key(env):
    mem = _team(env)
    ns = mem.namespace("team")
    ns.context().save({"a": 1})
    for i in range(3):
        s = ns.session(f"s{i}")
        s.open(ttl=600 if i else None)
        s.decide(i)
    ns.outcomes("o1").record("a", success=True, duration=1.0)
    ns.outcomes("o2").record("b", success=False)
    assert any(b"{team}" in k for k in env.snapshot())
    mem.delete_namespace("team")
    assert not [k for k in env.snapshot() if b"{team}" in k]
    mem.create_namespace("team")
    fresh = mem.namespace("team")
    assert list(fresh.sessions()) == [] and fresh.outcomes("o1").stats() == {}


def test_resume_past_the_feeds_retention_raises_events_trimmed(env):
    mem = _team(env)
    ns = mem.namespace("team")
    ns.context().save({"step": 1})
    for i in range(5):
        ns.put(f"k{i}", i)
    env.raw.xtrim(
        NamespaceKeys.of(env.prefix, "team").events, maxlen=2, approximate=False
    )  # retention ran out
    with pytest.raises(EventsTrimmed):
        ns.context().resume()
    ns.context().save({"step": 2})  # a new save resumes cleanly again
    assert ns.context().resume().events == []


def test_an_outcome_log_refuses_strategies_past_its_limit(env, monkeypatch):
    from swarm_memory._ops import outcomes as outcome_ops

    monkeypatch.setattr(outcome_ops, "MAX_STRATEGIES", 2)
    log = _team(env).namespace("team").outcomes("o")
    log.record("a", success=True)
    log.record("b", success=True)
    before = env.snapshot()
    with pytest.raises(QuotaExceeded) as info:
        log.record("c", success=True)
    assert info.value.limit_kind == "strategies" and info.value.limit == 2
    assert env.snapshot() == before
    log.record("a", success=False)  # known strategies go on
    assert log.stats()["a"].n == 2


@pytest.mark.parametrize("seed", [1, 2])
def test_outcome_stats_equal_a_brute_force_over_random_records(env, seed):
    import random
    import statistics

    from swarm_memory.agent import wilson

    rng = random.Random(seed)
    log = _team(env).namespace("team").outcomes("r")
    records: dict[str, list[tuple[bool, float | None, float | None]]] = {}
    for i in range(rng.randint(20, 60)):
        strategy = rng.choice(["a", "b", "c.d", "e-f"])
        duration = rng.choice([None, round(rng.uniform(0, 30), 6), float(rng.randint(0, 3))])
        cost = rng.choice([None, round(rng.uniform(0, 2), 6)])
        success = rng.random() < 0.6
        log.record(strategy, success=success, duration=duration, cost=cost, op_id=f"r{i}")
        records.setdefault(strategy, []).append((success, duration, cost))
    stats = log.stats()
    assert set(stats) == set(records)
    for strategy, recs in records.items():
        st = stats[strategy]
        ok = sum(r[0] for r in recs)
        durations = sorted(r[1] for r in recs if r[1] is not None)
        costs = [r[2] for r in recs if r[2] is not None]
        assert (st.n, st.successes, st.durations, st.costs) == (
            len(recs),
            ok,
            len(durations),
            len(costs),
        )
        assert (st.wilson_low, st.wilson_high) == wilson(ok, len(recs))
        if durations:
            assert st.median_duration == pytest.approx(statistics.median(durations), abs=1e-9)
            assert st.p90_duration == durations[-(-9 * len(durations) // 10) - 1]
        else:
            assert st.median_duration is None and st.p90_duration is None
        assert st.total_cost == pytest.approx(sum(costs), abs=1e-9)


def test_session_extend_moves_the_expiry_of_the_session_and_its_log(env):
    ns = _team(env).namespace("team")
    s = ns.session("long")
    s.open(ttl=0.4)
    s.decide("a")
    new_expiry = s.extend(60)
    assert new_expiry is not None and must(s.info()).expires_at == new_expiry
    env.sleep(0.6)  # past the first TTL: still there, log included
    assert [d.decision for d in s.decisions().decisions] == ["a"]
    assert [x.expires_at for x in ns.sessions()] == [new_expiry]
    assert s.extend(None) is None  # never expires now
    nk = NamespaceKeys.of(env.prefix, "team")
    assert env.raw.pttl(nk.session("long")) == -1 and env.raw.pttl(nk.session_log("long")) == -1
    assert [x.expires_at for x in ns.sessions()] == [None]
    s.extend(0.2)
    env.sleep(0.4)
    with pytest.raises(SessionNotOpen) as info:
        s.extend(60)
    assert info.value.state == "absent"
    assert env.raw.exists(nk.session("long"), nk.session_log("long")) == 0

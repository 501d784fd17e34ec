"""Transactions, agent leases (ephemeral entries, lease-tied locks) and presence."""

from __future__ import annotations

import re

import pytest

from swarm_memory import ConflictError, InvalidInput, TransactionConflict
from swarm_memory.keys import NamespaceKeys
from tests.support import drain


@pytest.fixture
def mem(env):
    m = env.mem("planner", lock_poll=0.05, watch_poll=0.2)
    m.create_namespace("team", permissions={"worker": "write"})
    return m


@pytest.fixture
def ns(mem):
    return mem.namespace("team")


def tie(agent: str, lock: str, token: int) -> bytes:
    """A hold's lease tie as stored (lua/_lib.lua lock_tie)."""
    return f"{agent}\x00l{lock}\x00{token}".encode()


def lock_ties(env, agent: str, lock: str) -> list[bytes]:
    """The agent's lease ties on the lock, of either form, sorted."""
    members = env.raw.zrange(NamespaceKeys.of(env.prefix, "team").eph, 0, -1)
    old = f"{agent}\x00l{lock}".encode()
    return sorted(m for m in members if m == old or m.startswith(old + b"\x00"))


# ------------------------------------------------------------------------ transactions
def test_transaction_commits_everything_in_one_revision(ns):
    a = ns.put("a", 1)
    ns.put("gone", 1)
    tx = ns.transaction().check("a", a.version).check_absent("b").put("a", 2).put("b", [])
    result = tx.delete("gone").commit()
    assert set(result.entries) == {"a", "b", "gone"} and result.entries["gone"] is None
    assert result.entries["a"].version == 2 and result.entries["b"].value == []
    assert result.entries["a"].mod_revision == result.entries["b"].mod_revision == result.revision
    assert ns.get("a").value == 2 and ns.get("b").value == [] and ns.get("gone") is None


def test_failed_compares_change_nothing_and_are_all_named(env, ns):
    ns.put("a", 1)
    ns.put("b", 1)
    ns.put("b", 2)
    before = env.snapshot()
    tx = ns.transaction().check("a", 1).check("b", 1).check_absent("a2").check("c", 4)
    with pytest.raises(TransactionConflict) as info:
        tx.put("x", 1).put("a", 5).commit()
    err = info.value
    assert isinstance(err, ConflictError)
    failed = {(f.key, f.expected, f.current.version if f.current else None) for f in err.failed}
    assert failed == {("b", 1, 2), ("c", 4, None)}  # a and a2 held; b and c did not
    assert env.snapshot() == before


def test_conflicting_compares_on_one_key_are_refused_client_side(ns):
    tx = ns.transaction().check("a", 1)
    with pytest.raises(InvalidInput):
        tx.check_absent("a")
    tx.put("a", 1)
    with pytest.raises(InvalidInput):
        tx.delete("a")
    with pytest.raises(InvalidInput):
        ns.transaction().commit()  # nothing to write


def test_transaction_context_manager(ns):
    with ns.transaction() as tx:
        tx.check_absent("k").put("k", {"v": 1})
    assert tx.result.entries["k"].version == 1
    with pytest.raises(RuntimeError), ns.transaction() as tx2:
        tx2.put("j", 1)
        raise RuntimeError("abort")
    assert ns.get("j") is None


def test_transaction_is_idempotent_by_op_id(ns):
    first = ns.transaction().check_absent("k").put("k", 1).commit(op_id="tx-1")
    again = ns.transaction().check_absent("k").put("k", 1).commit(op_id="tx-1")
    assert again.revision == first.revision and ns.get("k").version == 1


def test_fenced_transaction(ns):
    lock = ns.lock("k", ttl=5)
    token = lock.acquire()
    ns.transaction().put("k", 1, fence=token).commit()
    lock.release()
    from swarm_memory import FencingError

    with pytest.raises(FencingError):
        ns.transaction().put("k", 2, fence=token).commit()
    assert ns.get("k").value == 1


# ------------------------------------------------------------------------ leases
def test_ephemeral_entries_and_locks_go_with_the_lease(env, mem, ns):
    w = ns.watch(types={"expire", "unlock", "agent_lost"})
    worker_mem = mem.as_agent("worker")
    worker_mem.heartbeat(0.3)
    worker = worker_mem.namespace("team")
    worker.put("claim-1", "worker", ephemeral=True)
    worker.put_many({"claim-2": 1, "claim-3": 1}, ephemeral=True)
    worker.put("kept", 1)
    lock = worker.lock("job", ttl=30)  # its own ttl is long: the lease ends it first
    lock.acquire()
    assert [a.agent for a in mem.agents()] == ["worker"]
    env.sleep(0.45)  # the worker "dies": no heartbeat
    assert mem.agents() == [] and mem.agents(alive=False)[0].agent == "worker"
    ns.sweep()  # (an active watcher's poll may already have run the sweeper)
    assert ns.get("claim-1") is None and ns.get("claim-2") is None
    assert ns.get("kept").value == 1 and ns.locks() == []
    got = drain(w, 5)
    assert sorted((e.type, e.key) for e in got) == [
        ("agent_lost", None),
        ("expire", "claim-1"),
        ("expire", "claim-2"),
        ("expire", "claim-3"),
        ("unlock", "job"),
    ]
    assert {e.agent for e in got} == {"worker"}
    assert ns.info().keys == 1
    w.close()


def test_heartbeats_keep_ephemeral_entries(env, mem):
    worker_mem = mem.as_agent("worker")
    worker_mem.heartbeat(0.4)
    worker = worker_mem.namespace("team")
    worker.put("claim", 1, ephemeral=True)
    for _ in range(4):
        env.sleep(0.15)
        worker_mem.heartbeat(0.4)
    assert worker.sweep().lost_agents == []
    assert worker.get("claim").value == 1


def test_a_plain_overwrite_makes_an_ephemeral_entry_permanent(env, mem, ns):
    worker_mem = mem.as_agent("worker")
    worker_mem.heartbeat(0.2)
    worker = worker_mem.namespace("team")
    worker.put("a", 1, ephemeral=True)
    worker.put("b", 1, ephemeral=True)
    ns.put("a", 2)  # another agent's plain write: no longer tied to the worker
    env.sleep(0.3)
    assert ns.sweep().lost_agents == ["worker"]
    assert ns.get("a").value == 2 and ns.get("b") is None


def test_lease_stop_releases_at_once(env, mem, ns):
    worker_mem = mem.as_agent("worker")
    lease = worker_mem.lease(30)
    worker = worker_mem.namespace("team")
    worker.put("claim", 1, ephemeral=True)
    worker.lock("job", ttl=30).acquire()
    assert lease.expires_at is not None and not lease.lost
    lease.stop()
    assert ns.get("claim") is None and ns.locks() == []
    assert [a.alive for a in mem.agents(alive=False)] == [False]


def test_bad_lease_input(env, mem, ns):
    before = env.snapshot()
    for bad in (0, -1, float("nan"), "5"):
        with pytest.raises(InvalidInput):
            mem.heartbeat(bad)
    with pytest.raises(InvalidInput):
        mem.heartbeat(5, namespaces="team")
    with pytest.raises(InvalidInput):
        ns.put("k", 1, ephemeral="yes")
    assert env.snapshot() == before


REWRITES = ["release", "acquire", "reacquire", "extend", "force", "reap"]


@pytest.mark.parametrize("rewrite", REWRITES)
def test_a_lapsed_holds_lease_tie_goes_when_its_record_is_written_without_it(env, mem, ns, rewrite):
    """A lease-tied hold that ran out is dropped from its lock's record by the next
    rewrite of the record (another holder's release, another acquire, the agent's own new
    hold, another holder's extend, an admin's force release, the reaper ending another
    agent's hold), and its lease tie goes with it: left behind, the tie let the reaper
    drop the agent's later hold of the same lock, taken without a lease, when its lease
    ended (lua/_lib.lua untie_lapsed)."""
    leased = mem.as_agent("worker")
    leased.heartbeat(1.0)
    leased.namespace("team").lock("job", ttl=0.1, mode="shared").acquire()
    other = ns.lock("job", ttl=30, mode="shared")
    other.acquire()
    if rewrite == "reap":  # a third holder whose lease ends first
        aux = mem.as_agent("aux")
        aux.heartbeat(0.15)
        aux.namespace("team").lock("job", ttl=30, mode="shared").acquire()
    env.sleep(0.25)  # the worker's hold ran out; its lease did not
    plain = mem.as_agent("worker").namespace("team")  # no heartbeat: holds without a lease
    held = plain.lock("job", ttl=30, mode="shared")
    if rewrite == "release":
        other.release()  # the record goes, with the lapsed hold in it
        held = plain.lock("job", ttl=30)
    elif rewrite == "acquire":
        ns.lock("job", ttl=30, mode="shared").acquire()  # the record without the lapsed hold
    elif rewrite == "extend":
        other.extend(30)
    elif rewrite == "force":
        assert ns.force_release("job") is True
        held = plain.lock("job", ttl=30)
    elif rewrite == "reap":
        assert ns.sweep().lost_agents == ["aux"]
    # (else: the worker's own new hold rewrites the record)
    held.acquire()
    assert lock_ties(env, "worker", "job") == []
    env.sleep(1.0)  # the worker's lease ends
    assert ns.sweep().lost_agents == ["worker"]
    holders = [h.agent for info in ns.locks() for h in info.holders]
    assert "worker" in holders  # its hold without a lease is still there
    held.release()


@pytest.mark.parametrize("released", ["leased", "plain"])
def test_releasing_one_of_an_agents_holds_leaves_the_tie_of_the_other(env, mem, ns, released):
    """An agent holding one shared lock twice, one hold lease-tied: releasing the other
    hold (leased too, or without a lease) leaves the first hold's tie, so that hold still
    ends with the lease (a tie per hold: lua/release.lua drops its own hold's)."""
    leased = mem.as_agent("worker")
    leased.heartbeat(0.6)
    team = leased.namespace("team")
    first = team.lock("job", ttl=30, mode="shared")
    token = int(first.acquire())
    if released == "leased":
        second = team.lock("job", ttl=30, mode="shared")
    else:
        second = mem.as_agent("worker").namespace("team").lock("job", ttl=30, mode="shared")
    second.acquire()
    second.release()
    assert lock_ties(env, "worker", "job") == [tie("worker", "job", token)]
    env.sleep(0.7)  # the worker's lease ends
    assert ns.sweep().lost_agents == ["worker"]
    assert ns.locks() == []


def test_a_lapsed_hold_leaves_the_tie_of_the_same_agents_live_hold(env, mem, ns):
    """A rewrite that drops one lapsed hold of an agent that still holds the lock with a
    lease drops the lapsed hold's tie and keeps the live hold's, and the reaper ends that
    hold with the lease."""
    leased = mem.as_agent("worker")
    leased.heartbeat(0.8)
    team = leased.namespace("team")
    team.lock("job", ttl=0.1, mode="shared").acquire()
    live = int(team.lock("job", ttl=30, mode="shared").acquire())
    env.sleep(0.2)  # one of the worker's holds ran out
    ns.lock("job", ttl=30, mode="shared").acquire()  # the record without the lapsed hold
    assert lock_ties(env, "worker", "job") == [tie("worker", "job", live)]
    env.sleep(0.8)  # the worker's lease ends
    assert ns.sweep().lost_agents == ["worker"]
    assert [h.agent for info in ns.locks() for h in info.holders] == ["planner"]


@pytest.mark.parametrize("leased_first", [True, False])
def test_a_tie_is_per_hold(env, mem, ns, leased_first):
    """An agent holding one shared lock twice at once, once with a lease and once
    without, loses only the leased hold when the lease ends (since stop 39: before, a
    tie was per agent and lock, and both holds went, docs/guarantees.md, 17)."""
    leased = mem.as_agent("worker")
    leased.heartbeat(0.5)
    with_lease = leased.namespace("team").lock("job", ttl=30, mode="shared")
    without = mem.as_agent("worker").namespace("team").lock("job", ttl=30, mode="shared")
    if leased_first:
        with_lease.acquire()
        kept = int(without.acquire())
    else:
        kept = int(without.acquire())
        with_lease.acquire()
    assert [h.agent for info in ns.locks() for h in info.holders] == ["worker", "worker"]
    env.sleep(0.6)  # the worker's lease ends
    assert ns.sweep().lost_agents == ["worker"]
    assert [(h.agent, h.token) for info in ns.locks() for h in info.holders] == [("worker", kept)]
    without.release()
    assert ns.locks() == []


def test_a_leased_hold_released_leaves_no_tie_on_the_agents_next_hold(env, mem, ns):
    """The agent's leased hold released while it holds the lock without a lease too:
    the hold without a lease outlives the lease."""
    leased = mem.as_agent("worker")
    leased.heartbeat(0.5)
    tied = leased.namespace("team").lock("job", ttl=30, mode="shared")
    tied.acquire()
    without = mem.as_agent("worker").namespace("team").lock("job", ttl=30, mode="shared")
    kept = int(without.acquire())
    tied.release()
    assert lock_ties(env, "worker", "job") == []
    env.sleep(0.6)
    assert ns.sweep().lost_agents == ["worker"]
    assert [(h.agent, h.token) for info in ns.locks() for h in info.holders] == [("worker", kept)]


def test_two_leased_holds_of_one_lock_both_end_with_the_lease(env, mem, ns):
    """Two ties naming one lock: the reaper reads its record once and writes it once (a
    second copy, read before the first write, would put the first dropped hold back),
    and the other agent's hold stays."""
    leased = mem.as_agent("worker")
    leased.heartbeat(0.5)
    team = leased.namespace("team")
    team.lock("job", ttl=30, mode="shared").acquire()
    team.lock("job", ttl=30, mode="shared").acquire()
    ns.lock("job", ttl=30, mode="shared").acquire()
    assert len(lock_ties(env, "worker", "job")) == 2
    w = ns.watch(types={"unlock", "agent_lost"})
    env.sleep(0.6)
    ns.sweep()  # (the watcher's poll may have run the sweeper already: the events say who)
    assert [h.agent for info in ns.locks() for h in info.holders] == ["planner"]
    assert lock_ties(env, "worker", "job") == []
    got = drain(w, 2)
    assert sorted((e.type, e.key) for e in got) == [("agent_lost", None), ("unlock", "job")]
    assert {e.agent for e in got} == {"worker"}
    assert w.get(0.2) is None  # one unlock for the lock, not one a tie


def the_next_unleased_hold_outlives_the_lease(env, mem, ns, wait: float) -> None:
    """The worker takes "job" without a lease; after ``wait`` its lease has ended, and the
    sweep that reaps the worker leaves that hold, and no tie of the worker on "job"."""
    plain = mem.as_agent("worker").namespace("team").lock("job", ttl=30)
    kept = int(plain.acquire())
    env.sleep(wait)  # the worker's lease ends
    assert ns.sweep().lost_agents == ["worker"]
    holders = [(i.name, h.agent, h.token) for i in ns.locks() for h in i.holders]
    assert ("job", "worker", kept) in holders, holders
    assert lock_ties(env, "worker", "job") == []
    plain.release()


def test_a_corrupt_records_tie_ties_no_later_hold(env, mem, ns):
    """The prune drops a record that does not parse without its ties (it cannot read
    their agents); the tie left names its hold's token, which no later hold has, so the
    agent's next hold of the lock, taken without a lease, outlives the lease."""
    leased = mem.as_agent("worker")
    leased.heartbeat(0.8)
    leased.namespace("team").lock("job", ttl=0.1).acquire()
    keys = NamespaceKeys.of(env.prefix, "team")
    env.raw.hset(keys.lock_records, "job", "garbage")
    env.sleep(0.2)  # the hold ran out; its index entry is due
    ns.lock("other", ttl=30).acquire()  # its acquire prunes the due record, unread
    assert env.raw.hget(keys.lock_records, "job") is None
    assert len(lock_ties(env, "worker", "job")) == 1  # left behind
    the_next_unleased_hold_outlives_the_lease(env, mem, ns, 0.8)


def as_an_older_clients_hold(env, lock: str) -> None:
    """The lock's record with every owner id this version marked as a hold taken without
    a lease (``<id>:n``: _ops/coord.py UNLEASED) as an older client wrote it (``<id>``)."""
    keys = NamespaceKeys.of(env.prefix, "team")
    raw = env.raw.hget(keys.lock_records, lock)
    older = re.sub(rb"24:([A-Za-z0-9._]{22}):n", rb"22:\1", raw)
    assert older != raw
    env.raw.hset(keys.lock_records, lock, older)


def test_an_older_clients_tie_still_ends_the_agents_holds(env, mem, ns):
    """A tie an older client made names the agent and lock alone ("<agent>\\0l<lock>"):
    the reaper still ends every hold of the agent on that lock that an older client took
    (or that was taken with a lease) with the lease."""
    leased = mem.as_agent("worker")
    leased.heartbeat(0.5)
    leased.namespace("team").lock("aux", ttl=30).acquire()  # (the lease in this namespace)
    mem.as_agent("worker").namespace("team").lock("job", ttl=30, mode="shared").acquire()
    as_an_older_clients_hold(env, "job")
    keys = NamespaceKeys.of(env.prefix, "team")
    env.raw.zadd(keys.eph, {b"worker\x00ljob": 0})  # as an older client's acquire tied it
    ns.lock("job", ttl=30, mode="shared").acquire()
    env.sleep(0.6)
    assert ns.sweep().lost_agents == ["worker"]
    assert [h.agent for info in ns.locks() for h in info.holders] == ["planner"]
    assert lock_ties(env, "worker", "job") == []


@pytest.mark.parametrize("left_by", ["release", "corrupt_prune"])
def test_an_older_clients_tie_spares_a_hold_taken_without_a_lease(env, mem, ns, left_by):
    """An older client's tie can outlive the agent's last hold on the lock: a release by
    this version does not look for it (nor does an older client's while the agent holds
    the lock under another owner id), nor can the prune of a record that does not parse.
    The agent's next hold, taken without a lease, says so in its owner id, and the
    reaper following that tie spares it."""
    leased = mem.as_agent("worker")
    leased.heartbeat(0.8)
    team = leased.namespace("team")
    keys = NamespaceKeys.of(env.prefix, "team")
    if left_by == "release":
        tied = team.lock("job", ttl=30)
        tied.acquire()
        env.raw.zadd(keys.eph, {b"worker\x00ljob": 0})  # as an older client tied it
        tied.release()
    else:
        team.lock("job", ttl=0.1).acquire()
        env.raw.zadd(keys.eph, {b"worker\x00ljob": 0})
        env.raw.hset(keys.lock_records, "job", "garbage")
        env.sleep(0.2)
        ns.lock("other", ttl=30).acquire()  # prunes the due record, unread
        assert env.raw.hget(keys.lock_records, "job") is None
    assert b"worker\x00ljob" in lock_ties(env, "worker", "job")  # left behind
    the_next_unleased_hold_outlives_the_lease(env, mem, ns, 0.9)


@pytest.mark.parametrize("rewrite", ["force", "prune", "lapsed"])
def test_an_older_clients_tie_goes_where_the_agent_holds_the_lock_no_more(env, mem, ns, rewrite):
    """An older client's tie of the agent and lock goes with the agent's last hold there:
    a force release, the prune of a record whose every hold ran out, and a rewrite that
    drops the agent's lapsed hold. It stays where the agent still holds the lock."""
    leased = mem.as_agent("worker")
    leased.heartbeat(30)
    team = leased.namespace("team")
    keys = NamespaceKeys.of(env.prefix, "team")
    if rewrite == "force":
        team.lock("job", ttl=30).acquire()
        env.raw.zadd(keys.eph, {b"worker\x00ljob": 0})
        assert ns.force_release("job") is True
    elif rewrite == "prune":
        team.lock("job", ttl=0.1).acquire()
        env.raw.zadd(keys.eph, {b"worker\x00ljob": 0})
        env.sleep(0.2)
        ns.lock("other", ttl=30).acquire()  # prunes the due record, read whole
        assert env.raw.hget(keys.lock_records, "job") is None
    else:
        team.lock("job", ttl=0.1, mode="shared").acquire()
        env.raw.zadd(keys.eph, {b"worker\x00ljob": 0})
        ns.lock("job", ttl=30, mode="shared").acquire()
        env.sleep(0.2)
        ns.lock("job", ttl=30, mode="shared").acquire()  # the record without the lapsed hold
        assert [h.agent for info in ns.locks() for h in info.holders] == ["planner", "planner"]
    assert lock_ties(env, "worker", "job") == []
    # the same agent still holding the lock: the older tie stays
    live = team.lock("job", ttl=30, mode="shared")
    token = int(live.acquire())
    env.raw.zadd(keys.eph, {b"worker\x00ljob": 0})
    team.lock("job", ttl=0.1, mode="shared").acquire()
    env.sleep(0.2)
    ns.lock("job", ttl=30, mode="shared").acquire()  # drops the lapsed hold, not the older tie
    older = b"worker\x00ljob"
    assert lock_ties(env, "worker", "job") == sorted([older, tie("worker", "job", token)])
    live.release()


def test_the_reaper_runs_only_when_a_lease_ran_out(env, mem, ns):
    calls = []
    mem.observe_scripts(lambda name, keys, args: calls.append(name))
    ns.put("k", 1, ttl=0.05)
    env.sleep(0.1)
    calls.clear()
    assert ns.sweep().expired == ["k"]
    assert "reap" not in calls  # no lease is due: one round trip less
    worker_mem = mem.as_agent("worker")
    worker_mem.heartbeat(0.1)
    worker_mem.namespace("team").put("e", 1, ephemeral=True)
    env.sleep(0.2)
    calls.clear()
    assert ns.sweep().lost_agents == ["worker"]
    assert "reap" in calls

"""Fenced locks, shared locks, require_lock, get_or_set: every backend, sync + async."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time

import pytest

from swarm_memory import (
    FencingError,
    FencingToken,
    InvalidInput,
    LockNotOwned,
    LockTimeout,
    PermissionDenied,
    ServerError,
)
from swarm_memory._ops.effects import ScriptCall
from swarm_memory.keys import NamespaceKeys
from swarm_memory.scripts import load
from tests.support import drain


@pytest.fixture
def mem(env):
    m = env.mem("planner", lock_poll=0.05, watch_poll=0.2)
    m.create_namespace("team", permissions={"reader": "read", "worker": "write"})
    return m


@pytest.fixture
def ns(mem):
    return mem.namespace("team")


def test_tokens_strictly_increase_and_name_their_lock(ns):
    tokens = []
    for _ in range(3):
        lock = ns.lock("job", ttl=5)
        tokens.append(lock.acquire())
        lock.release()
    other = ns.lock("other", ttl=5)
    other.acquire()
    assert tokens == sorted(set(tokens)) and int(other.token) > tokens[-1]
    assert all(isinstance(t, FencingToken) and t.lock == "job" for t in tokens)
    other.release()


def test_the_fencing_counter_is_kept_beside_the_lock_records(env, ns):
    """Since stop 34 an acquire reads and writes the namespace's fencing counter as a field
    of the lock records' hash (lua/_lib.lua LOCK_COUNTER), with the lock's own record."""
    lockh = NamespaceKeys.of(env.prefix, "team").lock_records
    with ns.lock("job", ttl=5) as lock:
        assert env.raw.hget(lockh, "\0lt") == str(int(lock.token)).encode()
    assert env.raw.hkeys(lockh) == [b"\x00lt"]  # a released lock's record is gone, not it
    with pytest.raises(InvalidInput):  # no lock may be named like it
        ns.lock("\0lt")


def test_a_call_naming_the_counters_field_as_its_lock_is_refused(env, mem, ns):
    """A client that skips the library's name check (here: the script called directly)
    cannot acquire, release, extend or force the counter's field as a lock."""
    keys = NamespaceKeys.of(env.prefix, "team")
    with ns.lock("job", ttl=5):
        pass
    counter = env.raw.hget(keys.lock_records, "\0lt")
    calls = [
        ("acquire", keys.acquire_fixed(), ["planner", 1000, "\0lt", "o1", 5000, "x", ""]),
        ("release", keys.release_fixed(), ["planner", mem._ctx("team").write_limits,
                                           "\0lt", "o1", "o1:r", "", ""]),
        ("lock", keys.lock_fixed(), ["planner", 1000, 1000, "extend", "\0lt", "o1", 5000]),
        ("lock", keys.lock_fixed(), ["planner", 1000, 1000, "force", "\0lt"]),
    ]  # fmt: skip
    for script, call_keys, args in calls:
        with pytest.raises(ServerError, match="bad lock name"):
            reply = mem._driver.perform(ScriptCall(load(script), call_keys, args, "op1"))
            if inspect.iscoroutine(reply):
                env.loop.run_until_complete(reply)
    assert env.raw.hget(keys.lock_records, "\0lt") == counter


def test_a_counter_still_in_meta_is_taken_over_and_tokens_keep_increasing(env, ns):
    """A namespace whose last acquire ran before the counter moved keeps it in meta "lt":
    the next acquire counts on from there (here a counter ahead of the server's clock, as
    a failover to a host whose clock is behind leaves it), and then keeps it beside the
    records; meta's is not read again."""
    keys = NamespaceKeys.of(env.prefix, "team")
    ahead = int(time.time() * 1_000_000) + 10**12
    env.raw.hset(keys.meta, "lt", ahead)
    env.raw.hdel(keys.lock_records, "\0lt")
    with ns.lock("job", ttl=5) as lock:
        assert int(lock.token) == ahead + 1
    assert env.raw.hget(keys.lock_records, "\0lt") == str(ahead + 1).encode()
    env.raw.hset(keys.meta, "lt", "0")
    with ns.lock("other", ttl=5) as lock:
        assert int(lock.token) == ahead + 2


def test_fenced_write_accepted_from_the_holder_refused_when_stale(env, mem, ns):
    worker = mem.as_agent("worker").namespace("team")
    first = ns.lock("res", ttl=0.3)
    first.acquire()
    ns.put("x", 1, fence=first.token)
    env.sleep(0.45)  # first's lease runs out; the worker takes the lock
    second = worker.lock("res", ttl=5)
    second.acquire()
    assert int(second.token) > int(first.token)
    before = env.snapshot()
    with pytest.raises(FencingError) as info:
        ns.put("x", 2, fence=first.token)
    err = info.value
    assert (err.reason, err.lock, err.token, err.latest) == (
        "stale",
        "res",
        int(first.token),
        int(second.token),
    )
    assert err.key == "x" and err.namespace == "team"
    after = env.snapshot()
    assert {k: v for k, v in after.items() if not k.endswith(b":stats")} == {
        k: v for k, v in before.items() if not k.endswith(b":stats")
    }
    assert ns.get("x").value == 1
    worker.put("x", 3, fence=second.token)
    # The old holder cannot release (or extend) what is no longer its own ...
    with pytest.raises(LockNotOwned) as lost:
        first.release()
    assert lost.value.holder == "worker"
    with pytest.raises(LockNotOwned):
        first.extend()
    # ... and the worker's hold is untouched.
    assert [(i.name, i.holder, i.token) for i in ns.locks()] == [
        ("res", "worker", int(second.token))
    ]
    second.release()
    assert ns.locks() == []


def test_a_lapsed_lease_fences_even_before_anyone_else_takes_it(env, ns):
    lock = ns.lock("res", ttl=0.2)
    lock.acquire()
    env.sleep(0.3)
    assert lock.lost and not lock.held
    with pytest.raises(FencingError) as info:
        ns.put("x", 1, fence=lock.token)
    assert info.value.reason == "not_held"
    assert ns.get("x") is None


def test_fence_on_every_write_path(ns):
    lock = ns.lock("k", ttl=5)
    token = lock.acquire()
    ns.put("k", 1, fence=token)
    ns.update("k", lambda v: v + 1, fence=token)
    assert ns.incr("k", 5, fence=token) == 7
    ns.put_many({"a": 1, "b": 2}, fence=token)
    ns.create("c", 1, fence=token)
    assert ns.delete("c", fence=token)
    lock.release()
    for call in (
        lambda: ns.put("k", 9, fence=token),
        lambda: ns.update("k", lambda v: 0, fence=token),
        lambda: ns.incr("k", fence=token),
        lambda: ns.put_many({"a": 9}, fences={"a": token}),
        lambda: ns.delete("k", fence=token),
    ):
        with pytest.raises(FencingError):
            call()
    assert ns.get("k").value == 7 and ns.get("a").value == 1


def test_plain_int_fence_means_the_keys_own_lock(ns):
    lock = ns.lock("k", ttl=5)
    token = lock.acquire()
    ns.put("k", 1, fence=int(token))
    with pytest.raises(FencingError) as info:
        ns.put("other", 1, fence=int(token))  # lock "other" was never taken
    assert info.value.reason == "not_held"
    lock.release()


def test_wait_times_out_with_the_holder(mem, ns):
    held = ns.lock("res", ttl=5)
    held.acquire()
    worker = mem.as_agent("worker").namespace("team")
    with pytest.raises(LockTimeout) as info:
        worker.lock("res", ttl=5, wait=0.2).acquire()
    assert info.value.holder == "planner" and info.value.key == "res"
    with pytest.raises(LockTimeout):
        worker.lock("res", ttl=5, wait=0).acquire()
    held.release()
    later = worker.lock("res", ttl=5, wait=0)
    later.acquire()
    later.release()


def test_waiter_gets_the_lock_when_the_lease_lapses(env, mem, ns):
    ns.lock("res", ttl=0.3).acquire()  # never released: its holder "crashed"
    worker = mem.as_agent("worker").namespace("team")
    lock = worker.lock("res", ttl=5, wait=3)
    lock.acquire()
    assert lock.held and ns.locks()[0].holder == "worker"
    lock.release()


def test_context_manager_releases_and_reports_a_lost_lease(env, ns):
    with ns.lock("res", ttl=5) as lock:
        ns.put("x", 1, fence=lock.token)
        assert ns.locks()[0].name == "res"
    assert ns.locks() == []
    with pytest.raises(LockNotOwned), ns.lock("res", ttl=0.2) as lock:
        env.sleep(0.3)  # the critical section outlived its lease: exiting says so


def test_extend_and_renew_keep_the_lease(env, ns):
    # A 1 s lease, extended to 3 s, and used past the first second. (A 0.3 s lease once
    # ran out between the acquire and the extend on fakeredis in a loaded CI run.)
    lock = ns.lock("res", ttl=1.0)
    lock.acquire()
    lock.extend(3)
    env.sleep(1.2)
    ns.put("x", 1, fence=lock.token)
    lock.release()
    # Renewed every third of the lease, so it outlives 1.5 leases only if renewed. A 0.3 s
    # lease left the renewer 0.2 s of slack per renewal, less than a loaded 2-core machine
    # can promise a thread (and each slow round trip used to delay the next renewal too:
    # renewals now run at a fixed rate from their send time); 1 s leaves 0.67 s.
    renewed = ns.lock("auto", ttl=1.0, renew=True)
    renewed.acquire()
    first_expiry = renewed.expires_at
    env.sleep(1.5)
    ns.put("y", 1, fence=renewed.token)  # still held
    assert renewed.expires_at > first_expiry
    assert not renewed.lost
    renewed.release()


def test_renewal_notices_a_forced_release(env, ns):
    seen = []
    lock = ns.lock("res", ttl=0.6, renew=True, on_lost=lambda lk: seen.append(lk.name))
    lock.acquire()
    assert ns.force_release("res") is True
    env.sleep(0.5)
    assert lock.lost and seen == ["res"]
    with pytest.raises(LockNotOwned):
        lock.release()


def test_shared_holders_exclude_an_exclusive_one(mem, ns):
    worker = mem.as_agent("worker").namespace("team")
    a = ns.lock("doc", ttl=5, mode="shared")
    b = worker.lock("doc", ttl=5, mode="shared")
    a.acquire()
    b.acquire()
    info = ns.locks()[0]
    assert info.mode == "shared" and {h.agent for h in info.holders} == {"planner", "worker"}
    with pytest.raises(LockTimeout):
        ns.lock("doc", ttl=5, wait=0.1).acquire()
    with pytest.raises(FencingError):  # a shared hold does not fence writes
        ns.put("doc", 1, fence=a.token)
    a.release()
    b.release()
    writer = ns.lock("doc", ttl=5, wait=0)
    writer.acquire()
    with pytest.raises(LockTimeout):
        worker.lock("doc", ttl=5, mode="shared", wait=0.1).acquire()
    writer.release()


def test_force_release_is_admin_only_and_an_event(mem, ns):
    w = ns.watch(types={"unlock"})
    lock = ns.lock("res", ttl=5)
    lock.acquire()
    worker = mem.as_agent("worker").namespace("team")
    with pytest.raises(PermissionDenied) as info:
        worker.force_release("res")
    assert info.value.action == "lock_force" and info.value.required == "admin"
    assert ns.force_release("res") is True and ns.force_release("res") is False
    (ev,) = drain(w, 1)
    assert (ev.type, ev.key, ev.agent) == ("unlock", "res", "planner")
    w.close()


def test_lock_permissions(mem):
    reader = mem.as_agent("reader").namespace("team")
    with pytest.raises(PermissionDenied) as info:
        reader.lock("res", ttl=5).acquire()
    assert info.value.action == "lock_acquire" and info.value.granted == "read"
    assert reader.locks() == []  # reading the lock table needs read only
    stranger = mem.as_agent("stranger")
    mem.create_namespace("private", default_permission="none")
    with pytest.raises(PermissionDenied):
        stranger.namespace("private").locks()


def test_require_lock_namespace(mem):
    mem.create_namespace("strict", require_lock=True)
    ns = mem.namespace("strict")
    assert ns.info().require_lock is True
    with pytest.raises(FencingError) as info:
        ns.put("k", 1)
    assert info.value.reason == "required"
    other = ns.lock("other", ttl=5)
    other.acquire()
    with pytest.raises(FencingError) as info:
        ns.put("k", 1, fence=other.token)
    assert info.value.reason == "wrong_lock"
    with ns.lock("k", ttl=5) as lock:
        ns.put("k", 1, fence=lock.token)
        assert ns.delete("k", fence=lock.token)
    other.release()
    mem.update_namespace("strict", require_lock=False)
    ns.put("k", 2)


@pytest.mark.parametrize(
    "kwargs",
    [{"fence": True}, {"fence": "5"}, {"fence": 0}, {"fence": -1}, {"fence": 2**63}],
)
def test_bad_fences_are_rejected_client_side(env, ns, kwargs):
    before = env.snapshot()
    with pytest.raises(InvalidInput):
        ns.put("k", 1, **kwargs)
    assert env.snapshot() == before


@pytest.mark.parametrize(
    "kwargs",
    [{"ttl": 0}, {"ttl": -1}, {"ttl": None}, {"wait": -1}, {"mode": "x"}, {"renew": 1}],
)
def test_bad_lock_options(env, ns, kwargs):
    before = env.snapshot()
    args = {"ttl": 5, **kwargs}
    with pytest.raises(InvalidInput):
        ns.lock("res", **args).acquire()
    with pytest.raises(InvalidInput):
        ns.lock("", ttl=5)
    assert env.snapshot() == before


def test_get_or_set_computes_once(ns):
    calls = []

    def factory():
        calls.append(1)
        return {"big": 123456789012345678}

    first = ns.get_or_set("cache", factory, ttl=30)
    again = ns.get_or_set("cache", factory, ttl=30)
    assert first.value == again.value == {"big": 123456789012345678} and len(calls) == 1
    assert first.expires_at is not None

    def broken():
        raise RuntimeError("backend down")

    with pytest.raises(RuntimeError):
        ns.get_or_set("other", broken)
    assert ns.get("other") is None and ns.locks() == []
    assert ns.get_or_set("other", lambda: 1).value == 1


def test_a_release_wakes_a_waiter_at_once(env):
    """The lock doorbell, not the poll: with lock_poll at 5 s, a waiter still gets the
    lock within a fraction of a second of its release."""
    mem = env.mem("planner", lock_poll=5.0)
    mem.create_namespace("bell")
    ns = mem.namespace("bell")
    holder = ns.lock("res", ttl=30)
    holder.acquire()
    waiter = mem.as_agent("worker").namespace("bell").lock("res", ttl=30, wait=10)
    started = time.monotonic()
    if env.mode == "sync":
        timer = threading.Timer(0.3, holder.release)
        timer.start()
        waiter.acquire()
        timer.join()
    else:
        target_holder, target_waiter = holder._target, waiter._target

        async def release_later():
            await asyncio.sleep(0.3)
            await target_holder.release()

        async def both():
            await asyncio.gather(release_later(), target_waiter.acquire())

        env.loop.run_until_complete(both())
    waited = time.monotonic() - started
    assert 0.25 <= waited < 2.5, waited  # released at 0.3 s; a poll would take 5 s
    assert ns.locks()[0].holder == "worker"


def test_records_of_lapsed_leases_are_pruned(env, ns):
    for i in range(20):
        ns.lock(f"tmp-{i}", ttl=0.1).acquire()  # never released
    env.sleep(0.2)
    for i in range(3):  # each acquire prunes a few lapsed records
        ns.lock(f"live-{i}", ttl=5).acquire()
    records = env.raw.hkeys(f"{env.prefix}:{{team}}:lockh")
    # (and the fencing counter's field, lua/_lib.lua LOCK_COUNTER, which no prune drops)
    assert sorted(records) == [b"\x00lt", b"live-0", b"live-1", b"live-2"]
    assert env.raw.zcard(f"{env.prefix}:{{team}}:locks") == 3
    assert [i.name for i in ns.locks()] == ["live-0", "live-1", "live-2"]


def test_get_or_set_with_a_coroutine_factory(env, ns):
    """The async client awaits a coroutine factory; the sync one cannot, and refuses the
    coroutine as a value (nothing written, the lock released)."""

    async def factory():
        await asyncio.sleep(0.01)
        return [1, 2]

    if env.mode == "async":
        assert ns.get_or_set("co", factory).value == [1, 2]
        assert ns.get("co").value == [1, 2]
    else:
        with pytest.raises(InvalidInput):
            ns.get_or_set("co", factory)
        assert ns.get("co") is None and ns.locks() == []


def test_locks_lists_only_live_holders(env, mem, ns):
    short = ns.lock("doc", ttl=0.1, mode="shared")
    short.acquire()
    long = mem.as_agent("worker").namespace("team").lock("doc", ttl=5, mode="shared")
    long.acquire()
    env.sleep(0.2)
    (info,) = ns.locks()
    assert [h.agent for h in info.holders] == ["worker"] and info.holder == "worker"
    long.release()


def test_tokens_never_repeat_across_a_recreated_namespace(mem):
    mem.create_namespace("again")
    old = mem.namespace("again").lock("res", ttl=5)
    old.acquire()
    mem.delete_namespace("again")
    mem.create_namespace("again")
    ns = mem.namespace("again")
    new = ns.lock("res", ttl=5)
    new.acquire()
    assert int(new.token) > int(old.token)
    with pytest.raises(FencingError):  # the old incarnation's token fences nothing here
        ns.put("k", 1, fence=old.token)
    new.release()


def test_lock_counters_in_stats(mem, ns):
    lock = ns.lock("res", ttl=5)
    lock.acquire()
    with pytest.raises(LockTimeout):
        mem.as_agent("worker").namespace("team").lock("res", ttl=5, wait=0).acquire()
    lock.release()
    with pytest.raises(FencingError):
        ns.put("k", 1, fence=lock.token)
    stats = ns.stats()
    assert (stats["lock_acquire"], stats["lock_release"], stats["lock_busy"]) == (1, 1, 1)
    assert stats["fence_rejected"] == 1


def test_a_replayed_release_returns_its_first_outcome_and_counts_once(env, ns):
    """A release retried after its reply was lost (the same op id) finds its owner gone
    from the record and its op id recorded: "ok", nothing changes (lock.lua looks the op
    id up only when the owner holds nothing). A handle whose owner holds nothing and has
    released nothing is refused."""
    keys = NamespaceKeys.of(env.prefix, "team")
    lock = ns.lock("job", ttl=5)
    lock.acquire()
    lock.release()
    after = env.snapshot()
    lock.release()  # the same op id: a replay
    assert env.snapshot() == after
    assert env.raw.hget(keys.stats, "lock_release") == b"1"
    other = ns.lock("job", ttl=5)
    other.acquire()
    with pytest.raises(LockNotOwned):
        ns.lock("job", ttl=5).release()  # no acquisition: an owner that holds nothing
    lock.release()  # a replay still, though someone else holds the lock now
    assert ns.locks()[0].token == other.token
    other.release()


def test_a_release_parses_the_record_unless_it_is_exactly_the_one_it_holds(env, ns):
    """lua/lock.lua's release compares the stored record with the one its acquire wrote
    (the client sends that acquire's expiry and token) instead of parsing it. A client
    whose copy does not match is answered from the parsed record, as before: its own
    hold released whatever expiry or token it sends, another owner's hold untouched
    whatever expiry and token it claims."""
    keys = NamespaceKeys.of(env.prefix, "team")
    lock = ns.lock("job", ttl=5)
    lock.acquire()
    lock._st.expires_ms += 1  # the record holds another expiry than the client sends
    lock.release()
    assert ns.locks() == [] and env.raw.hget(keys.lock_records, "job") is None
    lock = ns.lock("job", ttl=5)
    token = lock.acquire()
    lock._st.token = FencingToken(int(token) + 1, "job")  # and another token
    lock.release()
    assert ns.locks() == [] and env.raw.hget(keys.lock_records, "job") is None
    assert env.raw.hget(keys.stats, "lock_release") == b"2"
    holder = ns.lock("job", ttl=5)
    holder.acquire()
    impostor = ns.lock("job", ttl=5)  # the holder's expiry and token, another owner
    impostor._st.expires_ms, impostor._st.token = holder._st.expires_ms, holder._st.token
    impostor._st.owner = "impostor"
    with pytest.raises(LockNotOwned):
        impostor.release()
    assert [h.token for h in ns.locks()[0].holders] == [holder.token]
    holder.release()  # its own copy: the record read without parsing
    assert ns.locks() == [] and env.raw.hget(keys.stats, "lock_release") == b"3"


def test_lock_releases_purge_op_records_past_the_dedupe_window(env):
    """A release records its op id (a replay answers "ok"); those records are purged
    past the namespace's dedupe window as a write's are, so a namespace only locks use
    does not keep every release's record (it kept all of them before stop 23)."""
    mem = env.mem("planner")
    mem.create_namespace("locks")
    ns = mem.namespace("locks")
    keys = NamespaceKeys.of(env.prefix, "locks")
    for _ in range(40):
        with ns.lock("job", ttl=5):
            pass
    assert env.raw.hlen(keys.ops) == 40
    # The window shortened only now: with 0.2 s from the start, a slow or loaded host
    # took longer than that for the 40 pairs, and their first purges were due already.
    mem.update_namespace("locks", dedupe_window=0.2)
    env.sleep(0.3)
    for _ in range(24):  # three amortized purges of up to 64 records each
        with ns.lock("job", ttl=5):
            pass
    assert env.raw.hlen(keys.ops) <= 24 and env.raw.llen(keys.ops_time) <= 24
    last = ns.lock("job", ttl=5)
    last.acquire()
    last.release()
    after = env.snapshot()
    last.release()  # a replay inside the window still answers "ok", changing nothing
    assert env.snapshot() == after

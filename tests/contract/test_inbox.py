"""Per-agent inboxes: direct messages, at-least-once, on every backend and both clients."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

import pytest

from swarm_memory import (
    AsyncInbox,
    Inbox,
    InvalidInput,
    InvalidName,
    InvalidValue,
    Message,
    OpIdReused,
    PermissionDenied,
    QuotaExceeded,
    RequestTimeout,
    ServerError,
    SwarmMemory,
)
from swarm_memory._ops.inbox import InboxState
from swarm_memory.keys import InboxKeys, inbox_index_key
from tests.support import Facade, must

EXACT = {"big": 123456789012345678, "f": 0.30000000000000004, "empty": [], "obj": {}, "s": "é"}


def _box(env, mem, **kw):
    """``mem.inbox(...)`` with sync-looking methods on the async client too."""
    box = mem.inbox(**kw)
    return Facade(box, env.loop) if isinstance(box, AsyncInbox) else box


def _stream(env, agent):
    return InboxKeys.of(env.prefix, agent).stream


def test_send_receive_ack_round_trip_is_exact(env):
    alice, bob = env.mem("alice"), env.mem("bob")
    sent = alice.send("bob", EXACT)  # before bob ever opened his inbox: still delivered
    assert isinstance(sent, Message)
    assert (sent.sender, sent.to, sent.deliveries, sent.reply_to) == ("alice", "bob", 0, None)
    box = _box(env, bob)
    got = box.receive(2.0)
    assert got is not None
    assert got.body == EXACT and got.body["empty"] == [] and got.body["obj"] == {}
    assert (got.id, got.sender, got.to, got.sent_at) == (sent.id, "alice", "bob", sent.sent_at)
    assert got.deliveries == 1 and got.correlation_id is None
    assert box.ack(got) == 1
    assert box.ack(got.id) == 0  # already acknowledged
    assert box.receive(0) is None
    assert env.raw.xlen(_stream(env, "bob")) == 0  # acknowledged messages are deleted
    assert env.guard.by_script["inbox"] >= 4  # every inbox call hashed to one slot


def test_messages_arrive_in_order_across_batches(env):
    alice, bob = env.mem("alice"), env.mem("bob")
    box = _box(env, bob, batch=7)
    sent = [alice.send("bob", {"i": i}).id for i in range(20)]
    got = [box.receive(2.0) for _ in range(20)]
    assert [m.id for m in got] == sent and [m.body["i"] for m in got] == list(range(20))
    assert box.ack(*got) == 20
    assert box.receive(0) is None


def test_iteration_blocks_for_each_message(env):
    alice, bob = env.mem("alice"), env.mem("bob")
    box = bob.inbox()
    for i in range(3):
        alice.send("bob", i)
    if isinstance(box, Inbox):
        it = iter(box)
        got = [next(it) for _ in range(3)]
    else:

        async def take():
            out = []
            async for msg in box:
                out.append(msg)
                if len(out) == 3:
                    return out
            return out

        got = env.loop.run_until_complete(take())
    assert [m.body for m in got] == [0, 1, 2]


def test_send_is_idempotent_by_op_id(env):
    alice, bob, carol = env.mem("alice"), env.mem("bob"), env.mem("carol")
    first = alice.send("bob", {"n": 1}, op_id="op-1")
    again = alice.send("bob", {"n": 1}, op_id="op-1")
    assert again.id == first.id and again.sent_at == first.sent_at
    with pytest.raises(OpIdReused) as err:
        alice.send("bob", {"n": 2}, op_id="op-1")
    assert err.value.op_id == "op-1"
    other = carol.send("bob", {"n": 1}, op_id="op-1")  # op ids are per sender
    assert other.id != first.id
    box = _box(env, bob)
    got = [box.receive(1.0), box.receive(1.0), box.receive(0)]
    assert [(m.sender, m.id) for m in got[:2]] == [("alice", first.id), ("carol", other.id)]
    assert got[2] is None


def test_request_reply_with_unrelated_messages_meanwhile(env):
    """bob answers from another thread, and sends alice unrelated messages first: the
    request returns the correlated reply, and receive() then hands out every other
    message, in order; nothing is lost and the reply is not handed out twice."""
    alice = env.mem("alice")
    box = _box(env, alice)  # alice's default inbox: request() shares its buffer
    responder = SwarmMemory.from_client(env.raw, agent="bob", settings=env.settings)
    responder.observe_scripts(env.guard)
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            inbox = responder.inbox(consumer="responder")
            msg = inbox.receive(10.0)
            assert msg is not None and msg.reply_to == "alice"
            for i in range(3):
                responder.send("alice", {"noise": i})
            responder.reply(msg, {"echo": msg.body})
            responder.send("alice", {"noise": 3})
            inbox.ack(msg)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        answer = alice.request("bob", {"q": 42}, 10.0)
    finally:
        thread.join(15)
    assert not errors, errors
    assert answer.body == {"echo": {"q": 42}} and answer.sender == "bob"
    assert answer.correlation_id is not None
    noise = []
    while (msg := box.receive(1.0)) is not None:
        noise.append(msg)
        if len(noise) == 4:
            break
    assert [m.body for m in noise] == [{"noise": i} for i in range(4)]
    assert box.ack(*noise) == 4
    assert box.receive(0) is None
    assert env.raw.xlen(_stream(env, "alice")) == 0  # the reply was acknowledged too


def test_request_timeout_and_the_late_reply(env):
    alice, bob = env.mem("alice"), env.mem("bob")
    with pytest.raises(RequestTimeout) as err:
        alice.request("bob", "anyone?", 0.1, op_id="req-1")
    assert isinstance(err.value, TimeoutError)
    assert err.value.correlation_id == "req-1" and must(err.value.request).to == "bob"
    bob_box = _box(env, bob)
    question = bob_box.receive(1.0)
    assert question.correlation_id == "req-1" and question.reply_to == "alice"
    bob.reply(question, "late")
    bob_box.ack(question)
    late = _box(env, alice).receive(1.0)  # a late reply arrives like any message
    assert (late.body, late.correlation_id) == ("late", "req-1")
    with pytest.raises(InvalidInput):
        alice.reply(late, "no reply_to")  # a reply asks for no reply


def test_redelivery_after_idle_to_another_consumer(env):
    alice, bob = env.mem("alice"), env.mem("bob")
    a = _box(env, bob, consumer="a", idle=0.2)
    b = _box(env, bob, consumer="b", idle=0.2)
    sent = [alice.send("bob", i).id for i in range(3)]
    taken = [a.receive(1.0) for _ in range(3)]  # ... and never acknowledged
    assert [m.id for m in taken] == sent and {m.deliveries for m in taken} == {1}
    assert b.receive(0) is None  # not idle long enough yet
    env.sleep(0.3)
    again = [b.receive(1.0) for _ in range(3)]
    assert [m.id for m in again] == sent
    assert {m.deliveries for m in again} == {2}
    assert b.ack(*again) == 3
    env.sleep(0.3)
    assert b.receive(0) is None and a.receive(0) is None
    assert a.ack(*taken) == 0  # b acknowledged them already


def test_only_the_owner_reads_or_acks_an_inbox(env):
    alice = env.mem("alice")
    mallory = alice.as_agent("mallory")  # same connection pool, another identity
    sent = mallory.send("alice", "hi")  # anyone may send
    mallory_box = _box(env, mallory)
    with pytest.raises(PermissionDenied) as err:
        mallory_box.ack(sent)  # a Message is acknowledged in the inbox it went to
    e = err.value
    assert (e.action, e.required, e.granted, e.agent) == ("inbox_ack", "owner", "none", "mallory")
    # Reading alice's inbox takes forging its state: the script refuses anyway.
    cls = AsyncInbox if env.mode == "async" else Inbox
    target = mallory._target if env.mode == "async" else mallory
    forged: Any = cls(
        target._driver.run, target._inbox_ctx(), InboxState("alice", "x"), idle=1.0, batch=5
    )
    if env.mode == "async":
        forged = Facade(forged, env.loop)
    with pytest.raises(PermissionDenied) as err:
        forged.receive(0)
    e = err.value
    assert (e.action, e.required, e.granted, e.agent) == ("inbox_read", "owner", "none", "mallory")
    with pytest.raises(PermissionDenied):
        forged.ack(sent.id)
    got = _box(env, alice).receive(1.0)  # untouched: alice still gets it, first delivery
    assert got.id == sent.id and got.deliveries == 1


def test_inbox_length_is_capped(env):
    alice, bob = env.mem("alice", inbox_maxlen=5), env.mem("bob")
    for i in range(5):
        alice.send("bob", i)
    with pytest.raises(QuotaExceeded) as err:
        alice.send("bob", 5)
    assert (err.value.limit_kind, err.value.limit, err.value.current) == ("inbox_maxlen", 5, 5)
    assert env.raw.xlen(_stream(env, "bob")) == 5
    box = _box(env, bob)
    box.ack(box.receive(1.0))  # acknowledging makes room
    alice.send("bob", 5)
    assert [box.receive(1.0).body for _ in range(5)] == [1, 2, 3, 4, 5]


def test_bad_input_raises_before_anything_is_sent(env):
    alice, bob = env.mem("alice", max_value_bytes=1024), env.mem("bob")
    box = _box(env, bob)
    alice.send("bob", "first")
    msg = box.receive(1.0)
    before = env.snapshot()
    calls = env.guard.calls
    bad = [
        (InvalidName, lambda: alice.send("no spaces", 1)),
        (InvalidName, lambda: alice.send("", 1)),
        (InvalidName, lambda: alice.send("{tag}", 1)),
        (InvalidName, lambda: alice.send("bob", 1, reply_to="b c")),
        (InvalidInput, lambda: alice.send("bob", 1, correlation_id="")),
        (InvalidInput, lambda: alice.send("bob", 1, op_id="")),
        (InvalidValue, lambda: alice.send("bob", {1, 2})),
        (InvalidValue, lambda: alice.send("bob", float("nan"))),
        (InvalidValue, lambda: alice.send("bob", "x" * 2000)),
        (InvalidValue, lambda: alice.request("bob", object(), 1.0)),
        (InvalidInput, lambda: alice.request("bob", 1, -1)),
        (InvalidInput, lambda: bob.inbox(idle=0)),
        (InvalidInput, lambda: bob.inbox(batch=0)),
        (InvalidInput, lambda: bob.inbox(consumer="")),
        (InvalidInput, lambda: box.receive(-1)),
        (InvalidInput, lambda: box.receive(float("nan"))),
        (InvalidInput, lambda: box.ack("not-an-id")),
        (InvalidInput, lambda: box.ack(msg, 42)),
        (InvalidInput, lambda: bob.reply("not a message", 1)),
    ]
    for exc, call in bad:
        with pytest.raises(exc):
            call()
    assert env.guard.calls == calls
    assert env.snapshot() == before


# ---------------------------------------------------------------- listing, deletion, retention
def _index(env):
    return [m.decode() for m in env.raw.zrange(inbox_index_key(env.prefix), 0, -1)]


def _ttls(env, agent):
    """PTTL of every key the inbox owns, by name: -2 absent, -1 no expiry."""
    keys = InboxKeys.of(env.prefix, agent)
    return {k.rsplit(":", 1)[1]: env.raw.pttl(k) for k in keys.owned()}


def test_reading_an_inbox_that_does_not_exist_creates_no_key(env):
    bob = env.mem("bob")
    box = _box(env, bob)
    assert box.receive(0) is None
    assert box.ack("1700000000000-0") == 0
    assert bob.inbox_info() is None and bob.inbox_info("nobody") is None
    assert list(bob.inboxes()) == []
    assert bob.delete_inbox() is False
    assert env.snapshot() == {}  # not a stream, not a group, not an index entry
    assert env.guard.by_script["inbox"] >= 5


def test_inboxes_lists_every_inbox_with_its_counters(env):
    alice, bob, carol = env.mem("alice"), env.mem("bob"), env.mem("carol")
    for i in range(3):
        alice.send("bob", i)
    last = alice.send("carol", "hi")
    taken = _box(env, bob, batch=1).receive(1.0)  # delivered, not acknowledged: pending
    assert taken is not None
    stranger = env.mem("dave")  # anyone may list: counters only, never a message
    listed = list(stranger.inboxes())
    assert [(i.owner, i.length, i.pending) for i in listed] == [("bob", 3, 1), ("carol", 1, 0)]
    by_owner = {i.owner: i for i in listed}
    assert by_owner["carol"].last_active == last.sent_at  # server clock, the last send
    assert by_owner["bob"].last_active >= by_owner["carol"].last_active  # bob's read
    for info in listed:  # the default retention: a week after the last activity
        left = (info.expires_at - info.last_active).total_seconds()
        assert 7 * 86400 - 5 <= left <= 7 * 86400 + 0.01  # fakeredis: ms rounding
    # expires_at is now + PTTL: the same instant to within the clock's rounding.
    for got, want in (
        (stranger.inbox_info("bob"), by_owner["bob"]),
        (carol.inbox_info(), by_owner["carol"]),
    ):
        assert replace(got, expires_at=None) == replace(want, expires_at=None)
        assert abs((got.expires_at - want.expires_at).total_seconds()) <= 0.01
    assert _index(env) == ["bob", "carol"]


@pytest.mark.parametrize("count", [4, 5])
def test_inboxes_are_paged_by_owner_name(env, count):
    alice = env.mem("alice", page_size=2)
    owners = [f"agent-{i}" for i in reversed(range(count))]
    for owner in owners:
        alice.send(owner, owner)
    assert [i.owner for i in alice.inboxes()] == sorted(owners)


def test_delete_inbox_removes_every_key_and_its_listing(env):
    alice, bob = env.mem("alice"), env.mem("bob")
    alice.send("carol", "untouched")
    box = _box(env, bob, batch=5)
    for i in range(3):
        alice.send("bob", i, op_id=f"op-{i}")
    assert box.receive(1.0).body == 0  # two more now sit in this consumer's buffer
    keys = InboxKeys.of(env.prefix, "bob").owned()
    assert all(env.raw.exists(k) for k in keys)  # stream, op records, meta
    index = inbox_index_key(env.prefix).encode()
    others = {k: v for k, v in env.snapshot().items() if b"{@inbox:bob}" not in k}
    others[index] = ("zset", [(b"carol", 0.0)])

    assert bob.delete_inbox() is True
    assert not any(env.raw.exists(k) for k in keys)
    assert _index(env) == ["carol"]
    assert bob.inbox_info() is None and [i.owner for i in bob.inboxes()] == ["carol"]
    assert env.snapshot() == others  # nothing of bob's is left; nothing else changed
    assert box.receive(0) is None  # the buffered messages went with the inbox
    assert bob.delete_inbox("bob") is False

    # A new send makes a new inbox (the old op ids are forgotten with it), listed again.
    again = alice.send("bob", "after", op_id="op-0")
    assert again.body == "after"
    assert [(i.owner, i.length) for i in bob.inboxes()] == [("bob", 1), ("carol", 1)]
    got = box.receive(1.0)
    assert (got.id, got.deliveries) == (again.id, 1)


def test_only_the_owner_deletes_an_inbox(env):
    alice = env.mem("alice")
    alice.send("bob", "keep me")
    before = env.snapshot()
    with pytest.raises(PermissionDenied) as err:
        alice.delete_inbox("bob")
    e = err.value
    assert (e.action, e.required, e.granted, e.agent) == ("inbox_delete", "owner", "none", "alice")
    with pytest.raises(InvalidName):
        alice.delete_inbox("not a name")
    with pytest.raises(InvalidName):
        alice.inbox_info("{tag}")
    assert env.snapshot() == before


def test_activity_restarts_the_retention_of_every_inbox_key(env):
    alice, bob = env.mem("alice", inbox_retention=60.0), env.mem("bob", inbox_retention=60.0)
    alice.send("bob", "x")
    ttls = _ttls(env, "bob")
    assert set(ttls) == {"stream", "ops", "opst", "meta"}
    assert all(55_000 < t <= 60_000 for t in ttls.values()), ttls

    def age() -> None:  # as if most of the retention had passed without activity
        for key in InboxKeys.of(env.prefix, "bob").owned():
            env.raw.pexpire(key, 1000)

    age()
    box = _box(env, bob)  # opening counts as activity
    assert all(55_000 < t <= 60_000 for t in _ttls(env, "bob").values())
    age()
    msg = box.receive(1.0)  # a read does
    assert all(55_000 < t <= 60_000 for t in _ttls(env, "bob").values())
    age()
    box.ack(msg)  # an ack does
    assert all(55_000 < t <= 60_000 for t in _ttls(env, "bob").values())
    age()
    assert bob.inbox_info() is not None  # looking is not activity
    assert all(0 < t <= 1000 for t in _ttls(env, "bob").values())
    keeper = env.mem("alice", inbox_retention=None)
    keeper.send("bob", "y")  # retention None: kept until deleted
    assert set(_ttls(env, "bob").values()) == {-1}
    assert bob.inbox_info().expires_at is None


def test_an_idle_inbox_expires_whole_and_leaves_the_listing(env):
    alice = env.mem("alice", inbox_retention=0.2)
    alice.send("bob", "gone soon")
    env.mem("alice").send("carol", "stays")  # the default retention
    assert _index(env) == ["bob", "carol"]
    env.sleep(0.4)
    assert not any(env.raw.exists(k) for k in InboxKeys.of(env.prefix, "bob").owned())
    assert _index(env) == ["bob", "carol"]  # until a listing reads that page
    assert [i.owner for i in alice.inboxes()] == ["carol"]
    assert _index(env) == ["carol"]
    assert alice.inbox_info("bob") is None


def test_the_owner_repairs_a_lost_index_entry(env):
    """A client that died between a send's script and its index update (or an inbox an
    earlier version made, with no activity record) is listed again once its owner opens
    it; a send indexes a legacy inbox too."""
    alice, bob = env.mem("alice"), env.mem("bob")
    alice.send("bob", 1)
    env.raw.zrem(inbox_index_key(env.prefix), "bob")
    assert list(alice.inboxes()) == []
    _box(env, bob)
    assert [i.owner for i in alice.inboxes()] == ["bob"]

    alice.send("carol", 1)
    carol_keys = InboxKeys.of(env.prefix, "carol")
    env.raw.delete(carol_keys.meta)  # as an earlier version left it
    env.raw.zrem(inbox_index_key(env.prefix), "carol")
    assert alice.inbox_info("carol").last_active is None
    alice.send("carol", 2)
    info = alice.inbox_info("carol")
    assert info.length == 2 and info.last_active is not None
    assert _index(env) == ["bob", "carol"]


def test_corrupt_inbox_data_is_an_error_naming_the_key(env):
    alice = env.mem("alice")
    alice.send("bob", "x")
    meta = InboxKeys.of(env.prefix, "bob").meta
    env.raw.delete(meta)
    env.raw.set(meta, "not a hash")
    for call in (lambda: alice.inbox_info("bob"), lambda: list(alice.inboxes())):
        with pytest.raises(ServerError) as err:
            call()
        assert meta in str(err.value)
    env.raw.delete(meta)
    env.raw.zadd(inbox_index_key(env.prefix), {"no spaces allowed": 0})
    with pytest.raises(ServerError) as err:
        list(alice.inboxes())
    assert err.value.key == inbox_index_key(env.prefix)

"""Per-agent inboxes: direct messages, at-least-once, on every backend and both clients."""

from __future__ import annotations

import threading

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
    SwarmMemory,
)
from swarm_memory._inbox import InboxState
from swarm_memory.keys import InboxKeys
from tests.support import Facade

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
    assert err.value.correlation_id == "req-1" and err.value.request.to == "bob"
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
    forged = cls(
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

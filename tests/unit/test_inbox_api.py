"""Inboxes without I/O: sync/async parity, key names, and the wait loop of the flows."""

from __future__ import annotations

import inspect
import time

import pytest

from swarm_memory import AsyncInbox, Inbox, InvalidName, Settings
from swarm_memory._inbox import (
    POLL_FIRST,
    POLL_MAX,
    InboxContext,
    InboxState,
    _Waiter,
    receive,
)
from swarm_memory._ops import ScriptCall, Sleep
from swarm_memory._shell import make_codec
from swarm_memory.keys import InboxKeys, NamespaceKeys, validate_namespace


def _public(cls):
    return {
        n: m
        for n in dir(cls)
        if not n.startswith("_") and callable(m := inspect.getattr_static(cls, n))
    }


def test_inbox_and_async_inbox_have_identical_signatures():
    sync, aio = _public(Inbox), _public(AsyncInbox)
    assert set(sync) == set(aio) == {"receive", "ack", "request"}
    for name, fn in sync.items():
        assert inspect.signature(fn) == inspect.signature(aio[name]), name
        assert inspect.iscoroutinefunction(aio[name]), name
    assert hasattr(Inbox, "__iter__") and hasattr(AsyncInbox, "__aiter__")


def test_inbox_keys_have_their_own_tag_that_no_namespace_can_take():
    keys = InboxKeys.of("sm", "alice")
    assert keys.fixed() == [
        "sm:{@inbox:alice}:stream",
        "sm:{@inbox:alice}:ops",
        "sm:{@inbox:alice}:opst",
        "sm:{@inbox:alice}:bell",
        "sm:{@inbox:alice}:meta",
    ]
    with pytest.raises(InvalidName):
        validate_namespace("@inbox:alice")
    assert not NamespaceKeys.of("sm", "inbox:alice").base.startswith("sm:{@")


def test_waits_grow_from_short_to_the_cap_and_never_pass_the_deadline():
    forever = _Waiter(None)
    waits = [forever.next_wait() for _ in range(8)]
    assert waits[0] == POLL_FIRST and max(waits) == POLL_MAX
    assert waits == sorted(waits) and not forever.expired()
    bounded = _Waiter(0.012)
    total = 0.0
    while (w := bounded.next_wait()) is not None:
        assert w <= 0.012
        total += w
        time.sleep(w)
    assert bounded.expired()


def test_receive_is_a_flow_that_polls_then_sleeps_until_a_message():
    ctx = InboxContext("bob", Settings(), make_codec(Settings(), None))
    state = InboxState("bob", "c1")
    flow = receive(ctx, state, None, 30_000, 10)
    effects = [next(flow)]
    assert isinstance(effects[0], ScriptCall) and effects[0].args[0] == "open"
    empty = [b"ok", b"0-0", [], [], []]
    sleeps = []
    effect = flow.send([b"ok", 0])  # no inbox yet: nothing to index
    for _ in range(4):
        assert isinstance(effect, ScriptCall) and effect.args[0] == "read"
        assert effect.args[4:] == [604_800_000, "c1", 10, 30_000, "0-0"]  # retention first
        assert effect.op_id is None
        effect = flow.send(empty)
        assert isinstance(effect, Sleep)
        sleeps.append(effect.seconds)
        effect = flow.send(None)
    assert sleeps == [POLL_FIRST * 2**i for i in range(4)]
    fields = [b"from", b"alice", b"d", b"[1]", b"f", b"json", b"rt", b"", b"cid", b"", b"ms", b"5"]
    with pytest.raises(StopIteration) as done:
        flow.send([b"ok", b"0-0", [], [], [[b"5-0", fields]]])
    msg = done.value.value
    assert (msg.id, msg.sender, msg.to, msg.body, msg.deliveries) == ("5-0", "alice", "bob", [1], 1)

"""Inboxes without I/O: sync/async parity, key names, and the wait loop of the flows."""

from __future__ import annotations

import inspect
import time

import pytest

from swarm_memory import AsyncInbox, Inbox, InboxInfo, InvalidName, Message, Settings
from swarm_memory._ops.effects import Command, InboxContext, ScriptCall, Sleep
from swarm_memory._ops.inbox import (
    POLL_FIRST,
    POLL_MAX,
    InboxState,
    _Waiter,
    delete_inbox,
    inbox_page,
    receive,
    send,
)
from swarm_memory._shell import make_codec
from swarm_memory.keys import InboxKeys, NamespaceKeys, inbox_index_key, namespace_arg
from swarm_memory.models import ms_to_datetime
from tests.support import must


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
        "sm:{@inbox:alice}:senders",
    ]
    assert keys.lane_keys("bob") == [  # bob's lane in alice's inbox: alice's tag, bob's name
        "sm:{@inbox:alice}:lane:s:bob",
        "sm:{@inbox:alice}:lane:o:bob",
        "sm:{@inbox:alice}:lane:t:bob",
        "sm:{@inbox:alice}:senders",
    ]
    with pytest.raises(InvalidName):
        namespace_arg("@inbox:alice")
    assert not NamespaceKeys.of("sm", "inbox:alice").base.startswith("sm:{@")


def test_waits_grow_from_short_to_the_cap_and_never_pass_the_deadline():
    forever = _Waiter(None)
    waits = [must(forever.next_wait()) for _ in range(8)]
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
    empty = [b"ok", b"0-0", [], [], [], [], 0]  # ... claimed deliveries fresh senders new
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
        flow.send([b"ok", b"0-0", [], [], [[b"5-0", fields]], [], 0])
    msg = done.value.value
    assert (msg.id, msg.sender, msg.to, msg.body, msg.deliveries) == ("5-0", "alice", "bob", [1], 1)


def _ctx(agent: str = "bob", **settings: object) -> InboxContext:
    s = Settings(key_prefix="sm", **settings)  # type: ignore[arg-type]
    return InboxContext(agent, s, make_codec(s, None))


def _done(flow, reply):
    with pytest.raises(StopIteration) as done:
        flow.send(reply)
    return done.value.value


INFO = [b"ok", 2, 1, b"5000", 0]  # length 2, pending 1, active at 5 s, kept forever


def test_settings_retention_reaches_the_script_in_whole_ms():
    assert _ctx().retention_ms == 7 * 86_400_000  # the default: a week
    assert _ctx(inbox_retention=0.0004).retention_ms == 1  # never rounds to "forever"
    assert _ctx(inbox_retention=None).retention_ms == 0  # 0 = keep forever


def test_a_send_indexes_the_inbox_only_when_it_created_it():
    packed = b"3:1-04:10006:digest"
    flow = send(_ctx("alice"), "bob", {"x": 1})
    call = next(flow)
    assert isinstance(call, ScriptCall) and call.keys == InboxKeys.of("sm", "bob").fixed()
    assert call.args[:5] == ["send", "alice", "bob", "agent", 7 * 86_400_000]
    index = flow.send([b"ok", packed, 1])  # a new inbox: listed, after the script
    assert index == Command(("ZADD", inbox_index_key("sm"), 0, "bob"), True)
    assert isinstance(_done(flow, 1), Message)
    flow = send(_ctx("alice"), "bob", {"x": 1})
    next(flow)
    assert isinstance(_done(flow, [b"ok", packed, 0]), Message)  # it existed: no command


def test_a_listing_unlists_a_vanished_inbox_then_looks_again():
    """The index is outside the inbox's slot: between the listing's look and its removal
    a send may re-create the inbox (and index it before the removal). The second look
    puts it back, so an inbox that exists is never left out."""
    for recreated in (False, True):
        flow = inbox_page(_ctx("dave", page_size=3), None)
        page = next(flow)
        assert page == Command(("ZRANGEBYLEX", "sm:inboxes", "-", "+", "LIMIT", 0, 3))
        info = flow.send([b"bob"])
        assert isinstance(info, ScriptCall) and info.args[:3] == ["info", "dave", "bob"]
        assert flow.send([b"none"]) == Command(("ZREM", "sm:inboxes", "bob"), True)
        again = flow.send(1)
        assert isinstance(again, ScriptCall) and again.args[0] == "info"
        if recreated:
            assert flow.send(INFO) == Command(("ZADD", "sm:inboxes", 0, "bob"), True)
            infos, after = _done(flow, 0)
            assert [(i.owner, i.length, i.pending) for i in infos] == [("bob", 2, 1)]
            assert isinstance(infos[0], InboxInfo) and infos[0].expires_at is None
        else:
            infos, after = _done(flow, [b"none"])
            assert infos == []
        assert after is None  # a short page is the last


def test_a_full_page_hands_back_a_cursor_after_its_last_owner():
    flow = inbox_page(_ctx(page_size=1), "alice")
    call = next(flow)
    assert isinstance(call, Command) and call.args[2] == "(alice"  # after the cursor
    flow.send([b"bob"])
    assert _done(flow, INFO) == ([InboxInfo("bob", 2, 1, ms_to_datetime(5000), None)], "bob")


def test_delete_unlists_after_the_script_relists_a_recreated_inbox_and_drops_buffers():
    state = InboxState("bob", "c1", cursor="9-0", opened=True)
    state.buffer["1-0"] = Message("1-0", "alice", "bob", 1, ms_to_datetime(1))
    other = InboxState("carol", "c1", cursor="9-0", opened=True)
    flow = delete_inbox(_ctx(), None, [state, other])
    call = next(flow)
    assert isinstance(call, ScriptCall) and call.args[:3] == ["delete", "bob", "bob"]
    assert flow.send([b"ok", 1, 3]) == Command(("ZREM", "sm:inboxes", "bob"), True)
    assert (state.buffer, state.cursor, state.opened) == ({}, "0-0", False)
    assert other.cursor == "9-0" and other.opened  # another owner's consumer: untouched
    info_call = flow.send(1)
    assert isinstance(info_call, ScriptCall) and info_call.args[0] == "info"
    assert flow.send(INFO) == Command(("ZADD", "sm:inboxes", 0, "bob"), True)
    assert _done(flow, 0) is True

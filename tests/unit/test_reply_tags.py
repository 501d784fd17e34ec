"""Every reply tag a script's ``--! returns`` header lists is handled, and no other.

``scripts.load`` parses the header into ``Script.returns``; ``replies.REPLIES`` holds each
script's outcome tags (read by its flows) and its tag -> error table. A tag a script can
answer that no table knows would surface as a ServerError ("unexpected reply") at run
time; this test catches it when the header is written.
"""

from __future__ import annotations

from typing import Any

import pytest

from swarm_memory import Settings, errors
from swarm_memory._ops.effects import Context, InboxContext, ScriptCall
from swarm_memory._ops.records import MalformedReply, write_ok
from swarm_memory._ops.replies import (
    ACQUIRE,
    GET,
    INBOX,
    PUT,
    RELEASE,
    REPLIES,
    WRITE,
    Failure,
    InboxFailure,
    Replies,
    unpack_get,
    unpack_put,
)
from swarm_memory._shell import make_codec
from swarm_memory.scripts import SCRIPT_NAMES, load, parse_returns


def _unhandled(replies: Replies[Any], returns: frozenset[str]) -> frozenset[str]:
    return returns - replies.tags


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_every_tag_in_a_scripts_returns_header_is_handled(name):
    script = load(name)
    assert script.returns, f"lua/{name}.lua lists no reply tags"
    assert name in REPLIES, f"no reply table for lua/{name}.lua"
    assert not _unhandled(REPLIES[name], script.returns), name


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_every_handled_tag_is_in_the_header(name):
    """The reverse: a table entry the header does not list is stale (or the header is)."""
    assert REPLIES[name].tags <= load(name).returns, name


def test_an_unhandled_tag_is_found():
    header = '{"ok", rev} | {"conflict", i} | {"brand_new", x} | {"ok"|"also_new", y}'
    assert parse_returns(header) == {"ok", "conflict", "brand_new", "also_new"}
    assert _unhandled(WRITE, parse_returns(header)) == {"brand_new", "also_new"}


def test_header_parsing_reads_only_the_opening_tags():
    # Quoted values later in an alternative ("patch"|"stored") are not tags.
    returns = load("write").returns
    assert {"merge_fallback", "txn_conflict", "victims"} <= returns
    assert not {"patch", "stored"} & returns
    assert load("inbox").returns == {"ok", "dup", "full", "none", "denied"}


def test_a_tag_no_table_knows_is_a_server_error(world_ctx):
    with pytest.raises(errors.ServerError, match="unexpected reply b'brand_new'"):
        WRITE.check([b"brand_new"], Failure(world_ctx, "put", "write"))


def test_error_tags_raise_their_error_and_outcomes_return_the_fields(world_ctx):
    fail = Failure(world_ctx, "put", "write", "k")
    with pytest.raises(errors.PermissionDenied) as denied:
        WRITE.check([b"denied", b"read"], fail)
    assert (denied.value.granted, denied.value.key, denied.value.required) == ("read", "k", "write")
    with pytest.raises(errors.NamespaceNotFound):
        WRITE.check([b"nons"], fail)
    f = WRITE.check([b"victims", 3], fail)
    assert (f.tag, f.number(), len(f)) == (b"victims", 3, 0)


def test_packed_replies_read_as_the_arrays_they_stand_for(world_ctx):
    """Packed answers (_ops/replies.py): an acquire's and a release's "ok" split at
    spaces, a get's one entry framed by its metadata's length (its value may hold any
    byte, spaces and digits included)."""
    f = ACQUIRE.check(b"ok 1796647890270000 1796647920270 1796647890270", None)
    assert (f.tag, f.number(), f.number(), f.number(), len(f)) == (
        b"ok", 1796647890270000, 1796647920270, 1796647890270, 0,
    )  # fmt: skip
    assert RELEASE.passed(b"ok") is not None and len(RELEASE.check(b"ok", None)) == 0
    m, v = b"3 2  1796647950631  0 bench ", b'{"a": "ok 0 12 x"}\n 7'
    packed = b"ok 0 %d %b%b" % (len(m), m, v)
    assert unpack_get(packed) == [b"ok", 0, m, v]
    f = GET.check(packed, Failure(world_ctx, "get", "read", "k"))
    assert (f.next(), f.next(), f.next(), len(f)) == (0, m, v, 0)
    assert unpack_get(b"ok 1 0 ") == [b"ok", 1, b"", b""]  # (m empty: packed_entry's check)


def test_a_packed_put_reads_as_its_array_with_the_value_last(world_ctx):
    """put.lua's packed "ok": the counts as ints (what records.write_ok reads by index),
    the item's fields as text, and a computed value holding spaces kept whole."""
    packed = b'ok 41 1 w 7 3 41 1796648423891 1796648423902 0 9 json {"a": "b c", "n": 1}'
    reply = unpack_put(packed)
    assert reply == [
        *(b"ok", 41, 1, 1, b"w", b"7", b"3", b"41", b"1796648423891", b"1796648423902"),
        *(b"0", b"9", b'{"a": "b c", "n": 1}', b"json", 0),
    ]
    result = write_ok(PUT.check(packed, Failure(world_ctx, "put", "write", "k")))
    assert (result.revision, result.sweep_due, result.evicted) == (41, True, [])
    assert result.items[0].value == b'{"a": "b c", "n": 1}' and result.items[0].fmt == b"json"
    for bad in (b"ok", b"ok x 0 w 1 1 1 1 1 0 1  ", b"ok 1 0 w 1 1 1 1 1 0"):
        with pytest.raises(MalformedReply):
            PUT.check(bad, Failure(world_ctx, "put", "write", "k"))


@pytest.mark.parametrize(
    "reply",
    [
        *(b"", b"ok", b"ok 0", b"ok 0 5 abc", b"ok x 3 abc", b"ok 0 -1 abc"),
        *(b"ok 0 1e3 abc", b"ok 0 9999999999 abc", b"ok 0 \xd9\xa3 abc"),
    ],
)
def test_a_malformed_packed_get_reply_is_a_server_error_not_an_index_error(world_ctx, reply):
    with pytest.raises(MalformedReply):
        GET.check(reply, Failure(world_ctx, "get", "read", "k"))


def test_a_packed_reply_from_a_script_that_never_packs_is_a_server_error(world_ctx):
    with pytest.raises(errors.ServerError, match="unexpected reply b'ok 1' from the write"):
        WRITE.check(b"ok 1", Failure(world_ctx, "put", "write"))
    with pytest.raises(errors.ServerError, match="unexpected reply"):
        WRITE.passed(b"ok 1")


def test_a_reply_naming_a_missing_item_is_malformed_not_an_index_error(world_ctx):
    with pytest.raises(MalformedReply):
        WRITE.check([b"not_integer", 2], Failure(world_ctx, "incr", "write", "k", ()))


def test_version_required_carries_the_strategy(world_ctx):
    class It:
        key, expected = "k", None

    with pytest.raises(errors.VersionRequired) as exc:
        WRITE.check(
            [b"version_required", 1, b"custom"], Failure(world_ctx, "put", "write", "k", [It()])
        )
    assert exc.value.strategy == "custom" and exc.value.key == "k"


def test_inbox_errors_name_the_owner(inbox_ctx):
    with pytest.raises(errors.QuotaExceeded) as full:
        INBOX.check([b"full", 7], InboxFailure(inbox_ctx, "bob", "send"))
    assert (full.value.limit_kind, full.value.current, full.value.requested) == (
        "inbox_maxlen",
        7,
        8,
    )
    with pytest.raises(errors.PermissionDenied) as denied:
        INBOX.check([b"denied", b"none"], InboxFailure(inbox_ctx, "bob", "ack"))
    assert denied.value.action == "inbox_ack"


@pytest.fixture
def world_ctx():
    settings = Settings()
    return Context("team", "alice", settings, make_codec(settings, None))


@pytest.fixture
def inbox_ctx():
    settings = Settings()
    return InboxContext("alice", settings, make_codec(settings, None))


def test_an_order_rebuild_that_does_not_advance_is_an_error_not_a_loop(world_ctx):
    """rebuild_order (lua/lru.lua) walks the key index forward; a reply that names the
    same or earlier names again (a broken or foreign script) ends the walk with an error
    instead of looping forever. A restart (a new token) may start over."""
    from swarm_memory._ops.namespaces import rebuild_order

    flow = rebuild_order(world_ctx)
    next(flow)
    flow.send([b"ok", b"t1", b"a", b"b"])  # the walk starts
    call = flow.send([b"ok", b"t2", b"a"])  # switched again meanwhile: starts over
    assert isinstance(call, ScriptCall) and call.args[-1] == "a"
    with pytest.raises(errors.ServerError, match="did not advance"):
        flow.send([b"ok", b"t2", b"a"])

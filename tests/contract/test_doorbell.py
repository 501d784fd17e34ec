"""Doorbell payloads: the events a watcher takes from a doorbell (no stream read) are
exactly the events the stream holds, and a payload of the wrong shape is a decode error
(the feed reports it and reads the stream instead), every backend."""

from __future__ import annotations

import time
from typing import Any

import pytest

from swarm_memory import Settings
from swarm_memory._feed import _bell_revision, note_doorbell
from swarm_memory._ops import events as _events
from swarm_memory._ops.records import DECODE_ERRORS
from swarm_memory._shell import make_codec
from swarm_memory.codec import ValueCodec
from swarm_memory.keys import NamespaceKeys


def _codec() -> ValueCodec:
    return make_codec(Settings(), None)


@pytest.fixture
def mem(env: Any) -> Any:
    m = env.mem("planner")
    m.create_namespace("team")
    return m


def test_doorbell_events_equal_the_stream_events(env: Any, mem: Any) -> None:
    keys = NamespaceKeys.of(env.prefix, "team")
    ns = mem.namespace("team")
    ps = env.raw.pubsub()
    ps.ssubscribe(keys.bell)
    # The subscription confirmed before the first write: SSUBSCRIBE and the put travel on
    # two connections, and the server may read the put's first (the first doorbell was
    # then missed: 3 payloads of 4, on stop 33's code as on stop 34's).
    deadline = time.monotonic() + 5
    confirmed = None
    while confirmed is None and time.monotonic() < deadline:
        confirmed = ps.get_sharded_message(timeout=0.2)
    assert confirmed is not None and confirmed["type"] == "ssubscribe", confirmed
    ns.put("one", {"n": 1})
    ns.put_many({"a": [1, 2], "b": "x" * 2000, "c": None})  # b is too big to ride along
    ns.delete("one")
    ns.broadcast({"hello": "all"})
    payloads: list[bytes] = []
    deadline = time.monotonic() + 5
    while len(payloads) < 4 and time.monotonic() < deadline:
        msg = ps.get_sharded_message(ignore_subscribe_messages=True, timeout=0.2)
        if msg is not None:
            payloads.append(msg["data"])
    ps.close()
    assert len(payloads) == 4
    codec = _codec()
    from_bells = [e for p in payloads for e in _events.decode_doorbell(codec, p)[1]]
    stream = env.raw.xrange(keys.events, min="2-0")  # after ns_create
    # redis-py hands the fields as a dict; the feed reads them as the flat reply.
    flat = [[sid, [x for kv in fields.items() for x in kv]] for sid, fields in stream]
    from_stream = [_events.event(codec, raw) for raw in flat]
    assert from_bells == from_stream
    assert [(e.type, e.key, e.has_value) for e in from_bells] == [
        ("put", "one", True),
        ("put", "a", True),
        ("put", "b", False),
        ("put", "c", True),
        ("delete", "one", False),
        ("broadcast", None, True),
    ]
    revisions = [from_bells[i].revision for i in (0, 1, 4, 5)]
    assert [_bell_revision(p) for p in payloads] == revisions


def _bell(*parts: bytes) -> bytes:
    return b"".join(b"%d:%s" % (len(p), p) for p in parts)


GOOD = _bell(b"7", b"1", b"put", b"k", b"3", b"1", b"json", b"1", b"agent", b"1700000000000")


@pytest.mark.parametrize(
    "payload",
    [
        _bell(b"7", b"0", b"agent", b"1700000000000"),  # no events
        _bell(b"7", b"2", b"put", b"k", b"3", b"1", b"json", b"1", b"agent", b"17"),  # short
        _bell(b"7", b"1", b"put"),  # truncated
        GOOD[:-3],  # a part runs past the end
        _bell(b"x", b"1", b"put", b"k", b"3", b"1", b"json", b"1", b"agent", b"17"),
        _bell(b"7", b"1", b"put", b"k", b"v3", b"1", b"json", b"1", b"agent", b"17"),
        _bell(b"7", b"1", b"put", b"\xff", b"3", b"1", b"json", b"1", b"agent", b"17"),
        _bell(b"7", b"1", b"put", b"k", b"3", b"{", b"json", b"1", b"agent", b"17"),
    ],
)
def test_a_doorbell_of_the_wrong_shape_is_a_decode_error(payload: bytes) -> None:
    with pytest.raises(DECODE_ERRORS):
        _events.decode_doorbell(_codec(), payload)


def test_a_good_doorbell_decodes() -> None:
    revision, (event,) = _events.decode_doorbell(_codec(), GOOD)
    assert (revision, event.type, event.key, event.version, event.value) == (7, "put", "k", 3, 1)
    assert (event.agent, event.cursor, event.count) == ("agent", "8-0", 1)


@pytest.mark.parametrize(
    ("payload", "revision"),
    [
        (GOOD, 7),
        (b"3:99", None),  # the first part runs past the end
        (b"-3:", None),
        (b"1:x", None),
        (b"", None),
        (b"\xff" * 64, None),
        (b"999999999999999:1", None),  # a length prefix longer than any part
    ],
)
def test_the_reader_takes_only_the_revision_from_a_doorbell(
    payload: bytes, revision: int | None
) -> None:
    assert _bell_revision(payload) == revision
    rung: dict[str, int | None] = {}
    bells: dict[str, list[bytes]] = {}
    note_doorbell({"type": "smessage", "channel": b"c", "data": payload}, rung, bells)
    # A revision to skip reads up to; anything else makes the feed read (None).
    assert rung == {"c": revision}

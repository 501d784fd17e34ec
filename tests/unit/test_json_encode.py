"""The JSON codec's encoder against json.dumps (no Redis).

``ValueCodec.encode`` writes a *plain* value (``codec.check_value``: exact dicts with str
keys, lists, str, int, bool, None, floats without an exponent in json's text) with
msgspec's encoder, and anything else with json's. The stored bytes must not depend on
which one ran: they are what other clients, the request digests and the server-side
merge (the Python twin's text) see. So every value here must encode to exactly
``json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)``, or be
refused where json refuses it; and the plain values must take msgspec's path (a check
that always said "not plain" would pass the byte comparison, and is caught below).
CI runs this file on the lowest msgspec pyproject allows too (.ci/run).
"""

from __future__ import annotations

import collections
import enum
import json
import math
import random
import struct
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm_memory import InvalidValue
from swarm_memory.codec import JsonCodec, ValueCodec, check_value


def _codec() -> ValueCodec:
    return ValueCodec(max_bytes=1 << 30, max_depth=64, compress_threshold=0)


def _json(value: Any) -> bytes:
    """json's bytes, or its error; a key that is not a string is refused (the codec
    refuses it on purpose: json would write ``1`` as ``"1"``, tests/unit/test_validation.py)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            if not all(isinstance(k, str) for k in v):
                raise TypeError("a key that is not a string")
            stack.extend(v.values())
        elif isinstance(v, list | tuple):
            stack.extend(v)
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8")


def _same_as_json(value: Any) -> None:
    try:
        want = _json(value)
    except (TypeError, ValueError, RecursionError):
        with pytest.raises(InvalidValue):
            _codec().encode(value)
        return
    assert _codec().encode(value).data == want


class Color(enum.IntEnum):
    RED = 1


class Name(str):
    pass


class Sub(dict):  # type: ignore[type-arg]
    pass


_BELOW_1E16 = math.nextafter(1e16, 0)
_BELOW_1E_4 = math.nextafter(1e-4, 0)

EDGE: list[Any] = [
    {"task": 7, "owner": "agent-12", "state": "running", "progress": 0.5},
    0.0,
    -0.0,
    1e-4,
    _BELOW_1E_4,  # json: 9.999999999999999e-05 (an exponent: json's path)
    -1e-4,
    _BELOW_1E16,
    1e16,
    -1e16,
    1e22,
    5e-324,
    1.7976931348623157e308,
    0.1 + 0.2,
    123456789012345.6,
    2**53 + 1,
    2**64,
    -(2**63) - 1,
    10**100,
    float("nan"),
    [float("inf")],
    {"a": float("-inf")},
    "",
    "\x00\x01\x1f\x7f\x80\x9f\xa0",
    '"\\/\b\f\n\r\t',
    "é\u2028\u2029\ufeff\U0001f600",
    "a\ud800",  # a lone surrogate: refused by both
    {"k\ud800": 1},
    (1, 2),  # json writes a list
    [(1, "a"), {"t": (None,)}],
    {"a": {1, 2}},  # refused by json (msgspec would write an array)
    {"b": b"raw"},
    {1: "x"},  # a key that is not a string: refused
    {True: "x"},
    Color.RED,
    [Color.RED],
    {"c": Color.RED},
    Name("x"),
    {Name("k"): Name("v")},
    Sub(a=1),
    collections.OrderedDict(a=[1.5, 1e20]),
    [[[[[]]]]],
    {"": {"": {}}},
]


@pytest.mark.parametrize("value", EDGE, ids=range(len(EDGE)))
def test_encode_writes_what_json_writes(value):
    _same_as_json(value)


def test_plain_values_take_msgspecs_path():
    plain = [
        {"task": 7, "owner": "agent-12", "state": "running", "progress": 0.5},
        {"w3": 1001},
        [1, "a", None, True, 0.25, [], {}],
        "text",
        12,
        0.0,
        None,
    ]
    not_plain = [
        1e16,
        {"x": [1e-5]},
        (1, 2),
        [Color.RED],
        {Name("k"): 1},
        Sub(a=1),
        {"n": float("nan")},
        {"d": object()},
    ]
    assert all(check_value(v, 64) for v in plain)
    assert not any(check_value(v, 64) for v in not_plain)
    # The path itself: msgspec's bytes for a plain value (the same bytes as json's).
    for v in plain:
        assert JsonCodec().encode_checked(v, plain=True) == msgspec.json.encode(v) == _json(v)


def test_floats_encode_as_json_writes_them():
    rnd = random.Random(27)
    plain = 0
    for _ in range(20_000):
        r = rnd.random()
        if r < 0.4:
            x = struct.unpack("<d", rnd.getrandbits(64).to_bytes(8, "little"))[0]
        elif r < 0.8:
            x = rnd.uniform(-1e16, 1e16) * 10.0 ** rnd.randint(-22, 0)
        else:
            x = round(rnd.uniform(-1000, 1000), rnd.randint(0, 17))
        value = {"x": x, "l": [x]}
        plain += check_value(value, 64)
        _same_as_json(value)
    assert plain > 10_000


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_generated_values_encode_as_json_writes_them(value):
    _same_as_json(value)

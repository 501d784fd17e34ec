"""The JSON codec's decoder against json.loads (no Redis).

``JsonCodec.decode`` reads a value with msgspec's decoder first and takes json's own path
for whatever msgspec refuses. Both halves are checked here: every text msgspec accepts
must decode to exactly what ``json.loads`` gives (types, float signs, integers of any
size, key order), and ``decode`` as a whole must give json.loads' value or raise its
error, for well-formed texts of every kind and for malformed ones. CI runs this file on
the lowest msgspec pyproject allows too (.ci/run): msgspec 0.18 wrapped integers past
64 bits into other integers, silently, which the first case below catches.
"""

from __future__ import annotations

import json
import math
import random
import struct
from typing import Any

import msgspec
import pytest

from swarm_memory.codec import JsonCodec

EDGE = [
    b"19493976764912242199",  # past 64 bits: msgspec 0.18 answered 1047232691202690583
    b"-9223372036854775809",
    b"18446744073709551615",
    b"18446744073709551616",
    b"123456789012345678901234567890",
    b'{"n":-123456789012345678901234567890,"m":[18446744073709551617]}',
    b"-0",
    b"-0.0",
    b"0.1000000000000000055511151231257827021181583404541015625",
    b"2.2250738585072011e-308",
    b"4.9e-324",
    b"1e-400",
    b"1e400",  # json: inf; msgspec refuses it
    b"-1e400",
    b"NaN",
    b"[Infinity,-Infinity]",
    b'{"a":1,"a":2,"b":3}',  # the last value, in the first one's place
    b'{"k":"v","z":1,"k":"w"}',
    b'"\\ud800"',  # a lone surrogate: json keeps it
    b'"\\ud83d\\ude00"',
    b'"\xed\xa0\x80"',  # a surrogate encoded in UTF-8: json.loads reads it
    b"\xef\xbb\xbf[1]",  # a BOM: json.loads reads past it
    b'"\\u0000 \\/ \\b\\f\\n\\r\\t"',
    b' {"a" : [ 1 , 2 ] } ',
    b"\t[]\n",
    b"1.0",
    b"1E5",
    b'"\xe2\x80\xa8"',
    b"",
    b" ",
    b'{"a":1}x',
    b"[1,]",
    b'{"a":1,}',
    b"01",
    b"-",
    b".5",
    b"1.",
    b'"\x00"',
    b'"\x1f"',
    b"\x0c[]",
    b"\xff",
    b"[" * 100 + b"]" * 100,
    b"[" * 5000 + b"]" * 5000,  # past the recursion limit: RecursionError, as json's
    b"[" * 5000,
]


def _outcome(fn: Any, data: bytes) -> tuple[str, Any]:
    try:
        return "value", fn(data)
    except RecursionError:
        return "error", RecursionError
    except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError
        return "error", type(exc)


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (a float's sign too), keys in the same
    order; iterative, so deep values do not hit the recursion limit here."""
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        if type(x) is not type(y):
            return False
        if isinstance(x, float):
            if not (x == y or (math.isnan(x) and math.isnan(y))):
                return False
            if math.copysign(1.0, x) != math.copysign(1.0, y):
                return False
        elif isinstance(x, dict):
            if list(x) != list(y):
                return False
            stack.extend((x[k], y[k]) for k in x)
        elif isinstance(x, list):
            if len(x) != len(y):
                return False
            stack.extend(zip(x, y, strict=True))
        elif x != y:
            return False
    return True


def _texts(seed: int, n: int) -> list[bytes]:
    """Numbers of every form, and JSON documents with random edits."""
    rnd = random.Random(seed)
    out: list[bytes] = []
    for _ in range(n):
        x = struct.unpack("<d", rnd.getrandbits(64).to_bytes(8, "little"))[0]
        if math.isfinite(x):
            out += [repr(x).encode(), b"%.25e" % x, b"%.17g" % x]
        digits = "".join(rnd.choice("0123456789") for _ in range(rnd.randint(1, 40)))
        s = ("-" if rnd.random() < 0.5 else "") + (digits.lstrip("0") or "0")
        if rnd.random() < 0.5:
            s += "." + "".join(rnd.choice("0123456789") for _ in range(rnd.randint(1, 30)))
        if rnd.random() < 0.5:
            s += rnd.choice("eE") + rnd.choice(["", "+", "-"]) + str(rnd.randint(0, 400))
        out.append(s.encode())
    docs = [
        json.dumps(
            {"a": [1, 2.5, "x\\y", {"b": None, "c": True}], "d": "é\u2028", "e": -0.0},
            ensure_ascii=False,
        ).encode(),
        b'{"k":"v","k":"w","z":[18446744073709551616,-1e-7]}',
        b'["\\ud83d\\ude00","\\u00e9",false,{}]',
    ]
    alphabet = b'{}[]",:\\ 0123456789-+.eEtrufalsnu\t\x00\x1f\x7f\xc3\xa9\xed\xa0\x80\xff'
    for _ in range(3 * n):
        c = bytearray(rnd.choice(docs))
        for _ in range(rnd.randint(1, 4)):
            op, i = rnd.random(), rnd.randrange(len(c) + 1)
            if op < 0.4 and c:
                del c[min(i, len(c) - 1)]
            elif op < 0.8:
                c[i:i] = bytes([rnd.choice(alphabet)])
            elif c:
                c[min(i, len(c) - 1)] = rnd.choice(alphabet)
        out.append(bytes(c))
    return out


@pytest.mark.parametrize("data", EDGE, ids=range(len(EDGE)))
def test_decode_gives_what_json_loads_gives(data):
    got, want = _outcome(JsonCodec().decode, data), _outcome(json.loads, data)
    assert got[0] == want[0]
    if want[0] == "value":
        assert _same(got[1], want[1])
    else:
        assert got[1] is want[1]


def test_what_msgspec_accepts_it_reads_as_json_loads_does():
    fast, codec = msgspec.json.Decoder(), JsonCodec()
    accepted = 0
    for data in [*EDGE, *_texts(seed=16, n=4000)]:
        want = _outcome(json.loads, data)
        try:
            value = fast.decode(data)
        except (msgspec.DecodeError, ValueError, RecursionError):
            pass
        else:
            accepted += 1
            assert want[0] == "value", data
            assert _same(value, want[1]), data
        got = _outcome(codec.decode, data)
        assert got[0] == want[0], data
        if want[0] == "value":
            assert _same(got[1], want[1]), data
        else:
            assert got[1] is want[1], data
    # The fast path is what most of these took (not only json's).
    assert accepted > 10_000


def test_decode_reads_what_the_codec_writes_through_the_fast_path():
    value = {"w": [1, 2.5, -0.0, 10**30, "é\u2028\x00", None, True, {"": {}}]}
    data = JsonCodec().encode(value)
    assert _same(msgspec.json.Decoder().decode(data), value)
    assert _same(JsonCodec().decode(data), value)

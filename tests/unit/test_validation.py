"""Pure unit tests (no Redis): name rules and key layout, the value codec, merge patch."""

from __future__ import annotations

import copy
import json
import zlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from redis.crc import key_slot

from swarm_memory import InvalidName, InvalidOption, InvalidValue, Settings, merge_patch
from swarm_memory._ops.args import (
    agent_arg,
    hand_out,
    handed_out,
    key_arg,
    namespace_arg,
    new_op_id,
)
from swarm_memory.codec import Codec, JsonCodec, ValueCodec, check_depth
from swarm_memory.keys import (
    MAX_NAME_LEN,
    NamespaceKeys,
    registry_key,
)
from tests.bad_names import BAD_COMMON, BAD_UNHASHABLE


# ================================================================================= keys
@pytest.mark.parametrize(
    "key",
    [
        "a",
        "plan",
        "a b",
        "nbsp\u00a0inside",  # a non-breaking space inside is fine; only the ends are checked
        "{x}",
        "}{",
        "{",
        "}",
        "task-*?[x]",
        "ключ",
        "🔑",
        "k" * 512,
        "é" * 256,  # 512 UTF-8 bytes
        "🔑" * 128,  # 512 UTF-8 bytes
        "€" * 170 + "kk",  # 512 UTF-8 bytes
    ],
)
def test_key_arg_accepts(key):
    assert key_arg(key, 512) is key


@pytest.mark.parametrize(
    "key",
    [
        *BAD_COMMON,
        *BAD_UNHASHABLE,
        *BAD_UNHASHABLE,
        pytest.param("a\ud800b", id="lone-surrogate"),
        pytest.param("\udfff", id="lone-low-surrogate"),
        pytest.param("k" * 513, id="513-ascii"),
        pytest.param("é" * 257, id="514-utf8-bytes"),
        pytest.param("🔑" * 129, id="516-utf8-bytes-129-chars"),
        pytest.param("€" * 171, id="513-utf8-bytes"),
        pytest.param("\u00a0x", id="leading-nbsp"),
        pytest.param("x\u3000", id="trailing-ideographic-space"),
    ],
)
def test_key_arg_rejects(key):
    with pytest.raises(InvalidName) as info:
        key_arg(key, 512)
    err = info.value
    assert err.field == "key"
    if isinstance(key, str):
        assert err.value == key[:80]  # a short, safe echo of the input
    assert len(str(err)) < 300


def test_key_arg_limit_is_utf8_bytes_not_characters():
    assert key_arg("éé", 4) == "éé"
    with pytest.raises(InvalidName):
        key_arg("ééé", 5)
    with pytest.raises(InvalidName):
        key_arg("abc", 2)


GOOD_NAMES = [
    "a",
    "0",
    "Team-1",
    "planner",
    "a.b_c:d@e/f+g=h-i",
    "n" * MAX_NAME_LEN,
    "9lives",
]
BAD_NAMES = [
    *BAD_COMMON,
    *BAD_UNHASHABLE,
    pytest.param("n" * (MAX_NAME_LEN + 1), id="129-chars"),
    pytest.param("ns*", id="star"),
    pytest.param("ns?", id="question"),
    pytest.param("ns[1]", id="brackets"),
    pytest.param("ns]", id="close-bracket"),
    pytest.param("{ns}", id="braces"),
    pytest.param("ns{", id="open-brace"),
    pytest.param("n}s", id="close-brace"),
    pytest.param("has space", id="inner-space"),
    pytest.param("équipe", id="non-ascii"),
    pytest.param("-lead", id="leading-dash"),
    pytest.param(".hidden", id="leading-dot"),
    pytest.param("a,b", id="comma"),
    pytest.param("a\\b", id="backslash"),
    pytest.param('"quoted"', id="quote"),
]


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_namespace_arg_and_agent_accept(name):
    assert namespace_arg(name) is name
    assert agent_arg(name) is name


@pytest.mark.parametrize("name", BAD_NAMES)
def test_namespace_arg_rejects(name):
    with pytest.raises(InvalidName) as info:
        namespace_arg(name)
    assert info.value.field == "namespace"
    assert info.value.value == name
    assert len(str(info.value)) < 400


@pytest.mark.parametrize("name", BAD_NAMES)
def test_agent_arg_rejects(name):
    with pytest.raises(InvalidName) as info:
        agent_arg(name)
    assert info.value.field == "agent"
    assert info.value.value == name


# ----------------------------------------------------------------------------- slots
SLOT_PREFIXES = ["sm", "t0123abc", "a.b-c_d", "X" * 32]
SLOT_NAMESPACES = ["team", "a", "0", "n" * 128, "x:y/z@w+v=u", "Team-1.2_3"]
SLOT_KEYS = [
    "plan",
    "{",
    "}",
    "{}",
    "}{",
    "{other}",
    "{team}",
    "a{b}c",
    "}}{{",
    "ключ",
    "🔑",
    "é" * 256,
    "meta",
    "e:x",
    "h:x",
    ":",
    '"); redis.call("FLUSHALL"); --',
]


def _all_keys(nk: NamespaceKeys, names: list[str]) -> list[str]:
    return nk.fixed() + [x for k in names for x in (nk.entry(k), nk.history(k))]


@pytest.mark.parametrize("prefix", SLOT_PREFIXES)
@pytest.mark.parametrize("namespace", SLOT_NAMESPACES)
def test_every_key_of_a_namespace_hashes_to_one_slot(prefix, namespace):
    nk = NamespaceKeys.of(prefix, namespace)
    assert nk.base == f"{prefix}:{{{namespace}}}:"
    want = key_slot(namespace.encode())
    keys = _all_keys(nk, SLOT_KEYS)
    assert {key_slot(k.encode("utf-8")) for k in keys} == {want}
    assert all(k.startswith(nk.base) for k in keys)


@pytest.mark.parametrize("namespace", SLOT_NAMESPACES)
def test_namespace_keys_never_collide(namespace):
    nk = NamespaceKeys.of("sm", namespace)
    keys = _all_keys(nk, SLOT_KEYS)
    assert len(keys) == len(set(keys))
    # An entry named like a fixed key ("meta", "idx", ...) still gets its own Redis key.
    fixed_names = [k[len(nk.base) :] for k in nk.fixed()]
    for name in fixed_names:
        assert nk.entry(name) not in nk.fixed() and nk.history(name) not in nk.fixed()


@given(
    namespace=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,40}", fullmatch=True),
    key=st.text(min_size=1, max_size=60).filter(lambda k: k.strip() == k and k),
)
def test_slot_property_for_any_valid_name(namespace, key):
    namespace_arg(namespace)
    nk = NamespaceKeys.of("sm", namespace)
    slots = {key_slot(k.encode("utf-8", "surrogatepass")) for k in _all_keys(nk, [key])}
    assert slots == {key_slot(namespace.encode())}


def test_namespaces_spread_over_slots():
    """The hash tag is the namespace itself, so different namespaces use different slots."""
    slots = {key_slot(NamespaceKeys.of("sm", f"ns-{i}").meta.encode()) for i in range(200)}
    assert len(slots) > 150


def test_registry_key_is_outside_every_namespace():
    assert registry_key("sm") == "sm:registry"
    assert "{" not in registry_key("sm")


@pytest.mark.parametrize("prefix", ["a{b", "a}b", "", "x" * 33, "a b", "a:b"])
def test_key_prefix_cannot_break_the_hash_tag(prefix):
    with pytest.raises(ValidationError):
        Settings(key_prefix=prefix)


# ================================================================================ codec
PRECISE = {
    "big": 123456789012345678,
    "f": 0.30000000000000004,
    "tiny": 5e-324,
    "neg": -0.0,
    "empty": [],
    "obj": {},
    "u": "é✓🔑",
    "nested": {"z": [1, [2, [3, {"a": None}]]], "a": True, "m": False},
    "huge": 10**40,
}


def vc(**kw: Any) -> ValueCodec:
    opts = {"max_bytes": 1 << 20, "max_depth": 32, "compress_threshold": 16384} | kw
    return ValueCodec(**opts)


@pytest.mark.parametrize(
    "value",
    [
        PRECISE,
        None,
        True,
        0,
        -(2**63),
        2**64,
        1.5,
        "",
        "text",
        [],
        {},
        [[]],
        [{}],
        {"": ""},
        "\u2028\u2029",
        "\x00 nul inside a value is fine",
    ],
)
def test_json_round_trip_is_exact(value):
    codec = vc()
    enc = codec.encode(value)
    assert enc.fmt == "json" and isinstance(enc.data, bytes)
    back = codec.decode(enc.data, enc.fmt)
    assert back == value
    assert json.dumps(back, sort_keys=True) == json.dumps(value, sort_keys=True)


def test_json_encoding_is_compact_utf8_and_keeps_key_order():
    data = JsonCodec().encode({"z": 1, "a": [1, 2], "é": "✓"})
    assert data == '{"z":1,"a":[1,2],"é":"✓"}'.encode()
    assert list(JsonCodec().decode(data)) == ["z", "a", "é"]


def test_json_keeps_every_digit():
    data = JsonCodec().encode(PRECISE)
    assert b"123456789012345678" in data and b"0.30000000000000004" in data
    assert b'"empty":[]' in data and b'"obj":{}' in data
    back = JsonCodec().decode(data)
    assert type(back["empty"]) is list and type(back["obj"]) is dict


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(float("nan"), id="nan"),
        pytest.param(float("inf"), id="inf"),
        pytest.param(float("-inf"), id="-inf"),
        pytest.param([1, float("nan")], id="nested-nan"),
        pytest.param({"a": {"b": float("inf")}}, id="nested-inf"),
        pytest.param({float("nan"): 1}, id="nan-key"),
        pytest.param({1, 2}, id="set"),
        pytest.param(b"raw", id="bytes"),
        pytest.param(object(), id="object"),
        pytest.param({"a": object()}, id="nested-object"),
        pytest.param({(1, 2): 1}, id="tuple-key"),
        pytest.param({1: "x"}, id="int-key"),
        pytest.param({False: "x"}, id="bool-key"),
        pytest.param({None: "x"}, id="none-key"),
        pytest.param({"a": [{"b": {2.5: "x"}}]}, id="nested-float-key"),
        pytest.param("a\ud800", id="lone-surrogate"),
    ],
)
def test_unencodable_values_raise_invalid_value(value):
    with pytest.raises(InvalidValue) as info:
        vc().encode(value)
    assert info.value.field == "value"


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_json_codec_alone_refuses_non_string_keys():
    """Not only through ValueCodec: the codec users can call directly says it too."""
    with pytest.raises(TypeError, match="keys must be strings"):
        JsonCodec().encode({"a": {1: "x"}})
    assert JsonCodec().encode({"1": "x"}) == b'{"1":"x"}'


def test_depth_limit_is_inclusive():
    check_depth(_nested(32), 32)
    vc().encode(_nested(32))
    with pytest.raises(InvalidValue) as info:
        check_depth(_nested(33), 32)
    assert info.value.value == 33
    with pytest.raises(InvalidValue):
        vc().encode(_nested(33))
    check_depth({"a": {"b": 1}}, 2)
    with pytest.raises(InvalidValue):
        check_depth({"a": {"b": {}}}, 2)
    check_depth("scalars are not containers", 1)
    with pytest.raises(InvalidValue):
        check_depth((1, (2,)), 1)  # tuples count like lists


def test_hostile_depth_and_cycles_do_not_recurse():
    with pytest.raises(InvalidValue):
        vc().encode(_nested(1_000_000))
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(InvalidValue):
        vc().encode(loop)
    d: dict[str, Any] = {}
    d["d"] = [d]
    with pytest.raises(InvalidValue):
        vc().encode(d)


def test_compression_threshold_is_exclusive():
    threshold = 1000
    codec = vc(compress_threshold=threshold)
    at = codec.encode("a" * (threshold - 2))  # '"' + 998 + '"' = exactly the threshold
    assert at.fmt == "json" and at.size == threshold
    above = codec.encode("a" * (threshold - 1))
    assert above.fmt == "json+z" and above.size < threshold
    assert codec.decode(above.data, above.fmt) == "a" * (threshold - 1)
    assert zlib.decompress(above.data) == JsonCodec().encode("a" * (threshold - 1))


def test_compression_off_and_opt_out():
    value = {"blob": "x" * 50_000}
    assert vc(compress_threshold=0).encode(value).fmt == "json"
    assert vc(compress_threshold=10).encode(value, allow_compress=False).fmt == "json"
    assert vc(compress_threshold=10).encode(value).fmt == "json+z"


def test_compression_is_skipped_when_it_does_not_help():
    enc = vc(compress_threshold=1).encode("ab")
    assert enc.fmt == "json" and enc.data == b'"ab"'


def test_size_limit_is_inclusive_and_applies_after_compression():
    limit = 100
    codec = vc(max_bytes=limit, compress_threshold=0)
    assert codec.encode("a" * (limit - 2)).size == limit
    with pytest.raises(InvalidValue) as info:
        codec.encode("a" * (limit - 1))
    assert info.value.value == limit + 1
    squeezed = vc(max_bytes=limit, compress_threshold=10).encode("a" * 5000)
    assert squeezed.fmt == "json+z" and squeezed.size <= limit
    noise = bytes(range(256)).hex() * 2  # ~1 KB that zlib cannot squeeze under 100 bytes
    with pytest.raises(InvalidValue):
        vc(max_bytes=limit, compress_threshold=10).encode(noise)


@pytest.mark.parametrize("fmt", ["msgpack", "msgpack+z", "pickle", "", "+z", "JSON"])
def test_decode_with_an_unknown_codec_raises_invalid_option(fmt):
    with pytest.raises(InvalidOption) as info:
        vc().decode(b"\x80\x04", fmt)
    assert info.value.field == "codec"
    assert info.value.value == fmt.removesuffix("+z")


class ReversedJson:
    """A toy custom codec: JSON text, reversed."""

    name = "rjson"

    def encode(self, value: Any) -> bytes:
        return json.dumps(value, allow_nan=False).encode()[::-1]

    def decode(self, data: bytes) -> Any:
        return json.loads(data[::-1])


def test_custom_codec_round_trip_and_format_tags():
    assert isinstance(ReversedJson(), Codec)
    codec = vc(codec=ReversedJson(), compress_threshold=100)
    small = codec.encode({"a": [1, 2]})
    assert small.fmt == "rjson" and small.data == b'{"a": [1, 2]}'[::-1]
    assert codec.decode(small.data, small.fmt) == {"a": [1, 2]}
    big = codec.encode({"blob": "z" * 1000})
    assert big.fmt == "rjson+z"
    assert codec.decode(big.data, big.fmt) == {"blob": "z" * 1000}
    # Plain JSON written by another client stays readable.
    assert codec.decode(b"[1]", "json") == [1]
    # A JSON-only client cannot read it, and says so...
    with pytest.raises(InvalidOption):
        vc().decode(small.data, small.fmt)
    # ...unless told about the codec.
    reader = ValueCodec(
        max_bytes=1 << 20, max_depth=32, compress_threshold=0, extra={"rjson": ReversedJson()}
    )
    assert reader.decode(big.data, big.fmt) == {"blob": "z" * 1000}


def test_custom_codec_still_gets_the_limits():
    codec = vc(codec=ReversedJson(), max_depth=3, max_bytes=64)
    with pytest.raises(InvalidValue):
        codec.encode(_nested(4))
    with pytest.raises(InvalidValue):
        codec.encode("x" * 100)
    with pytest.raises(InvalidValue):
        codec.encode({1, 2})


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name

    def encode(self, value: Any) -> bytes:
        return b""

    def decode(self, data: bytes) -> Any:
        return None


@pytest.mark.parametrize(
    "codec",
    [
        pytest.param(_Named("a+b"), id="plus-in-name"),
        pytest.param(_Named(""), id="empty-name"),
        pytest.param(object(), id="not-a-codec"),
    ],
)
def test_bad_codec_is_rejected(codec):
    with pytest.raises(InvalidOption) as info:
        vc(codec=codec)
    assert info.value.field == "codec"


def test_codec_misbehaviour_is_invalid_value():
    class ReturnsStr(_Named):
        def encode(self, value: Any) -> bytes:
            return "not bytes"  # type: ignore[return-value]

    class Raises(_Named):
        def encode(self, value: Any) -> bytes:
            raise TypeError("cannot")

    with pytest.raises(InvalidValue):
        vc(codec=ReturnsStr("s")).encode(1)
    with pytest.raises(InvalidValue) as info:
        vc(codec=Raises("r")).encode(1)
    assert isinstance(info.value.__cause__, TypeError)


# ======================================================================= merge (RFC 7386)
# Appendix A of RFC 7386, every example, in order.
RFC7386_APPENDIX_A = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(
    ("target", "patch", "result"),
    [pytest.param(*case, id=f"A{i}") for i, case in enumerate(RFC7386_APPENDIX_A, 1)],
)
def test_rfc7386_appendix_a(target, patch, result):
    target_before, patch_before = copy.deepcopy(target), copy.deepcopy(patch)
    assert merge_patch(target, patch) == result
    assert target == target_before and patch == patch_before  # inputs untouched


def test_rfc7386_section_3_example():
    target = {
        "title": "Goodbye!",
        "author": {"givenName": "John", "familyName": "Doe"},
        "tags": ["example", "sample"],
        "content": "This will be unchanged",
    }
    patch = {
        "title": "Hello!",
        "phoneNumber": "+01-123-456-7890",
        "author": {"familyName": None},
        "tags": ["example"],
    }
    assert merge_patch(target, patch) == {
        "title": "Hello!",
        "author": {"givenName": "John"},
        "tags": ["example"],
        "content": "This will be unchanged",
        "phoneNumber": "+01-123-456-7890",
    }


def test_merge_patch_on_absent_target_and_empty_patch():
    assert merge_patch(None, {"a": {"b": None, "c": 1}}) == {"a": {"c": 1}}
    assert merge_patch({"a": 1}, {}) == {"a": 1}
    assert merge_patch("scalar", {"a": None}) == {}


def test_only_a_generated_op_id_with_a_digest_reads_as_handed_out():
    """hand_out's form is exact (22 characters of new_op_id's alphabet, "~", 24 lower-case
    hex digits): a caller's own op id of any other shape is its own, checked against the
    digest its first request stored."""
    gen, digest = new_op_id(), "0123456789abcdef01234567"
    assert handed_out(hand_out(gen, digest)) == (gen, digest)
    for own in (
        gen,
        "task-7",
        gen + "~" + digest[:-1],  # a digest digit short
        gen + "~" + digest.upper(),
        gen[:-1] + "-~" + digest,  # "-" is not in new_op_id's alphabet
        gen + "/" + digest,
        "~" * 47,
    ):
        assert handed_out(own) is None, own

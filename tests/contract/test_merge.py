"""The ``merge`` strategy: JSON merge patch (RFC 7386), applied server-side on raw text.

The point of the raw-text merge (DESIGN.md decision 9): Redis's Lua ``cjson`` would turn
``123456789012345678`` into ``1.2345678901235e+17``, ``0.30000000000000004`` into
``0.3`` and ``[]`` into ``{}``. fakeredis does not show that, so every test here runs on
a real server too, and the property test compares the server's merge with the Python
twin (``swarm_memory.merge.merge_patch``) on fakeredis and a real server.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swarm_memory import ConflictError, Settings, SwarmMemory, merge_patch
from swarm_memory.keys import NamespaceKeys
from swarm_memory.scripts import load
from tests.support import entry_meta_parts, must

PRECISE = {
    "big": 123456789012345678,
    "neg": -123456789012345678,
    "huge": 2**64 + 1,
    "f": 0.30000000000000004,
    "tiny": 5e-324,
    "e": 1e-300,
    "empty": [],
    "obj": {},
    "u": "é✓\u2028",
}


def text(value: Any) -> str:
    """Exact JSON text, as the client encodes it: a strict, type-aware equality."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


class Calls:
    """Script observer: the write items (op, key) of every write call, and read calls."""

    def __init__(self) -> None:
        self.log: list[tuple[str, list[str]]] = []

    def __call__(self, script: str, keys: list[str], args: list[Any]) -> None:
        if script == "write":
            # counts = "<n_items> <n_victims> <n_fences>"; each item (head, key, value),
            # its head "<op> <expected> <ttl_ms> <fmt>" (lua/write.lua)
            n = int(str(args[3]).split(" ")[0])
            first = len(load("write").args.fixed)  # item args follow the fixed ones
            self.log.append(("write", [str(args[first + 3 * i])[0] for i in range(n)]))
        elif script == "put":  # one item, its head the fourth argument (lua/put.lua)
            self.log.append(("put", [str(args[3])[0]]))
        else:
            self.log.append((script, []))

    def clear(self) -> None:
        self.log.clear()


@pytest.fixture
def setup(env: Any) -> tuple[Any, Any, Calls]:
    mem = env.mem()
    calls = Calls()
    mem.observe_scripts(calls)
    mem.create_namespace("m", strategy="merge")
    return mem, mem.namespace("m"), calls


@pytest.fixture
def ns(setup: tuple[Any, Any, Calls]) -> Any:
    return setup[1]


def stored(env: Any, key: str, namespace: str = "m") -> tuple[bytes, bytes]:
    """(value bytes, format tag) exactly as Redis holds them."""
    ekey = NamespaceKeys.of(env.prefix, namespace).entry(key)
    v, m = env.raw.hmget(ekey, ["v", "m"])
    return v, entry_meta_parts(m)[7]  # the format: last of the packed metadata


def test_nested_objects_merge_key_by_key(ns):
    ns.put("doc", {"a": {"b": 1, "c": {"d": 2, "e": 3}}, "x": "keep"})
    e = ns.put("doc", {"a": {"c": {"e": 30, "f": 4}, "g": 5}, "y": True})
    want = {"a": {"b": 1, "c": {"d": 2, "e": 30, "f": 4}, "g": 5}, "x": "keep", "y": True}
    assert e.value == want and e.version == 2
    assert ns.get("doc").value == want


def test_null_deletes_keys_at_any_depth(ns):
    ns.put("doc", {"a": 1, "b": {"c": 2, "d": 3}, "keep": 0})
    ns.put("doc", {"a": None, "b": {"c": None}, "missing": None})
    assert ns.get("doc").value == {"b": {"d": 3}, "keep": 0}
    ns.put("doc", {"b": None})
    assert ns.get("doc").value == {"keep": 0}


def test_arrays_replace_wholesale_and_empty_stays_a_list(env, ns):
    ns.put("doc", {"l": [1, 2, 3], "nested": [{"a": 1}]})
    ns.put("doc", {"l": [4]})
    assert ns.get("doc").value == {"l": [4], "nested": [{"a": 1}]}  # never concatenated
    ns.put("doc", {"l": [], "nested": [{"b": 2}]})  # objects inside arrays are not merged
    got = ns.get("doc").value
    assert got == {"l": [], "nested": [{"b": 2}]}
    assert type(got["l"]) is list
    assert b'"l":[]' in stored(env, "doc")[0]
    e = ns.put("doc", [])  # a top-level array patch replaces the whole value
    assert e.value == [] and type(ns.get("doc").value) is list


def test_precision_survives_a_server_side_merge(env, setup):
    _mem, ns, calls = setup
    ns.put("doc", PRECISE)
    calls.clear()
    e = ns.put("doc", {"added": 1.0000000000000002, "obj": {"n": 9007199254740993}})
    assert calls.log == [("put", ["P"])]  # merged by the script, no client fallback
    want = PRECISE | {"obj": {"n": 9007199254740993}, "added": 1.0000000000000002}
    assert text(e.value) == text(ns.get("doc").value) == text(want)
    raw, fmt = stored(env, "doc")
    assert fmt == b"json"
    literals = [b"123456789012345678", b"-123456789012345678", b"18446744073709551617",
                b"0.30000000000000004", b"5e-324", b"1e-300", b'"empty":[]',
                b"9007199254740993", b"1.0000000000000002"]  # fmt: skip
    for literal in literals:
        assert literal in raw, literal
    assert raw == text(want).encode()


def test_non_object_patch_replaces(ns):
    ns.put("doc", {"a": 1})
    assert ns.put("doc", 5).value == 5
    assert ns.put("doc", "text").value == "text"
    assert ns.put("doc", {"a": {"b": None, "c": 1}}).value == {"a": {"c": 1}}  # onto a scalar
    e = ns.put("doc", None)
    assert e.value is None and ns.get("doc").value is None and ns.exists("doc")
    assert ns.put("doc", [1, {"x": None}]).value == [1, {"x": None}]  # arrays kept verbatim


def merges_as_the_twin(ns: Any, key: str, target: Any, patch: Any) -> None:
    """``patch`` put onto ``target`` (created verbatim under ``key``) gives the Python
    twin's value, bytes and size, in the reply and when read back. Members keep the twin's
    order (target order, then new keys in patch order), so even the bytes agree."""
    ns.create(key, target)  # create never merges: the target is stored verbatim
    assert text(ns.get(key).value) == text(target)
    e = ns.put(key, patch)
    want = merge_patch(target, patch)
    got = ns.get(key)
    assert e.value == got.value == want
    assert text(got.value) == text(want)
    assert got.size == e.size == len(text(want).encode())


def test_patch_onto_absent_key_drops_its_nulls(ns):
    e = ns.put("new", {"a": None, "b": {"c": None, "d": 1}, "l": [None]})
    assert e.value == {"b": {"d": 1}, "l": [None]} and e.version == 1
    assert ns.get("new").value == {"b": {"d": 1}, "l": [None]}
    assert ns.put("scalar", None).value is None  # a non-object patch is stored as given


# Stored texts the client's encoder would not write (spaces, escapes, nesting, every kind
# of scalar), each member read by one of the scanner's ways: the compact key and its
# value's first character, then a scalar's or a plain string's rest, a string with
# escapes, a container, or the general reading (spaces, a key with escapes).
SPACED_TARGETS = [
    '{"a": 1, "b" : "x" ,"c":[1, {"d": 2}]}',
    '{ "k\\"q": true,"s":"a\\"b","n":null,"e":-1.5e+3,"f":false }',
    '{"w0":1,"w1":"t","w2":{"x":[]},"w3":[],"w4":"\\u0041","w5":0,"w6":"","w7":""}',
    '{"only": "one"}',
    '{\t"t":\n1\r}',
]
PATCHES = [{"a": 2}, {"b": None, "z": [1]}, {"w2": {"x": None, "y": 1}}, {'k"q': 0}, {"t": "v"}]


@pytest.mark.parametrize("target", SPACED_TARGETS)
def test_a_target_stored_with_spaces_and_escapes_merges_as_the_python_twin(env, ns, target):
    """The stored text is read member by member whatever its spacing (only its values are
    copied byte for byte): each patch gives the Python twin's value."""
    ekey = NamespaceKeys.of(env.prefix, "m").entry("sp")
    for patch in PATCHES:
        ns.create("sp", {"placeholder": 1})
        env.raw.hset(ekey, "v", target)  # the metadata stays: the same format, json
        merged = ns.put("sp", patch).value
        assert merged == merge_patch(json.loads(target), patch) == ns.get("sp").value
        ns.delete("sp")


# Flat objects (scalars and strings under keys, compact: what a swarm's shared status
# object is) are spliced by lua/_lib.lua flat_splice, which finds only the patch's keys.
# Their strings and keys hold what the plain find must not mistake for a member:
# separators, colons, closing brackets, "null", quotes' neighbours.
FLAT_TARGETS = [
    {},
    {"a": 1},
    {"a": 1, "b": "x", "c": None, "d": True, "e": -1.5e300, "f": False},
    {"w0": 1000, "w1": 1001, "w2": 1002, "w3": 1003},
    {"a": ",", "b": "}", "c": "x,", "e": "null", "f": "", "g": " , : "},
    {"d": "]", "e": 1},
    {"a": "{[}", "b": 1},
    {"a": ",", "b": '":', "c": "}"},  # (a quote, escaped: the members' reading)
    {"a:": 1, ",b": 2, "}": 3, " ": 4, "": 5, "é😀": "✓", "a": ',"a":'},
    # the patch keys ":", "," and ":1," are spelled here after closing quotes
    {"": ":", "b": "x", ":y": 1, "a": 1, ":z": 2, "}e": "}"},
]
FLAT_PATCHES = [
    {"a": 2},
    {"a": None},
    {"w3": None},
    {"w1": None},
    {"z": 1},
    {"z": None},
    {"c": 9, "a": 8, "new": [1, {"x": None}], "b": None},
    {"a": "s,t", "b": [], "q": "}"},
    {"a": {"nested": None, "m": 1}},
    {'k"q': 1, "a": 0},
    {"a:": None, ",b": "v", "": 0, "é😀": None},
    {":": None},
    {",": 5, ":1,": 7},
    {":y": None, "}e": 3},
    {},
]


@pytest.mark.parametrize("target", FLAT_TARGETS, ids=range(len(FLAT_TARGETS)))
def test_a_flat_target_merges_as_the_python_twin(ns, target):
    """Every patch onto every flat target: the Python twin's value and bytes."""
    for patch in FLAT_PATCHES:
        merges_as_the_twin(ns, "flat", target, patch)
        ns.delete("flat")


def test_a_key_repeated_in_a_flat_target_is_copied_unless_patched(env, ns):
    """A flat target is spliced where its patched keys are; a key it repeats that the
    patch does not name is copied as it stands (the same decoded value as the general
    reading, which keeps one); a patched key it repeats, or a patch of more than eight
    keys (each costs a find over the whole target), takes the general reading."""
    ekey = NamespaceKeys.of(env.prefix, "m").entry("dup")
    eight = {"b": 5, **{f"k{i}": i for i in range(7)}}
    nine = {**eight, "k7": 7}
    tail8 = ",".join(f'"k{i}":{i}' for i in range(7))
    for patch, after in (
        ({"b": 5}, '{"a":1,"b":5,"a":3}'),
        ({"a": 9}, '{"a":9,"b":2}'),
        ({"b": None, "c": 1}, '{"a":1,"a":3,"c":1}'),
        (eight, '{"a":1,"b":5,"a":3,' + tail8 + "}"),
        (nine, '{"a":3,"b":5,' + tail8 + ',"k7":7}'),
    ):
        ns.create("dup", {"placeholder": 1})
        env.raw.hset(ekey, "v", '{"a":1,"b":2,"a":3}')
        got = ns.put("dup", patch).value
        assert got == merge_patch(json.loads('{"a":1,"b":2,"a":3}'), patch)
        assert env.raw.hget(ekey, "v") == after.encode()
        ns.delete("dup")


def test_merge_with_expected_version(ns):
    e1 = ns.put("doc", {"a": 1})
    e2 = ns.put("doc", {"b": 2}, expected_version=e1.version)
    assert e2.value == {"a": 1, "b": 2} and e2.version == 2
    with pytest.raises(ConflictError) as info:
        ns.put("doc", {"c": 3}, expected_version=e1.version)
    current = must(info.value.current)
    assert current.value == {"a": 1, "b": 2} and current.version == 2
    assert ns.get("doc").version == 2
    with pytest.raises(ConflictError):
        ns.put("other", {"c": 3}, expected_version=1)
    e0 = ns.put("other", {"c": 3, "d": None}, expected_version=0)
    assert e0.value == {"c": 3}


def test_merged_value_and_size_are_returned(ns):
    ns.put("doc", {"a": {"b": 1}, "z": 0})
    e = ns.put("doc", {"a": {"c": 2}, "z": None})
    assert e.value == {"a": {"b": 1, "c": 2}}
    assert e.size == len(text(e.value).encode())
    got = ns.get("doc")
    assert (got.value, got.version, got.mod_revision, got.size) == (
        e.value,
        e.version,
        e.mod_revision,
        e.size,
    )
    assert ns.info().bytes == e.size


def test_compressed_stored_value_falls_back_to_a_client_merge(env):
    mem = env.mem(compress_threshold=64)
    calls = Calls()
    mem.observe_scripts(calls)
    mem.create_namespace("m", strategy="merge")
    ns = mem.namespace("m")
    big = {"text": "abc" * 200, "n": 123456789012345678, "keep": {"x": 1, "y": 2}}
    # A merge-strategy put stores what the server merged, plain; create (like update and
    # values written before the namespace switched to merge) stores compressed.
    ns.create("doc", big)
    assert stored(env, "doc")[1] == b"json+z"
    calls.clear()
    e = ns.put("doc", {"keep": {"x": None, "z": 3}, "f": 0.30000000000000004})
    want = merge_patch(big, {"keep": {"x": None, "z": 3}, "f": 0.30000000000000004})
    assert text(e.value) == text(ns.get("doc").value) == text(want)
    assert e.version == 2
    ops = [(script, items) for script, items in calls.log if script in ("put", "write")]
    # refused by the script, then merged here as a CAS write
    assert ops == [("put", ["P"]), ("write", ["S"])]
    assert ns.info().bytes == ns.get("doc").size
    # CAS on the fallback path still checks the version.
    with pytest.raises(ConflictError) as info:
        ns.put("doc", {"more": 1}, expected_version=1)
    assert must(info.value.current).version == 2
    assert ns.get("doc").version == 2


def test_compressed_patch_is_resent_plain_and_merged_by_the_server(env):
    mem = env.mem(compress_threshold=64)
    calls = Calls()
    mem.observe_scripts(calls)
    mem.create_namespace("m", strategy="merge")
    ns = mem.namespace("m")
    ns.put("doc", {"small": 1, "drop": True})
    assert stored(env, "doc")[1] == b"json"
    calls.clear()
    patch = {"text": "xyz" * 200, "drop": None, "big": 123456789012345678}
    e = ns.put("doc", patch)
    want = {"small": 1, "text": "xyz" * 200, "big": 123456789012345678}
    assert text(e.value) == text(ns.get("doc").value) == text(want)
    # refused by the script (a compressed patch), then sent again plain and merged there
    writes = [(script, items) for script, items in calls.log if script in ("put", "write")]
    assert writes == [("put", ["P"]), ("put", ["P"])]
    assert stored(env, "doc")[1] == b"json"  # the server stores what it merged, plain
    assert ns.info().bytes == e.size == len(text(want).encode())


def test_put_many_merges_every_key_in_one_revision(ns):
    ns.put_many({"a": {"x": 1, "y": 1}, "b": {"l": [1, 2]}})
    out = ns.put_many({"a": {"y": None, "z": 2}, "b": {"l": []}, "c": {"n": None, "m": 1}})
    assert {k: e.value for k, e in out.items()} == {
        "a": {"x": 1, "z": 2},
        "b": {"l": []},
        "c": {"m": 1},
    }
    assert len({e.mod_revision for e in out.values()}) == 1
    got = ns.get_many(["a", "b", "c"])
    assert {k: e.value for k, e in got.items()} == {k: e.value for k, e in out.items()}


def test_put_many_with_a_compressed_key_falls_back_as_one_batch(env):
    mem = env.mem(compress_threshold=64)
    mem.create_namespace("m", strategy="merge")
    ns = mem.namespace("m")
    big = {"text": "abc" * 200, "k": 1}
    ns.create("big", big)
    ns.put("small", {"a": 1})
    assert stored(env, "big")[1] == b"json+z"
    out = ns.put_many({"big": {"k": None, "j": 2}, "small": {"a": None, "b": 2}})
    assert out["big"].value == {"text": "abc" * 200, "j": 2}
    assert out["small"].value == {"b": 2}
    assert out["big"].mod_revision == out["small"].mod_revision  # still atomic
    assert ns.get("big").value == {"text": "abc" * 200, "j": 2}
    assert stored(env, "big")[1] == b"json+z"  # the client merge compresses again
    with pytest.raises(ConflictError):
        ns.put_many({"big": {"q": 1}, "small": {"q": 1}}, expected_versions={"small": 1})
    assert ns.get("big").version == 2 and ns.get("small").version == 2


# ------------------------------------------------------------------------ property
# Strings that stress the raw-text scanner: quotes, backslashes, braces and brackets,
# commas and colons, text that looks like JSON or escapes, control characters (sent as
# \u00XX escapes), non-BMP characters.
TRICKY = st.sampled_from(
    ['"', "\\", '\\"', "{", "}", "[", "]", ",", ":", "null", '{"a":1}', "\\u0041",
     "\\n", "\n", "\t", "\x00", "\x1f", "é", "\u2028", "😀", " ", "}]", '"}', ""]
)  # fmt: skip
STRINGS = st.lists(TRICKY | st.text(max_size=3), max_size=4).map("".join)
NUMBERS = (
    st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([123456789012345678, 2**64 + 1, 0.30000000000000004, 5e-324, -0.0, 1e300])
)
LEAVES = st.none() | st.booleans() | NUMBERS | STRINGS


def docs(depth: int) -> st.SearchStrategy[Any]:
    """JSON values whose objects nest at most ``depth`` deep (arrays hold leaves/objects)."""
    if depth == 0:
        return LEAVES
    inner = docs(depth - 1)
    return st.one_of(
        LEAVES,
        st.lists(inner, max_size=3),
        st.dictionaries(STRINGS, inner, max_size=4),
    )


OBJECTS = st.dictionaries(STRINGS, docs(3), max_size=5)  # depth 4 with the top level
# Patches reuse target keys often, so merges and deletions actually meet.
COMMON_KEYS = st.sampled_from(["a", "b", '"q"', "\\", "{}", "é"])


@st.composite
def pairs(draw: st.DrawFn) -> tuple[Any, Any]:
    keys = COMMON_KEYS | STRINGS
    tree = st.recursive(
        LEAVES,
        lambda c: st.lists(c, max_size=2) | st.dictionaries(keys, c, max_size=3),
        max_leaves=10,
    )
    target = draw(st.one_of(OBJECTS, st.dictionaries(keys, tree, max_size=4), LEAVES))
    patch = draw(st.one_of(st.dictionaries(keys, tree, max_size=4), OBJECTS, docs(1)))
    return target, patch


@pytest.fixture(scope="module", params=["fake", "redis"])
def merge_ns(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "fake":
        raw: Any = fakeredis.FakeRedis()
    else:
        raw = redis.Redis(host="127.0.0.1", port=request.getfixturevalue("redis_server").port)
    mem = SwarmMemory.from_client(
        raw, agent="planner", settings=Settings(key_prefix="mp" + uuid.uuid4().hex[:12])
    )
    mem.create_namespace("m", strategy="merge")
    yield mem.namespace("m")
    mem.delete_namespace("m")
    raw.close()


# Flat objects for the property below: keys and strings without escapes and with them
# (a quote, a backslash, a newline: those take the members' reading), scalars of every
# kind.
FLAT_CHARS = st.sampled_from(
    ["a", "b", ",", ":", "}", "]", " ", "null", "é", "😀", "1", "", '"', "\\", "\n", '\\"']
)  # fmt: skip
FLAT_TEXT = st.lists(FLAT_CHARS, max_size=3).map("".join)
FLAT_LEAVES = st.none() | st.booleans() | NUMBERS | FLAT_TEXT
FLAT_OBJECTS = st.dictionaries(FLAT_TEXT, FLAT_LEAVES, max_size=6)
FLAT_PATCH = st.dictionaries(
    FLAT_TEXT, FLAT_LEAVES | st.lists(FLAT_LEAVES, max_size=2) | st.just({"n": None}), max_size=4
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(target=FLAT_OBJECTS, patch=FLAT_PATCH)
def test_server_merge_of_flat_objects_equals_python_merge(merge_ns, target, patch):
    key = uuid.uuid4().hex
    merges_as_the_twin(merge_ns, key, target, patch)
    merge_ns.delete(key)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pair=pairs())
def test_server_merge_equals_python_merge(merge_ns, pair):
    target, patch = pair
    key = uuid.uuid4().hex
    merges_as_the_twin(merge_ns, key, target, patch)
    # The same patch onto nothing: a patch still drops its own nulls.
    fresh = uuid.uuid4().hex
    assert text(merge_ns.put(fresh, patch).value) == text(merge_patch(None, patch))
    merge_ns.delete(key)
    merge_ns.delete(fresh)

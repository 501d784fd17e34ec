"""The merge's memos (lua/_lib.lua, stop 32), each of texts a merge made, for the next
merge into them: FLAT_MEMO's texts skip ``flat_text``'s checks, so each must pass them;
SPANS_MEMO's member positions stand in for ``object_spans``'s reading, so each must be
what that reading gives. Run on the library's own Lua in Lua 5.1 (lupa, which
fakeredis's Lua support brings), over chains of merges where each result is the next
target."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lupa import lua51  # (fakeredis[lua], a runtime dependency, brings lupa)

from swarm_memory.merge import merge_patch as python_merge
from swarm_memory.scripts import _lib_parts, _parts_for

# What the library's functions are reached by, in one chunk: the per-call state, the
# parts merge_patch and flat_text need, then a table of them and views of the memos
# (after adopt_runtime, which enter() calls first in a state: the globals as upvalues).
_EXPOSE = """
adopt_runtime()
return {
  merge = merge_patch,
  flat_text = flat_text,
  memo = function()
    local out = {}
    for text in pairs(FLAT_MEMO.t) do out[#out + 1] = text end
    return out
  end,
  spans_memo = function()
    local out = {}
    for text, sp in pairs(SPANS_MEMO.t) do
      out[#out + 1] = { text, { unpack(sp[1], 1, sp[5]) }, { unpack(sp[2], 1, sp[5]) },
        { unpack(sp[3], 1, sp[5]) }, { unpack(sp[4], 1, sp[5]) } }
    end
    return out
  end,
  sizes = function() return FLAT_MEMO.n, FLAT_MEMO.bytes, SPANS_MEMO.n, SPANS_MEMO.bytes end,
  keep = memo_keep,
  new_memo = function(max_n) return { t = {}, n = 0, bytes = 0, max_n = max_n } end,
  read_spans = function(text) -- object_spans's own reading, past the memo
    local held = SPANS_MEMO.t[text]
    SPANS_MEMO.t[text] = nil
    local ok, keys, kss, vss, ves, n = pcall(object_spans, text)
    SPANS_MEMO.t[text] = held
    if not ok then return nil end
    return { { unpack(keys, 1, n) }, { unpack(kss, 1, n) }, { unpack(vss, 1, n) },
      { unpack(ves, 1, n) } }
  end,
}
"""
_STUB = "redis = { error_reply = function(m) return { err = m } end }"


def _library() -> Any:
    state, _ = _lib_parts()
    lines = list(state)
    names = ["adopt_runtime", "merge_patch", "flat_text", "FLAT_MEMO", "SPANS_MEMO", "memo_keep"]
    for part in _parts_for(names):
        lines += part.lines
    lua = lua51.LuaRuntime(unpack_returned_tuples=True, encoding=None)
    lua.execute(_STUB)
    return lua.execute("\n".join(lines) + _EXPOSE)


def _text(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


# Keys and values of flat objects, with what the checks refuse mixed in (brackets, a
# quote, a backslash, a newline: escaped by the encoder), and scalars of every kind.
CHARS = st.sampled_from(
    ["a", "b", ",", ":", "}", "{", "]", "[", " ", "null", "é", "1", "", '"', "\\", "\n", "\x01"]
)  # fmt: skip
TEXT = st.lists(CHARS, max_size=3).map("".join)
LEAVES = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT
FLAT = st.dictionaries(TEXT, LEAVES, max_size=6)
PATCH = st.dictionaries(
    st.sampled_from(["a", "b", "c", ":x", "é"]) | TEXT,
    LEAVES | st.lists(LEAVES, max_size=2),
    max_size=4,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(target=FLAT, patches=st.lists(PATCH, min_size=1, max_size=6))
def test_every_text_the_memo_holds_passes_the_checks_it_skips(target, patches):
    lib = _library()
    text, value = _text(target), target
    for patch in patches:
        text = lib.merge(text, _text(patch))
        value = python_merge(value, patch)
        assert json.loads(text) == value  # the memo changes no merge's result
    memo = list(lib.memo().values())
    for held in memo:
        assert lib.flat_text(held), held


def test_a_chain_of_flat_merges_is_remembered_and_a_text_that_is_not_flat_is_not():
    lib = _library()
    text = lib.merge(b"{}", b'{"a":1,"b":"x"}')
    text = lib.merge(text, b'{"c":true}')
    assert text == b'{"a":1,"b":"x","c":true}'
    assert set(lib.memo().values()) == {b'{"a":1,"b":"x"}', text}
    # A member the checks refuse (a list, an escape) leaves its result out of the memo.
    listed = lib.merge(text, b'{"d":[1]}')
    escaped = lib.merge(text, b'{"e":"q\\"q"}')
    assert not lib.flat_text(listed) and not lib.flat_text(escaped)
    assert listed not in set(lib.memo().values())
    assert escaped not in set(lib.memo().values())


def _lists(table: Any, first: int = 1) -> list[Any]:
    """A Lua table of Lua lists (from ``first`` on) as Python lists."""
    return [list(table[i].values()) for i in range(first, len(table) + 1)]


# Objects whose members hold containers (what the flat merge leaves to splice_patch),
# written compact or with spaces, and patches of scalars, arrays and nulls (splice_patch's).
NESTED = st.recursive(
    LEAVES, lambda c: st.lists(c, max_size=3) | st.dictionaries(TEXT, c, max_size=3), max_leaves=8
)
NESTED_OBJECTS = st.dictionaries(TEXT, NESTED, max_size=6)
SPLICE_PATCH = st.dictionaries(
    st.sampled_from(["a", "b", "c", "é"]) | TEXT, LEAVES | st.lists(NESTED, max_size=2), max_size=4
)
# Patches with objects in them: merge_patch's member-by-member path, at every depth.
DEEP_PATCH = st.dictionaries(st.sampled_from(["a", "b", "c", "é"]) | TEXT, NESTED, max_size=4)
SEPARATORS = st.sampled_from([(",", ":"), (", ", ": "), (" , ", " :  ")])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    target=NESTED_OBJECTS,
    separators=SEPARATORS,
    patches=st.lists(SPLICE_PATCH | PATCH | DEEP_PATCH, min_size=1, max_size=6),
)
def test_every_kept_span_is_what_reading_the_text_gives(target, separators, patches):
    lib = _library()
    text = json.dumps(target, ensure_ascii=False, separators=separators).encode()
    value = target
    for patch in patches:
        text = lib.merge(text, _text(patch))
        value = python_merge(value, patch)
        assert json.loads(text) == value  # the memo changes no merge's result
    held = lib.spans_memo()
    for i in range(1, len(held) + 1):
        entry = held[i]
        kept, read = _lists(entry, 2), lib.read_spans(entry[1])
        assert read is not None, entry[1]
        assert kept == _lists(read), entry[1]


def test_a_deep_merge_keeps_the_spans_of_every_object_it_makes():
    lib = _library()
    text = lib.merge(b'{"a":{"x":1,"y":[1]},"b":2}', b'{"a":{"x":null,"z":{"q":1}}}')
    assert text == b'{"a":{"y":[1],"z":{"q":1}},"b":2}'
    held = {entry[1]: _lists(entry, 2) for entry in lib.spans_memo().values()}
    # the result, and the objects made inside it ({"q":1}: the patch's, merged into none)
    assert set(held) == {text, b'{"y":[1],"z":{"q":1}}', b'{"q":1}'}
    for made, spans in held.items():
        assert spans == _lists(lib.read_spans(made))


def test_a_splice_keeps_its_result_s_spans_and_the_next_merge_reads_no_member():
    lib = _library()
    text = lib.merge(b'{"a":[1],"b" : {"x":1} ,"c":2}', b'{"b":[2],"d":null,"e":"new"}')
    assert text == b'{"a":[1],"b" : [2],"c":2,"e":"new"}'
    held = lib.spans_memo()
    assert len(held) == 1 and held[1][1] == text
    assert _lists(held[1], 2) == _lists(lib.read_spans(text))
    # The next merge into it takes the spans kept (a deleted member shifts the rest).
    again = lib.merge(text, b'{"a":null,"c":[3]}')
    assert again == b'{"b" : [2],"c":[3],"e":"new"}'
    assert _lists(lib.read_spans(again)) == [
        [b'"b"', b'"c"', b'"e"'],
        [2, 12, 20],
        [8, 16, 24],
        [11, 19, 29],
    ]


def test_the_memos_hold_at_most_their_count_and_a_mebibyte():
    lib = _library()
    text = b"{}"
    for i in range(300):  # each merge's result is flat and kept: 256 kept, then emptied
        text = lib.merge(text, _text({f"k{i % 40}": i}))
    flat_n, flat_bytes, _, _ = lib.sizes()
    assert flat_n == 300 - 256
    assert flat_bytes < 44 * len(text) + 1
    # Objects of containers: the first merge is still flat_splice's (its target is flat),
    # the 69 after it splice_patch's, their spans kept: 64, then emptied.
    for i in range(70):
        text = lib.merge(text, _text({"l": [i]}))
    assert lib.sizes()[2] == 69 - 64
    # by bytes: a text that would pass 1 MiB empties the memo; one over it is not kept
    memo = lib.new_memo(8)
    lib.keep(memo, b"a", True, 700_000)
    lib.keep(memo, b"b", True, 700_000)
    assert (list(memo[b"t"].keys()), memo[b"n"], memo[b"bytes"]) == ([b"b"], 1, 700_000)
    lib.keep(memo, b"c", True, 2_000_000)
    assert (len(memo[b"t"]), memo[b"n"], memo[b"bytes"]) == (0, 0, 0)

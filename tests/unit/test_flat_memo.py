"""The flat merge's memo (lua/_lib.lua, FLAT_MEMO, stop 32): a text a merge made and kept
there skips ``flat_text``'s checks when it is the next merge's target, so every text it
holds must pass them. Run on the library's own Lua in Lua 5.1 (lupa, which fakeredis's
Lua support brings), over chains of merges where each result is the next target."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swarm_memory.merge import merge_patch as python_merge
from swarm_memory.scripts import _lib_parts, _parts_for

lua51 = pytest.importorskip("lupa.lua51")

# What the library's functions are reached by, in one chunk: the per-call state, the
# parts merge_patch and flat_text need, then a table of them and a view of the memo.
_EXPOSE = """
return {
  merge = merge_patch,
  flat_text = flat_text,
  memo = function()
    local out = {}
    for text in pairs(FLAT_MEMO) do out[#out + 1] = text end
    return out
  end,
}
"""
_STUB = "redis = { error_reply = function(m) return { err = m } end }"


def _library() -> Any:
    state, _ = _lib_parts()
    lines = list(state)
    for part in _parts_for(["merge_patch", "flat_text", "FLAT_MEMO"]):
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

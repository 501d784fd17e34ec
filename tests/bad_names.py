"""Names every rule refuses (keys, namespaces and agents alike): one list for the unit
tests of the checks and the contract tests of every operation that takes a name."""

from __future__ import annotations

import pytest

BAD_COMMON = [
    pytest.param("", id="empty"),
    pytest.param("   ", id="spaces-only"),
    pytest.param("\t\n ", id="whitespace-only"),
    pytest.param(" lead", id="leading-space"),
    pytest.param("trail ", id="trailing-space"),
    pytest.param("a\x00b", id="nul"),
    pytest.param("a\nb", id="newline"),
    pytest.param("a\tb", id="tab"),
    pytest.param("a\x1bb", id="escape"),
    pytest.param("a\x7fb", id="del"),
    pytest.param("a\x85b", id="c1-nel"),
    pytest.param(1, id="int"),
    pytest.param(1.5, id="float"),
    pytest.param(b"bytes", id="bytes"),
    pytest.param(None, id="none"),
]
# Not a dict key either: the operations that take names in a mapping (put_many) cannot be
# handed one, so only the checks themselves are tested with it.
BAD_UNHASHABLE = [pytest.param(["a"], id="list")]

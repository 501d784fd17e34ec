"""JSON merge patch (RFC 7386), the semantics of the ``merge`` strategy.

The server applies the same rules to encoded JSON text in ``lua/_lib.lua``; this Python
twin serves the client-side fallback (values stored compressed or in another codec) and
the test model. Objects merge key by key, recursively; ``null`` in a patch deletes the
key; arrays and scalars replace the old value wholesale (arrays are never concatenated).
"""

from __future__ import annotations

from typing import Any


def merge_patch(target: Any, patch: Any) -> Any:
    """Return ``target`` with ``patch`` applied; neither argument is modified."""
    if not isinstance(patch, dict):
        return patch
    result: dict[str, Any] = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result

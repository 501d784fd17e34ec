"""Argument checks: every one the flows (and the shells) run, under one naming scheme.

``<what>_arg(value, ...)`` returns the value in the form the flows use (a str, whole
milliseconds, an int) or raises an :class:`~swarm_memory.errors.InvalidInput` subclass
naming the argument (``field``), before anything is sent. Name checks
(``namespace_arg``, ``agent_arg``, ``key_arg``) live in ``keys.py``, next to the key
names they guard, and are re-exported here. Value encoding limits (size, depth, NaN) are
the codec's (``codec.py``).
"""

from __future__ import annotations

import binascii
import math
import os
import string
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from swarm_memory import errors
from swarm_memory.keys import agent_arg, key_arg, namespace_arg
from swarm_memory.models import (
    LEVELS,
    OVER_QUOTA,
    STRATEGIES,
    FencingToken,
    OverQuota,
    PermissionLevel,
    Strategy,
)
from swarm_memory.settings import Settings

__all__ = [
    "INBOX_MAX_BATCH",
    "INBOX_MAX_IDLE",
    "LOCK_MODES",
    "MAX_BATCH",
    "MAX_EXACT",
    "MAX_HISTORY",
    "MAX_OP_ID",
    "MAX_WAIT",
    "agent_arg",
    "agents_arg",
    "amount_arg",
    "audit_action_arg",
    "batch_arg",
    "bool_arg",
    "callable_arg",
    "consumer_arg",
    "correlation_arg",
    "expected_versions_arg",
    "fence_arg",
    "fences_arg",
    "history_arg",
    "idle_arg",
    "key_arg",
    "key_pattern_arg",
    "keys_arg",
    "level_arg",
    "limit_arg",
    "lock_mode_arg",
    "lock_ttl_arg",
    "message_id_arg",
    "namespace_arg",
    "namespaces_arg",
    "new_op_id",
    "op_id_arg",
    "over_quota_arg",
    "pattern_arg",
    "permissions_arg",
    "since_arg",
    "strategy_arg",
    "time_bound_arg",
    "timeout_arg",
    "ttl_arg",
    "types_arg",
    "values_arg",
    "version_arg",
    "wait_arg",
]

MAX_EXACT = 2**53 - 1  # the largest int a Lua number (a double) holds exactly
MAX_BATCH = 10_000  # keys per get_many / put_many
MAX_HISTORY = 10_000  # versions a namespace may keep per key
INBOX_MAX_BATCH = 1000  # messages per inbox read
INBOX_MAX_IDLE = 86_400.0 * 7  # seconds before a pending message is redelivered, at most
MAX_OP_ID = 128  # characters
MAX_WAIT = 1e9  # seconds a lock acquire may be told to wait (None: no limit)
_MAX_NAME = 128  # consumer names and correlation ids
_MAX_CURSOR_DIGITS = 16  # each half of an event cursor
_MAX_ID_DIGITS = 20  # each half of a message id


def _is_stream_id(text: str, max_digits: int) -> bool:
    """``<digits>-<digits>``, each part at most ``max_digits`` long."""
    first, dash, second = text.partition("-")
    return bool(dash) and all(p.isdigit() and len(p) <= max_digits for p in (first, second))


# --------------------------------------------------------------------------- op ids
def new_op_id() -> str:
    # 128 random bits (as many as uuid4 has) in 22 base64 characters (A-Z a-z 0-9 . _:
    # no "-", so an id never reads as a command-line option) rather than 32 hex digits:
    # the id is stored twice per write for the dedupe window (op record hash + purge
    # zset) and once in the audit record, and at 22 characters each copy fits a 32-byte
    # allocation instead of a 48-byte one.
    # (base64.b64encode with altchars builds its translation table on every call.)
    return (
        binascii.b2a_base64(os.urandom(16), newline=False)[:_NEW_OP_ID_LEN].translate(_ALT).decode()
    )


_NEW_OP_ID_LEN = 22  # 128 bits in base64 characters (6 bits each)
_ALT = bytes.maketrans(b"+/", b"._")  # base64's two symbols -> ours
_OP_ID_CHARS = frozenset(string.ascii_letters + string.digits + "._")  # (after _ALT)
# A write's request digest (_ops/entries.py, request_digest): blake2b of this many bytes,
# in hex.
REQUEST_DIGEST_BYTES = 12
_DIGEST_LEN = 2 * REQUEST_DIGEST_BYTES
_DIGEST_CHARS = frozenset(string.hexdigits.lower())


# A data write under an op id the client made itself carries no request digest
# (_ops/entries.py, write): no other request can carry 128 fresh random bits. Such an id
# leaves the client only in an error that asks the caller to replay the call
# (OutcomeUnknown, NotReplicated); it leaves as "<id>~<digest>", the id with its
# request's digest, made then. A replay under that form sends the id alone and is
# checked against the digest it carries, as a caller's own op id is checked against the
# one its first request stored (OpIdReused).
def hand_out(op_id: str, digest: str) -> str:
    """A generated op id as the caller is given it: ``<id>~<request digest>``."""
    return f"{op_id}~{digest}"


def handed_out(op_id: str) -> tuple[str, str] | None:
    """(id, digest) of an op id of :func:`hand_out`'s form, else None. (The form is
    exact: 22 characters of new_op_id's alphabet, "~", 24 lower-case hex digits.)"""
    if len(op_id) != _NEW_OP_ID_LEN + 1 + _DIGEST_LEN or op_id[_NEW_OP_ID_LEN] != "~":
        return None
    head, digest = op_id[:_NEW_OP_ID_LEN], op_id[_NEW_OP_ID_LEN + 1 :]
    if _OP_ID_CHARS.issuperset(head) and _DIGEST_CHARS.issuperset(digest):
        return head, digest
    return None


def op_id_arg(op_id: object) -> str:
    """The caller's op id, or a new one for ``None``."""
    if op_id is None:
        return new_op_id()
    if not isinstance(op_id, str) or not 1 <= len(op_id) <= MAX_OP_ID or not op_id.isprintable():
        raise errors.InvalidInput(
            f"op_id must be 1..{MAX_OP_ID} printable characters", field="op_id", value=op_id
        )
    return op_id


# ---------------------------------------------------------------- numbers and flags
def version_arg(version: object, field: str = "expected_version") -> int | None:
    """``None`` or a plain int in [0, 2**53). Rejects bools, strings like ``"0x10"``, floats."""
    if version is None:
        return None
    if isinstance(version, bool) or not isinstance(version, int):
        raise errors.InvalidVersion(
            f"{field} must be an int, not {type(version).__name__}", field=field, value=version
        )
    if not 0 <= version <= MAX_EXACT:
        raise errors.InvalidVersion(
            f"{field} must be between 0 and 2**53-1", field=field, value=version
        )
    return version


def bool_arg(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise errors.InvalidInput(f"{field} must be True or False", field=field, value=value)
    return value


def limit_arg(value: object, field: str) -> int:
    """Optional positive limit (None -> 0 = unlimited)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_EXACT:
        raise errors.InvalidInput(
            f"{field} must be a positive int or None", field=field, value=value
        )
    return value


def amount_arg(amount: object) -> int:
    if isinstance(amount, bool) or not isinstance(amount, int) or abs(amount) > MAX_EXACT:
        raise errors.InvalidInput(
            "amount must be an int with |amount| < 2**53", field="amount", value=amount
        )
    return amount


def history_arg(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_HISTORY:
        raise errors.InvalidInput(
            f"history must be an int between 0 and {MAX_HISTORY}", field="history", value=value
        )
    return value


def callable_arg(fn: object, field: str) -> Any:
    if not callable(fn):
        raise errors.InvalidInput(f"{field} must be callable", field=field, value=type(fn))
    return fn


# ------------------------------------------------------------------------- durations
def ttl_arg(ttl: object, settings: Settings, field: str = "ttl") -> int | None:
    """Seconds (int/float) or timedelta -> whole milliseconds; ``None`` passes through."""
    if ttl is None:
        return None
    if isinstance(ttl, timedelta):
        seconds = ttl.total_seconds()
    elif isinstance(ttl, int | float) and not isinstance(ttl, bool):
        seconds = float(ttl)
    else:
        raise errors.InvalidTTL(
            f"{field} must be seconds or a timedelta, not {type(ttl).__name__}",
            field=field,
            value=ttl,
        )
    if not math.isfinite(seconds) or seconds <= 0:
        raise errors.InvalidTTL(f"{field} must be positive and finite", field=field, value=ttl)
    if seconds > settings.max_ttl:
        raise errors.InvalidTTL(
            f"{field} of {seconds:g}s is above the maximum of {settings.max_ttl:g}s",
            field=field,
            value=ttl,
        )
    ms = round(seconds * 1000)
    if ms < 1:
        raise errors.InvalidTTL(f"{field} must be at least 1 ms", field=field, value=ttl)
    return ms


def lock_ttl_arg(ttl: object, settings: Settings) -> int:
    """A lock's lease: like ``ttl_arg``, but required."""
    ms = ttl_arg(ttl, settings)
    if ms is None:
        raise errors.InvalidTTL("a lock needs a ttl (its lease)", field="ttl", value=None)
    return ms


def wait_arg(wait: object) -> float | None:
    """``None`` = wait as long as it takes; 0 = one attempt; else seconds."""
    if wait is None:
        return None
    if isinstance(wait, timedelta):
        wait = wait.total_seconds()
    if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait < MAX_WAIT:
        raise errors.InvalidInput(
            "wait must be None, 0 or a non-negative number of seconds", field="wait", value=wait
        )
    return float(wait)


def _seconds(value: object, field: str, *, allow_zero: bool, maximum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise errors.InvalidInput(f"{field} must be seconds", field=field, value=value)
    seconds = float(value)
    low_ok = seconds >= 0 if allow_zero else seconds > 0
    if not math.isfinite(seconds) or not low_ok or seconds > maximum:
        raise errors.InvalidInput(
            f"{field} must be {'non-negative' if allow_zero else 'positive'}, finite and at "
            f"most {maximum:g}s",
            field=field,
            value=value,
        )
    return seconds


def idle_arg(idle: object) -> int:
    """Seconds -> whole milliseconds (at least 1)."""
    seconds = _seconds(idle, "idle", allow_zero=False, maximum=INBOX_MAX_IDLE)
    return max(1, round(seconds * 1000))


def timeout_arg(timeout: object, *, allow_none: bool = True) -> float | None:
    if timeout is None and allow_none:
        return None
    return _seconds(timeout, "timeout", allow_zero=True, maximum=float(2**31))


def time_bound_arg(value: object, field: str, default: str) -> str:
    """A datetime -> epoch ms for a stream range; ``None`` -> ``default`` ("-" / "+")."""
    if value is None:
        return default
    if isinstance(value, datetime):
        return str(int(value.timestamp() * 1000))
    raise errors.InvalidInput(f"{field} must be a datetime or None", field=field, value=value)


# ------------------------------------------------------------------------- choices
def _choice(value: object, choices: tuple[str, ...], field: str, what: str) -> Any:
    if not isinstance(value, str) or value not in choices:
        raise errors.InvalidOption(
            f"unknown {what} {value!r}; use one of {', '.join(choices)}", field=field, value=value
        )
    return value


def level_arg(level: object, field: str = "permission") -> PermissionLevel:
    result: PermissionLevel = _choice(level, LEVELS, field, "permission level")
    return result


def strategy_arg(strategy: object) -> Strategy:
    result: Strategy = _choice(strategy, STRATEGIES, "strategy", "strategy")
    return result


def over_quota_arg(policy: object) -> OverQuota:
    result: OverQuota = _choice(policy, OVER_QUOTA, "over_quota", "over-quota policy")
    return result


LOCK_MODES = {"exclusive": "x", "shared": "s"}  # the public name -> the lock script's


def lock_mode_arg(mode: object) -> str:
    """``"exclusive"`` / ``"shared"`` -> the lock script's ``"x"`` / ``"s"``."""
    if not isinstance(mode, str) or mode not in LOCK_MODES:
        raise errors.InvalidOption("mode must be 'exclusive' or 'shared'", field="mode", value=mode)
    return LOCK_MODES[mode]


# ------------------------------------------------------------------ keys and fences
def keys_arg(keys: Iterable[object], max_key_bytes: int) -> list[str]:
    """A collection of entry keys (not one str), deduplicated in order; at most MAX_BATCH."""
    if isinstance(keys, str | bytes):
        raise errors.InvalidInput("get_many takes a list of keys, not one str", field="keys")
    names = list(dict.fromkeys(key_arg(k, max_key_bytes) for k in keys))
    if len(names) > MAX_BATCH:
        raise errors.InvalidInput(f"get_many takes at most {MAX_BATCH} keys", field="keys")
    return names


def values_arg(values: object) -> Mapping[str, Any]:
    """put_many's {key: value}: a mapping of 1..MAX_BATCH keys (the keys are checked as
    they are encoded)."""
    if not isinstance(values, Mapping):
        raise errors.InvalidInput("values must be a mapping", field="values", value=type(values))
    if not 1 <= len(values) <= MAX_BATCH:
        raise errors.InvalidInput(
            f"put_many takes 1..{MAX_BATCH} keys", field="values", value=len(values)
        )
    return values


def expected_versions_arg(
    expected: Mapping[str, int | None] | None, values: Mapping[str, Any]
) -> dict[str, int | None]:
    """put_many's {key: expected version}: only keys being written (versions are checked
    with each item)."""
    out = dict(expected or {})
    for k in out:
        if k not in values:
            raise errors.InvalidInput(
                f"expected_versions names {k!r}, which is not being written",
                field="expected_versions",
                value=k,
            )
    return out


def fence_arg(fence: object, key: str, max_key_bytes: int) -> tuple[str, int] | None:
    """``None``, a :class:`FencingToken` (checked against its own lock), or a plain int
    token of the lock named like the key. Rejects bools, strings and out-of-range ints."""
    if fence is None:
        return None
    if isinstance(fence, FencingToken):
        token = version_arg(int(fence), "fence")
        lock = key_arg(fence.lock, max_key_bytes)
    else:
        if isinstance(fence, bool) or not isinstance(fence, int):
            raise errors.InvalidInput(
                "fence must be a lock's token (lock.token) or an int token of the key's lock",
                field="fence",
                value=fence,
            )
        token, lock = version_arg(fence, "fence"), key
    if not token:
        raise errors.InvalidInput("fence tokens are positive", field="fence", value=fence)
    return (lock, token)


def fences_arg(
    keys: list[str], fence: object, fences: Mapping[str, Any] | None, max_key_bytes: int
) -> dict[str, tuple[str, int]]:
    """One fence for every key (``fence``) or one per key (``fences``) -> {key: fence}."""
    if fences is not None and not isinstance(fences, Mapping):
        raise errors.InvalidInput("fences must be a {key: token} mapping", field="fences")
    out: dict[str, tuple[str, int]] = {}
    for k in keys:
        given = (fences or {}).get(k, fence)
        fenced = fence_arg(given, k, max_key_bytes)
        if fenced:
            out[k] = fenced
    for k in fences or {}:
        if k not in keys:
            raise errors.InvalidInput(
                f"fences names {k!r}, which is not being written", field="fences", value=k
            )
    return out


def key_pattern_arg(pattern: object) -> str:
    """A key listing's glob."""
    if not isinstance(pattern, str) or "\x00" in pattern:
        raise errors.InvalidInput("pattern must be a str without NUL", field="pattern")
    return pattern


# ------------------------------------------------------------------- agents and acl
def permissions_arg(permissions: object, *, required: bool) -> list[str]:
    """An {agent: level} mapping (``None`` = {} unless ``required``) -> the flat
    [agent, level, ...] the ns script takes."""
    if required and (not isinstance(permissions, Mapping) or not permissions):
        raise errors.InvalidInput(
            "grant takes a non-empty {agent: level} mapping", field="permissions"
        )
    if permissions is not None and not isinstance(permissions, Mapping):
        raise errors.InvalidInput(
            "permissions must be an {agent: level} mapping", field="permissions", value=permissions
        )
    pairs: list[str] = []
    for agent, level in (permissions or {}).items():
        pairs += [agent_arg(agent), level_arg(level)]
    return pairs


def agents_arg(agents: Iterable[object]) -> list[str]:
    """A non-empty collection of agent names (not one str)."""
    if isinstance(agents, str):
        raise errors.InvalidInput(
            "revoke takes a list of agent names", field="agents", value=agents
        )
    names = [agent_arg(a) for a in agents]
    if not names:
        raise errors.InvalidInput("revoke takes at least one agent", field="agents")
    return names


def namespaces_arg(namespaces: Iterable[object] | None) -> list[str]:
    """An optional collection of namespace names (not one str)."""
    if isinstance(namespaces, str):
        raise errors.InvalidInput(
            "namespaces must be a list of names", field="namespaces", value=namespaces
        )
    return [namespace_arg(n) for n in namespaces or ()]


def audit_action_arg(action: object) -> str:
    """An audit filter: an action name, or None for every action ("")."""
    if action is not None and (not isinstance(action, str) or not action.isidentifier()):
        raise errors.InvalidInput("action must be an action name", field="action", value=action)
    return action or ""


# ------------------------------------------------------------------------- events
def since_arg(since: object) -> str | None:
    """``None``/"now" -> None (start at the current end); an int revision r -> after r;
    an Event's cursor string -> right after that event."""
    if since is None or since == "now":
        return None
    if isinstance(since, bool) or not isinstance(since, int | str):
        raise errors.InvalidInput(
            "since must be a revision (int), an Event cursor (str) or 'now'",
            field="since",
            value=since,
        )
    if isinstance(since, int):
        version_arg(since, "since")
        return f"{since + 1}-0"
    if not _is_stream_id(since, _MAX_CURSOR_DIGITS):
        raise errors.InvalidInput("not an event cursor", field="since", value=since)
    return since


def types_arg(types: object) -> frozenset[str] | None:
    """A watch's event types: a collection of names (not one str), or None for all."""
    if types is None:
        return None
    if isinstance(types, str) or not isinstance(types, Iterable):
        raise errors.InvalidInput("types must be a collection of event type names", field="types")
    kinds = frozenset(types)
    if not all(isinstance(t, str) for t in kinds):
        raise errors.InvalidInput("types must be a collection of event type names", field="types")
    return frozenset(str(t) for t in kinds)


def pattern_arg(pattern: object) -> str:
    """A watch's key glob."""
    if not isinstance(pattern, str) or "\x00" in pattern:
        raise errors.InvalidInput("pattern must be a glob string", field="pattern", value=pattern)
    return pattern


# ------------------------------------------------------------------------- inboxes
def _printable(value: object, field: str, *, allow_none: bool) -> str | None:
    if value is None and allow_none:
        return None
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= _MAX_NAME
        or not value.isprintable()
        or value != value.strip()
    ):
        raise errors.InvalidInput(
            f"{field} must be 1..{_MAX_NAME} printable characters without surrounding spaces",
            field=field,
            value=value,
        )
    return value


def consumer_arg(consumer: object) -> str | None:
    return _printable(consumer, "consumer", allow_none=True)


def correlation_arg(correlation_id: object) -> str | None:
    return _printable(correlation_id, "correlation_id", allow_none=True)


def batch_arg(batch: object) -> int:
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= INBOX_MAX_BATCH:
        raise errors.InvalidInput(
            f"batch must be an int in 1..{INBOX_MAX_BATCH}", field="batch", value=batch
        )
    return batch


def message_id_arg(value: object) -> str:
    """A stream message id, ``<ms>-<seq>``."""
    if isinstance(value, str) and _is_stream_id(value, _MAX_ID_DIGITS):
        return value
    raise errors.InvalidInput(
        "expected a Message or a message id like '1700000000000-0'", field="message", value=value
    )

"""Bad input: a precise library error, raised before anything reaches Redis.

For every malformed argument the contract is threefold (DESIGN.md decision 9):

- the exact :class:`~swarm_memory.SwarmMemoryError` subclass, with its structured
  attributes (``field``, ``namespace``, ``key``) set;
- no script call was made (a recorder attached with ``observe_scripts``);
- the keyspace under the test's prefix is byte-for-byte what it was before.

Where a bad input only shows up after a round trip (a custom resolver that raises or
returns junk), the script recorder is not checked, but the keyspace still must not move.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from swarm_memory import (
    InvalidInput,
    InvalidName,
    InvalidOption,
    InvalidTTL,
    InvalidValue,
    InvalidVersion,
    ResolverError,
    SwarmMemoryError,
)
from tests.bad_names import BAD_COMMON

NAN, INF = float("nan"), float("inf")


# --------------------------------------------------------------------------- harness
@dataclass
class World:
    """A namespace ``team`` with a few entries (and history), plus a script recorder."""

    env: Any
    mem: Any
    ns: Any
    calls: list[str] = field(default_factory=list)

    def watch(self, memory: Any) -> Any:
        """Record the script calls of another client too; returns it."""
        memory.observe_scripts(lambda name, keys, args: self.calls.append(name))
        return memory

    def rejects(
        self,
        call: Callable[[], Any],
        exc_type: type[SwarmMemoryError],
        *,
        check_sent: bool = True,
        **attrs: Any,
    ) -> SwarmMemoryError:
        """Run ``call``; assert it raises exactly ``exc_type`` with ``attrs`` and left the
        keyspace (and, when ``check_sent``, the wire) untouched."""
        before = self.env.snapshot()
        self.calls.clear()
        with pytest.raises(SwarmMemoryError) as info:
            call()
        err = info.value
        assert type(err) is exc_type, (
            f"expected {exc_type.__name__}, got {type(err).__name__}: {err}"
        )
        for name, expected in attrs.items():
            assert getattr(err, name) == expected, (name, getattr(err, name), expected)
        if check_sent:
            assert self.calls == [], f"bad input reached Redis: scripts {self.calls}"
        assert self.env.snapshot() == before, "bad input changed the keyspace"
        return err

    def rejects_each(
        self, calls: dict[str, Callable[[], Any]], exc_type: type[SwarmMemoryError], **attrs: Any
    ) -> None:
        """:meth:`rejects` for one bad input through many operations: every operation is
        tried, and every one that misbehaves is reported (not just the first)."""
        before = self.env.snapshot()
        problems: list[str] = []
        for name, call in calls.items():
            self.calls.clear()
            try:
                call()
            except Exception as exc:
                if type(exc) is not exc_type:
                    problems.append(
                        f"{name}: raised {type(exc).__name__}: {exc!s:.200}, "
                        f"expected {exc_type.__name__}"
                    )
                else:
                    problems += [
                        f"{name}: .{attr} is {getattr(exc, attr)!r:.80}, expected {want!r}"
                        for attr, want in attrs.items()
                        if getattr(exc, attr) != want
                    ]
            else:
                problems.append(f"{name}: did not raise (expected {exc_type.__name__})")
            if self.calls:
                problems.append(f"{name}: bad input reached Redis: scripts {self.calls}")
            after = self.env.snapshot()
            if after != before:
                problems.append(f"{name}: changed the keyspace")
                before = after
        assert not problems, "\n".join(problems)


@pytest.fixture
def world(env: Any) -> World:
    mem = env.mem()
    mem.create_namespace("team", history=3, permissions={"auditor": "read"})
    ns = mem.namespace("team")
    ns.put("a", {"x": 1})
    ns.put("a", {"x": 2})
    ns.put("b", [1, 2])
    ns.incr("n", 5)
    w = World(env, mem, ns)
    w.watch(mem)
    return w


def _nested(depth: int) -> list[Any]:
    """``depth`` nested lists, built iteratively (no recursion)."""
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def _nested_dicts(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"d": value}
    return value


def _cycle_list() -> list[Any]:
    x: list[Any] = [1, 2]
    x.append(x)
    return x


def _cycle_dict() -> dict[str, Any]:
    x: dict[str, Any] = {"a": 1}
    x["self"] = {"inner": [x]}
    return x


# ------------------------------------------------------------------------- bad names
# Shared by keys, namespaces and agents: tests/bad_names.py.
BAD_KEYS = [
    *BAD_COMMON,
    pytest.param("a\ud800b", id="lone-surrogate"),
    pytest.param("k" * 513, id="513-ascii-bytes"),
    pytest.param("é" * 257, id="514-utf8-bytes-257-chars"),
    pytest.param("€" * 171, id="513-utf8-bytes-171-chars"),
]
# Namespace and agent names: conservative ASCII; no glob characters, no braces.
BAD_NAMES = [
    *BAD_COMMON,
    pytest.param("n" * 129, id="129-chars"),
    pytest.param("ns*", id="star"),
    pytest.param("ns?", id="question"),
    pytest.param("ns[1]", id="brackets"),
    pytest.param("ns[", id="open-bracket"),
    pytest.param("ns]", id="close-bracket"),
    pytest.param("{ns}", id="braces"),
    pytest.param("ns{", id="open-brace"),
    pytest.param("n}s", id="close-brace"),
    pytest.param("has space", id="inner-space"),
    pytest.param("équipe", id="non-ascii"),
    pytest.param("-lead", id="leading-dash"),
    pytest.param('"); redis.call("FLUSHALL"); --', id="lua-ish"),
]

KEY_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "put": lambda ns, k: ns.put(k, 1),
    "put-cas": lambda ns, k: ns.put(k, 1, expected_version=0),
    "create": lambda ns, k: ns.create(k, 1),
    "get": lambda ns, k: ns.get(k),
    "get-version": lambda ns, k: ns.get(k, version=1),
    "delete": lambda ns, k: ns.delete(k),
    "exists": lambda ns, k: ns.exists(k),
    "incr": lambda ns, k: ns.incr(k, 1),
    "touch": lambda ns, k: ns.touch(k, 10),
    "history": lambda ns, k: ns.history(k),
    "rollback": lambda ns, k: ns.rollback(k, to_version=1),
    "update": lambda ns, k: ns.update(k, lambda v: 1),
    "put_many": lambda ns, k: ns.put_many({"a": 3, k: 1, "c": 2}),
    "get_many": lambda ns, k: ns.get_many(["a", k, "b"]),
}


def _each(ops: dict[str, Callable[..., Any]], *args: Any) -> dict[str, Callable[[], Any]]:
    """Bind ``args`` to every operation of a table (one bad input, every operation)."""
    return {name: functools.partial(op, *args) for name, op in ops.items()}


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_key_is_rejected_client_side(world, key):
    world.rejects_each(_each(KEY_OPS, world.ns, key), InvalidName, field="key")


def test_unhashable_key_is_an_invalid_name(world):
    """A list is not a key; it must not surface as a TypeError from building a dict."""
    ops = {name: op for name, op in KEY_OPS.items() if name != "put_many"}
    world.rejects_each(_each(ops, world.ns, ["a"]), InvalidName, field="key")


@pytest.mark.parametrize(
    "key", ["k" * 512, "é" * 256, "€" * 170 + "kk", "{team}", "}{", "a b", "ключ", "🔑"]
)
def test_boundary_keys_are_accepted(world, key):
    """Positive controls for the rules above (512 UTF-8 bytes is the limit, inclusive)."""
    assert world.ns.put(key, "v").value == "v"
    assert world.ns.get(key).value == "v"


NS_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "namespace": lambda mem, n: mem.namespace(n),
    "create_namespace": lambda mem, n: mem.create_namespace(n),
    "create_namespace-exist_ok": lambda mem, n: mem.create_namespace(n, exist_ok=True),
    "namespace_info": lambda mem, n: mem.namespace_info(n),
    "update_namespace": lambda mem, n: mem.update_namespace(n, history=1),
    "clear_namespace": lambda mem, n: mem.clear_namespace(n),
    "delete_namespace": lambda mem, n: mem.delete_namespace(n),
}


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_namespace_name_is_rejected_client_side(world, name):
    world.rejects_each(_each(NS_OPS, world.mem, name), InvalidName, field="namespace")


def test_longest_namespace_name_is_accepted(world):
    name = "n" * 128
    info = world.mem.create_namespace(name)
    assert info.name == name


AGENT_OPS: dict[str, Callable[[World, Any], Any]] = {
    "client": lambda w, a: w.env.mem(agent=a),
    "as_agent": lambda w, a: w.mem.as_agent(a),
    "create_namespace-permissions": lambda w, a: w.mem.create_namespace(
        "fresh", permissions={"auditor": "read", a: "write"}
    ),
    "grant": lambda w, a: w.ns.grant({"worker": "write", a: "read"}),
    "revoke": lambda w, a: w.ns.revoke(["auditor", a]),
}


@pytest.mark.parametrize("agent", BAD_NAMES)
def test_bad_agent_name_is_rejected_client_side(world, agent):
    world.rejects_each(_each(AGENT_OPS, world, agent), InvalidName, field="agent")


@pytest.mark.parametrize(
    "pattern",
    [pytest.param("a\x00*", id="nul"), pytest.param(1, id="int"), pytest.param(None, id="none")],
)
def test_bad_key_pattern(world, pattern):
    world.rejects(lambda: list(world.ns.keys(pattern)), InvalidInput, field="pattern")


# ------------------------------------------------------------------------ bad values
BAD_VALUES: list[Any] = [
    pytest.param(lambda: {1, 2}, id="set"),
    pytest.param(frozenset, id="frozenset"),
    pytest.param(object, id="object"),
    pytest.param(lambda: b"raw", id="bytes"),
    pytest.param(lambda: bytearray(b"raw"), id="bytearray"),
    pytest.param(lambda: NAN, id="nan"),
    pytest.param(lambda: INF, id="inf"),
    pytest.param(lambda: -INF, id="-inf"),
    pytest.param(lambda: {"a": [1, {"b": NAN}]}, id="nested-nan"),
    pytest.param(lambda: [1, 2, INF], id="nested-inf"),
    pytest.param(lambda: {"x": -INF}, id="nested--inf"),
    pytest.param(lambda: {NAN: 1}, id="nan-dict-key"),
    pytest.param(lambda: {"a": {1, 2}}, id="nested-set"),
    pytest.param(lambda: [b"raw"], id="nested-bytes"),
    pytest.param(lambda: {(1, 2): "tuple key"}, id="tuple-dict-key"),
    # json would store these as "1", "true", "null", "1.5": the round trip is not exact.
    pytest.param(lambda: {1: "x"}, id="int-dict-key"),
    pytest.param(lambda: {True: "x"}, id="bool-dict-key"),
    pytest.param(lambda: {None: "x"}, id="none-dict-key"),
    pytest.param(lambda: {1.5: "x"}, id="float-dict-key"),
    pytest.param(lambda: {"a": [{"b": {2: "x"}}]}, id="nested-int-dict-key"),
    pytest.param(lambda: [{"ok": 1}, {"ok": 2, 3: "x"}], id="int-key-in-list"),
    pytest.param(lambda: {"f": print}, id="nested-function"),
    pytest.param(lambda: "a\ud800b", id="lone-surrogate"),
    pytest.param(lambda: {"s": ["\udfff"]}, id="nested-lone-surrogate"),
    pytest.param(lambda: _nested(33), id="depth-33"),
    pytest.param(lambda: _nested(40), id="depth-40"),
    pytest.param(lambda: _nested_dicts(40), id="dict-depth-40"),
    pytest.param(lambda: _nested(100_000), id="depth-100000"),
    pytest.param(_cycle_list, id="cycle-list"),
    pytest.param(_cycle_dict, id="cycle-dict"),
]

VALUE_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "put-new": lambda ns, v: ns.put("new", v),
    "put-existing": lambda ns, v: ns.put("a", v),
    "put-cas": lambda ns, v: ns.put("a", v, expected_version=2),
    "create": lambda ns, v: ns.create("new", v),
    "put_many-first": lambda ns, v: ns.put_many({"new": v, "a": 1}),
    "put_many-last": lambda ns, v: ns.put_many({"a": 1, "b": 2, "new": v}),
}


@pytest.mark.parametrize("make", BAD_VALUES)
def test_bad_value_is_rejected_client_side(world, make):
    world.rejects_each(_each(VALUE_OPS, world.ns, make()), InvalidValue, field="value")


@pytest.mark.parametrize("strategy", ["first-wins", "version", "merge", "custom"])
@pytest.mark.parametrize("make", BAD_VALUES[:3] + BAD_VALUES[-3:])
def test_bad_value_is_rejected_under_every_strategy(world, strategy, make):
    world.mem.create_namespace("s", strategy=strategy)
    ns = world.mem.namespace("s", resolver=lambda cur, inc: inc.value)
    value = make()
    world.rejects(lambda: ns.put("k", value, expected_version=0), InvalidValue, field="value")


def test_deepest_allowed_value_round_trips(world):
    value = _nested(32)  # settings.max_depth, inclusive
    world.ns.put("deep", value)
    assert world.ns.get("deep").value == value


def _incompressible(n_bytes: int) -> str:
    return random.Random(7).randbytes(n_bytes // 2).hex()


@pytest.mark.parametrize(
    "threshold", [pytest.param(0, id="compression-off"), pytest.param(256, id="compression-on")]
)
@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: _incompressible(2100), id="str"),
        pytest.param(lambda: {"blob": _incompressible(2100)}, id="dict"),
        pytest.param(lambda: list(random.Random(3).choices(range(10**9), k=250)), id="list"),
    ],
)
def test_value_over_size_limit(world, threshold, make):
    mem = world.watch(world.env.mem(max_value_bytes=1024, compress_threshold=threshold))
    ns = mem.namespace("team")
    value = make()
    world.rejects(lambda: ns.put("big", value), InvalidValue, field="value")
    world.rejects(lambda: ns.put_many({"a": 1, "big": value}), InvalidValue, field="value")
    world.rejects(lambda: ns.create("big", value), InvalidValue, field="value")


def test_size_limit_applies_after_compression(world):
    """Positive control: 3 KB that compresses well fits 1 KB only with compression on."""
    value = "a" * 3000
    off = world.watch(world.env.mem(max_value_bytes=1024, compress_threshold=0))
    world.rejects(lambda: off.namespace("team").put("big", value), InvalidValue, field="value")
    on = world.env.mem(max_value_bytes=1024, compress_threshold=256)
    entry = on.namespace("team").put("big", value)
    assert entry.size <= 1024
    assert on.namespace("team").get("big").value == value


# --------------------------------------------------------------------------- bad TTL
BAD_TTLS = [
    pytest.param(0, id="zero"),
    pytest.param(0.0, id="zero-float"),
    pytest.param(-1, id="negative"),
    pytest.param(-0.5, id="negative-float"),
    pytest.param(NAN, id="nan"),
    pytest.param(INF, id="inf"),
    pytest.param(-INF, id="-inf"),
    pytest.param(1e12, id="absurd"),
    pytest.param(366 * 86400 + 1, id="above-max_ttl"),
    pytest.param(True, id="true"),
    pytest.param(False, id="false"),
    pytest.param("10", id="str"),
    pytest.param(b"10", id="bytes"),
    pytest.param([10], id="list"),
    pytest.param(timedelta(0), id="timedelta-0"),
    pytest.param(timedelta(seconds=-1), id="timedelta-negative"),
    pytest.param(timedelta(days=10_000), id="timedelta-absurd"),
    pytest.param(timedelta(microseconds=100), id="timedelta-below-1ms"),
    pytest.param(0.0001, id="below-1ms"),
    pytest.param(0.00049, id="rounds-to-0ms"),
]

TTL_OPS: dict[str, Callable[[World, Any], Any]] = {
    "put": lambda w, t: w.ns.put("a", 1, ttl=t),
    "create": lambda w, t: w.ns.create("new", 1, ttl=t),
    "put_many": lambda w, t: w.ns.put_many({"a": 1, "new": 2}, ttl=t),
    "incr": lambda w, t: w.ns.incr("n", 1, ttl=t),
    "touch": lambda w, t: w.ns.touch("a", t),
    "update": lambda w, t: w.ns.update("a", lambda v: v, ttl=t),
    "create_namespace": lambda w, t: w.mem.create_namespace("fresh", ttl=t),
    "update_namespace": lambda w, t: w.mem.update_namespace("team", ttl=t),
}


@pytest.mark.parametrize("ttl", BAD_TTLS)
def test_bad_ttl_is_rejected_client_side(world, ttl):
    world.rejects_each(_each(TTL_OPS, world, ttl), InvalidTTL, field="ttl")


def test_touch_without_ttl(world):
    world.rejects(lambda: world.ns.touch("a", None), InvalidTTL, field="ttl")


def test_smallest_ttl_is_accepted(world):
    entry = world.ns.put("short", 1, ttl=0.001)  # exactly 1 ms
    assert entry.expires_at is not None


# ----------------------------------------------------------------------- bad versions
BAD_VERSIONS = [
    pytest.param(True, id="true"),
    pytest.param(False, id="false"),
    pytest.param("0x10", id="hex-str"),
    pytest.param("5", id="str"),
    pytest.param(b"5", id="bytes"),
    pytest.param(1.0, id="float"),
    pytest.param(NAN, id="nan"),
    pytest.param(-1, id="negative"),
    pytest.param(2**53, id="2**53"),
    pytest.param(2**63, id="2**63"),
    pytest.param(-(2**63), id="-2**63"),
    pytest.param([1], id="list"),
]

VERSION_OPS: dict[str, tuple[Callable[[Any, Any], Any], str]] = {
    "put": (lambda ns, v: ns.put("a", 1, expected_version=v), "expected_version"),
    "delete": (lambda ns, v: ns.delete("a", expected_version=v), "expected_version"),
    "get": (lambda ns, v: ns.get("a", version=v), "version"),
    "rollback": (lambda ns, v: ns.rollback("a", to_version=v), "to_version"),
    "put_many": (
        lambda ns, v: ns.put_many({"a": 1, "b": 2}, expected_versions={"a": 2, "b": v}),
        "expected_version",
    ),
}


@pytest.mark.parametrize("op", list(VERSION_OPS))
@pytest.mark.parametrize("version", BAD_VERSIONS)
def test_bad_version_is_rejected_client_side(world, op, version):
    call, field_name = VERSION_OPS[op]
    world.rejects(lambda: call(world.ns, version), InvalidVersion, field=field_name)


def test_largest_version_is_accepted(world):
    """2**53-1 is a valid version (it simply is not there): it reaches Redis."""
    assert world.ns.get("a", version=2**53 - 1) is None


# ----------------------------------------------------------------------- bad options
BAD_NS_OPTIONS = [
    pytest.param({"strategy": "bogus"}, InvalidOption, "strategy", id="strategy-unknown"),
    pytest.param({"strategy": "LATEST-WINS"}, InvalidOption, "strategy", id="strategy-case"),
    pytest.param({"strategy": None}, InvalidOption, "strategy", id="strategy-none"),
    pytest.param({"strategy": 1}, InvalidOption, "strategy", id="strategy-int"),
    pytest.param(
        {"default_permission": "root"}, InvalidOption, "default_permission", id="default-unknown"
    ),
    pytest.param(
        {"default_permission": "Write"}, InvalidOption, "default_permission", id="default-case"
    ),
    pytest.param(
        {"default_permission": None}, InvalidOption, "default_permission", id="default-none"
    ),
    pytest.param({"over_quota": "drop"}, InvalidOption, "over_quota", id="over_quota-unknown"),
    pytest.param({"over_quota": None}, InvalidOption, "over_quota", id="over_quota-none"),
    pytest.param({"history": -1}, InvalidInput, "history", id="history-negative"),
    pytest.param({"history": True}, InvalidInput, "history", id="history-bool"),
    pytest.param({"history": 10_001}, InvalidInput, "history", id="history-above-10000"),
    pytest.param({"history": 2**63}, InvalidInput, "history", id="history-huge"),
    pytest.param({"history": 2.0}, InvalidInput, "history", id="history-float"),
    pytest.param({"history": "3"}, InvalidInput, "history", id="history-str"),
    pytest.param({"max_keys": 0}, InvalidInput, "max_keys", id="max_keys-zero"),
    pytest.param({"max_keys": -1}, InvalidInput, "max_keys", id="max_keys-negative"),
    pytest.param({"max_keys": True}, InvalidInput, "max_keys", id="max_keys-bool"),
    pytest.param({"max_keys": 10.0}, InvalidInput, "max_keys", id="max_keys-float"),
    pytest.param({"max_keys": "10"}, InvalidInput, "max_keys", id="max_keys-str"),
    pytest.param({"max_keys": 2**53}, InvalidInput, "max_keys", id="max_keys-2**53"),
    pytest.param({"max_bytes": 0}, InvalidInput, "max_bytes", id="max_bytes-zero"),
    pytest.param({"max_bytes": -1024}, InvalidInput, "max_bytes", id="max_bytes-negative"),
    pytest.param({"max_bytes": False}, InvalidInput, "max_bytes", id="max_bytes-bool"),
    pytest.param({"max_bytes": 1e6}, InvalidInput, "max_bytes", id="max_bytes-float"),
]


@pytest.mark.parametrize(("options", "exc_type", "field_name"), BAD_NS_OPTIONS)
def test_create_namespace_bad_option(world, options, exc_type, field_name):
    world.rejects(
        lambda: world.mem.create_namespace("fresh", **options), exc_type, field=field_name
    )


@pytest.mark.parametrize(("options", "exc_type", "field_name"), BAD_NS_OPTIONS)
def test_update_namespace_bad_option(world, options, exc_type, field_name):
    world.rejects(lambda: world.mem.update_namespace("team", **options), exc_type, field=field_name)


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"colour": "blue"}, id="unknown"),
        pytest.param({"permissions": {"x": "read"}}, id="permissions"),
        pytest.param({"exist_ok": True}, id="exist_ok"),
        pytest.param({"history": 2, "owner": "other"}, id="good-then-unknown"),
    ],
)
def test_update_namespace_unknown_option(world, options):
    unknown = next(k for k in options if k != "history")
    world.rejects(
        lambda: world.mem.update_namespace("team", **options), InvalidOption, field=unknown
    )


def test_update_namespace_bad_option_after_good_ones_changes_nothing(world):
    world.rejects(
        lambda: world.mem.update_namespace("team", history=7, max_keys=5, strategy="nope"),
        InvalidOption,
        field="strategy",
    )


@pytest.mark.parametrize(
    "level", ["superuser", "READ", "", None, 2, pytest.param(b"read", id="bytes")]
)
def test_unknown_permission_level_in_permissions(world, level):
    world.rejects(
        lambda: world.mem.create_namespace("fresh", permissions={"worker": level}),
        InvalidOption,
        field="permission",
    )


@pytest.mark.parametrize(
    "level", ["superuser", "READ", "", None, 2, pytest.param(b"read", id="bytes")]
)
def test_unknown_permission_level_in_grant(world, level):
    world.rejects(
        lambda: world.ns.grant({"worker": "read", "other": level}),
        InvalidOption,
        field="permission",
    )


@pytest.mark.parametrize(
    "permissions",
    [pytest.param("worker", id="str"), pytest.param(["worker"], id="list")],
)
def test_permissions_must_be_a_mapping(world, permissions):
    world.rejects(
        lambda: world.mem.create_namespace("fresh", permissions=permissions),
        InvalidInput,
        field="permissions",
    )


@pytest.mark.parametrize(
    "permissions",
    [
        pytest.param({}, id="empty"),
        pytest.param(["worker"], id="list"),
        pytest.param("w", id="str"),
    ],
)
def test_grant_takes_a_non_empty_mapping(world, permissions):
    world.rejects(lambda: world.ns.grant(permissions), InvalidInput, field="permissions")


@pytest.mark.parametrize(
    "agents",
    [pytest.param("auditor", id="single-string"), pytest.param([], id="empty")],
)
def test_revoke_takes_a_list_of_names(world, agents):
    world.rejects(lambda: world.ns.revoke(agents), InvalidInput, field="agents")


def test_resolver_must_be_callable(world):
    world.rejects(
        lambda: world.mem.namespace("team", resolver="merge"), InvalidInput, field="resolver"
    )


def test_update_fn_must_be_callable(world):
    world.rejects(lambda: world.ns.update("a", {"x": 3}), InvalidInput, field="fn")


# --------------------------------------------------------------------------- resolvers
class Boom(RuntimeError):
    pass


def _raising(current, incoming):
    raise Boom("resolver exploded")


BAD_RESOLVERS: list[Any] = [
    pytest.param(_raising, Boom, id="raises"),
    pytest.param(lambda cur, inc: {1, 2}, InvalidValue, id="returns-set"),
    pytest.param(lambda cur, inc: NAN, InvalidValue, id="returns-nan"),
    pytest.param(lambda cur, inc: object(), InvalidValue, id="returns-object"),
    pytest.param(lambda cur, inc: _cycle_list(), InvalidValue, id="returns-cycle"),
]


@pytest.fixture
def custom(world):
    world.mem.create_namespace("c", strategy="custom")
    good = world.mem.namespace("c", resolver=lambda cur, inc: inc.value)
    good.put("k", {"v": 1})
    good.put("other", "untouched")
    return world


@pytest.mark.parametrize("key", ["k", "absent"])
@pytest.mark.parametrize(("resolver", "cause"), BAD_RESOLVERS)
def test_bad_resolver_raises_resolver_error_and_writes_nothing(custom, resolver, cause, key):
    ns = custom.mem.namespace("c", resolver=resolver)
    err = custom.rejects(lambda: ns.put(key, {"v": 2}), ResolverError, check_sent=False, key=key)
    assert err.namespace == "c"
    assert isinstance(err.__cause__, cause)
    if cause is Boom:
        assert str(err.__cause__) == "resolver exploded"
    assert custom.calls.count("write") <= 1, "a write was attempted with the junk value"
    good = custom.mem.namespace("c")
    assert good.get("k").value == {"v": 1} and good.get("k").version == 1
    assert good.get("absent") is None


@pytest.mark.parametrize(("resolver", "cause"), BAD_RESOLVERS)
def test_bad_resolver_in_put_many_writes_nothing(custom, resolver, cause):
    """The resolver fails on the second key only: the first must not be written either."""

    def picky(current, incoming):
        return incoming.value if incoming.key == "k" else resolver(current, incoming)

    ns = custom.mem.namespace("c", resolver=picky)
    err = custom.rejects(
        lambda: ns.put_many({"k": {"v": 9}, "other": "changed"}),
        ResolverError,
        check_sent=False,
        key="other",
    )
    assert isinstance(err.__cause__, cause)
    good = custom.mem.namespace("c")
    assert good.get("k").value == {"v": 1} and good.get("other").value == "untouched"


def test_update_fn_returning_junk_writes_nothing(world):
    """A non-JSON return from an update fn is a bad value like any other (errors.py)."""
    before = world.env.snapshot()
    world.calls.clear()
    with pytest.raises(InvalidValue) as exc:
        world.ns.update("a", lambda v: {1, 2})
    assert exc.value.field == "value"
    assert "write" not in world.calls
    assert world.env.snapshot() == before


# -------------------------------------------------------------------------------- incr
@pytest.mark.parametrize(
    "amount",
    [
        pytest.param(True, id="true"),
        pytest.param(False, id="false"),
        pytest.param(1.5, id="float"),
        pytest.param(1.0, id="integral-float"),
        pytest.param(NAN, id="nan"),
        pytest.param(2**60, id="2**60"),
        pytest.param(2**53, id="2**53"),
        pytest.param(-(2**53), id="-2**53"),
        pytest.param("1", id="str"),
        pytest.param(None, id="none"),
    ],
)
@pytest.mark.parametrize("key", ["n", "fresh-counter"])
def test_incr_bad_amount(world, amount, key):
    world.rejects(lambda: world.ns.incr(key, amount), InvalidInput, field="amount")


# --------------------------------------------------------------------------- Lua-ish text
LUA_TEXT = [
    '"); redis.call("FLUSHALL"); --',
    "]]..redis.call('DEL', KEYS[1])..[[",
    "redis.call('FLUSHALL')",
    "\\\"; return redis.call('FLUSHDB') --",
    "%s%d%%n",
    "' or 1=1 --",
    "e:a",
    "../h:a",
    "{team}:e:a",
    "}{",
    "KEYS[1]",
    "ARGV[2]",
]


def _entry_keys(env, names):
    base = f"{env.prefix}:{{team}}:"
    return {(base + kind + n).encode() for n in names for kind in ("e:", "h:")}


@pytest.mark.parametrize("text", LUA_TEXT)
def test_lua_looking_text_is_stored_inert(world, text):
    ns = world.ns
    before = world.env.snapshot()
    guarded = {k: v for k, v in before.items() if k in _entry_keys(world.env, ["a", "b", "n"])}
    assert len(guarded) >= 4

    value = {"text": text, "list": [text, 1], text: text}
    ns.put(text, value)
    ns.put("plain", text)
    ns.put_many({text + "-many": text, "many-" + text: [text]})

    assert ns.get(text).value == value
    assert ns.get("plain").value == text
    got = ns.get_many([text + "-many", "many-" + text])
    assert got[text + "-many"].value == text and got["many-" + text].value == [text]
    assert set(ns.keys()) == {"a", "b", "n", "plain", text, text + "-many", "many-" + text}
    assert ns.exists(text)
    assert ns.incr(text + "-n", 2) == 2

    after = world.env.snapshot()
    assert set(before) <= set(after), "keys vanished"
    assert {k: after[k] for k in guarded} == guarded, "other entries changed"
    assert ns.get("a").value == {"x": 2} and ns.get("b").value == [1, 2]

    assert ns.delete(text) is True
    assert ns.get(text) is None and ns.get("a").value == {"x": 2}


# ------------------------------------------------------------------ put_many / get_many
@pytest.mark.parametrize(
    "values",
    [
        pytest.param({}, id="empty"),
        pytest.param([("a", 1)], id="list-of-pairs"),
        pytest.param("ab", id="str"),
        pytest.param(None, id="none"),
        pytest.param(42, id="int"),
    ],
)
def test_put_many_needs_a_non_empty_mapping(world, values):
    world.rejects(lambda: world.ns.put_many(values), InvalidInput, field="values")


@pytest.mark.parametrize(
    "expected",
    [
        pytest.param({"zzz": 0}, id="unknown-key"),
        pytest.param({"a": 2, "zzz": None}, id="unknown-key-none"),
    ],
)
def test_put_many_expected_versions_must_name_written_keys(world, expected):
    world.rejects(
        lambda: world.ns.put_many({"a": 1, "b": 2}, expected_versions=expected),
        InvalidInput,
        field="expected_versions",
    )


def test_get_many_with_one_bad_key_sends_nothing(world):
    world.rejects(lambda: world.ns.get_many(["a", "b", "bad\x00", "n"]), InvalidName, field="key")


def test_get_many_with_a_bare_string(world):
    """A str is iterable; get_many("ab") must not quietly read keys "a" and "b"."""
    world.rejects(lambda: world.ns.get_many("ab"), InvalidInput, field="keys")


def test_get_many_empty_sends_nothing(world):
    world.calls.clear()
    assert world.ns.get_many([]) == {}
    assert world.calls == []


# ------------------------------------------------------------------------------- op ids
BAD_OP_IDS = [
    pytest.param("", id="empty"),
    pytest.param("x" * 129, id="129-chars"),
    pytest.param("x" * 200, id="200-chars"),
    pytest.param("op\nid", id="newline"),
    pytest.param("op\x00id", id="nul"),
    pytest.param(123, id="int"),
    pytest.param(b"op", id="bytes"),
    pytest.param(["op"], id="list"),
]

OP_ID_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "put": lambda ns, o: ns.put("a", 1, op_id=o),
    "create": lambda ns, o: ns.create("new", 1, op_id=o),
    "delete": lambda ns, o: ns.delete("a", op_id=o),
    "put_many": lambda ns, o: ns.put_many({"a": 1, "new": 2}, op_id=o),
    "update": lambda ns, o: ns.update("a", lambda v: 3, op_id=o),
    "incr": lambda ns, o: ns.incr("n", 1, op_id=o),
    "touch": lambda ns, o: ns.touch("a", 10, op_id=o),
    "rollback": lambda ns, o: ns.rollback("a", to_version=1, op_id=o),
}


@pytest.mark.parametrize("op_id", BAD_OP_IDS)
def test_bad_op_id_is_rejected_client_side(world, op_id):
    world.rejects_each(_each(OP_ID_OPS, world.ns, op_id), InvalidInput, field="op_id")


def test_longest_op_id_is_accepted(world):
    assert world.ns.put("a", 3, op_id="o" * 128).version == 3

"""The public surface: exports, sync/async parity, shipped scripts and their headers."""

from __future__ import annotations

import inspect
import re
import zipfile
from pathlib import Path

import pytest

import swarm_memory
from swarm_memory import (
    AgentContext,
    AsyncAgentContext,
    AsyncBundle,
    AsyncGraph,
    AsyncNamespace,
    AsyncOutcomes,
    AsyncSemanticIndex,
    AsyncSession,
    AsyncSwarmMemory,
    Bundle,
    Graph,
    Namespace,
    Outcomes,
    SemanticIndex,
    Session,
    SwarmMemory,
)
from swarm_memory.keys import GraphKeys, NamespaceKeys
from swarm_memory.scripts import SCRIPT_NAMES, Signature, load

ROOT = Path(__file__).resolve().parents[2]


def test_all_is_sorted_and_complete():
    assert swarm_memory.__all__ == sorted(swarm_memory.__all__)
    for name in swarm_memory.__all__:
        assert hasattr(swarm_memory, name), name


def test_design_contract_names_exist():
    """Names DESIGN.md's public API contract relies on (add freely, rename never)."""
    for cls in (SwarmMemory, AsyncSwarmMemory):
        for name in ("from_url", "create_namespace", "namespace", "as_agent"):
            assert callable(getattr(cls, name)), (cls, name)
    for handle in (Namespace, AsyncNamespace):
        for name in (
            "put",
            "create",
            "get",
            "delete",
            "exists",
            "keys",
            "get_many",
            "put_many",
            "update",
            "incr",
            "history",
            "rollback",
            "grant",
            "revoke",
            "stats",
            "touch",
            "lock",
            "locks",
            "force_release",
            "transaction",
            "get_or_set",
        ):
            assert callable(getattr(handle, name)), (handle, name)
    for cls in (SwarmMemory, AsyncSwarmMemory):
        for name in ("heartbeat", "lease", "agents"):
            assert callable(getattr(cls, name)), (cls, name)


@pytest.mark.parametrize(
    ("sync_cls", "async_cls"),
    [
        (SwarmMemory, AsyncSwarmMemory),
        (Namespace, AsyncNamespace),
        (AgentContext, AsyncAgentContext),
        (Session, AsyncSession),
        (Outcomes, AsyncOutcomes),
        (Graph, AsyncGraph),
        (Bundle, AsyncBundle),
        (SemanticIndex, AsyncSemanticIndex),
    ],
)
def test_sync_and_async_have_identical_signatures(sync_cls, async_cls):
    def public(cls):
        out = {}
        for n in dir(cls):
            m = inspect.getattr_static(cls, n)
            if not n.startswith("_") and (callable(m) or isinstance(m, classmethod)):
                out[n] = m
        return out

    sync_methods, async_methods = public(sync_cls), public(async_cls)
    assert set(sync_methods) - {"close"} == set(async_methods) - {"close"}
    for name, method in sync_methods.items():
        other = async_methods[name]
        fn = method.__func__ if isinstance(method, classmethod) else method
        afn = other.__func__ if isinstance(other, classmethod) else other
        sp = [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]
        ap = [(p.name, p.kind, p.default) for p in inspect.signature(afn).parameters.values()]
        assert sp == ap, name
        returns_handle = name in (
            "from_url", "from_client", "as_agent", "namespace", "keys", "lock", "transaction",
            "inboxes", "context", "session", "sessions", "outcomes",
            "graph", "bundle", "semantic", "cached",
        )  # fmt: skip
        if not returns_handle and name not in ("observe_scripts", "close"):
            assert inspect.iscoroutinefunction(afn), f"{async_cls.__name__}.{name} must be async"


def test_every_script_has_a_header_the_loader_checks():
    for name in SCRIPT_NAMES:
        script = load(name)
        assert re.fullmatch(r"[0-9a-f]{40}", script.sha)
        with pytest.raises(ValueError):
            script.check(["only-one-key"], [])
        if name == "inbox":  # an agent's inbox: its own keys under its own hash tag
            assert script.keys.fixed == ("stream", "ops", "opst", "bell", "meta", "senders")
            assert script.args.fixed == ("action", "agent", "owner", "group", "retention_ms")
            continue
        if name == "lane":  # a sender's lane in another agent's inbox, under its hash tag
            assert script.keys.fixed == ("lane", "ops", "opst", "senders")
            continue
        if name == "presence":  # agents' heartbeats: their own keys, outside namespaces
            assert script.keys.fixed == ("exp", "seen")
            continue
        # Every namespace script takes the fixed names in the order keys.py builds them
        # (the memory graph's script then its graph's, in GraphKeys order); the read
        # script only the seven it uses, in NamespaceKeys.read_fixed's order.
        fixed = script.keys.fixed
        if name == "read":
            nk = NamespaceKeys.of("sm", "team")
            assert fixed == ("meta", "acl", "stats", "idx", "exp", "audit", "lease")
            assert [k[len(nk.base) :] for k in nk.read_fixed()] == [
                "meta", "acl", "stats", "idx", "exp", "audit", "lease",
            ]  # fmt: skip
            continue
        if name == "get":  # the three its common path uses, in NamespaceKeys.get_fixed's order
            nk = NamespaceKeys.of("sm", "team")
            assert fixed == ("acl", "exp", "lease")
            assert [k[len(nk.base) :] for k in nk.get_fixed()] == list(fixed)
            continue
        if name == "write":  # the fourteen it uses, in NamespaceKeys.write_fixed's order
            nk = NamespaceKeys.of("sm", "team")
            write_keys = (
                "meta", "acl", "stats", "idx", "lru", "exp", "events", "audit", "ops", "opst",
                "bell", "lease", "eph", "lockh",
            )  # fmt: skip
            assert fixed == write_keys
            assert tuple(k[len(nk.base) :] for k in nk.write_fixed()) == write_keys
            assert script.args.fixed == (
                "agent", "op_id", "limits", "counts", "action", "digest", "echo", "eph_ms",
            )  # fmt: skip
            continue
        if name == "put":  # the eleven a single put uses, in NamespaceKeys.put_fixed's order
            nk = NamespaceKeys.of("sm", "team")
            put_keys = (
                "meta", "acl", "stats", "idx", "exp", "events", "audit", "ops", "opst", "bell",
                "lease",
            )  # fmt: skip
            assert fixed == put_keys
            assert tuple(k[len(nk.base) :] for k in nk.put_fixed()) == put_keys
            assert script.keys.groups == (("items", 2),)
            assert script.args.fixed == (
                "agent", "op_id", "limits", "head", "key", "value", "digest",
            )  # fmt: skip
            continue
        if name == "acquire":  # the eight an acquire uses, in NamespaceKeys.acquire_fixed's order
            nk = NamespaceKeys.of("sm", "team")
            acquire_keys = ("meta", "acl", "stats", "audit", "lease", "eph", "locks", "lockh")
            assert fixed == acquire_keys
            assert tuple(k[len(nk.base) :] for k in nk.acquire_fixed()) == acquire_keys
            assert script.args.fixed == (
                "agent", "audit_maxlen", "name", "owner", "ttl_ms", "mode", "lease_ms",
            )  # fmt: skip
            continue
        if name == "release":  # the ten a release uses, in NamespaceKeys.release_fixed's order
            nk = NamespaceKeys.of("sm", "team")
            release_keys = (
                "meta", "acl", "stats", "audit", "ops", "opst", "eph", "locks", "lockh", "lbell",
            )  # fmt: skip
            assert fixed == release_keys
            assert tuple(k[len(nk.base) :] for k in nk.release_fixed()) == release_keys
            assert script.args.fixed == (
                "agent", "limits", "name", "owner", "op_id", "held_x", "held_token",
            )  # fmt: skip
            continue
        if name == "lock":  # the thirteen it uses, in NamespaceKeys.lock_fixed's order
            nk = NamespaceKeys.of("sm", "team")
            lock_keys = (
                "meta", "acl", "stats", "events", "audit", "ops", "opst", "bell",
                "lease", "eph", "locks", "lockh", "lbell",
            )  # fmt: skip
            assert fixed == lock_keys
            assert tuple(k[len(nk.base) :] for k in nk.lock_fixed()) == lock_keys
            continue
        if name == "graph":
            gk = GraphKeys.of("sm", "team")
            assert [k[len(gk.base) :] for k in gk.fixed()] == [
                "meta", "n", "f", "ix", "c", "x", "adj", "w", "b",
            ]  # fmt: skip
            assert fixed[16:] == (
                "gmeta", "nodes", "facts", "gix", "conf", "gexp", "adj", "weights", "bundles",
            )  # fmt: skip
            fixed = fixed[:16]
        assert fixed == (
            "meta",
            "acl",
            "stats",
            "idx",
            "lru",
            "exp",
            "events",
            "audit",
            "ops",
            "opst",
            "bell",
            "lease",
            "eph",
            "locks",
            "lockh",
            "lbell",
        )
        nk = NamespaceKeys.of("sm", "team")
        assert [k[len(nk.base) :] for k in nk.fixed()] == [
            "meta", "acl", "stats", "idx", "lru", "exp", "events", "audit", "ops", "opst",
            "bell", "lease", "eph", "locks", "lockh", "lbell",
        ]  # fmt: skip


def test_signature_groups():
    sig = Signature.parse("a b +items(x y) +victims(z)")
    assert sig.fixed == ("a", "b") and sig.accepts(2) and sig.accepts(5) and sig.accepts(7)
    assert not sig.accepts(1)
    exact = Signature.parse("a b")
    assert exact.accepts(2) and not exact.accepts(3)


def test_no_key_is_built_inside_lua():
    """Decision 1: every key a script touches arrives in KEYS. No string concatenation
    may flow into a redis.call key position, and no KEYS/SCAN calls."""
    lua_dir = ROOT / "swarm_memory" / "lua"
    for path in lua_dir.glob("*.lua"):
        text = path.read_text()
        assert not re.search(r'redis\.call\("(KEYS|SCAN)"', text), path.name
        for call in re.finditer(r'redis\.call\("(\w+)",\s*([^,)]+)', text):
            first_arg = call.group(2).strip()
            assert ".." not in first_arg, f"{path.name}: key built in Lua: {call.group(0)}"


def test_top_level_lua_dir_is_the_package_source():
    top = ROOT / "lua"
    assert top.is_symlink() or top.is_dir()
    assert {p.name for p in top.glob("*.lua")} == {
        p.name for p in (ROOT / "swarm_memory" / "lua").glob("*.lua")
    }


def test_wheel_ships_the_scripts(tmp_path):
    """Build the wheel and look inside: scripts are package data, not repo files."""
    import subprocess
    import sys

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = tmp_path.glob("swarm_memory-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in (*SCRIPT_NAMES, "_lib"):
        assert f"swarm_memory/lua/{name}.lua" in names
    assert "swarm_memory/py.typed" in names
    # The CLI package and the exporter's `python -m` entry point ship; click and rich are
    # the [cli] extra's, not the library's (tests/cli/test_extra.py).
    for name in ("cli/__init__.py", "cli/__main__.py", "cli/demo_agent.py", "exporter/__main__.py"):
        assert f"swarm_memory/{name}" in names
    (metadata,) = (n for n in names if n.endswith(".dist-info/METADATA"))
    lines = zipfile.ZipFile(wheel).read(metadata).decode().splitlines()
    assert "Provides-Extra: cli" in lines
    requires = [line.removeprefix("Requires-Dist: ") for line in lines if "Requires-Dist" in line]
    for package in ("click", "rich"):
        (dep,) = (r for r in requires if r.startswith(package))
        assert dep.endswith('extra == "cli"'), dep


def test_new_entry_builds_what_entry_builds():
    # models.new_entry sets Entry's slots one by one (faster than its frozen __init__):
    # every field, in Entry's order, so that a field added to Entry fails here first.
    import dataclasses
    import inspect
    from datetime import UTC, datetime

    from swarm_memory.models import Entry, new_entry

    names = [f.name for f in dataclasses.fields(Entry)]
    assert list(inspect.signature(new_entry).parameters) == names
    args = [
        "k",
        {"v": 1},
        3,
        4,
        5,
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2026, 1, 2, tzinfo=UTC),
        "agent",
        None,
        9,
    ]
    built = new_entry(*args)  # type: ignore[arg-type]
    assert type(built) is Entry
    assert built == Entry(*args)  # type: ignore[arg-type]
    assert [getattr(built, n) for n in names] == args
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.version = 4  # type: ignore[misc]

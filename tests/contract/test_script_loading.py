"""How scripts reach the server (swarm_memory/scripts.py): the Functions library where the
server has Functions, EVALSHA elsewhere; both reload what a flush or restart lost."""

from __future__ import annotations

import uuid
from typing import Any, Literal

import pytest
import redis

from swarm_memory import SwarmMemory
from swarm_memory._drive import located
from swarm_memory._ops.effects import ScriptCall
from swarm_memory._ops.replies import unpack_get
from swarm_memory.errors import ServerError
from swarm_memory.keys import NamespaceKeys, PresenceKeys
from swarm_memory.scripts import Script, _read, library, load
from swarm_memory.settings import Settings

from ..conftest import Env
from ..servers import RedisServer


def _flush(env: Env) -> None:
    """What a restart without persistence does to loaded scripts, on every node."""
    nodes = env.raw.get_primaries() if env.backend == "cluster" else [None]
    for node in nodes:
        kw = {"target_nodes": node} if node is not None else {}
        env.raw.execute_command("SCRIPT", "FLUSH", **kw)
        if env.backend != "fake":
            env.raw.execute_command("FUNCTION", "FLUSH", **kw)


@pytest.mark.parametrize("mode", ["auto", "eval"])
def test_calls_survive_a_flush_of_every_loaded_script(env: Env, mode: str) -> None:
    mem = env.mem(script_mode=mode)
    mem.create_namespace("team")
    ns = mem.namespace("team")
    assert ns.put("k", 1).version == 1
    _flush(env)
    assert ns.put("k", 2).version == 2  # reloaded; the write ran once
    assert ns.get("k").value == 2
    assert [r.action for r in ns.audit(agent="planner")][:2] == ["put", "put"]


def test_the_mode_follows_the_server(env: Env) -> None:
    mem = env.mem()
    mem.create_namespace("team")
    mem.namespace("team").get("k")
    assert mem._driver.script_mode == ("eval" if env.backend == "fake" else "functions")
    if env.backend != "fake":
        libs = env.raw.execute_command("FUNCTION", "LIST", "LIBRARYNAME", library().name)
        assert libs, "the library is loaded"


# Reads the step multiplier of the collector of the Lua state it runs in (Lua 5.1 has no
# getter: collectgarbage("setstepmul") answers the value it replaces), and puts it back.
_STEPMUL_READ = (
    "local was = collectgarbage('setstepmul', 200) collectgarbage('setstepmul', was) return was"
)
_STEPMUL_PROBE = (
    "#!lua name=smtest_stepmul\n"
    f"redis.register_function('smtest_stepmul', function(keys, args) {_STEPMUL_READ} end)"
)


@pytest.mark.parametrize("mode", ["auto", "eval"])
def test_the_scripts_pace_the_collector_of_their_lua_state(env: Env, mode: str) -> None:
    """_lib.lua's enter(): the first call in a Lua state sets its collector's step
    multiplier to 25 (Lua's default: 200), in the Functions library's state and in the
    state EVALSHA runs in (docs/performance.md, "The Lua collector's pace")."""
    mem = env.mem(script_mode=mode)
    mem.create_namespace("team")
    mem.namespace("team").get("k")
    meta = NamespaceKeys.of(env.prefix, "team").meta  # (routes the probe to the node that ran it)
    if mem._driver.script_mode == "functions":
        env.raw.function_load(_STEPMUL_PROBE, replace=True)
        try:
            assert env.raw.fcall("smtest_stepmul", 1, meta) == 25
        finally:
            env.raw.function_delete("smtest_stepmul")
    else:
        assert env.raw.eval(_STEPMUL_READ, 1, meta) == 25


def _call_raw(
    raw: redis.Redis, script: Script, keys: list[str], args: list[Any], *, functions: bool
) -> Any:
    """A script called straight through redis-py (no driver): from the Functions library
    (loaded here) or by EVAL, with the identity argument the driver appends."""
    if functions:
        raw.function_load(library().source, replace=True)
        return raw.fcall(script.function, len(keys), *keys, *args, "identity")
    return raw.eval(script.source, len(keys), *keys, *args, "identity")


@pytest.mark.parametrize("functions", [True, False])
def test_a_lua_error_names_the_file_and_line(redis_server: RedisServer, functions: bool) -> None:
    """Lua error lines point into the .lua files, not the generated text (fakeredis words
    Lua errors its own way: a real server only)."""
    raw = redis.Redis(port=redis_server.port)
    script = load("read")
    keys = NamespaceKeys.of("lines", "team").read_fixed()
    args: list[str | bytes | int] = ["planner", "not-a-number", "exists"]
    call = ScriptCall(script, keys, args, None)
    with pytest.raises(redis.ResponseError) as info:
        _call_raw(raw, script, keys, args, functions=functions)
    raw.close()
    message = str(located(call, info.value, functions=functions))
    assert "bad integer for audit_maxlen" in message
    line = next(
        n for n, text in enumerate(_read("_lib").split("\n"), 1) if "bad integer for" in text
    )
    assert f"(_lib.lua:{line})" in message, message


@pytest.mark.parametrize("mode", ["functions", "eval"])
def test_a_readonly_call_runs_as_fcall_ro_or_evalsha_ro(
    redis_server: RedisServer, mode: Literal["functions", "eval"]
) -> None:
    """ScriptCall(readonly=True) goes out as FCALL_RO / EVALSHA_RO, which Redis refuses
    to let write: a read runs, a write is refused by the server itself."""
    mem = SwarmMemory.from_url(redis_server.url, agent="a", settings=Settings(script_mode=mode))
    mem.create_namespace("ro-" + mode)
    mem.namespace("ro-" + mode).put("k", 1)
    keys = NamespaceKeys.of(mem.settings.key_prefix, "ro-" + mode)
    read = ScriptCall(load("get"), [*keys.get_fixed(), keys.entry("k")], ["a"], None, True)
    reply = unpack_get(mem._driver.perform(read))  # (one stored entry: a packed reply)
    assert reply[0] == b"ok" and reply[2].split(b" ")[0] == b"1"  # version 1, packed
    presence = PresenceKeys.of(mem.settings.key_prefix)
    beat: list[str | bytes | int] = ["beat", "a", 1000, 60000]  # writes with redis.call
    call = ScriptCall(load("presence"), presence.fixed(), beat, None, True)
    with pytest.raises(ServerError, match=r"Write commands are not allowed"):
        mem._driver.perform(call)
    mem.close()


def test_a_user_that_may_not_load_functions_calls_them_while_loaded(
    redis_server: RedisServer,
) -> None:
    """An agent's ACL user has no FUNCTION (swarm_memory.acl): it FCALLs the library an
    admin's client loaded, and goes on with EVALSHA when it is gone; a user that may not
    FCALL either runs EVALSHA from the start."""
    admin = SwarmMemory.from_url(redis_server.url, agent="admin")
    admin.create_namespace("acl-modes", default_permission="write")  # loads the library
    raw = redis.Redis(port=redis_server.port)
    suffix = uuid.uuid4().hex[:8]
    users = {"nofunction": f"sm-test-nf-{suffix}", "nofcall": f"sm-test-nc-{suffix}"}
    raw.execute_command("ACL", "SETUSER", users["nofunction"], "on", ">pw", "~*", "&*",
                        "+@all", "-function")  # fmt: skip
    raw.execute_command("ACL", "SETUSER", users["nofcall"], "on", ">pw", "~*", "&*",
                        "+@all", "-function", "-fcall")  # fmt: skip
    try:
        url = f"redis://{users['nofunction']}:pw@127.0.0.1:{redis_server.port}/0"
        agent = SwarmMemory.from_url(url, agent="w")
        ns = agent.namespace("acl-modes")
        assert ns.put("k", 1).version == 1
        assert agent._driver.script_mode == "functions"  # the admin loaded it
        raw.execute_command("FUNCTION", "FLUSH")  # a restart, say: it cannot load it again
        assert ns.put("k", 2).version == 2
        assert agent._driver.script_mode == "eval"
        url = f"redis://{users['nofcall']}:pw@127.0.0.1:{redis_server.port}/0"
        other = SwarmMemory.from_url(url, agent="w2")
        assert other.namespace("acl-modes").put("j", 1).version == 1
        assert other._driver.script_mode == "eval"
        agent.close()
        other.close()
    finally:
        for user in users.values():
            raw.execute_command("ACL", "DELUSER", user)
        admin.close()
        raw.close()


GOOD_LIMITS, GOOD_COUNTS, GOOD_HEAD = "300000 1000 1000 1048576 4096", "1 0 0", "P   json"


@pytest.mark.parametrize(
    "limits, counts, head, problem",
    [
        ("300000 1000 1000 1048576", GOOD_COUNTS, GOOD_HEAD, "bad limits"),
        ("300000 1000 1000 1048576 4096 1", GOOD_COUNTS, GOOD_HEAD, "bad limits"),
        ("300000  1000 1000 1048576 4096", GOOD_COUNTS, GOOD_HEAD, "bad limits"),
        (" 300000 1000 1000 1048576 4096", GOOD_COUNTS, GOOD_HEAD, "bad limits"),
        ("300000 1000 1000 1048576 0x10", GOOD_COUNTS, GOOD_HEAD, "bad integer for limits"),
        (GOOD_LIMITS, "1 0", GOOD_HEAD, "bad counts"),
        (GOOD_LIMITS, GOOD_COUNTS, "P", "bad write item head"),
        (GOOD_LIMITS, GOOD_COUNTS, "p   json", "bad write item head"),
        (GOOD_LIMITS, GOOD_COUNTS, "P 1e3  json", "bad write item head"),
        (GOOD_LIMITS, GOOD_COUNTS, "P 12345678901234567890  json", "bad integer for expected"),
    ],
)
@pytest.mark.parametrize("functions", [True, False])
def test_the_write_scripts_packed_arguments_are_checked_before_anything(  # noqa: PLR0917
    redis_server: RedisServer, functions: bool, limits: str, counts: str, head: str, problem: str
) -> None:
    """The write script's numbers come packed (limits, counts, each item's head:
    lua/write.lua, int_fields and item_head in _lib.lua): a malformed one is an error
    saying which, before any key is read or written."""
    raw = redis.Redis(port=redis_server.port)
    prefix = f"packed{uuid.uuid4().hex[:8]}"
    mem = SwarmMemory.from_url(
        redis_server.url, agent="planner", settings=Settings(key_prefix=prefix)
    )
    mem.create_namespace("team")
    nk = NamespaceKeys.of(prefix, "team")
    before = {k: raw.dump(k) for k in raw.scan_iter(match=prefix + "*")}
    script = load("write")
    keys = [*nk.write_fixed(), nk.entry("k"), nk.history("k")]
    args = ["planner", "op-1", limits, counts, "put", "", "0", "", head, "k", b"1"]
    with pytest.raises(redis.ResponseError) as info:
        _call_raw(raw, script, keys, args, functions=functions)
    assert problem in str(info.value), info.value
    assert {k: raw.dump(k) for k in raw.scan_iter(match=prefix + "*")} == before
    mem.close()
    raw.close()

"""Authenticated mode (DESIGN.md decision 8, issue 13): ACL users generated from the
permission maps on a real redis-server; every script proves the calling user is the agent
it names (``redis.acl_check_cmd`` on the agent's identity key)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import fakeredis
import pytest
import redis
from click.testing import CliRunner

from swarm_memory import AsyncSwarmMemory, Settings, SwarmMemory, acl, errors
from swarm_memory.cli import cli
from swarm_memory.models import PermissionLevel
from tests.servers import RedisCluster, RedisServer

PREFIX = "sm"


@dataclass
class Swarm:
    server: RedisServer
    admin: SwarmMemory
    passwords: dict[str, str]

    def url(self, agent: str) -> str:
        return f"redis://{agent}:{self.passwords[agent]}@127.0.0.1:{self.server.port}/0"

    def connect(self, user: str, agent: str | None = None) -> SwarmMemory:
        return SwarmMemory.from_url(self.url(user), agent=agent or user, settings=_settings())

    def raw(self, user: str) -> redis.Redis:
        return self.server.client(username=user, password=self.passwords[user])


def _settings() -> Settings:
    return Settings(key_prefix=PREFIX, retry_attempts=1, connect_timeout=2)


@pytest.fixture(scope="module")
def swarm() -> Iterator[Swarm]:
    with RedisServer() as server:
        admin = SwarmMemory.from_url(server.url, agent="boss", settings=_settings())
        perms: dict[str, PermissionLevel] = {
            "boss": "admin",
            "w1": "write",
            "w2": "write",
            "r1": "read",
        }
        admin.create_namespace("team", default_permission="none", permissions=perms)
        admin.create_namespace("secret", default_permission="none", permissions={"boss": "admin"})
        admin.namespace("team").put("plan", {"steps": 3})
        admin.namespace("secret").put("key", "hidden")
        infos = [admin.namespace_info(n) for n in admin.list_namespaces()]
        users = acl.plan(infos, prefix=PREFIX)
        passwords = acl.apply(admin.redis, users)
        yield Swarm(server, admin, passwords)
        admin.close()


# Every operation family, as one agent acting through a client.
OPERATIONS: dict[str, Callable[[SwarmMemory], Any]] = {
    "get": lambda m: m.namespace("team").get("plan"),
    "put": lambda m: m.namespace("team").put("x", 1),
    "delete": lambda m: m.namespace("team").delete("plan"),
    "incr": lambda m: m.namespace("team").incr("n"),
    "keys": lambda m: list(m.namespace("team").keys()),
    "history": lambda m: m.namespace("team").history("plan"),
    "audit": lambda m: m.namespace("team").audit(limit=5),
    "watch": lambda m: next(iter(m.namespace("team").watch(since=0)), None),
    "lock": lambda m: m.namespace("team").lock("L", ttl=5).acquire(),
    "locks": lambda m: m.namespace("team").locks(),
    "grant": lambda m: m.namespace("team").grant({"x9": "read"}),
    "namespace_info": lambda m: m.namespace_info("team"),
    "inbox_send": lambda m: m.send("w2", {"hi": 1}),
    "agents": lambda m: m.agents(),
    "heartbeat": lambda m: m.heartbeat(),
}


def test_the_default_user_is_cooperative_and_administers_everything(swarm: Swarm):
    assert swarm.admin.auth_mode() == "cooperative"  # it may act as any agent
    for agent in ("boss", "w1", "r1"):
        assert swarm.admin.as_agent(agent).namespace("team").get("plan") is not None
    assert swarm.admin.as_agent("boss").namespace("secret").get("key") is not None


def test_an_agent_user_is_authenticated_and_says_so(swarm: Swarm, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.INFO, logger="swarm_memory"), swarm.connect("w1") as w1:
        assert w1.namespace("team").put("mine", 1).updated_by == "w1"
        assert w1.auth_mode() == "authenticated"
    assert "authenticated mode" in caplog.text


def test_fakeredis_is_cooperative():
    mem = SwarmMemory.from_client(fakeredis.FakeRedis(), agent="a", settings=_settings())
    assert mem.auth_mode() == "cooperative"
    mem.create_namespace("n")
    assert mem.namespace("n").get("k") is None
    assert mem._driver.read_only_scripts is False  # no EVALSHA_RO there: EVALSHA, said so


def test_a_read_only_agent_reads_with_the_async_client(swarm: Swarm):
    async def main() -> None:
        async with AsyncSwarmMemory.from_url(swarm.url("r1"), agent="r1") as r1:
            entry = await r1.namespace("team").get("plan")
            assert entry is not None and entry.value == {"steps": 3}
            assert [k async for k in r1.namespace("team").keys("pla*")] == ["plan"]
            assert r1._driver.read_only_scripts is True
            with pytest.raises(errors.PermissionDenied):
                await r1.namespace("team").put("plan", 0)

    asyncio.run(main())


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_an_agent_claiming_another_name_is_refused(swarm: Swarm, operation: str):
    # Redis itself refuses keys the user has none of (another agent's inbox): NOPERM.
    expected = errors.PermissionDenied if operation == "inbox_send" else errors.IdentityMismatch
    with swarm.connect("w1", agent="boss") as impostor, pytest.raises(expected):
        OPERATIONS[operation](impostor)


def test_list_namespaces_as_an_impostor_shows_nothing(swarm: Swarm):
    with swarm.connect("w1", agent="boss") as impostor:
        assert impostor.list_namespaces() == []


def test_the_identity_denial_is_audited(swarm: Swarm):
    with swarm.connect("w1", agent="w2") as impostor, pytest.raises(errors.IdentityMismatch):
        impostor.namespace("team").put("forged", 1)
    records = swarm.admin.namespace("team").audit(action="identity", limit=5)
    assert any(r.agent == "w2" and r.outcome == "denied" for r in records)


@pytest.mark.parametrize("read", ["get", "get_many"])
def test_an_identity_refused_get_is_refused_and_audited(swarm: Swarm, read: str):
    """lua/get.lua (only the names a get's common path uses, stop 35) has no stats and
    audit keys to record an identity refusal in: it answers "general", the get goes to
    read.lua, whose FCALL_RO refusal runs again with writes, and a user that may write
    the namespace leaves the record, once."""
    team = swarm.admin.namespace("team")
    before = len(team.audit(action="identity", agent="w2", limit=100))
    with swarm.connect("w1", agent="w2") as impostor, pytest.raises(errors.IdentityMismatch):
        ns = impostor.namespace("team")
        ns.get("plan") if read == "get" else ns.get_many(["plan", "x"])
    assert len(team.audit(action="identity", agent="w2", limit=100)) == before + 1


def test_as_agent_on_an_agent_client_refuses_another_identity(swarm: Swarm):
    with swarm.connect("w1") as w1:
        with pytest.raises(errors.IdentityMismatch):
            w1.as_agent("w2")
        assert w1.as_agent("w1").agent == "w1"


def test_a_scoped_user_lists_only_what_it_may_see(swarm: Swarm):
    with swarm.connect("w1") as w1:
        assert w1.list_namespaces() == ["team"]


def test_a_namespace_without_permission_is_unreadable_by_any_command(swarm: Swarm):
    with swarm.connect("w1") as w1, pytest.raises(errors.PermissionDenied):
        w1.namespace("secret").get("key")
    raw = swarm.raw("w1")
    for command in (
        ("HGETALL", "sm:{secret}:e:key"),
        ("GET", "sm:{secret}:meta"),
        ("XRANGE", "sm:{secret}:events", "-", "+"),
        ("DUMP", "sm:{secret}:e:key"),
        ("KEYS", "*"),
        ("SCAN", "0"),
        ("EVAL", "return redis.call('HGETALL', KEYS[1])", "1", "sm:{secret}:e:key"),
        ("EVAL", "return redis.call('HGETALL', 'sm:{secret}:e:key')", "0"),
        ("CONFIG", "GET", "*"),
        ("FLUSHALL",),
        ("ACL", "SETUSER", "w1", "~*"),
        ("FUNCTION", "FLUSH"),
        ("SCRIPT", "FLUSH"),
    ):
        if command[0] == "SCAN":  # allowed, but it shows no key the user may not read?
            continue  # SCAN is not key-filtered by Redis: see README "Security"
        with pytest.raises(redis.exceptions.ResponseError):
            raw.execute_command(*command)
    raw.close()


def test_the_cli_maps_noperm_to_exit_4(swarm: Swarm):
    env = {"SWARM_MEMORY_REDIS_URL": swarm.url("w1"), "SWARM_MEMORY_AGENT": "w1"}
    result = CliRunner().invoke(cli, ["get", "secret", "key"], env=env)
    assert result.exit_code == 4, result.output
    assert swarm.passwords["w1"] not in result.output


def test_acl_plan_check_reports_drift_after_a_grant(swarm: Swarm):
    env = {"SWARM_MEMORY_REDIS_URL": swarm.server.url}
    ok = CliRunner().invoke(cli, ["acl", "plan", "--check"], env=env)
    assert ok.exit_code == 0, ok.output
    swarm.admin.namespace("secret").grant({"w1": "read"})
    try:
        drifted = CliRunner().invoke(cli, ["acl", "plan", "--check"], env=env)
        assert drifted.exit_code == 7 and "'w1'" in drifted.output
        applied = CliRunner().invoke(cli, ["acl", "apply"], env=env)
        assert applied.exit_code == 0, applied.output
        with swarm.connect("w1") as w1:
            assert w1.namespace("secret").get("key") is not None
    finally:
        swarm.admin.namespace("secret").revoke(["w1"])
        acl.apply(swarm.admin.redis, acl.plan(acl.read_maps(swarm.admin.redis, PREFIX)))


def test_rotate_keeps_both_passwords_until_finish(swarm: Swarm, tmp_path: Any):
    env = {"SWARM_MEMORY_REDIS_URL": swarm.server.url}
    old = swarm.passwords["w2"]
    rotated = CliRunner().invoke(
        cli, ["acl", "rotate", "w2", "--secrets-dir", str(tmp_path)], env=env
    )
    assert rotated.exit_code == 0, rotated.output
    new = (tmp_path / "w2.password").read_text().strip()
    assert new not in rotated.output
    for password in (old, new):
        swarm.server.client(username="w2", password=password).ping()
    done = CliRunner().invoke(
        cli, ["acl", "rotate", "w2", "--finish", "--secrets-dir", str(tmp_path)], env=env
    )
    assert done.exit_code == 0, done.output
    with pytest.raises(redis.exceptions.AuthenticationError):
        swarm.server.client(username="w2", password=old).ping()
    swarm.passwords["w2"] = new


INJECTIONS = ["q'\"`", "line\nbreak", "redis.call('FLUSHALL')", "*", "{}", "a\x00b", "x" * 65536]


@pytest.mark.parametrize("text", INJECTIONS, ids=range(len(INJECTIONS)))
def test_injection_is_stored_inert_or_rejected(swarm: Swarm, text: str):
    with swarm.connect("w1") as w1:
        ns = w1.namespace("team")
        assert ns.put("inj", text).version >= 1
        entry = ns.get("inj")
        assert entry is not None and entry.value == text  # values are opaque
        for build in (
            lambda: ns.put(text, 1),
            lambda: w1.namespace(text),
            lambda: w1.as_agent(text),
            lambda: ns.put("k", 1, op_id=text),
        ):
            try:
                build()
            except errors.InvalidInput:
                continue  # rejected before anything reaches Redis
    assert swarm.admin.namespace("team").get("plan") is not None  # nothing ran


def test_the_identity_check_and_the_scopes_hold_on_cluster():
    """The same users applied on every primary of a 3-node Cluster: an impostor is refused,
    an agent works as itself, and another namespace is unreadable on every node."""
    settings = Settings(key_prefix=PREFIX, cluster=True, retry_attempts=1, connect_timeout=2)
    with RedisCluster() as cluster:
        admin = SwarmMemory.from_url(cluster.url, agent="boss", settings=settings)
        try:
            perms: dict[str, PermissionLevel] = {"boss": "admin", "w1": "write", "r1": "read"}
            admin.create_namespace("team", default_permission="none", permissions=perms)
            admin.create_namespace("secret", default_permission="none")
            admin.namespace("secret").put("key", "hidden")
            admin.namespace("team").put("plan", {"steps": 3})
            infos = [admin.namespace_info(n) for n in admin.list_namespaces()]
            passwords = acl.apply(admin.redis, acl.plan(infos, prefix=PREFIX))
        finally:
            admin.close()
        url = f"redis://w1:{passwords['w1']}@127.0.0.1:{cluster.ports[0]}/0"
        with SwarmMemory.from_url(url, agent="w1", settings=settings) as w1:
            assert w1.auth_mode() == "authenticated"
            assert w1.namespace("team").put("mine", 1).updated_by == "w1"
            with pytest.raises(errors.PermissionDenied):
                w1.namespace("secret").get("key")
        with SwarmMemory.from_url(url, agent="boss", settings=settings) as impostor:
            for operation in ("get", "put", "grant", "history"):
                with pytest.raises(errors.IdentityMismatch):
                    OPERATIONS[operation](impostor)
        r1_url = f"redis://r1:{passwords['r1']}@127.0.0.1:{cluster.ports[0]}/0"
        with SwarmMemory.from_url(r1_url, agent="r1", settings=settings) as r1:
            for read in ("get", "get_many", "keys", "history", "watch", "audit", "stats"):
                READS[read](r1)
            assert r1._driver.read_only_scripts is True
            with pytest.raises(errors.PermissionDenied):
                r1.namespace("team").put("x", 1)
            with SwarmMemory.from_url(url, agent="w1", settings=settings) as w1:
                w1.send("r1", "over the lane")  # a lane in r1's slot, on whichever node
            msg = r1.inbox().receive(timeout=2)
            assert msg is not None and (msg.sender, msg.body) == ("w1", "over the lane")
        for port in cluster.ports:  # every node refuses w1 the other namespace's keys
            raw = redis.Redis(host="127.0.0.1", port=port, username="w1", password=passwords["w1"])
            reader = redis.Redis(
                host="127.0.0.1", port=port, username="r1", password=passwords["r1"]
            )
            try:
                with pytest.raises(redis.exceptions.NoPermissionError):
                    raw.execute_command("HGETALL", "sm:{secret}:e:key")
                # and r1 every write to its read-only namespace (NOPERM comes before MOVED)
                with pytest.raises(redis.exceptions.NoPermissionError):
                    reader.execute_command("HSET", "sm:{team}:e:plan", "v", "forged")
            finally:
                raw.close()
                reader.close()


def _doctor(url: str) -> dict[str, dict[str, Any]]:
    import json

    result = CliRunner().invoke(cli, ["-o", "json", "doctor"], env={"SWARM_MEMORY_REDIS_URL": url})
    assert result.exit_code in (0, 7), result.output
    return {c["check"]: c for c in json.loads(result.stdout)["checks"]}


def test_doctor_reports_the_security_posture(swarm: Swarm):
    checks = _doctor(swarm.server.url)
    assert checks["tls"]["status"] == "warn"
    assert (
        checks["default user"]["status"] == "warn"
        and "any agent" in checks["default user"]["detail"]
    )
    assert checks["agent users"]["status"] == "ok"
    assert checks["acl drift"]["status"] == "ok"
    swarm.admin.namespace("secret").grant({"r1": "read"})
    try:
        drifted = _doctor(swarm.server.url)
        assert drifted["acl drift"]["status"] == "warn" and "r1" in drifted["acl drift"]["detail"]
    finally:
        swarm.admin.namespace("secret").revoke(["r1"])
    with RedisServer() as bare:  # no agent users at all: every agent is cooperative
        admin = SwarmMemory.from_url(bare.url, agent="boss", settings=_settings())
        admin.create_namespace("team", permissions={"w1": "write"})
        admin.close()
        assert _doctor(bare.url)["agent users"]["status"] == "warn"


# Every read an agent with only `read` on a namespace makes (ScriptCall.readonly calls
# run as EVALSHA_RO: its user's keys there are %R~).
READS: dict[str, Callable[[SwarmMemory], Any]] = {
    "get": lambda m: m.namespace("team").get("plan"),
    "get_version": lambda m: m.namespace("team").get("plan", version=1),
    "get_many": lambda m: m.namespace("team").get_many(["plan", "absent"]),
    "exists": lambda m: m.namespace("team").exists("plan"),
    "keys": lambda m: list(m.namespace("team").keys()),
    "history": lambda m: m.namespace("team").history("plan"),
    "audit": lambda m: m.namespace("team").audit(limit=5),
    "watch": lambda m: next(iter(m.namespace("team").watch(since=0)), None),
    "locks": lambda m: m.namespace("team").locks(),
    "stats": lambda m: m.namespace("team").stats(),
    "namespace_info": lambda m: m.namespace_info("team"),
    "list_namespaces": lambda m: m.list_namespaces(),
    "agents": lambda m: m.agents(),
    "context": lambda m: m.namespace("team").context("w1").resume(),
    "outcome_stats": lambda m: m.namespace("team").outcomes("claims").stats(),
    "recommend": lambda m: m.namespace("team").outcomes("claims").recommend(["a", "b"]),
    "sessions": lambda m: list(m.namespace("team").sessions()),
    "session_info": lambda m: m.namespace("team").session("s1").info(),
    "decisions": lambda m: m.namespace("team").session("s1").decisions(),
    "graph_get": lambda m: m.graph("team").get("0" * 24),
    "graph_recall": lambda m: list(m.graph("team").recall(context="t")),
    "graph_stats": lambda m: m.graph("team").stats(),
    "graph_bundle": lambda m: m.graph("team").bundle("task").nodes(),
}


def test_acl_apply_loads_the_library_so_agents_fcall_from_their_first_call(swarm: Swarm):
    """Agents' users may not FUNCTION LOAD (-function): apply loads the library for them."""
    admin = swarm.server.client()
    admin.function_flush()
    with swarm.connect("w1") as w1:
        w1.namespace("team").get("plan")  # cannot load it: falls back to EVALSHA
        assert w1._driver.script_mode == "eval"
    plan = acl.plan(acl.read_maps(swarm.admin.redis, PREFIX), prefix=PREFIX)
    assert acl.apply(swarm.admin.redis, plan) == {}  # users exist: no new passwords
    assert admin.function_list()  # loaded
    with swarm.connect("w1") as w1:
        assert w1.namespace("team").get("plan") is not None
        assert w1.namespace("team").put("by-w1", 1).version == 1
        assert w1._driver.script_mode == "functions"


def test_acl_plan_gives_a_read_only_agent_read_only_keys(swarm: Swarm):
    users = {u.agent: u for u in acl.plan(acl.read_maps(swarm.admin.redis, PREFIX), prefix=PREFIX)}
    assert "%R~sm:{team}:*" in users["r1"].rules and "~sm:{team}:*" not in users["r1"].rules
    assert "~sm:{team}:*" in users["w1"].rules
    result = CliRunner().invoke(
        cli, ["acl", "plan"], env={"SWARM_MEMORY_REDIS_URL": swarm.server.url}
    )
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if " r1 " in x)
    assert "%R~sm:{team}:*" in line
    user = acl.getuser(swarm.admin.redis, "r1")
    assert user is not None and "%R~sm:{team}:*" in user["keys"]


@pytest.mark.parametrize("read", sorted(READS))
def test_a_read_only_agent_makes_every_read(swarm: Swarm, read: str):
    with swarm.connect("r1") as r1:
        assert r1.auth_mode() == "authenticated"
        READS[read](r1)
        assert r1._driver.read_only_scripts is True  # ran as EVALSHA_RO


def test_a_read_only_agent_reads_what_others_wrote(swarm: Swarm):
    swarm.admin.namespace("team").put("seen-by-r1", {"n": 1})
    with swarm.connect("r1") as r1:
        team = r1.namespace("team")
        entry = team.get("seen-by-r1")
        assert entry is not None and entry.value == {"n": 1}
        assert "seen-by-r1" in list(team.keys())
        assert r1.list_namespaces() == ["team"]


@pytest.mark.parametrize("write", ["put", "delete", "incr", "lock", "grant"])
def test_a_read_only_agents_writes_are_refused_by_redis(swarm: Swarm, write: str):
    with swarm.connect("r1") as r1, pytest.raises(errors.PermissionDenied) as caught:
        OPERATIONS[write](r1)
    assert caught.value.required == "acl"  # refused by Redis, not by the script
    assert swarm.admin.namespace("team").get("plan") is not None


def test_a_read_only_agents_raw_writes_are_refused_by_redis(swarm: Swarm):
    from swarm_memory.scripts import load

    raw = swarm.raw("r1")
    try:
        assert raw.hgetall("sm:{team}:e:plan")  # it may read
        read = load("read")
        raw.script_load(read.source)
        own = raw.script_load("return redis.call('DEL', KEYS[1])")
        for command in (
            ("HSET", "sm:{team}:e:plan", "v", "forged"),
            ("DEL", "sm:{team}:e:plan"),
            ("XADD", "sm:{team}:events", "*", "t", "forged"),
            ("EVAL", "return redis.call('DEL', KEYS[1])", "1", "sm:{team}:e:plan"),
            ("EVAL", "return redis.call('DEL', 'sm:{team}:e:plan')", "0"),
            ("EVALSHA", own, "1", "sm:{team}:e:plan"),
            ("EVALSHA_RO", own, "1", "sm:{team}:e:plan"),
            ("EVAL_RO", "return redis.pcall('DEL', KEYS[1])", "1", "sm:{team}:e:plan"),
        ):
            try:
                reply = raw.execute_command(*command)
            except redis.exceptions.ResponseError:
                continue
            # EVAL_RO with pcall returns the refusal as a value instead of raising
            assert isinstance(reply, redis.exceptions.ResponseError), command
    finally:
        raw.close()
    entry = swarm.admin.namespace("team").get("plan")
    assert entry is not None and entry.value == {"steps": 3}


def test_a_read_only_agents_denied_read_is_refused_unaudited_and_a_writers_audited(swarm: Swarm):
    """A denial answered by EVALSHA_RO is run again with writes: audited where the user
    may write (here the default user acting for an agent without access), not where it
    may only read (r1 naming w1: Redis refuses the second run)."""
    team = swarm.admin.namespace("team")
    before = len(team.audit(action="identity", agent="w1", limit=100))
    with swarm.connect("r1", agent="w1") as impostor, pytest.raises(errors.IdentityMismatch):
        impostor.namespace("team").get("plan")
    assert len(team.audit(action="identity", agent="w1", limit=100)) == before
    stranger = swarm.admin.as_agent("nobody")
    with pytest.raises(errors.PermissionDenied):
        stranger.namespace("team").get("plan")
    assert any(r.agent == "nobody" and r.outcome == "denied" for r in team.audit(action="get"))


def test_agents_send_to_each_other_through_their_lanes(swarm: Swarm):
    with swarm.connect("w1") as w1, swarm.connect("w2") as w2:
        sent = w1.send("w2", {"task": 1}, reply_to="w1")
        assert sent.sender == "w1"
        inbox = w2.inbox()
        msg = inbox.receive(timeout=2)
        assert msg is not None and (msg.sender, msg.to, msg.body) == ("w1", "w2", {"task": 1})
        w2.reply(msg, {"done": 1})
        assert inbox.ack(msg) == 1
        answer = w1.inbox().receive(timeout=2)
        assert answer is not None and (answer.sender, answer.body) == ("w2", {"done": 1})
        first = w1.send("w2", {"task": 2}, op_id="task-2")
        replay = w1.send("w2", {"task": 2}, op_id="task-2")  # deduped in w1's lane
        assert (replay.id, replay.sent_at) == (first.id, first.sent_at)
        with pytest.raises(errors.OpIdReused):
            w1.send("w2", {"task": 3}, op_id="task-2")
        # r1 (read-only on team) sends too: lanes need no namespace permission
        with swarm.connect("r1") as r1:
            r1.send("w2", "from r1")
        got = [inbox.receive(timeout=2) for _ in range(2)]
        assert sorted((m.sender, repr(m.body)) for m in got if m is not None) == [
            ("r1", "'from r1'"),
            ("w1", "{'task': 2}"),
        ]
        inbox.ack(*[m for m in got if m is not None])
        assert inbox.receive(timeout=0.2) is None  # the replay was not delivered twice
    small = Settings(key_prefix=PREFIX, retry_attempts=1, inbox_maxlen=2)
    with SwarmMemory.from_url(swarm.url("w1"), agent="w1", settings=small) as w1:
        w1.send("nobody", 1)
        w1.send("nobody", 2)
        with pytest.raises(errors.QuotaExceeded):  # w1's lane there holds 2 undelivered
            w1.send("nobody", 3)


def test_a_sender_cannot_read_ack_or_delete_another_agents_inbox(swarm: Swarm):
    with swarm.connect("w2") as w2:
        w2.send("w2", "private")  # w2's own message, in its own stream
    with swarm.connect("w1") as w1:
        w1.send("w2", "hello")
        with pytest.raises(errors.PermissionDenied):
            w1.inbox_info("w2")  # its counters: the owner's keys (README "Security")
        with pytest.raises(errors.PermissionDenied):
            w1.delete_inbox("w2")
        w1.inbox()  # indexes its own inbox if it exists
        assert {i.owner for i in w1.inboxes()} <= {"w1"}  # another's counters: not listed
        assert {i.owner for i in swarm.admin.inboxes()} >= {"w2"}
    raw = swarm.raw("w1")
    try:
        stream, lane3 = "sm:{@inbox:w2}:stream", "sm:{@inbox:w2}:lane:s:r1"
        for command in (
            ("XRANGE", stream, "-", "+"),
            ("XREADGROUP", "GROUP", "agent", "x", "STREAMS", stream, ">"),
            ("XACK", stream, "agent", "0-1"),
            ("XADD", stream, "*", "from", "boss", "d", "1", "f", "json"),
            ("DEL", stream, "sm:{@inbox:w2}:meta"),
            ("XRANGE", lane3, "-", "+"),  # another sender's lane
            ("XADD", lane3, "*", "d", "1", "f", "json"),
            ("EVAL", "return redis.call('XRANGE', KEYS[1], '-', '+')", "1", stream),
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                raw.execute_command(*command)
        # Its own lane it may write raw: whatever it writes there arrives as from w1.
        raw.execute_command(
            "XADD", "sm:{@inbox:w2}:lane:s:w1", "*", "from", "boss", "d", "2", "f", "json"
        )
        raw.execute_command("SADD", "sm:{@inbox:w2}:senders", "w1")
    finally:
        raw.close()
    with swarm.connect("w2") as w2:
        inbox = w2.inbox()
        got = [inbox.receive(timeout=2) for _ in range(3)]
        assert sorted((m.sender, repr(m.body)) for m in got if m is not None) == [
            ("w1", "'hello'"),
            ("w1", "2"),
            ("w2", "'private'"),
        ]
        inbox.ack(*[m for m in got if m is not None])


def test_an_impostor_cannot_send_as_another_agent(swarm: Swarm):
    with swarm.connect("w1", agent="r1") as impostor:
        with pytest.raises(errors.PermissionDenied):  # r1's lane: not w1's user's keys
            impostor.send("w2", "forged")
        impostor._driver.auth_mode = "authenticated"  # straight to the lane, as after a probe
        with pytest.raises(errors.PermissionDenied):
            impostor.send("w2", "forged")


def test_a_read_only_agent_reads_past_a_due_sweep(swarm: Swarm):
    """Its reads find expired entries due; the sweep they trigger writes, Redis refuses
    it, and the read still answers (the sweep is opportunistic)."""
    swarm.admin.namespace("team").put("short", 1, ttl=0.05)
    time.sleep(0.1)
    with swarm.connect("r1") as r1:
        team = r1.namespace("team")
        assert team.get("short") is None
        assert "short" not in list(team.keys())
    assert swarm.admin.namespace("team").sweep().expired == ["short"]  # still there for it


def test_a_hostile_sender_can_delay_but_not_lose_others_mail(swarm: Swarm):
    """The senders set is shared by every sender: w1 may remove r1 from w2's set (r1's
    message then waits), and junk in its own lane is dropped; r1's next send brings
    both of r1's messages."""
    with swarm.connect("r1") as r1:
        r1.send("w2", "first")
    raw = swarm.raw("w1")
    try:
        assert raw.srem("sm:{@inbox:w2}:senders", "r1") == 1
        raw.xadd("sm:{@inbox:w2}:lane:s:w1", {"junk": "no body"})
        raw.sadd("sm:{@inbox:w2}:senders", "w1", "not a name!")
    finally:
        raw.close()
    with swarm.connect("w2") as w2:
        inbox = w2.inbox()
        assert inbox.receive(timeout=0.3) is None  # r1's waits; w1's junk is dropped
        with swarm.connect("r1") as r1:
            r1.send("w2", "second")
        got = [inbox.receive(timeout=2) for _ in range(2)]
        assert [(m.sender, m.body) for m in got if m is not None] == [
            ("r1", "first"),
            ("r1", "second"),
        ]
        inbox.ack(*[m for m in got if m is not None])
    assert swarm.admin.redis.smembers("sm:{@inbox:w2}:senders") == set()


def test_an_undecodable_message_is_reported_once_and_does_not_block_the_inbox(swarm: Swarm):
    """A sender's raw lane entry whose body does not decode: the owner's receive raises
    CorruptData naming it once, removes it, and delivers the rest."""
    raw = swarm.raw("w1")
    try:
        raw.xadd("sm:{@inbox:w2}:lane:s:w1", {"d": "{not json", "f": "json", "ms": "1"})
        raw.sadd("sm:{@inbox:w2}:senders", "w1")
    finally:
        raw.close()
    with swarm.connect("w1") as w1:
        w1.send("w2", "good")
    with swarm.connect("w2") as w2:
        inbox = w2.inbox(idle=0.2)
        with pytest.raises(errors.CorruptData, match="1 unreadable message"):
            inbox.receive(timeout=1)
        msg = inbox.receive(timeout=1)
        assert msg is not None and (msg.sender, msg.body) == ("w1", "good")
        inbox.ack(msg)
        time.sleep(0.3)  # past idle: nothing comes back
        assert inbox.receive(timeout=0.2) is None

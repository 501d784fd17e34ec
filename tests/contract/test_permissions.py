"""Permissions: read < write < admin, per agent, checked inside the scripts on every path."""

from __future__ import annotations

import pytest

from swarm_memory import LastAdminError, PermissionDenied


@pytest.fixture
def mems(env):
    owner = env.mem("owner")
    owner.create_namespace(
        "team",
        default_permission="none",
        permissions={"reader": "read", "writer": "write"},
        history=2,
    )
    owner.namespace("team").put("plan", {"v": 1})
    return owner, {a: owner.as_agent(a).namespace("team") for a in ("reader", "writer", "nobody")}


def _denied(fn, action, required, granted):
    with pytest.raises(PermissionDenied) as exc:
        fn()
    e = exc.value
    assert (e.action, e.required, e.granted, e.namespace) == (action, required, granted, "team")
    return e


def test_none_agent_can_do_nothing(env, mems):
    _owner, ns = mems
    nobody = ns["nobody"]
    before = {k: v for k, v in env.snapshot().items() if b":audit" not in k and b":stats" not in k}
    e = _denied(lambda: nobody.get("plan"), "get", "read", "none")
    assert e.agent == "nobody"
    _denied(lambda: nobody.exists("plan"), "exists", "read", "none")
    _denied(lambda: list(nobody.keys()), "page", "read", "none")
    _denied(lambda: nobody.history("plan"), "history", "read", "none")
    _denied(lambda: nobody.get("plan", version=1), "version", "read", "none")
    _denied(lambda: nobody.get_many(["plan"]), "get", "read", "none")
    _denied(nobody.info, "ns_info", "read", "none")
    _denied(nobody.stats, "ns_info", "read", "none")
    _denied(lambda: nobody.put("plan", 2), "put", "write", "none")
    _denied(lambda: nobody.delete("plan"), "delete", "write", "none")
    _denied(lambda: nobody.incr("n"), "incr", "write", "none")
    after = {k: v for k, v in env.snapshot().items() if b":audit" not in k and b":stats" not in k}
    assert after == before  # only the denial counter and the audit log moved


def test_reader_reads_but_cannot_write(mems):
    _owner, ns = mems
    assert ns["reader"].get("plan").value == {"v": 1}
    assert list(ns["reader"].keys()) == ["plan"]
    _denied(lambda: ns["reader"].put("plan", 2), "put", "write", "read")
    with pytest.raises(PermissionDenied):
        ns["reader"].update("plan", lambda v: v)
    _denied(lambda: ns["reader"].grant({"x": "read"}), "ns_grant", "admin", "read")


def test_writer_writes_but_cannot_administer(mems):
    _owner, ns = mems
    ns["writer"].put("plan", {"v": 2})
    assert ns["writer"].get("plan").updated_by == "writer"
    _denied(lambda: ns["writer"].grant({"writer": "admin"}), "ns_grant", "admin", "write")
    _denied(lambda: ns["writer"].revoke(["reader"]), "ns_revoke", "admin", "write")
    _denied(ns["writer"].clear, "ns_clear", "admin", "write")


def test_grant_and_revoke_take_effect_at_once(mems):
    owner, ns = mems
    team = owner.namespace("team")
    team.grant({"nobody": "write"})
    ns["nobody"].put("x", 1)
    team.revoke(["nobody"])
    with pytest.raises(PermissionDenied):
        ns["nobody"].get("x")
    assert team.info().permissions == {"owner": "admin", "reader": "read", "writer": "write"}


def test_last_admin_cannot_be_removed(mems):
    owner, _ns = mems
    team = owner.namespace("team")
    with pytest.raises(LastAdminError):
        team.revoke(["owner"])
    with pytest.raises(LastAdminError):
        team.grant({"owner": "write"})
    team.grant({"writer": "admin"})
    team.revoke(["owner"])  # fine now: writer is admin
    with pytest.raises(LastAdminError):
        owner.as_agent("writer").namespace("team").grant({"writer": "read"})


def test_denials_are_counted_and_audited(env, mems):
    owner, ns = mems
    with pytest.raises(PermissionDenied):
        ns["nobody"].get("plan")
    assert owner.namespace("team").stats()["denied"] == 1
    audit = env.raw.xrange(f"{env.prefix}:{{team}}:audit")
    denial = [f for _id, f in audit if f[b"out"] == b"denied"]
    assert denial and denial[-1][b"a"] == b"nobody" and denial[-1][b"act"] == b"get"


def _marker(env, name="team"):
    from swarm_memory.keys import ACL_MARK, NamespaceKeys

    raw = env.raw.hget(NamespaceKeys.of(env.prefix, name).acl, ACL_MARK)
    return None if raw is None else raw.decode()


def test_the_acl_marker_follows_the_default_level_and_is_no_agent(env, mems):
    # The ACL hash's "#" field (lua/_lib.lua ACL_MARK): the default level while the
    # namespace is live, which reads take with the caller's level in one HMGET.
    owner, ns = mems
    assert _marker(env) == "none"
    assert "#" not in owner.namespace("team").info().permissions
    owner.update_namespace("team", default_permission="read")
    assert _marker(env) == "read"
    assert ns["nobody"].get("plan").value == {"v": 1}  # the new default, read by the marker
    owner.update_namespace("team", default_permission="none")
    _denied(lambda: ns["nobody"].get("plan"), "get", "read", "none")
    assert "#" not in owner.namespace("team").info().permissions
    owner.delete_namespace("team")
    assert _marker(env) is None


def test_a_namespace_without_the_marker_reads_by_its_meta_until_changed(env, mems):
    # A namespace stored by an earlier version has no marker: reads go by its meta, and
    # its next grant (or update, or revoke) writes the marker.
    from swarm_memory.keys import NamespaceKeys

    owner, ns = mems
    env.raw.hdel(NamespaceKeys.of(env.prefix, "team").acl, "#")
    assert ns["reader"].get("plan").value == {"v": 1}
    _denied(lambda: ns["nobody"].get("plan"), "get", "read", "none")
    owner.namespace("team").grant({"late": "read"})
    assert _marker(env) == "none"
    assert owner.as_agent("late").namespace("team").get("plan").value == {"v": 1}


def test_a_default_admin_in_the_marker_is_not_the_last_admin(env):
    # The marker holds "admin" while the default level is admin; it is no agent, so the
    # namespace's last admin is still found (or not) among the agents.
    owner = env.mem("owner")
    owner.create_namespace("solo", default_permission="admin")
    assert _marker(env, "solo") == "admin"
    owner.namespace("solo").revoke(["owner"])  # the default still makes everyone admin
    with pytest.raises(LastAdminError):
        owner.update_namespace("solo", default_permission="write")
    assert _marker(env, "solo") == "admin"

"""ns list|create|info|grant|revoke|clear|delete."""

from __future__ import annotations


def test_create_info_list(run):
    info = run.json(
        "ns", "create", "team", "--strategy", "merge", "--history", "2", "--ttl", "30",
        "--permission", "auditor=read", "--default-permission", "none", "--max-keys", "10",
    )  # fmt: skip
    assert info["strategy"] == "merge" and info["history"] == 2 and info["ttl"] == 30
    assert info["permissions"] == {"auditor": "read", "cli": "admin"}
    assert info["default_permission"] == "none" and info["max_keys"] == 10
    assert run.json("ns", "info", "team")["name"] == "team"
    run("ns", "create", "other")
    names = [n["name"] for n in run.json("ns", "list")]
    assert names == ["other", "team"]
    # An agent that may not read "team" does not see it.
    assert [n["name"] for n in run.json("--agent", "stranger", "ns", "list")] == ["other"]
    assert "exists" in run("ns", "create", "team", code=5).stderr
    same = ("--strategy", "merge", "--history", "2", "--ttl", "30", "--permission",
            "auditor=read", "--default-permission", "none", "--max-keys", "10")  # fmt: skip
    run("ns", "create", "team", *same, "--exist-ok")
    mismatch = run("ns", "create", "team", "--exist-ok", code=5).stderr
    assert "strategy" in mismatch and "history" in mismatch and "Traceback" not in mismatch
    run("ns", "create", "bad", "--permission", "nolevel", code=2)
    run("ns", "create", "bad name", code=2)
    run("ns", "info", "ghost", code=3)


def test_grant_and_revoke(run):
    run("ns", "create", "team")
    before = run.snapshot()
    dry = run.json("ns", "grant", "team", "worker=read", "--dry-run")
    assert dry == {"dry_run": True, "changes": {"worker": {"from": None, "to": "read"}}}
    assert run.snapshot() == before
    run("ns", "grant", "team", "worker=read", "helper=write")
    assert run.json("ns", "info", "team")["permissions"] == {
        "cli": "admin", "helper": "write", "worker": "read",
    }  # fmt: skip
    run("ns", "grant", "team", "worker=boss", code=2)
    run("ns", "grant", "team", "worker", code=2)
    before = run.snapshot()
    run("ns", "revoke", "team", "worker", "--dry-run")
    run("ns", "revoke", "team", "worker", input="n\n", code=1)
    assert run.snapshot() == before
    out = run.json("ns", "revoke", "team", "worker", "--yes")
    assert out["removed"] == {"worker": "read"}
    assert "worker" not in run.json("ns", "info", "team")["permissions"]
    # The last admin cannot be revoked: the library refuses (a permission error, exit 4).
    run("ns", "revoke", "team", "cli", "--yes", code=4)


def test_clear_and_delete_ask_and_dry_run(run):
    run("ns", "create", "team")
    for i in range(3):
        run("put", "team", f"k{i}", str(i))
    before = run.snapshot()
    assert run.json("ns", "clear", "team", "--dry-run")["entries"] == 3
    run("ns", "clear", "team", input="n\n", code=1)
    assert run.json("ns", "delete", "team", "--dry-run")["entries"] == 3
    run("ns", "delete", "team", code=1)
    assert run.snapshot() == before
    assert run.json("ns", "clear", "team", input="y\n")["deleted"] == 3
    assert run.json("ls", "team") == []
    assert run.json("ns", "delete", "team", "--yes")["deleted"] is True
    run("ns", "info", "team", code=3)
    assert run.json("ns", "list") == []

"""get / put / delete / ls / history: JSON output parsed, exit codes, prompts, dry runs."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

from swarm_memory.cli.base import jsonable

EXACT = {"big": 123456789012345678901234567890, "f": 0.30000000000000004, "a": [], "o": {}}
EXACT_TEXT = '{"big": 123456789012345678901234567890, "f": 0.30000000000000004, "a": [], "o": {}}'


def test_put_get_keeps_values_exact(run):
    run("ns", "create", "team")
    put = run.json("put", "team", "plan", EXACT_TEXT)
    assert put["version"] == 1 and put["key"] == "plan"
    entry = run.json("get", "team", "plan")
    assert entry["value"] == EXACT
    assert type(entry["value"]["a"]) is list and type(entry["value"]["o"]) is dict
    assert entry["version"] == 1 and entry["updated_by"] == "cli" and entry["ttl"] is None
    # The table output shows the same JSON text.
    assert "123456789012345678901234567890" in run("get", "team", "plan").stdout


def test_put_options(run):
    run("ns", "create", "team", "--history", "5")
    run("put", "team", "s", "not json", "--string")
    assert run.json("get", "team", "s")["value"] == "not json"
    run("put", "team", "stdin", "-", input='{"from": "stdin"}')
    assert run.json("get", "team", "stdin")["value"] == {"from": "stdin"}
    ttl = run.json("put", "team", "t", "1", "--ttl", "60")
    assert ttl["expires_at"] is not None
    assert 0 < run.json("get", "team", "t")["ttl"] <= 60
    # CAS: the right version wins, a stale one is a conflict (exit 5).
    run("put", "team", "s", '"v2"', "--expected-version", "1")
    res = run("put", "team", "s", '"v3"', "--expected-version", "1", code=5)
    assert "conflict on key 's'" in res.stderr and "current is version 2" in res.stderr
    run("put", "team", "s", '"again"', "--create", code=5)
    history = run.json("history", "team", "s")
    assert [e["version"] for e in history] == [2, 1]
    assert [e["value"] for e in history] == ["v2", "not json"]
    assert run.json("get", "team", "s", "--version", "1")["value"] == "not json"


def test_ls_lists_keys_with_metadata(run):
    run("ns", "create", "team")
    for i in range(3):
        run("put", "team", f"task-{i}", str(i))
    run("put", "team", "other", "[]")
    rows = run.json("ls", "team", "task-*")
    assert [r["key"] for r in rows] == ["task-0", "task-1", "task-2"]
    assert [r["value"] for r in rows] == [0, 1, 2]
    assert all(r["version"] == 1 and r["updated_by"] == "cli" for r in rows)
    assert len(run.json("ls", "team", "--limit", "2")) == 2
    assert "4 keys" in run("ls", "team").stdout


def test_missing_things_exit_3(run):
    run("ns", "create", "team")
    assert "key 'nope' not found" in run("get", "team", "nope", code=3).stderr
    assert "namespace 'ghost' not found" in run("get", "ghost", "k", code=3).stderr
    run("delete", "team", "nope", "--yes", code=3)
    run("history", "team", "nope", code=3)


def test_delete_asks_and_dry_run_changes_nothing(run):
    run("ns", "create", "team")
    run("put", "team", "k", "1")
    before = run.snapshot()
    dry = run.json("delete", "team", "k", "--dry-run")
    assert dry == {"dry_run": True, "key": "k", "version": 1, "deleted": False}
    assert run.snapshot() == before
    res = run("delete", "team", "k", input="n\n", code=1)
    assert "aborted" in res.stderr and run.snapshot() == before
    run("delete", "team", "k", code=1)  # no input at all: refused, not assumed
    assert run.snapshot() == before
    run("delete", "team", "k", input="y\n")
    run("get", "team", "k", code=3)
    run("put", "team", "k", "2")
    assert run.json("delete", "team", "k", "--yes") == {"key": "k", "deleted": True}


def test_permission_denied_exit_4(run):
    run("ns", "create", "locked", "--default-permission", "read")
    res = run("put", "locked", "k", "1", env={"SWARM_MEMORY_AGENT": "intruder"}, code=4)
    assert "permission denied" in res.stderr and "'intruder'" in res.stderr
    res = run("--agent", "nobody", "ns", "clear", "locked", "--yes", code=4)
    assert "needs 'admin'" in res.stderr


def test_output_format_from_env_or_either_side_of_the_command(run):
    run("ns", "create", "team")
    as_env = run("ns", "list", env={"SWARM_MEMORY_OUTPUT": "json"}).stdout
    assert [n["name"] for n in json.loads(as_env)] == ["team"]
    assert [n["name"] for n in json.loads(run("-o", "json", "ns", "list").stdout)] == ["team"]
    # The command's own -o wins over the global one and over the variable.
    out = run("-o", "json", "ns", "list", "-o", "table", env={"SWARM_MEMORY_OUTPUT": "json"})
    assert "1 namespaces" in out.stdout and not out.stdout.lstrip().startswith("[")


ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$")


def test_json_timestamps_have_one_format(run):
    """ISO 8601 with its UTC offset and milliseconds (the server clock's resolution),
    whichever command prints them, even on a whole second."""
    run("ns", "create", "team", "--history", "2")
    run("put", "team", "k", "1", "--ttl", "600")
    run("put", "team", "k", "2", "--ttl", "600")
    stamps = []
    got = run.json("get", "team", "k")
    stamps += [got["created_at"], got["updated_at"], got["expires_at"]]
    (row,) = run.json("ls", "team")
    stamps += [row["updated_at"]]
    stamps += [e["updated_at"] for e in run.json("history", "team", "k")]
    stamps += [run.json("put", "team", "k", "3", "--ttl", "600")["expires_at"]]
    stamps += [run.json("ns", "info", "team")["created_at"]]
    assert all(ISO_MS.match(s) for s in stamps), stamps
    assert row["updated_at"] == got["updated_at"]
    assert jsonable(datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)) == "2024-05-06T07:08:09.000+00:00"

"""inbox ls|rm."""

from __future__ import annotations

from datetime import datetime

from swarm_memory import Settings, SwarmMemory
from swarm_memory.keys import InboxKeys, inbox_index_key
from tests.cli.conftest import one_error_line


def _send(run, to: str, n: int) -> None:
    memory = run.memory("alice")
    try:
        for i in range(n):
            memory.send(to, {"i": i})
    finally:
        memory.close()


def test_ls_lists_every_inbox_as_a_table_or_json(run):
    assert run.json("inbox", "ls") == []
    assert "0 inboxes" in run("inbox", "ls").stdout
    _send(run, "bob", 2)
    _send(run, "carol", 1)
    listed = run.json("inbox", "ls")
    assert [(d["owner"], d["length"], d["pending"]) for d in listed] == [
        ("bob", 2, 0),
        ("carol", 1, 0),
    ]
    for d in listed:  # ISO 8601 instants; the default retention is a week
        left = datetime.fromisoformat(d["expires_at"]) - datetime.fromisoformat(d["last_active"])
        assert 7 * 86400 - 5 <= left.total_seconds() <= 7 * 86400 + 0.01
    out = run("inbox", "ls", "-o", "table").stdout
    assert "2 inboxes" in out and "bob" in out and "carol" in out
    # Retention is the acting client's setting: an inbox last touched with None never expires.
    settings = Settings(redis_url=run.server.url, key_prefix=run.prefix, inbox_retention=None)
    with SwarmMemory.from_url(agent="alice", settings=settings) as memory:
        memory.send("dave", "kept")
    dave = run.json("inbox", "ls")[-1]
    assert (dave["owner"], dave["length"], dave["expires_at"]) == ("dave", 1, None)
    assert "never" in run("inbox", "ls").stdout
    bad = run("inbox", "ls", env={"SWARM_MEMORY_INBOX_RETENTION": "0"}, code=2)
    assert "inbox_retention" in one_error_line(bad.stderr)


def test_rm_dry_runs_asks_and_deletes_only_as_the_owner(run):
    _send(run, "bob", 3)
    _send(run, "carol", 1)
    before = run.snapshot()
    dry = run.json("inbox", "rm", "bob", "--dry-run")
    assert dry == {"dry_run": True, "owner": "bob", "messages": 3}
    # Not the owner: refused by the script, exit 4, one line that says what to do.
    err = run("inbox", "rm", "bob", "--yes", code=4).stderr
    assert "--agent bob" in one_error_line(err)
    run("--agent", "bob", "inbox", "rm", "bob", input="n\n", code=1)  # declined
    assert run.snapshot() == before
    out = run.json("--agent", "bob", "inbox", "rm", "bob", "--yes")
    assert out == {"dry_run": False, "owner": "bob", "messages": 3, "deleted": True}
    after = run.snapshot()
    assert not any(b"{@inbox:bob}" in key for key in after)
    index = inbox_index_key(run.prefix).encode()
    assert after[index] == ("zset", [(b"carol", 0.0)])
    assert [d["owner"] for d in run.json("inbox", "ls")] == ["carol"]
    assert "no inbox" in one_error_line(run("--agent", "bob", "inbox", "rm", "bob", code=3).stderr)
    run("inbox", "rm", "bad name", code=2)
    assert InboxKeys.of(run.prefix, "carol").stream.encode() in after


def test_errors_are_one_line_from_a_real_process(run):
    _send(run, "bob", 1)
    proc = run.proc("inbox", "rm", "bob", "--yes")
    assert proc.returncode == 4
    assert "only 'bob' may delete its inbox" in one_error_line(proc.stderr)
    proc = run.proc("inbox", "rm", "nobody", "--yes")
    assert proc.returncode == 3
    one_error_line(proc.stderr)

"""graph create|add|recall|neighbors|bundle, and their exit codes."""

from __future__ import annotations


def test_graph_commands_add_recall_link_and_bundle(run):
    run("graph", "create", "kb", "--link-kind", "supports")
    a = run.json(
        "graph", "add", "kb", '{"f": 1}', "--context", "t1", "--tag", "x", "--confidence", "0.7"
    )
    assert a["created"] is True and a["agent"] == "cli" and a["content"] == {"f": 1}
    b = run.json(
        "graph", "add", "kb", '{"f": 2}', "--context", "t1", "--link", f"supports:{a['id']}"
    )
    again = run.json("graph", "add", "kb", '{"f": 1}', "--context", "t1")
    assert again["id"] == a["id"] and again["created"] is False
    page = run.json("graph", "recall", "kb", "--context", "t1", "--limit", "1")
    assert [n["id"] for n in page["nodes"]] == [b["id"]] and page["cursor"]
    rest = run.json("graph", "recall", "kb", "--context", "t1", "--cursor", page["cursor"])
    assert [n["id"] for n in rest["nodes"]] == [a["id"]] and rest["cursor"] is None
    assert [n["id"] for n in run.json("graph", "recall", "kb", "--tag", "x")["nodes"]] == [a["id"]]
    near = run.json("graph", "neighbors", "kb", b["id"], "--direction", "out")
    assert [(x["node"]["id"], x["kind"]) for x in near] == [(a["id"], "supports")]
    listed = run.json("graph", "bundle", "kb", "t1", "--add", a["id"], "--add", b["id"])
    assert sorted(n["id"] for n in listed) == sorted([a["id"], b["id"]])
    assert "2 nodes" in run("graph", "recall", "kb").stdout


def test_graph_command_errors_have_their_exit_codes(run):
    run("graph", "create", "kb", "--link-kind", "supports")
    a = run.json("graph", "add", "kb", "1", "--context", "t1")
    run("graph", "add", "kb", "1", "--context", "t1", "--confidence", "1.5", code=2)
    run("graph", "add", "kb", "not json", "--context", "t1", code=2)
    run("graph", "neighbors", "kb", "f" * 24, code=3)
    run("graph", "add", "kb", "2", "--context", "t1", "--link", "refutes:" + a["id"], code=2)
    run("graph", "recall", "nope", code=3)
    run("graph", "create", "kb", code=5)

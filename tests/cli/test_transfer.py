"""export -> import: JSON Lines with versions, TTLs and a sha256 checksum; skip/overwrite/cas."""

from __future__ import annotations

import hashlib
import json

import pytest

from tests.cli.conftest import one_error_line

VALUES = {
    "big": 123456789012345678901234567890,
    "neg": -(2**70),
    "float": 0.30000000000000004,
    "tiny": 5e-324,
    "list": [],
    "obj": {},
    "nested": {"a": [{}, [], 1.5, None, True, "ü"]},
    "text": "line\nbreak",
}


def _fill(run, ns: str = "src") -> None:
    run("ns", "create", ns, "--history", "3", "--strategy", "first-wins")
    for key, value in VALUES.items():
        run("put", ns, key, "--", json.dumps(value))  # -- : a negative number is no option
    run("put", ns, "expiring", '"soon"', "--ttl", "300")


def _export(run, tmp_path, ns: str = "src"):
    path = tmp_path / "dump.jsonl"
    summary = run.json("export", ns, str(path))
    return path, summary


def test_export_format_and_checksum(run, tmp_path):
    _fill(run)
    path, summary = _export(run, tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    header, *entries, trailer = (json.loads(line) for line in lines)
    assert header["format"] == "swarm-memory/export-v1" and header["namespace"] == "src"
    assert header["config"]["strategy"] == "first-wins" and header["config"]["history"] == 3
    assert trailer["digest"] == hashlib.sha256(b"".join(lines[:-1])).hexdigest()
    assert trailer["entries"] == len(entries) == len(VALUES) + 1 == summary["entries"]
    by_key = {e["key"]: e for e in entries}
    assert {k: by_key[k]["value"] for k in VALUES} == VALUES
    assert all(e["version"] == 1 for e in entries)
    assert 290 < by_key["expiring"]["ttl"] <= 300 and by_key["big"]["ttl"] is None
    # To stdout, the export is the only output.
    out = run("export", "src").stdout.encode().splitlines(keepends=True)
    assert [json.loads(line).get("key") for line in out] == [
        json.loads(x).get("key") for x in lines
    ]
    assert json.loads(out[-1])["digest"] == hashlib.sha256(b"".join(out[:-1])).hexdigest()


def test_roundtrip_into_a_new_namespace_is_exact(run, tmp_path):
    _fill(run)
    path, _ = _export(run, tmp_path)
    res = run.json("import", str(path), "--namespace", "dst", "--create-namespace")
    assert res["result"]["create"] == len(VALUES) + 1
    info = run.json("ns", "info", "dst")
    assert info["strategy"] == "first-wins" and info["history"] == 3
    for key, value in VALUES.items():
        got = run.json("get", "dst", key)["value"]
        assert got == value and type(got) is type(value), key
    assert 280 < run.json("get", "dst", "expiring")["ttl"] <= 300
    # The library reads the very same values back.
    with run.memory() as mem:
        assert mem.namespace("dst").get("big").value == VALUES["big"]
        assert mem.namespace("dst").get("list").value == []


@pytest.mark.parametrize("damage", ["edit", "truncate", "drop-trailer", "not-json"])
def test_tampered_files_are_refused_before_writing(run, tmp_path, damage):
    _fill(run)
    path, _ = _export(run, tmp_path)
    data = path.read_bytes()
    if damage == "edit":
        data = data.replace(b"0.30000000000000004", b"0.30000000000000005")
    elif damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "drop-trailer":
        data = b"".join(data.splitlines(keepends=True)[:-1])
    else:
        data = b"hello\nworld\n"
    path.write_bytes(data)
    run("ns", "create", "dst")
    before = run.snapshot()
    res = run("import", str(path), "-n", "dst", "--mode", "overwrite", "--yes", code=2)
    assert "nothing imported" in res.stderr
    assert run.snapshot() == before


def test_modes_skip_overwrite_cas(run, tmp_path):
    _fill(run)
    path, _ = _export(run, tmp_path)
    run("ns", "create", "dst")
    run("put", "dst", "big", '"kept"')
    # skip: existing keys stay, the rest are created.
    res = run.json("import", str(path), "-n", "dst")
    assert res["result"]["skip"] == 1 and res["result"]["create"] == len(VALUES)
    assert run.json("get", "dst", "big")["value"] == "kept"
    # overwrite asks (no answer: refused, nothing changed), then replaces with --yes.
    before = run.snapshot()
    run("import", str(path), "-n", "dst", "--mode", "overwrite", code=1)
    assert run.snapshot() == before
    dry = run.json("import", str(path), "-n", "dst", "--mode", "overwrite", "--dry-run")
    assert dry["plan"]["overwrite"] == len(VALUES) + 1 and run.snapshot() == before
    run("import", str(path), "-n", "dst", "--mode", "overwrite", "--yes")
    assert run.json("get", "dst", "big")["value"] == VALUES["big"]
    # cas: only keys still at the exported version; others are conflicts (exit 5).
    run("ns", "create", "cas")
    run("put", "cas", "float", '"v1"')
    run("put", "cas", "float", '"v2"')  # version 2: differs from the exported version 1
    run("put", "cas", "list", '"v1"')  # version 1: same as exported
    res = run("import", str(path), "-n", "cas", "--mode", "cas", "-o", "json", code=5)
    outcome = json.loads(res.stdout)["result"]
    assert outcome["conflict"] == 1 and outcome["write"] == 1
    assert outcome["create"] == len(VALUES) - 1
    assert "1 entries changed" in res.stderr
    assert run.json("get", "cas", "float")["value"] == "v2"
    assert run.json("get", "cas", "list")["value"] == []


def test_import_dry_run_and_missing_namespace(run, tmp_path):
    _fill(run)
    path, _ = _export(run, tmp_path)
    before = run.snapshot()
    dry = run.json("import", str(path), "-n", "fresh", "--create-namespace", "--dry-run")
    assert dry["create_namespace"] is True and dry["plan"]["create"] == len(VALUES) + 1
    assert run.snapshot() == before
    assert "'fresh' not found" in run("import", str(path), "-n", "fresh", code=3).stderr
    run("import", str(tmp_path / "nope.jsonl"), code=2)  # click: no such file


CONFIG = (
    "default_permission", "permissions", "strategy", "ttl", "max_keys", "max_bytes",
    "history", "over_quota", "max_events", "require_lock",
)  # fmt: skip


def test_create_namespace_keeps_every_config_field(run, tmp_path):
    """permissions and require_lock too; entries land although require_lock is on."""
    with run.memory() as mem:
        mem.create_namespace(
            "full",
            default_permission="read",
            permissions={"auditor": "read", "worker": "write", "boss": "admin"},
            strategy="first-wins",
            ttl=600,
            max_keys=50,
            max_bytes=100_000,
            history=4,
            over_quota="evict-oldest",
            max_events=500,
        )
        ns = mem.namespace("full")
        ns.put("a", {"x": 1})
        ns.put("b", [1, 2])
        mem.update_namespace("full", require_lock=True)
    path = tmp_path / "full.jsonl"
    run("export", "full", str(path))
    header = json.loads(path.read_bytes().splitlines()[0])
    assert set(header["config"]) == set(CONFIG)
    res = run.json("import", str(path), "-n", "copy", "--create-namespace")
    assert res["result"]["create"] == 2
    src, dst = run.json("ns", "info", "full"), run.json("ns", "info", "copy")
    assert {f: dst[f] for f in CONFIG} == {f: src[f] for f in CONFIG}
    assert dst["require_lock"] is True and dst["permissions"]["worker"] == "write"
    assert run.json("get", "copy", "a")["value"] == {"x": 1}


def test_missing_namespace_error_suggests_create_namespace(run, tmp_path):
    _fill(run)
    path, _ = _export(run, tmp_path)
    res = run("import", str(path), "-n", "fresh", code=3)
    assert "'fresh' not found" in res.stderr and "--create-namespace" in res.stderr


def test_export_to_an_unwritable_path_is_one_error_line(run, tmp_path):
    run("ns", "create", "src")
    target = tmp_path / "no-such-dir" / "dump.jsonl"
    proc = run.proc("export", "src", str(target))
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc.stderr)
    assert str(target) in line and "No such file or directory" in line
    proc = run.proc("import", str(target))
    assert proc.returncode == 2, proc.stderr
    assert str(target) in one_error_line(proc.stderr)

"""doctor: version, persistence, maxmemory policy, scripts, cluster mode, clock."""

from __future__ import annotations

import json
from typing import Any

from swarm_memory.testing import embedded_server
from tests.servers import RedisServer


def _checks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["check"]: c for c in report["checks"]}


def test_doctor_on_a_healthy_server(run):
    report = run.json("doctor")
    assert report["ok"] is True and report["cluster"] is False
    assert report["url"] == run.server.url and report["prefix"] == run.prefix
    checks = _checks(report)
    assert set(checks) >= {
        "ping", "version", "cluster mode", "replication", "persistence", "maxmemory",
        "scripts", "clock",
    }  # fmt: skip
    assert checks["version"]["status"] == "ok" and checks["version"]["detail"].startswith("Redis 7")
    assert checks["cluster mode"]["detail"] == "standalone"
    # The test server has no maxmemory: nothing fails loudly, Redis grows until the OOM
    # killer; and no persistence. Warnings that name the fix, not failures.
    memory = checks["maxmemory"]
    assert memory["status"] == "warn" and "maxmemory 0" not in memory["detail"]
    assert "fail loudly" not in memory["detail"]
    assert "OOM killer" in memory["detail"] and "deploy/redis.conf" in memory["detail"]
    assert checks["persistence"]["status"] == "warn"
    assert "deploy/redis.conf" in checks["persistence"]["detail"]
    assert checks["clock"]["status"] == "ok"
    # Scripts: counted against the server's cache; using the library loads some.
    run("ns", "create", "team")
    cached = _checks(run.json("doctor"))["scripts"]["detail"]
    assert not cached.startswith("0/")
    assert "doctor:" in run("doctor").stdout


def test_doctor_on_a_bounded_noeviction_server(run):
    with RedisServer(["--maxmemory", "64mb", "--maxmemory-policy", "noeviction"]) as server:
        report = run.json("--url", server.url, "doctor")
    memory = _checks(report)["maxmemory"]
    assert memory["status"] == "ok" and "maxmemory 67108864 bytes" in memory["detail"]
    assert "writes are refused" in memory["detail"]


def test_doctor_fails_on_an_evicting_server(run):
    with RedisServer(["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru",
                      "--appendonly", "yes"]) as server:  # fmt: skip
        res = run("-o", "json", "doctor", env={"SWARM_MEMORY_REDIS_URL": server.url}, code=7)
        checks = _checks(json.loads(res.stdout))
        assert checks["maxmemory"]["status"] == "fail"
        assert (
            checks["persistence"]["status"] == "ok" and "AOF on" in checks["persistence"]["detail"]
        )
        assert "1 check(s) failed: maxmemory" in res.stderr
    with RedisServer(["--maxmemory", "64mb", "--maxmemory-policy", "volatile-lru"]) as server:
        res = run("--url", server.url, "-o", "json", "doctor")
        assert _checks(json.loads(res.stdout))["maxmemory"]["status"] == "warn"


def test_doctor_reports_cluster_mode(run, redis_cluster):
    url = redis_cluster.url
    res = run("--url", url, "-o", "json", "doctor", code=7)  # a cluster, but not told so
    checks = _checks(json.loads(res.stdout))
    assert checks["cluster mode"]["status"] == "fail"
    assert "SWARM_MEMORY_CLUSTER=1" in checks["cluster mode"]["detail"]
    report = run.json("--url", url, "--cluster", "doctor")
    assert report["ok"] is True and report["cluster"] is True
    nodes = {c["node"] for c in report["checks"]}
    assert len(nodes) == 3
    assert all(c["detail"] == "cluster" for c in report["checks"] if c["check"] == "cluster mode")


def test_doctor_reports_a_cluster_flag_against_a_standalone_server(run):
    """The mode check is doctor's job: a finding (exit 7), not a crash."""
    res = run("--cluster", "-o", "json", "doctor", code=7)
    report = json.loads(res.stdout)
    assert report["ok"] is False and report["cluster"] is True
    checks = _checks(report)
    mode = checks["cluster mode"]
    assert mode["status"] == "fail" and "standalone" in mode["detail"]
    assert "--no-cluster" in mode["detail"]
    assert checks["ping"]["status"] == "ok"  # the other checks still ran
    assert "1 check(s) failed: cluster mode" in res.stderr
    assert "Traceback" not in res.stderr
    table_out = run("--cluster", "doctor", code=7).stdout
    assert "cluster mode" in table_out and "FAIL" in table_out


def test_doctor_on_the_fakeredis_fallback_warns_instead_of_crashing(run):
    with embedded_server("fakeredis") as url:
        report = run.json("--url", url, "doctor")
    checks = _checks(report)
    assert report["ok"] is True
    assert checks["server"]["status"] == "warn" and checks["clock"]["status"] == "ok"

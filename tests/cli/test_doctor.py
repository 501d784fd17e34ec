"""doctor: version, persistence, maxmemory policy, scripts, cluster mode, clock."""

from __future__ import annotations

import json

from swarm_memory.testing import embedded_server
from tests.servers import RedisServer


def _checks(report: dict) -> dict[str, dict]:
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
    assert checks["maxmemory"]["status"] == "ok" and "noeviction" in checks["maxmemory"]["detail"]
    # The test server runs without persistence: a warning, not a failure.
    assert checks["persistence"]["status"] == "warn"
    assert checks["clock"]["status"] == "ok"
    # Scripts: counted against the server's cache; using the library loads some.
    run("ns", "create", "team")
    cached = _checks(run.json("doctor"))["scripts"]["detail"]
    assert not cached.startswith("0/")
    assert "doctor:" in run("doctor").stdout


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


def test_doctor_on_the_fakeredis_fallback_warns_instead_of_crashing(run):
    with embedded_server("fakeredis") as url:
        report = run.json("--url", url, "doctor")
    checks = _checks(report)
    assert report["ok"] is True
    assert checks["server"]["status"] == "warn" and checks["clock"]["status"] == "ok"

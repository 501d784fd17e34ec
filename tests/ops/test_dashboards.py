"""Dashboards: every query is valid PromQL (promtool parses it), names only metrics the
exporter or ClientMetrics export, and returns data from a real Prometheus scraping a real
exporter and an instrumented client over a real Redis under a small workload."""

from __future__ import annotations

import contextlib
import json
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from prometheus_client import CollectorRegistry, start_http_server

from swarm_memory import ClientMetrics, ConflictError, PermissionDenied, Settings, SwarmMemory
from swarm_memory.exporter import serve
from tests.ops.support import (
    DASHBOARDS,
    GRAFANA,
    Query,
    dashboard_queries,
    exported_sample_names,
    run,
    tool,
)
from tests.servers import RedisServer, free_port


def promtool_parse(queries: list[Query], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """promtool has no "check expression": each query becomes a recording rule, which
    `promtool check rules` parses with Prometheus's own PromQL parser."""
    rules = {
        "groups": [
            {
                "name": "dashboards",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": q.expr}
                    for i, q in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    return run(tool("promtool"), "check", "rules", str(path))


def test_dashboards_exist_with_provisioning():
    assert {p.name for p in DASHBOARDS} == {"overview.json", "namespace.json", "locks-events.json"}
    provider = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "swarm-memory.yml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"
    uids = [json.loads(p.read_text())["uid"] for p in DASHBOARDS]
    assert len(set(uids)) == len(uids)


def test_every_dashboard_query_is_valid_promql(tmp_path: Path):
    queries = dashboard_queries()
    assert len(queries) > 40
    out = promtool_parse(queries, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{len(queries)} rules found" in out.stdout


def test_promql_check_catches_a_broken_query(tmp_path: Path):
    queries = dashboard_queries()
    broken = [
        *queries[:3],
        Query("x", "y", "sum by (op (rate(swarm_memory_client_retries_total[1m]))"),
    ]
    out = promtool_parse(broken, tmp_path)
    assert out.returncode != 0
    assert "parse error" in out.stdout + out.stderr


def test_every_dashboard_query_names_only_exported_metrics():
    exported = exported_sample_names()
    for q in dashboard_queries():
        assert q.names, f"{q.dashboard} / {q.panel}: no swarm_memory metric in {q.expr}"
        unknown = q.names - exported
        assert not unknown, f"{q.dashboard} / {q.panel}: {unknown}"


def test_name_check_catches_an_unknown_metric(tmp_path: Path):
    board = json.loads(DASHBOARDS[0].read_text())
    board["panels"][0]["targets"][0]["expr"] = "sum(swarm_memory_namespace_entriez)"
    path = tmp_path / "b.json"
    path.write_text(json.dumps(board))
    (q, *_) = dashboard_queries([path])
    assert q.names - exported_sample_names() == {"swarm_memory_namespace_entriez"}


# -- end to end ------------------------------------------------------------------------


class Workload(threading.Thread):
    """A small swarm: writes, CAS conflicts, denials, TTL expiries, a watcher, locks (a
    held one, a contended acquire that times out) and paused writes (transport retries)."""

    def __init__(self, url: str, settings: Settings, metrics: ClientMetrics) -> None:
        super().__init__(daemon=True)
        self.url, self.settings, self.metrics = url, settings, metrics
        self.stop = threading.Event()
        self.rounds = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _run(self) -> None:
        mem = SwarmMemory.from_url(
            self.url, agent="lead", settings=self.settings, metrics=self.metrics
        )
        mem.create_namespace("team", default_permission="read", permissions={"worker": "write"})
        mem.create_namespace("quota", max_keys=20, max_bytes=100_000)
        team = mem.namespace("team")
        worker = mem.as_agent("worker").namespace("team")
        intruder = mem.as_agent("intruder").namespace("team")
        quota = mem.namespace("quota")
        watch = team.watch(since=0)
        killer = redis.Redis.from_url(self.url)
        impatient = SwarmMemory.from_url(
            self.url,
            agent="lead",
            settings=self.settings.model_copy(update={"socket_timeout": 0.1}),
            metrics=self.metrics,
        ).namespace("quota")
        try:
            while not self.stop.is_set():
                i = self.rounds
                e = team.put("plan", {"round": i})
                with contextlib.suppress(ConflictError):
                    worker.put("plan", {"stale": i}, expected_version=e.version - 1)
                with contextlib.suppress(PermissionDenied):
                    intruder.put("plan", "mine")
                quota.put(f"slot-{i % 15}", i)
                team.put(f"short-{i}", i, ttl=0.05)
                team.get("plan")
                if i % 5 == 0:
                    # Writes paused longer than this client's socket timeout: its first
                    # try times out, the driver retries (same op id) and succeeds.
                    killer.client_pause(250, all=False)
                    impatient.put("retried", i)
                self._locks(team, worker)
                while watch.get(timeout=0) is not None:
                    pass
                if i % 3 == 0:
                    team.sweep()
                self.rounds += 1
                time.sleep(0.05)
        finally:
            watch.close()
            killer.close()
            impatient.memory.close()
            mem.close()

    def _locks(self, team: Any, worker: Any) -> None:
        # The lock code reports its waits through driver.metrics.observe_lock_wait.
        from swarm_memory.errors import LockTimeout  # lands with the lock API

        with team.lock("deploy", ttl=5):  # held: the worker's short wait times out
            contender = worker.lock("deploy", ttl=5, wait=0.02)
            with pytest.raises(LockTimeout):
                contender.acquire()


@contextlib.contextmanager
def prometheus(targets: dict[str, int]) -> Iterator[str]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="swarm-prom-") as tmp:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{p}"]}]}
                for job, p in targets.items()
            ],
        }
        cfg = Path(tmp) / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(config))
        log = (Path(tmp) / "prometheus.log").open("wb")
        proc = subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={cfg}",
                f"--storage.tsdb.path={tmp}/data",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    urllib.request.urlopen(base + "/-/ready", timeout=1)
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        log.close()
                        pytest.fail(
                            "prometheus did not start: "
                            + (Path(tmp) / "prometheus.log").read_text()[-2000:]
                        )
                    time.sleep(0.2)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            log.close()


def instant(base: str, expr: str) -> dict[str, Any]:
    url = base + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as reply:
        return json.loads(reply.read())


def test_every_dashboard_query_returns_data_from_a_real_prometheus(redis_server: RedisServer):
    settings = Settings(key_prefix="p" + uuid.uuid4().hex[:10], watch_poll=0.2)
    exporter = serve(redis_server.url, settings=settings, port=0, addr="127.0.0.1")
    registry = CollectorRegistry()
    metrics = ClientMetrics(registry)
    client_server, _thread = start_http_server(0, "127.0.0.1", registry=registry)
    workload = Workload(redis_server.url, settings, metrics)
    workload.start()
    queries = dashboard_queries()
    missing: list[Query] = queries
    try:
        with prometheus({"exporter": exporter.port, "clients": client_server.server_port}) as base:
            deadline = time.monotonic() + 30
            while missing and time.monotonic() < deadline and workload.error is None:
                time.sleep(1)
                missing = []
                for q in queries:
                    reply = instant(base, q.expr)
                    assert reply["status"] == "success", (q, reply)
                    if not reply["data"]["result"]:
                        missing.append(q)
            up = instant(base, "up")["data"]["result"]
    finally:
        workload.stop.set()
        workload.join(10)
        client_server.shutdown()
        client_server.server_close()
        exporter.close()
    assert workload.error is None, repr(workload.error)
    assert workload.rounds > 10
    assert sorted(float(r["value"][1]) for r in up) == [1.0, 1.0]
    assert not missing, "\n".join(f"{q.dashboard} / {q.panel}: {q.expr}" for q in missing)

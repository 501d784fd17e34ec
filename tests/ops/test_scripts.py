"""scripts/test, the README's test command: it installs the system tools the tests use
when they are missing (apt-get), and where it cannot, names them and exits 3 before any
test runs. The tools are hidden from PATH here; nothing of the machine is uninstalled."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.ops.support import ROOT

SCRIPT = ROOT / "scripts" / "test"
# What scripts/test itself needs from PATH to get as far as the tool check.
BASICS = ("bash", "env", "id", "awk", "dirname", "cat")
TOOLS = ("redis-server", "redis-cli", "prometheus", "promtool", "systemd-analyze")


def bare_path(tmp_path: Path) -> Path:
    """A PATH directory with the basics and none of the tools."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in BASICS:
        found = shutil.which(name)
        assert found, name
        (bin_dir / name).symlink_to(found)
    return bin_dir


def run(bin_dir: Path) -> subprocess.CompletedProcess[str]:
    bash = shutil.which("bash")
    assert bash
    return subprocess.run(
        [bash, str(SCRIPT), "--tools-only"],
        env={"PATH": str(bin_dir), "HOME": os.environ.get("HOME", "/tmp")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_missing_tools_without_apt_get_are_named_and_nothing_runs(tmp_path: Path):
    out = run(bare_path(tmp_path))
    assert out.returncode == 3, out.stderr
    for tool in TOOLS:
        assert tool in out.stderr
    for package in ("redis-server", "redis-tools", "prometheus", "systemd"):
        assert package in out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""


def test_missing_tools_are_installed_with_apt_get(tmp_path: Path):
    """A stand-in apt-get records what it was asked for and 'installs' it (an empty
    executable per tool), as the real one would put the tools on PATH."""
    bin_dir = bare_path(tmp_path)
    log = tmp_path / "apt.log"
    fake = bin_dir / "apt-get"
    stubs = " ".join(f"{bin_dir}/{tool}" for tool in TOOLS)
    fake.write_text(
        "#!/bin/bash\n"
        f'echo "$*" >> {log}\n'
        f'if [ "$1" = install ]; then for t in {stubs}; do printf "#!/bin/true\\n" > $t; '
        "/bin/chmod +x $t; done; fi\n"
    )
    fake.chmod(0o755)
    if os.geteuid() != 0:  # scripts/test goes through sudo when not root
        (bin_dir / "sudo").write_text('#!/bin/bash\nshift\nexec "$@"\n')
        (bin_dir / "sudo").chmod(0o755)
    out = run(bin_dir)
    assert out.returncode == 0, out.stderr
    calls = log.read_text().splitlines()
    assert calls[0] == "update -qq"
    assert calls[1].startswith("install -y -qq --no-install-recommends")
    assert calls[1].split()[4:] == ["redis-server", "redis-tools", "prometheus", "systemd"]
    assert "installing" in out.stderr


def test_nothing_is_installed_when_the_tools_are_there(tmp_path: Path):
    bin_dir = bare_path(tmp_path)
    for tool in TOOLS:
        (bin_dir / tool).write_text("#!/bin/true\n")
        (bin_dir / tool).chmod(0o755)
    out = run(bin_dir)
    assert out.returncode == 0 and out.stderr == ""


def test_lowest_constraints_pin_the_library_and_the_cli_extra():
    """The lowest-versions run pins every runtime dependency, the CLI's included."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "lowest-constraints")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    pins = dict(line.split("==") for line in out.stdout.splitlines())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for dep in (*project["dependencies"], *project["optional-dependencies"]["cli"]):
        name = re.split(r"[\[<>=!~;\s]", dep, maxsplit=1)[0]
        bound = re.search(r">=\s*([^,;\s]+)", dep)
        assert bound is not None and pins[name] == bound[1], dep
    assert {"click", "rich"} <= pins.keys()

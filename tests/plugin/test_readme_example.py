"""The README's "Testing your agents" example, run as written (so the README stays true):
on fakeredis and on a real server, under pytest-asyncio strict mode."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.plugin.conftest import UserProject
from tests.servers import RedisServer

pytest_plugins = ["pytester"]

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Testing your agents"


def example_files() -> dict[str, str]:
    """The section's Python blocks by the file name each one's first line gives."""
    text = README.read_text(encoding="utf-8")
    assert text.count(SECTION) == 1
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    files = {}
    for block in re.findall(r"```python\n(.*?)```", section, re.DOTALL):
        first = block.splitlines()[0]
        assert re.fullmatch(r"# \w+\.py", first), first
        files[first[2:-3]] = block
    return files


def test_the_readme_example_has_an_agent_module_and_its_tests() -> None:
    files = example_files()
    assert sorted(files) == ["agents", "test_agents"]
    for fixture in ("swarm_memory", "swarm_memory_factory", "async_swarm_memory"):
        assert f"{fixture}," in files["test_agents"] or f"{fixture})" in files["test_agents"]


@pytest.mark.parametrize("backend", ["fake", "redis"])
def test_the_readme_example_passes(
    project: UserProject, request: pytest.FixtureRequest, backend: str
) -> None:
    project.pytester.makepyfile(**example_files())
    url = None
    if backend == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        url = server.url
    result = project.run("-v", url=url)
    result.assert_outcomes(passed=4)

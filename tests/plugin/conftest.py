"""Tests of the pytest plugin (swarm_memory/pytest_plugin.py), run as a user would: each
test writes a small user project with ``pytester`` and runs pytest on it in-process, so
the plugin comes in through its ``pytest11`` entry point (nothing passes ``-p``).

Each test module says ``pytest_plugins = ["pytester"]`` (pytest refuses it in a conftest.py
below the top level, which this one is when the whole suite runs).

``UserProject`` writes the project's ini (pytest-asyncio mode, warnings as errors) and
runs it with ``SWARM_MEMORY_TEST_URL`` unset (fakeredis) or set to a server the project's
``redis_server`` fixture started.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from swarm_memory.testing import TEST_URL_ENV


@dataclass
class UserProject:
    pytester: pytest.Pytester
    monkeypatch: pytest.MonkeyPatch

    def ini(self, asyncio_mode: str = "strict", extra: str = "") -> None:
        self.pytester.makeini(
            "[pytest]\n"
            f"asyncio_mode = {asyncio_mode}\n"
            "asyncio_default_fixture_loop_scope = function\n"
            "filterwarnings = error\n" + extra
        )

    def run(self, *args: str, url: str | None = None) -> pytest.RunResult:
        """pytest in-process on the project; ``url``: the real server to test against."""
        if url is None:
            self.monkeypatch.delenv(TEST_URL_ENV, raising=False)
        else:
            self.monkeypatch.setenv(TEST_URL_ENV, url)
        return self.pytester.runpytest("-p", "no:cacheprovider", "-W", "error", *args)


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> UserProject:
    p = UserProject(pytester, monkeypatch)
    p.ini()
    return p

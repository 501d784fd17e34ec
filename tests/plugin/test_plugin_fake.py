"""The plugin's fixtures on fakeredis: loading, the sync fixtures, isolation, naming."""

from __future__ import annotations

import importlib.metadata

from tests.plugin.conftest import UserProject

pytest_plugins = ["pytester"]

FIXTURES = (
    "swarm_memory",
    "swarm_memory_factory",
    "swarm_memory_store",
    "swarm_memory_settings",
    "async_swarm_memory",
    "async_swarm_memory_factory",
)


def test_the_entry_point_names_the_plugin_module() -> None:
    found = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="pytest11")}
    assert found.get("swarm_memory") == "swarm_memory.pytest_plugin"


def test_the_plugin_loads_without_p_and_lists_its_fixtures(project: UserProject) -> None:
    result = project.run("--fixtures")
    assert result.ret == 0
    listed = result.stdout.str()
    for name in FIXTURES:
        assert f"\n{name}" in listed, name


def test_the_plugin_can_be_turned_off(project: UserProject) -> None:
    project.pytester.makepyfile("def test_it(swarm_memory):\n    pass\n")
    result = project.run("-p", "no:swarm_memory")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'swarm_memory' not found*"])


SYNC_USER_TESTS = """
import threading

import pytest
from swarm_memory import SwarmMemory


def test_put_get_watch_lock(swarm_memory, swarm_memory_factory, swarm_memory_store):
    assert isinstance(swarm_memory, SwarmMemory)
    assert swarm_memory.agent == "agent"
    assert swarm_memory_store.is_fake
    swarm_memory.create_namespace("team")
    ns = swarm_memory.namespace("team")
    with ns.watch("plan*") as events:
        worker = swarm_memory_factory("worker").namespace("team")
        with worker.lock("plan", ttl=10) as lock:
            entry = worker.put("plan", {"steps": 3}, fence=lock.token)
        event = events.get(timeout=5)
    assert (event.key, event.agent, event.value) == ("plan", "worker", {"steps": 3})
    assert ns.get("plan").value == {"steps": 3}
    assert ns.get("plan").version == entry.version == 1
    assert swarm_memory_store.guard.calls > 0
    keys = swarm_memory_store.keys()
    assert keys and all(k.startswith(swarm_memory_store.prefix + ":") for k in keys)


def test_factory_clients_have_their_own_connection(swarm_memory, swarm_memory_factory):
    other = swarm_memory_factory("other", watch_poll=0.05)
    assert other.agent == "other"
    assert other.redis is not swarm_memory.redis
    assert other.settings.watch_poll == 0.05
    assert other.settings.key_prefix == swarm_memory.settings.key_prefix
    assert swarm_memory.as_agent("third").redis is swarm_memory.redis


def test_exact_counts_under_concurrency(swarm_memory, swarm_memory_factory):
    swarm_memory.create_namespace("c")
    agents = [swarm_memory_factory(f"a{i}").namespace("c") for i in range(4)]
    threads = [
        threading.Thread(target=lambda ns=ns: [ns.incr("n") for _ in range(25)])
        for ns in agents
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert swarm_memory.namespace("c").get("n").value == 100
"""


def test_sync_fixtures_put_get_watch_lock(project: UserProject) -> None:
    project.pytester.makepyfile(test_user=SYNC_USER_TESTS)
    project.run().assert_outcomes(passed=3)


ISOLATION_TESTS = """
PREFIXES = []


def test_first_writes(swarm_memory, swarm_memory_store):
    PREFIXES.append(swarm_memory_store.prefix)
    swarm_memory.create_namespace("shared")
    swarm_memory.namespace("shared").put("x", 1)
    swarm_memory.namespace("shared").broadcast("hello")
    assert swarm_memory_store.redis().dbsize() > 0


def test_second_sees_a_fresh_server(swarm_memory, swarm_memory_store):
    PREFIXES.append(swarm_memory_store.prefix)
    assert swarm_memory.list_namespaces() == []
    assert swarm_memory_store.keys() == []
    assert swarm_memory_store.redis().dbsize() == 0  # a new FakeServer, not just a new prefix
    assert len(set(PREFIXES)) == 2
"""


def test_each_test_gets_its_own_store(project: UserProject) -> None:
    project.pytester.makepyfile(test_isolation=ISOLATION_TESTS)
    project.run("-p", "no:randomly").assert_outcomes(passed=2)


def test_the_agent_comes_from_the_marker_then_the_ini_option(project: UserProject) -> None:
    project.ini(extra="swarm_memory_agent = tester\n")
    project.pytester.makepyfile(
        test_names="""
import pytest

pytestmark = pytest.mark.swarm_memory(agent="module-agent")


def test_module_marker(swarm_memory):
    assert swarm_memory.agent == "module-agent"


@pytest.mark.swarm_memory(agent="planner", watch_poll=0.05)
def test_test_marker_and_settings(swarm_memory, swarm_memory_factory):
    assert swarm_memory.agent == "planner"
    assert swarm_memory.settings.watch_poll == 0.05
    assert swarm_memory_factory("w").settings.watch_poll == 0.05
""",
        test_ini="""
def test_ini_option(swarm_memory, swarm_memory_factory):
    assert swarm_memory.agent == "tester"
    assert swarm_memory_factory("w").agent == "w"
""",
    )
    project.run().assert_outcomes(passed=3)


def test_bad_marker_arguments_are_errors(project: UserProject) -> None:
    project.pytester.makepyfile(
        test_bad="""
import pytest


@pytest.mark.swarm_memory(no_such_setting=1)
def test_unknown(swarm_memory):
    pass


@pytest.mark.swarm_memory(key_prefix="mine")
def test_prefix(swarm_memory):
    pass


@pytest.mark.swarm_memory(watch_poll=-1)
def test_invalid(swarm_memory):
    pass


@pytest.mark.swarm_memory("planner")
def test_positional(swarm_memory):
    pass
"""
    )
    result = project.run()
    result.assert_outcomes(errors=4)
    result.stdout.fnmatch_lines(
        [
            "*@pytest.mark.swarm_memory: unknown Settings field(s): no_such_setting",
            "*@pytest.mark.swarm_memory: key_prefix is chosen per test*",
            "*@pytest.mark.swarm_memory: 1 validation error for Settings",
            "watch_poll",
            "*@pytest.mark.swarm_memory takes keyword arguments only",
        ],
        consecutive=False,
    )


def test_a_conftest_can_override_the_base_settings(project: UserProject) -> None:
    project.pytester.makeconftest(
        """
import pytest
from swarm_memory import Settings


@pytest.fixture
def swarm_memory_settings():
    return Settings(key_prefix="myapp", max_depth=4)
"""
    )
    project.pytester.makepyfile(
        """
import pytest
from swarm_memory.errors import InvalidInput


def test_it(swarm_memory):
    assert swarm_memory.settings.max_depth == 4
    assert swarm_memory.settings.key_prefix.startswith("myapp.t")
    swarm_memory.create_namespace("n")
    with pytest.raises(InvalidInput):
        swarm_memory.namespace("n").put("deep", [[[[[1]]]]])
"""
    )
    project.run().assert_outcomes(passed=1)

"""The pytest plugin (entry point ``pytest11: swarm_memory``): fixtures for testing agents.

Every test gets its own :class:`~swarm_memory.testing.IsolatedStore`: a fresh fakeredis
server, or -- when ``SWARM_MEMORY_TEST_URL`` is set -- a unique key prefix on that real
Redis, every key under it deleted after the test (never FLUSHDB: the server may be shared).

Fixtures (all function-scoped):

- ``swarm_memory``: a :class:`~swarm_memory.SwarmMemory` as the test's agent.
- ``swarm_memory_factory``: ``factory(agent, **settings) -> SwarmMemory``, more agents on
  the same store, each on its own connection.
- ``async_swarm_memory`` / ``async_swarm_memory_factory``: the same with
  :class:`~swarm_memory.AsyncSwarmMemory`; these need pytest-asyncio (strict or auto mode)
  and run on the loop it gives function-scoped fixtures.
- ``swarm_memory_store``: the test's IsolatedStore (prefix, raw keys, raw clients).
- ``swarm_memory_settings``: the base :class:`~swarm_memory.Settings` (``Settings()``, so
  ``SWARM_MEMORY_*`` variables apply); override it in a conftest.py to change them.

The agent name: ``@pytest.mark.swarm_memory(agent="planner")`` on a test, class or module,
else the ``swarm_memory_agent`` ini option, else ``"agent"``. The marker's other keyword
arguments are Settings fields for that test (``watch_poll=0.05``...).

Nothing here imports pytest-asyncio or fakeredis at import time: the async fixtures are
registered in :func:`pytest_configure` only when the pytest-asyncio plugin is active
(otherwise fixtures of the same names fail with a message saying what to install).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from swarm_memory.aio import AsyncSwarmMemory
    from swarm_memory.client import SwarmMemory
    from swarm_memory.settings import Settings
    from swarm_memory.testing import IsolatedStore

DEFAULT_AGENT = "agent"
_MARKER = "swarm_memory"
_AGENT_INI = "swarm_memory_agent"
_ASYNC_FIXTURES = ("async_swarm_memory", "async_swarm_memory_factory")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        _AGENT_INI,
        f"agent name of the swarm_memory fixtures (default {DEFAULT_AGENT!r})",
        default=DEFAULT_AGENT,
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "swarm_memory(agent=None, **settings): agent name and Settings fields of the "
        "swarm_memory fixtures for this test",
    )
    config.pluginmanager.register(_async_fixtures(config), "swarm_memory.async_fixtures")


def _async_fixtures(config: pytest.Config) -> ModuleType:
    """A plugin module holding the async fixtures, wrapped for pytest-asyncio when it is
    active (so they work in its strict mode too), else stand-ins that fail saying what to
    install. (A module, not an object: pytest reads fixtures of an object off its type.)"""
    plugin = ModuleType(f"{__name__}.async_fixtures")
    if config.pluginmanager.has_plugin("asyncio"):
        import pytest_asyncio  # noqa: PLC0415 - only when the user's project has it

        functions = (_async_memory, _async_memory_factory)
        for name, function in zip(_ASYNC_FIXTURES, functions, strict=True):
            setattr(plugin, name, pytest_asyncio.fixture(function, name=name))
    else:
        for name in _ASYNC_FIXTURES:
            setattr(plugin, name, pytest.fixture(_needs_pytest_asyncio, name=name))
    return plugin


def _needs_pytest_asyncio(request: pytest.FixtureRequest) -> None:
    pytest.fail(
        f"the {request.fixturename} fixture needs pytest-asyncio: "
        "pip install pytest-asyncio (and mark async tests @pytest.mark.asyncio "
        "or set asyncio_mode = auto)",
        pytrace=False,
    )


@pytest.fixture
def swarm_memory_settings() -> Settings:
    """The base Settings of the swarm_memory fixtures (the store sets a unique key_prefix);
    override this fixture to change them for a directory or module."""
    from swarm_memory.settings import Settings  # noqa: PLC0415

    return Settings()


@pytest.fixture
def swarm_memory_store(
    request: pytest.FixtureRequest, swarm_memory_settings: Settings
) -> Iterator[IsolatedStore]:
    """This test's IsolatedStore: fake, or ``$SWARM_MEMORY_TEST_URL`` under a unique prefix
    (deleted at teardown)."""
    from swarm_memory.testing import IsolatedStore, _settings_with  # noqa: PLC0415

    overrides: dict[str, Any] = {}
    marker = request.node.get_closest_marker(_MARKER)
    if marker is not None:
        if marker.args:
            pytest.fail(f"@pytest.mark.{_MARKER} takes keyword arguments only", pytrace=False)
        overrides = dict(marker.kwargs)
    agent = overrides.pop("agent", None) or request.config.getini(_AGENT_INI) or DEFAULT_AGENT
    try:
        settings = _settings_with(swarm_memory_settings, overrides)
    except ValueError as err:  # InvalidOption, pydantic's ValidationError
        pytest.fail(f"@pytest.mark.{_MARKER}: {err}", pytrace=False)
    store = IsolatedStore.from_env(settings=settings, agent=str(agent))
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def swarm_memory(swarm_memory_store: IsolatedStore) -> SwarmMemory:
    """A SwarmMemory as this test's agent, on this test's store."""
    return swarm_memory_store.memory()


@pytest.fixture
def swarm_memory_factory(
    swarm_memory_store: IsolatedStore,
) -> Callable[..., SwarmMemory]:
    """``factory(agent, **settings) -> SwarmMemory``: another agent on the same store, on
    its own connection (``swarm_memory.as_agent(name)`` shares the first one's)."""
    return swarm_memory_store.memory


async def _async_memory(swarm_memory_store: IsolatedStore) -> AsyncIterator[AsyncSwarmMemory]:
    """An AsyncSwarmMemory as this test's agent, on this test's store (pytest-asyncio)."""
    memory = swarm_memory_store.async_memory()
    try:
        yield memory
    finally:
        await swarm_memory_store.close_async_clients()


async def _async_memory_factory(
    swarm_memory_store: IsolatedStore,
) -> AsyncIterator[Callable[..., AsyncSwarmMemory]]:
    """``factory(agent, **settings) -> AsyncSwarmMemory`` on this test's store."""
    try:
        yield swarm_memory_store.async_memory
    finally:
        await swarm_memory_store.close_async_clients()

"""The async fixtures under pytest-asyncio, strict and auto mode, on fakeredis and on a
real server; and what happens without pytest-asyncio."""

from __future__ import annotations

import pytest

from tests.plugin.conftest import UserProject
from tests.servers import RedisServer

pytest_plugins = ["pytester"]

ASYNC_USER_TESTS = """
import asyncio

import pytest
from swarm_memory import AsyncSwarmMemory, SwarmMemory

{mark}
async def test_put_get_watch_lock(async_swarm_memory, async_swarm_memory_factory,
                                  swarm_memory_store):
    assert isinstance(async_swarm_memory, AsyncSwarmMemory)
    assert swarm_memory_store.is_fake == {fake}
    await async_swarm_memory.create_namespace("team")
    ns = async_swarm_memory.namespace("team")
    async with await ns.watch("plan*") as events:
        worker = async_swarm_memory_factory("worker").namespace("team")
        async with worker.lock("plan", ttl=10) as lock:
            entry = await worker.put("plan", {{"steps": 3}}, fence=lock.token)
        event = await events.get(timeout=5)
    assert (event.key, event.agent, event.value) == ("plan", "worker", {{"steps": 3}})
    assert (await ns.get("plan")).version == entry.version == 1
    counters = [async_swarm_memory_factory(f"a{{i}}").namespace("team") for i in range(4)]
    await asyncio.gather(*(c.incr("n") for c in counters for _ in range(10)))
    assert (await ns.get("n")).value == 40
    assert swarm_memory_store.keys()


{mark}
async def test_sync_and_async_share_the_store(async_swarm_memory, swarm_memory):
    assert isinstance(swarm_memory, SwarmMemory)
    swarm_memory.create_namespace("both")
    swarm_memory.namespace("both").put("k", "from sync")
    assert (await async_swarm_memory.namespace("both").get("k")).value == "from sync"


{mark}
async def test_isolated(async_swarm_memory):
    assert await async_swarm_memory.list_namespaces() == []
"""

MODES = [
    pytest.param("strict", "@pytest.mark.asyncio", id="strict"),
    pytest.param("auto", "", id="auto"),
]


@pytest.mark.parametrize(("mode", "mark"), MODES)
def test_async_fixtures_on_fakeredis(project: UserProject, mode: str, mark: str) -> None:
    project.ini(asyncio_mode=mode)
    project.pytester.makepyfile(test_user=ASYNC_USER_TESTS.format(mark=mark, fake=True))
    project.run().assert_outcomes(passed=3)


@pytest.mark.parametrize(("mode", "mark"), MODES)
def test_async_fixtures_on_a_real_server(
    project: UserProject, redis_server: RedisServer, mode: str, mark: str
) -> None:
    project.ini(asyncio_mode=mode)
    project.pytester.makepyfile(test_user=ASYNC_USER_TESTS.format(mark=mark, fake=False))
    project.run(url=redis_server.url).assert_outcomes(passed=3)


def test_without_pytest_asyncio_the_async_fixtures_say_what_is_missing(
    project: UserProject,
) -> None:
    project.pytester.makeini("[pytest]\nfilterwarnings = error\n")
    project.pytester.makepyfile(
        """
def test_async(async_swarm_memory):
    pass


def test_async_factory(async_swarm_memory_factory):
    pass


def test_sync_still_works(swarm_memory):
    swarm_memory.create_namespace("n")
"""
    )
    result = project.run("-p", "no:asyncio")
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*the async_swarm_memory fixture needs pytest-asyncio: pip install pytest-asyncio*",
            "*the async_swarm_memory_factory fixture needs pytest-asyncio*",
        ],
        consecutive=False,
    )

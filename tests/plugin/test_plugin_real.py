"""``SWARM_MEMORY_TEST_URL``: the fixtures on a real (possibly shared) server, each test
under its own key prefix, every key under it deleted afterwards and nothing else."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.plugin.conftest import UserProject
from tests.servers import RedisServer

pytest_plugins = ["pytester"]

# Keys someone else keeps on the shared server: under the library's default prefix, under
# another prefix, and outside any prefix. The tests' prefixes start with "sm." too.
SENTINELS = {"sm:{board}:meta": "theirs", "sm.other:{board}:x": "theirs", "keep-me": "yes"}

REAL_USER_TESTS = """
import os
from pathlib import Path

import pytest
import redis

RECORD = Path({record!r})


def raw_keys(prefix):
    client = redis.Redis.from_url(os.environ["SWARM_MEMORY_TEST_URL"])
    try:
        return list(client.scan_iter(match=prefix + ":*"))
    finally:
        client.close()


def write_some(memory, store):
    with RECORD.open("a") as f:
        f.write(store.prefix + "\\n")
    memory.create_namespace("board")
    ns = memory.namespace("board")
    with ns.lock("t1", ttl=10) as lock:
        ns.put("t1", {{"done": True}}, fence=lock.token)
    ns.broadcast("hi")
    memory.inbox()  # an inbox and presence live outside the namespace
    memory.send("worker", {{"do": "t2"}})
    memory.heartbeat(30)


def test_sync(swarm_memory, swarm_memory_factory, swarm_memory_store):
    assert not swarm_memory_store.is_fake
    assert swarm_memory_store.prefix.startswith("sm.t")
    write_some(swarm_memory, swarm_memory_store)
    assert swarm_memory_factory("worker").namespace("board").get("t1").value == {{"done": True}}
    found = raw_keys(swarm_memory_store.prefix)
    assert len(found) >= 8 and len(found) == len(swarm_memory_store.keys())


@pytest.mark.asyncio
async def test_async(async_swarm_memory, swarm_memory_store):
    with RECORD.open("a") as f:
        f.write(swarm_memory_store.prefix + "\\n")
    await async_swarm_memory.create_namespace("board")
    await async_swarm_memory.namespace("board").put("a", 1)
    await async_swarm_memory.send("worker", "hello")
    assert raw_keys(swarm_memory_store.prefix)


def test_failing_still_cleans_up(swarm_memory, swarm_memory_store):
    write_some(swarm_memory, swarm_memory_store)
    assert raw_keys(swarm_memory_store.prefix)
    raise AssertionError("this test fails on purpose")
"""


@pytest.fixture
def shared(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    client.mset(SENTINELS)
    try:
        yield client
    finally:
        client.delete(*SENTINELS)
        client.close()


def test_every_key_under_the_test_prefix_goes_and_nothing_else(
    project: UserProject, redis_server: RedisServer, shared: redis.Redis, tmp_path: Path
) -> None:
    record = tmp_path / "prefixes.txt"
    project.pytester.makepyfile(test_user=REAL_USER_TESTS.format(record=str(record)))
    result = project.run(url=redis_server.url)
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*AssertionError: this test fails on purpose*"])

    prefixes = record.read_text().split()
    assert len(prefixes) == len(set(prefixes)) == 3
    for prefix in prefixes:
        assert list(shared.scan_iter(match=prefix + ":*")) == [], prefix
    assert {k: shared.get(k) for k in SENTINELS} == {k: v.encode() for k, v in SENTINELS.items()}

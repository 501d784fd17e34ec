"""Decision 4: times come from the Redis server clock, never from the agent's.

Real server only: fakeredis runs in-process, so its TIME *is* the agent's clock.
"""

from __future__ import annotations

import time as time_module
import uuid
from datetime import UTC, datetime

from swarm_memory import AsyncSwarmMemory, Settings, SwarmMemory


def _settings(url):
    return Settings(redis_url=url, key_prefix="t" + uuid.uuid4().hex[:12])


def test_agent_clock_is_ignored_sync(redis_server, monkeypatch):
    with SwarmMemory.from_url(agent="a", settings=_settings(redis_server.url)) as mem:
        mem.create_namespace("clock")
        ns = mem.namespace("clock")
        monkeypatch.setattr(time_module, "time", lambda: 0.0)  # the agent thinks it is 1970
        e = ns.put("k", 1, ttl=60)
        monkeypatch.undo()
    now = datetime.now(UTC)
    assert abs((e.updated_at - now).total_seconds()) < 30
    assert e.expires_at is not None
    assert (e.expires_at - e.updated_at).total_seconds() == 60


async def test_agent_clock_is_ignored_async(redis_server, monkeypatch):
    mem = AsyncSwarmMemory.from_url(agent="a", settings=_settings(redis_server.url))
    async with mem:
        await mem.create_namespace("clock")
        ns = mem.namespace("clock")
        monkeypatch.setattr(time_module, "time", lambda: 0.0)
        e = await ns.put("k", 1, ttl=60)
        monkeypatch.undo()
    assert abs((e.updated_at - datetime.now(UTC)).total_seconds()) < 30

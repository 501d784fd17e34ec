"""The sync direct path and the async pipe (``_pipeline.AsyncScriptPipe.call``) skip
redis-py's ``record_operation_duration`` only while redis-py's observability is off
(``_drive.recording_off``): a collector set means every script call is recorded again,
as execute_command would. Against a real redis-server."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from redis.asyncio.observability import recorder as async_recorder
from redis.observability import recorder

from swarm_memory import AsyncSwarmMemory, SwarmMemory
from swarm_memory._drive import recording_off
from tests.servers import RedisServer


class _Collector:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def record_operation_duration(self, **kw: Any) -> None:
        self.calls.append(kw)


def test_script_calls_are_recorded_once_a_collector_is_set(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    mem = SwarmMemory.from_url(redis_server.url, agent="rec")
    try:
        name = f"rec-{uuid.uuid4().hex[:8]}"
        mem.create_namespace(name)
        ns = mem.namespace(name)
        ns.put("k", 1)  # observability off: resolved to no collector
        if "_collector_resolved" not in vars(recorder):
            # A redis-py without the cached miss (an older 8.x): nothing is skipped.
            assert not recording_off(recorder)()
            return
        assert recording_off(recorder)()
        assert recorder._metrics_collector is None
        assert recorder._collector_resolved is True
        collector = _Collector()
        monkeypatch.setattr(recorder, "_metrics_collector", collector)
        ns.put("k", 2)
        assert ns.get("k").value == 2  # type: ignore[union-attr]
        # FCALL / FCALL_RO, or EVALSHA(_RO) on a server without Functions
        assert len(collector.calls) == 2
        assert collector.calls[0]["command_name"] in ("FCALL", "EVALSHA")
        assert collector.calls[0]["db_namespace"] == "0"
    finally:
        mem.close()


async def test_async_pipe_calls_are_recorded_once_a_collector_is_set(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    mem = AsyncSwarmMemory.from_url(redis_server.url, agent="rec")
    try:
        name = f"arec-{uuid.uuid4().hex[:8]}"
        await mem.create_namespace(name)
        ns = mem.namespace(name)
        await ns.put("k", 1)  # observability off: resolved to no collector
        assert mem._driver.pipe is not None  # the calls below go through the pipe
        if "_async_collector_resolved" not in vars(async_recorder):
            assert not recording_off(async_recorder)()
            return
        assert recording_off(async_recorder)()
        collector = _Collector()
        monkeypatch.setattr(async_recorder, "_async_metrics_collector", collector)
        await ns.put("k", 2)
        assert (await ns.get("k")).value == 2  # type: ignore[union-attr]
        assert len(collector.calls) == 2
        assert collector.calls[0]["command_name"] in ("FCALL", "EVALSHA")
        assert collector.calls[0]["db_namespace"] == "0"
    finally:
        await mem.close()

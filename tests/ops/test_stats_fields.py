"""Every stats field a script counts is exported, and every field the exporter maps to a
family of its own is one some script writes (a misspelt field made
`swarm_memory_namespace_lock_busy_total` read 0 forever)."""

from __future__ import annotations

import re

import fakeredis
import pytest

from swarm_memory import LockTimeout, Settings, SwarmMemory
from swarm_memory.exporter import _OP_FIELD, _SPECIAL_STATS, SwarmCollector
from tests.ops.support import ROOT
from tests.ops.test_exporter import sample, scrape

LUA = ROOT / "swarm_memory" / "lua"
# HINCRBY on the stats hash with a literal field name.
_STATIC = re.compile(r'HINCRBY",\s*K_STATS,\s*"([a-z_]+)"')


def fields_written_by_scripts() -> set[str]:
    fields: set[str] = set()
    for script in LUA.glob("*.lua"):
        fields |= set(_STATIC.findall(script.read_text()))
    return fields


def test_every_special_field_is_written_by_a_script():
    written = fields_written_by_scripts()
    assert written, "no stats field found in the scripts: the pattern is stale"
    assert set(_SPECIAL_STATS) - written == set()


def test_every_field_a_script_writes_is_exported():
    # write.lua also counts its action, a variable (put, update, rollback, ...): the
    # busy-lock test below checks every field found in a stats hash the same way.
    for field in fields_written_by_scripts():
        # a family of its own, or swarm_memory_namespace_operations_total{op=field}
        assert field in _SPECIAL_STATS or _OP_FIELD.fullmatch(field), field


def test_a_busy_lock_is_counted_by_the_exporter():
    from prometheus_client import CollectorRegistry

    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    settings = Settings(key_prefix="sm")
    mem = SwarmMemory.from_client(client, agent="planner", settings=settings)
    mem.create_namespace("team")
    ns = mem.namespace("team")
    lock = ns.lock("res", ttl=5)
    lock.acquire()
    for _ in range(2):
        with pytest.raises(LockTimeout):
            mem.as_agent("worker").namespace("team").lock("res", ttl=5, wait=0).acquire()
    lock.release()
    ns.put("k", 1)
    ns.update("k", lambda v: v + 1)
    ns.incr("n")
    ns.delete("k")
    stats = ns.stats()
    for field in stats:
        assert field in _SPECIAL_STATS or _OP_FIELD.fullmatch(field), field
    registry = CollectorRegistry()
    registry.register(SwarmCollector(client, prefix="sm"))
    samples = scrape(registry)
    assert sample(samples, "swarm_memory_namespace_lock_busy_total", namespace="team") == 2
    assert sample(samples, "swarm_memory_namespace_lock_acquires_total", namespace="team") == 1
    for op in ("put", "update", "incr", "delete"):
        got = sample(samples, "swarm_memory_namespace_operations_total", namespace="team", op=op)
        assert got == stats[op] == 1

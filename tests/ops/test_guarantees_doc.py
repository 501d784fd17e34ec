"""docs/guarantees.md and the README tell the truth: every test they name exists, and the
claims a new user found wrong (a rejected write "changes nothing, not even a counter";
stream ids vs cursors) are stated as the code behaves, and checked here."""

from __future__ import annotations

import re

import fakeredis
import pytest

from swarm_memory import PermissionDenied, SwarmMemory
from swarm_memory.keys import NamespaceKeys
from tests.ops.support import ROOT
from tests.support import snapshot

DOCS = (ROOT / "docs" / "guarantees.md", ROOT / "README.md")
# `tests/x/test_y.py` or `tests/x/test_y.py::test_name` (a [param] suffix allowed)
_NAMED = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+)(?:\[[^\]`]*\])?)?")


def named_tests() -> list[tuple[str, str, str | None]]:
    found = []
    for doc in DOCS:
        for path, test in _NAMED.findall(doc.read_text()):
            found.append((doc.name, path, test or None))
    return found


def test_the_docs_name_tests():
    assert len(named_tests()) >= 30  # guarantees.md names dozens: the pattern still matches


@pytest.mark.parametrize(("doc", "path", "test"), named_tests())
def test_every_test_the_docs_name_exists(doc: str, path: str, test: str | None):
    file = ROOT / path
    assert file.is_file(), f"{doc} names {path}, which does not exist"
    if test is not None:
        source = file.read_text()
        assert re.search(rf"^(async )?def {test}\(", source, re.M), (
            f"{doc} names {path}::{test}, which is not defined there"
        )


def _memory() -> tuple[SwarmMemory, fakeredis.FakeRedis]:
    raw = fakeredis.FakeRedis()
    return SwarmMemory.from_client(raw, agent="planner"), raw


def test_a_denied_write_changes_only_the_denial_records():
    """guarantees.md #1: no entry, version, revision, index or event changes; the stats
    count `denied` and the audit log records the denial."""
    mem, raw = _memory()
    mem.create_namespace("team", default_permission="read")
    ns = mem.namespace("team")
    ns.put("k", 1)
    keys = NamespaceKeys.of("sm", "team")
    before = snapshot(raw, "sm:")
    with pytest.raises(PermissionDenied):
        mem.as_agent("stranger").namespace("team").put("k", 2)
    after = snapshot(raw, "sm:")
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert changed == {keys.stats.encode(), keys.audit.encode()}
    assert ns.stats()["denied"] == 1
    assert [r.action for r in ns.audit(agent="stranger")] == ["put"]
    mem.close()


def test_stream_ids_and_cursors_are_as_documented():
    """guarantees.md #10: stream id `<revision>-<seq>`; an event's cursor is the next id
    (`<revision>-<seq+1>`, or `<revision+1>-0` after its revision's last event)."""
    mem, raw = _memory()
    mem.create_namespace("team")
    ns = mem.namespace("team")
    watch = ns.watch(since=0)
    ns.put("a", 1)
    ns.put_many({"b": 1, "c": 2})
    ids = [i.decode() for i, _ in raw.xrange(NamespaceKeys.of("sm", "team").events)]
    assert ids == ["1-0", "2-0", "3-0", "3-1"]
    events = [e for e in (watch.get(2) for _ in ids) if e is not None]
    assert len(events) == len(ids)
    for stream_id, ev in zip(ids, events, strict=True):
        assert stream_id == f"{ev.revision}-{ev.seq}"
        last = ev.seq == ev.count - 1
        assert ev.cursor == (f"{ev.revision + 1}-0" if last else f"{ev.revision}-{ev.seq + 1}")
    assert events[0].type == "ns_create" and events[0].cursor == "2-0"
    mem.close()

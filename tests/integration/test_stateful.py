"""A namespace against a pure-Python model (Hypothesis RuleBasedStateMachine).

Every rule performs one operation on the library and the same operation on the model;
after every step the invariants compare them: each modelled key's value (as exact JSON
text, so ``1 != 1.0 != True`` and big ints / float digits must survive), version,
create/mod revision, size, writer and expiry flag; the live key listing in byte order;
and the namespace's key count, byte total and revision.

Revisions are modelled exactly: each successful mutation (a whole put_many, a grant or
revoke) takes one; refused operations (ConflictError, NotAnInteger, PermissionDenied)
take none and leave the keyspace untouched but for the audit log and counters (checked
on a raw snapshot); a sweep that expires something takes one. The one tolerance: a
delete/touch of an absent key may take one today (see ``_noop`` and the pinned
``test_noop_*`` regressions at the bottom). Short TTLs expire only inside the ``expire``
rule (write with a 2 ms TTL, sleep, then trigger the sweep one of four ways), so no
expiry happens at a moment the model cannot know.

The namespace's default permission is "none", so the second agent ("worker") can do
exactly what its grant says; the ``worker`` rule checks its reads and writes succeed or
raise PermissionDenied accordingly.

Runs on fakeredis and on the real ``redis-server`` of the session fixture, each example
under a fresh key prefix. fakeredis runs Lua several times slower than a real server
(about 2 ms per script call), so the real server gets the larger share of examples.
"""

from __future__ import annotations

import fnmatch
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar, cast

import fakeredis
import pytest
import redis
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)
from redis.backoff import NoBackoff
from redis.retry import Retry

from swarm_memory import ConflictError, NotAnInteger, PermissionDenied, Settings, SwarmMemory
from swarm_memory.models import LEVELS, PermissionLevel
from swarm_memory.testing import SlotGuard
from tests.support import snapshot

OWNER, WORKER, NS = "planner", "worker", "s"
MAX_EXACT = 2**53 - 1
# Byte order differs from code point order for some of these; "{x}" checks that a brace
# inside an entry key cannot move the Cluster hash tag.
POOL = ["a", "b", "task-1", "task-10", "k y", "{x}", "é", "日本"]
PATTERNS = ["*", "task-*", "task-1?", "?", "[ab]", "*y*"]

SPECIAL = st.sampled_from(
    [
        123456789012345678,
        -123456789012345678,
        2**53,
        2**64 + 1,
        0.30000000000000004,
        1e-300,
        5e-324,
        1.7976931348623157e308,
        -0.0,
        [],
        {},
        "",
        "é✓\u2028",
        '"\\{}[],:',
    ]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | SPECIAL
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
KEYS = st.sampled_from(POOL)


def text(value: Any) -> str:
    """Exact JSON text: the strict equality the comparisons use (order and types kept)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def size(value: Any) -> int:
    return len(text(value).encode("utf-8"))


def byte_order(names: Any) -> list[str]:
    return sorted(names, key=lambda n: n.encode("utf-8"))


def rank(level: str) -> int:
    return LEVELS.index(level)


def is_counter(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_EXACT


@dataclass(frozen=True)
class Model:
    value: Any
    version: int
    create_revision: int
    mod_revision: int
    by: str
    expires: bool

    @property
    def size(self) -> int:
        return size(self.value)


def same(entry: Any, key: str, m: Model | None) -> None:
    """Assert a library Entry (or None) matches the model."""
    if m is None:
        assert entry is None, f"{key!r}: expected absent, got {entry!r}"
        return
    assert entry is not None, f"{key!r}: expected {m!r}, got None"
    got = (
        text(entry.value),
        entry.version,
        entry.create_revision,
        entry.mod_revision,
        entry.size,
        entry.updated_by,
        entry.expires_at is not None,
    )
    want = (text(m.value), m.version, m.create_revision, m.mod_revision, m.size, m.by, m.expires)
    assert entry.key == key
    assert got == want, f"{key!r}: library {got} != model {want}"


def durable(raw: Any, prefix: str) -> dict[bytes, Any]:
    """The keyspace minus what a refused call may still touch (audit log, counters)."""
    return {
        k: v
        for k, v in snapshot(raw, prefix).items()
        if not (k.endswith(b":audit") or k.endswith(b":stats"))
    }


class NamespaceMachine(RuleBasedStateMachine):
    """One namespace (default permission "none") written by its admin, plus a worker
    whose level is only what the admin grants it."""

    make_client: ClassVar[Callable[[], Any]]
    cleanup: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        self.raw = type(self).make_client()
        self.prefix = "st" + uuid.uuid4().hex[:12]
        mem = SwarmMemory.from_client(
            self.raw, agent=OWNER, settings=Settings(key_prefix=self.prefix)
        )
        mem.observe_scripts(SlotGuard())
        mem.create_namespace(NS, default_permission="none")
        self.mem = mem
        self.ns = mem.namespace(NS)
        self.worker_ns = mem.as_agent(WORKER).namespace(NS)
        self.model: dict[str, Model] = {}
        self.rev = 1  # create_namespace takes revision 1
        self.level = "none"
        self.explicit = False  # does the worker hold an explicit grant (an ACL entry)?
        self.slack = False  # the last op may or may not take a revision (see below)

    def teardown(self) -> None:
        if self.cleanup:
            self.mem.delete_namespace(NS)

    # ------------------------------------------------------------------ model helpers
    def _bump(self) -> int:
        self.rev += 1
        return self.rev

    def _write(
        self, key: str, value: Any, rev: int, by: str = OWNER, expires: bool = False
    ) -> Model:
        cur = self.model.get(key)
        m = Model(
            value,
            cur.version + 1 if cur else 1,
            cur.create_revision if cur else rev,
            rev,
            by,
            expires,
        )
        self.model[key] = m
        return m

    def _noop(self) -> None:
        """A delete/touch that found nothing. It changes no entry, so by the etcd model it
        should take no revision (pinned by test_noop_*); the library currently takes one.
        Accept either here so the machine keeps hunting other bugs; the invariant adopts
        whichever it sees."""
        event("no-op delete/touch")
        self.slack = True

    def _refused(self, call: Callable[[], Any], exc_type: type[Exception]) -> Any:
        event(f"refused: {exc_type.__name__}")
        before = durable(self.raw, self.prefix)
        with pytest.raises(exc_type) as info:
            call()
        assert durable(self.raw, self.prefix) == before, "a refused call changed the keyspace"
        return info.value

    # ------------------------------------------------------------------------- rules
    @rule(key=KEYS, value=VALUES, long_ttl=st.booleans())
    def put(self, key: str, value: Any, long_ttl: bool) -> None:
        e = self.ns.put(key, value, ttl=60 if long_ttl else None)
        same(e, key, self._write(key, value, self._bump(), expires=long_ttl))

    @rule(key=KEYS, value=VALUES)
    def create(self, key: str, value: Any) -> None:
        cur = self.model.get(key)
        if cur is not None:
            err = self._refused(lambda: self.ns.create(key, value), ConflictError)
            same(err.current, key, cur)
            return
        same(self.ns.create(key, value), key, self._write(key, value, self._bump()))

    @rule(key=KEYS, value=VALUES, right=st.booleans(), data=st.data())
    def cas_put(self, key: str, value: Any, right: bool, data: st.DataObject) -> None:
        cur = self.model.get(key)
        have = cur.version if cur else 0
        if right:
            expected = have
        else:
            expected = data.draw(
                st.sampled_from([0, have + 1, have + 7, max(have - 1, 0)]).filter(
                    lambda v: v != have
                ),
                label="wrong_version",
            )
        if expected != have:
            err = self._refused(
                lambda: self.ns.put(key, value, expected_version=expected), ConflictError
            )
            assert err.expected == expected and err.key == key
            same(err.current, key, cur)
            return
        e = self.ns.put(key, value, expected_version=expected)
        same(e, key, self._write(key, value, self._bump()))

    @rule(key=KEYS, how=st.sampled_from(["plain", "right", "wrong", "zero"]))
    def delete(self, key: str, how: str) -> None:
        cur = self.model.get(key)
        have = cur.version if cur else 0
        expected = {"plain": None, "right": have, "wrong": have + 3, "zero": 0}[how]
        conflict = expected is not None and expected != have
        if conflict:
            err = self._refused(
                lambda: self.ns.delete(key, expected_version=expected), ConflictError
            )
            same(err.current, key, cur)
            return
        if cur is None:
            assert self.ns.delete(key, expected_version=expected) is False
            self._noop()
            return
        assert self.ns.delete(key, expected_version=expected) is True
        self._bump()
        del self.model[key]

    @rule(key=KEYS, add=st.integers(-1000, 1000), new=VALUES)
    def update(self, key: str, add: int, new: Any) -> None:
        seen: list[Any] = []

        def fn(v: Any) -> Any:
            seen.append(v)
            return v + add if isinstance(v, int) and not isinstance(v, bool) else new

        cur = self.model.get(key)
        e = self.ns.update(key, fn)
        assert [text(v) for v in seen] == [text(cur.value if cur else None)]
        number = cur is not None and isinstance(cur.value, int) and not isinstance(cur.value, bool)
        value = cur.value + add if number and cur is not None else new
        same(e, key, self._write(key, value, self._bump()))

    @rule(key=KEYS, amount=st.integers(-100, 100) | st.sampled_from([MAX_EXACT, -MAX_EXACT]))
    def incr(self, key: str, amount: int) -> None:
        cur = self.model.get(key)
        base = cur.value if cur else 0
        if not is_counter(base) or abs(base + amount) > MAX_EXACT:
            self._refused(lambda: self.ns.incr(key, amount), NotAnInteger)
            return
        assert self.ns.incr(key, amount) == base + amount
        # Counters keep their expiry, like Redis INCR.
        self._write(key, base + amount, self._bump(), expires=bool(cur and cur.expires))

    @rule(key=KEYS)
    def touch(self, key: str) -> None:
        cur = self.model.get(key)
        found = self.ns.touch(key, 60)
        assert found is (cur is not None)
        if cur is None:
            self._noop()
            return
        # A new expiry only: value, version and mod_revision stay.
        self._bump()
        self.model[key] = replace(cur, expires=True)

    @rule(
        values=st.dictionaries(KEYS, VALUES, min_size=1, max_size=4),
        data=st.data(),
    )
    def put_many(self, values: dict[str, Any], data: st.DataObject) -> None:
        pinned = data.draw(
            st.dictionaries(st.sampled_from(sorted(values)), st.booleans(), max_size=2),
            label="pinned (key -> right version?)",
        )
        expected = {}
        for k, right in pinned.items():
            have = self.model[k].version if k in self.model else 0
            expected[k] = have if right else have + 1
        if not all(pinned.values()):
            err = self._refused(
                lambda: self.ns.put_many(values, expected_versions=expected), ConflictError
            )
            assert err.key in pinned and not pinned[err.key]
            same(err.current, err.key, self.model.get(err.key))
            return
        written = self.ns.put_many(values, expected_versions=expected or None)
        rev = self._bump()  # one revision for the whole batch
        assert list(written) == list(values)
        for k, v in values.items():
            same(written[k], k, self._write(k, v, rev))

    @rule(
        values=st.dictionaries(KEYS, VALUES, min_size=1, max_size=3),
        trigger=st.sampled_from(["sweep", "get", "keys", "write"]),
        new=VALUES,
    )
    def expire(self, values: dict[str, Any], trigger: str, new: Any) -> None:
        """Write with a 2 ms TTL, let it pass, and have the next call sweep it."""
        event(f"expire {len(values)} via {trigger}")
        self.ns.put_many(values, ttl=0.002)
        rev = self._bump()
        for k, v in values.items():
            self._write(k, v, rev, expires=True)
        time.sleep(0.012)
        gone = set(values)
        first = next(iter(values))
        if trigger == "sweep":
            result = self.ns.sweep()
            assert set(result.expired) == gone and not result.more
        elif trigger == "get":
            assert self.ns.get(first) is None  # expired reads as absent, then the sweep
        elif trigger == "keys":
            listed = list(self.ns.keys())
            assert not gone & set(listed)
        else:
            # The write drops the stale entry and starts a new incarnation in its own
            # revision; the sweep it then triggers takes one more for the others.
            for k in gone:
                del self.model[k]
            e = self.ns.put(first, new)
            same(e, first, self._write(first, new, self._bump()))
            gone.discard(first)
            if gone:
                self._bump()
            return
        self._bump()
        for k in gone:
            del self.model[k]

    @rule(level=st.sampled_from(LEVELS))
    def grant(self, level: str) -> None:
        self._grant(level)

    def _grant(self, level: str) -> None:
        self.ns.grant({WORKER: cast(PermissionLevel, level)})
        self._bump()
        self.level = level
        self.explicit = True

    @rule()
    def revoke(self) -> None:
        self.ns.revoke([WORKER])
        if self.explicit:  # revoking nothing changes nothing: no revision, no event
            self._bump()
        self.explicit = False
        self.level = "none"  # the namespace default

    @rule(
        regrant=st.sampled_from([None, *LEVELS]),
        key=KEYS,
        value=VALUES,
        write=st.booleans(),
    )
    def worker(self, regrant: str | None, key: str, value: Any, write: bool) -> None:
        """The worker reads or writes; allowed or PermissionDenied exactly by its grant.
        ``regrant`` changes the grant first, so every level meets both operations."""
        event(f"worker {'put' if write else 'get'} as {regrant or self.level}")
        if regrant is not None:
            self._grant(regrant)
        if not write:
            if rank(self.level) >= rank("read"):
                same(self.worker_ns.get(key), key, self.model.get(key))
                return
            err = self._refused(lambda: self.worker_ns.get(key), PermissionDenied)
            assert (err.required, err.granted, err.agent) == ("read", self.level, WORKER)
            return
        if rank(self.level) >= rank("write"):
            e = self.worker_ns.put(key, value)
            same(e, key, self._write(key, value, self._bump(), by=WORKER))
            return
        err = self._refused(lambda: self.worker_ns.put(key, value), PermissionDenied)
        assert (err.required, err.granted, err.agent) == ("write", self.level, WORKER)

    @rule(keys=st.lists(KEYS, min_size=1, max_size=6))
    def get_many(self, keys: list[str]) -> None:
        got = self.ns.get_many(keys)
        assert list(got) == list(dict.fromkeys(keys))
        for k, e in got.items():
            same(e, k, self.model.get(k))

    @rule(key=KEYS)
    def get(self, key: str) -> None:
        same(self.ns.get(key), key, self.model.get(key))

    @rule(key=KEYS)
    def exists(self, key: str) -> None:
        assert self.ns.exists(key) is (key in self.model)

    @rule(pattern=st.sampled_from(PATTERNS))
    def keys_glob(self, pattern: str) -> None:
        want = byte_order(k for k in self.model if fnmatch.fnmatchcase(k, pattern))
        assert list(self.ns.keys(pattern)) == want

    # -------------------------------------------------------------------- invariants
    @invariant()
    def entries_match(self) -> None:
        # get_many runs the same read path as get (one item per key), in one round trip;
        # the get rule and the expire rule exercise single-key get.
        got = self.ns.get_many(self.model) if self.model else {}
        assert list(got) == list(self.model)
        for key, m in self.model.items():
            same(got[key], key, m)

    @invariant()
    def listing_and_counters_match(self) -> None:
        assert list(self.ns.keys()) == byte_order(self.model)
        info = self.ns.info()
        if self.slack and info.revision == self.rev + 1:
            self.rev += 1
        self.slack = False
        assert (info.keys, info.bytes, info.revision) == (
            len(self.model),
            sum(m.size for m in self.model.values()),
            self.rev,
        )
        assert info.permissions.get(WORKER, "none") == self.level


def _run(machine: type[NamespaceMachine], examples: int) -> None:
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


def test_namespace_matches_model_on_fakeredis() -> None:
    class FakeMachine(NamespaceMachine):
        make_client = staticmethod(fakeredis.FakeRedis)

    _run(FakeMachine, 60)


def test_namespace_matches_model_on_redis(redis_server: Any) -> None:
    client = redis.Redis(host="127.0.0.1", port=redis_server.port, retry=Retry(NoBackoff(), 0))

    class RealMachine(NamespaceMachine):
        make_client = staticmethod(lambda: client)
        cleanup = True

    try:
        _run(RealMachine, 50)
    finally:
        client.close()


# ------------------------------------------------------------------ shrunk regressions
@pytest.fixture(params=["fake", "redis"])
def ns(request: pytest.FixtureRequest) -> Any:
    if request.param == "fake":
        raw: Any = fakeredis.FakeRedis()
    else:
        raw = redis.Redis(host="127.0.0.1", port=request.getfixturevalue("redis_server").port)
    mem = SwarmMemory.from_client(
        raw, agent=OWNER, settings=Settings(key_prefix="st" + uuid.uuid4().hex[:12])
    )
    mem.create_namespace(NS)
    yield mem.namespace(NS)
    raw.close()


def test_noop_delete_takes_no_revision(ns: Any) -> None:
    """Decision 3 (the etcd model): the revision counts changes. Deleting an absent key
    changes nothing, so it must not advance the revision (etcd does not either). Deleting
    an expired entry the sweeper has not reached yet is a change (the entry is dropped
    with an ``expire`` event), and may take one."""
    ns.put("a", 1)
    before = ns.info().revision
    assert ns.delete("missing") is False
    assert ns.delete("missing", expected_version=0) is False
    assert ns.info().revision == before
    assert ns.put("a", 2).mod_revision == before + 1


def test_noop_touch_takes_no_revision(ns: Any) -> None:
    ns.put("a", 1)
    before = ns.info().revision
    assert ns.touch("missing", 30) is False
    assert ns.info().revision == before

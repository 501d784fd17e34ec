"""Conflict strategies: latest-wins, first-wins, version, custom (merge: test_merge.py)."""

from __future__ import annotations

import pytest

from swarm_memory import ConflictError, RetryLimitExceeded, SwarmMemory, VersionRequired
from tests.support import must


def _ns(env, strategy, agent="planner", resolver=None, **settings):
    mem = env.mem(agent, **settings)
    mem.create_namespace("s", strategy=strategy, exist_ok=True)
    return mem.namespace("s", resolver=resolver)


def _sync_ns(env, agent, resolver=None):
    """A second writer that can run inside a callback (the async facade's loop is busy)."""
    return SwarmMemory.from_client(env.raw, agent=agent, settings=env.settings).namespace(
        "s", resolver=resolver
    )


def test_latest_wins_overwrites(env):
    ns = _ns(env, "latest-wins")
    ns.put("k", 1)
    assert ns.put("k", 2).version == 2
    assert ns.get("k").value == 2


def test_first_wins_never_overwrites_silently(env):
    ns = _ns(env, "first-wins")
    ns.put("k", "first")
    with pytest.raises(ConflictError) as exc:
        ns.put("k", "second")
    assert must(exc.value.current).value == "first" and exc.value.expected is None
    # An explicit CAS on the version you saw is an intentional update, and is honoured.
    assert ns.put("k", "third", expected_version=1).value == "third"
    assert ns.delete("k") is True
    assert ns.put("k", "fresh").version == 1


def test_version_strategy_requires_expected_version(env):
    ns = _ns(env, "version")
    with pytest.raises(VersionRequired):
        ns.put("k", 1)
    assert ns.get("k") is None
    ns.put("k", 1, expected_version=0)
    ns.put("k", 2, expected_version=1)
    with pytest.raises(VersionRequired):
        ns.delete("k")
    with pytest.raises(ConflictError):
        ns.put("k", 3, expected_version=1)
    assert ns.update("k", lambda v: v + 1).value == 3  # update is a CAS: always allowed
    assert ns.incr("n", 2) == 2  # an atomic increment cannot lose an update
    assert ns.delete("k", expected_version=3)


def test_custom_strategy_runs_the_resolver_as_a_cas_loop(env):
    calls = []

    def resolver(current, incoming):
        calls.append((None if current is None else current.value, incoming.value))
        base = current.value if current else []
        return sorted(set(base) | set(incoming.value))

    ns = _ns(env, "custom", resolver=resolver)
    assert ns.put("tags", ["a", "b"]).value == ["a", "b"]
    assert ns.put("tags", ["c", "a"]).value == ["a", "b", "c"]
    assert calls[-1] == (["a", "b"], ["c", "a"])
    assert ns.get("tags").version == 2
    many = ns.put_many({"tags": ["z"], "new": ["x"]})
    assert many["tags"].value == ["a", "b", "c", "z"] and many["new"].value == ["x"]


def test_custom_strategy_without_resolver_is_refused(env):
    ns = _ns(env, "custom")
    with pytest.raises(VersionRequired):
        ns.put("k", 1)
    assert ns.get("k") is None


def test_custom_resolver_sees_concurrent_winner(env):
    """The resolver loop re-runs on conflict with the entry that won."""
    other = _sync_ns(env, "other", resolver=lambda cur, inc: inc.value)
    seen = []

    def resolver(current, incoming):
        seen.append(None if current is None else current.value)
        if len(seen) == 1:
            other.put("k", 100)  # sneak a write in between our read and our CAS
        return (current.value if current else 0) + incoming.value

    ns = _ns(env, "custom", resolver=resolver)
    assert ns.put("k", 5).value == 105
    assert seen == [None, 100]


def test_update_gives_up_after_its_bound(env):
    ns = _ns(env, "latest-wins", update_max_attempts=3, update_backoff_max=0)
    sneaky = _sync_ns(env, "sneaky")
    ns.put("k", 0)
    attempts = []

    def fn(v):
        attempts.append(v)
        sneaky.put("k", v + 100)
        return v + 1

    with pytest.raises(RetryLimitExceeded) as exc:
        ns.update("k", fn)
    assert exc.value.attempts == 3 and len(attempts) == 3
    assert must(exc.value.current).value == attempts[-1] + 100

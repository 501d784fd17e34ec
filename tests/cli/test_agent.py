"""outcomes stats|recommend|record, context show, session ls|show."""

from __future__ import annotations

from tests.cli.conftest import one_error_line


def test_outcomes_record_stats_and_recommend(run):
    mem = run.memory("boss")
    try:
        mem.create_namespace("team")
        log = mem.outcomes("routing", namespace="team")
        for i in range(10):
            log.record("fast", success=i < 8, duration=float(i + 1), cost=0.5)
    finally:
        mem.close()
    run(
        "outcomes",
        "record",
        "team",
        "routing",
        "slow",
        "--failure",
        "--duration",
        "2",
        "--tag",
        "x",
    )
    stats = run.json("outcomes", "stats", "team", "routing")
    assert list(stats) == ["fast", "slow"]
    fast = stats["fast"]
    assert (fast["n"], fast["successes"], fast["median_duration"], fast["p90_duration"]) == (
        10,
        8,
        5.5,
        9.0,
    )
    assert (round(fast["wilson_low"], 3), round(fast["wilson_high"], 3)) == (0.490, 0.943)
    out = run("outcomes", "stats", "team", "routing").stdout
    assert "[0.490, 0.943]" in out and "80.0%" in out and "5.500s" in out
    rec = run.json("outcomes", "recommend", "team", "routing", "fast", "slow", "--min-n", "5")
    assert rec["choice"] == "fast" and rec["insufficient"] == ["slow"]
    short = run.json("outcomes", "recommend", "team", "routing", "fast", "--min-n", "50")
    assert short["choice"] is None and short["enough_data"] is False
    assert (
        "not enough data"
        in run("outcomes", "recommend", "team", "routing", "fast", "--min-n", "50").stdout
    )
    # Bad input and a missing namespace: the usual exit codes, one line each.
    bad = run(
        "outcomes", "record", "team", "routing", "a", "--success", "--duration", "nan", code=2
    )
    assert "duration" in one_error_line(bad.stderr)
    run("outcomes", "stats", "nope", "routing", code=3)


def test_context_show_and_sessions(run):
    mem = run.memory("analyst")
    try:
        mem.create_namespace("team")
        mem.context(namespace="team").save({"plan": [1, 2]})
        mem.namespace("team").put("found", 1)
        s = mem.session("job", namespace="team")
        s.open(ttl=600)
        s.decide("split", rationale="too big", outcome="op-9")
    finally:
        mem.close()
    shown = run.json("context", "show", "team", "analyst")
    assert shown["context"]["value"] == {"plan": [1, 2]} and shown["context"]["version"] == 1
    assert [e["type"] for e in shown["events"]] == ["put", "session_open", "decision"]
    assert "version 1" in run("context", "show", "team", "analyst").stdout
    run("context", "show", "team", "nobody", code=3)
    assert [s["id"] for s in run.json("session", "ls", "team")] == ["job"]
    detail = run.json("session", "show", "team", "job")
    assert detail["session"]["state"] == "open"
    assert [(d["decision"], d["rationale"], d["outcome"]) for d in detail["decisions"]] == [
        ("split", "too big", "op-9")
    ]
    assert "too big" in run("session", "show", "team", "job").stdout
    run("session", "show", "team", "ghost", code=3)

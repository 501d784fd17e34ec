"""Agent memory commands: ``outcomes stats|recommend|record``, ``context show`` and
``session ls|show``."""

from __future__ import annotations

from typing import Any

import click

from swarm_memory.agent_models import OutcomeStats
from swarm_memory.cli.base import (
    CliError,
    ExitCode,
    config,
    dumps,
    emit,
    jsonable,
    output_option,
    short,
    table,
    when,
)


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.1f}%"


def _secs(x: float | None) -> str:
    return "" if x is None else f"{x:.3f}s"


def _stats_rows(stats: dict[str, OutcomeStats]) -> list[list[Any]]:
    rows = []
    for s in stats.values():
        interval = "" if s.wilson_low is None else f"[{s.wilson_low:.3f}, {s.wilson_high or 0:.3f}]"
        mean_cost = "" if s.mean_cost is None else f"{s.mean_cost:g}"
        rows.append(
            [
                s.strategy,
                s.n,
                s.successes,
                _pct(s.success_rate),
                interval,
                _secs(s.median_duration),
                _secs(s.p90_duration),
                mean_cost,
            ]
        )
    return rows


STATS_COLUMNS = ["strategy", "n", "ok", "rate", "wilson 95%", "median", "p90", "mean cost"]


@click.group("outcomes")
def outcomes_group() -> None:
    """Outcome logs: exact statistics per strategy (n, success rate with its Wilson 95 %
    interval, median and p90 duration), recommendations, and recording from the shell."""


@outcomes_group.command("stats")
@click.argument("namespace")
@click.argument("log")
@click.option("--strategy", "strategies", multiple=True, help="Only these (repeatable).")
@output_option
def outcomes_stats(*, namespace: str, log: str, strategies: tuple[str, ...]) -> None:
    """Statistics of every strategy recorded in LOG (or those given), by name."""
    stats = config().memory().outcomes(log, namespace=namespace).stats(list(strategies) or None)
    emit(
        jsonable(stats),
        lambda: table(
            f"{namespace} / {log}: {len(stats)} strategies", STATS_COLUMNS, _stats_rows(stats)
        ),
    )


@outcomes_group.command("recommend")
@click.argument("namespace")
@click.argument("log")
@click.argument("candidates", nargs=-1, required=True)
@click.option("--min-n", type=int, default=10, show_default=True, help="Records needed.")
@output_option
def outcomes_recommend(
    *, namespace: str, log: str, candidates: tuple[str, ...], min_n: int
) -> None:
    """The candidate with the best Wilson 95 % lower bound among those with at least
    --min-n records. Exit 0 either way; with not enough data the choice is empty and the
    reason says so."""
    rec = config().memory().outcomes(log, namespace=namespace).recommend(candidates, min_n=min_n)

    def render() -> Any:
        t = table(None, STATS_COLUMNS, _stats_rows(rec.stats))
        head = f"choice: {rec.choice}" if rec.choice else "choice: none (not enough data)"
        return _both(head, rec.reason, t)

    emit(jsonable(rec), render)


def _both(head: str, reason: str, t: Any) -> Any:
    from rich.console import Group  # noqa: PLC0415 - rendering only

    return Group(head, reason, t)


@outcomes_group.command("record")
@click.argument("namespace")
@click.argument("log")
@click.argument("strategy")
@click.option("--success/--failure", required=True, help="How it went.")
@click.option("--duration", type=float, default=None, help="Seconds it took.")
@click.option("--cost", type=float, default=None, help="What it cost (any unit).")
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable).")
@click.option("--op-id", default=None, help="Operation id: a replay is counted once.")
@output_option
def outcomes_record(
    *,
    namespace: str,
    log: str,
    strategy: str,
    success: bool,
    duration: float | None,
    cost: float | None,
    tags: tuple[str, ...],
    op_id: str | None,
) -> None:
    """Record one outcome of STRATEGY in LOG."""
    revision = (
        config()
        .memory()
        .outcomes(log, namespace=namespace)
        .record(strategy, success=success, duration=duration, cost=cost, tags=tags, op_id=op_id)
    )
    data = {"namespace": namespace, "log": log, "strategy": strategy, "revision": revision}
    emit(data, lambda: f"recorded {strategy!r} in {namespace}/{log} at revision {revision}")


@click.group("context")
def context_group() -> None:
    """Agents' saved working contexts."""


@context_group.command("show")
@click.argument("namespace")
@click.argument("agent")
@click.option("--events", "limit", type=int, default=100, show_default=True, help="At most.")
@output_option
def context_show(*, namespace: str, agent: str, limit: int) -> None:
    """AGENT's saved context in NAMESPACE and the events since it was saved (exit 3 if
    it never saved one)."""
    resumed = config().memory().context(agent, namespace=namespace).resume(limit=limit)
    if resumed.context is None:
        raise CliError(
            ExitCode.NOT_FOUND, f"agent {agent!r} has no saved context in namespace {namespace!r}"
        )
    ctx = resumed.context

    def render() -> Any:
        rows = [[e.revision, e.type, e.key or "", e.agent, when(e.time)] for e in resumed.events]
        more = "" if resumed.complete else " (more)"
        head = (
            f"context of {agent!r}: version {ctx.version}, saved {when(ctx.updated_at)}\n"
            f"{short(dumps(ctx.value), 200)}"
        )
        return _both(
            head,
            f"{len(rows)} events since{more}",
            table(None, ["rev", "type", "key", "agent", "time"], rows),
        )

    emit(jsonable(resumed), render)


@click.group("session")
def session_group() -> None:
    """Sessions and their decision logs."""


@session_group.command("ls")
@click.argument("namespace")
@output_option
def session_ls(*, namespace: str) -> None:
    """Live sessions of NAMESPACE (open or closed, not expired), by id."""
    found = list(config().memory().namespace(namespace).sessions())
    emit(
        jsonable(found),
        lambda: table(
            f"{len(found)} sessions",
            ["id", "expires"],
            [[s.id, when(s.expires_at) or "never"] for s in found],
        ),
    )


@session_group.command("show")
@click.argument("namespace")
@click.argument("session_id")
@click.option("--limit", type=int, default=100, show_default=True, help="Decisions, at most.")
@output_option
def session_show(*, namespace: str, session_id: str, limit: int) -> None:
    """A session's state and its decision log, oldest first (exit 3 if absent)."""
    session = config().memory().session(session_id, namespace=namespace)
    info = session.info()
    if info is None:
        raise CliError(ExitCode.NOT_FOUND, f"session {session_id!r} not found in {namespace!r}")
    page = session.decisions(limit=limit)

    def render() -> Any:
        rows = [
            [
                d.seq,
                d.agent,
                when(d.time),
                short(dumps(d.decision), 40),
                d.rationale or "",
                d.outcome or "",
            ]
            for d in page.decisions
        ]
        head = (
            f"session {info.id!r}: {info.state}, opened by {info.opened_by!r} "
            f"{when(info.opened_at)}, {info.decisions} decisions"
        )
        columns = ["seq", "agent", "time", "decision", "rationale", "outcome"]
        return _both(
            head, f"expires: {when(info.expires_at) or 'never'}", table(None, columns, rows)
        )

    emit({"session": jsonable(info), "decisions": jsonable(page.decisions)}, render)

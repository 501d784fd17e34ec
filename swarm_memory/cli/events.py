"""Observing commands: ``watch``, ``audit``, ``stats``, ``locks``, ``agents``."""

from __future__ import annotations

import time
from typing import Any

import click

from swarm_memory.cli.base import (
    config,
    echo_json,
    emit,
    jsonable,
    output_option,
    short,
    table,
    when,
)
from swarm_memory.models import Event


def parse_since(since: str | None) -> int | str | None:
    """``now`` / none, a revision (digits) or an event cursor (``<revision>-<n>``)."""
    if since is None or since == "now":
        return None
    if since.isdigit():
        return int(since)
    return since  # the library validates cursors (InvalidInput -> exit 2)


def _event_line(ev: Event) -> str:
    parts = [ev.cursor, f"rev {ev.revision}", ev.type]
    if ev.key is not None:
        parts.append(ev.key)
    if ev.version is not None:
        parts.append(f"v{ev.version}")
    parts.append(f"by {ev.agent}")
    parts.append(when(ev.time))
    if ev.has_value:
        parts.append(short(ev.value))
    return "  ".join(parts)


def _event_json(ev: Event) -> dict[str, Any]:
    data = dict(jsonable(ev))
    if not ev.has_value:
        data.pop("value", None)
    return data


@click.command("watch")
@click.argument("namespace")
@click.argument("pattern", default="*")
@click.option(
    "--since",
    default=None,
    metavar="REVISION|CURSOR",
    help="Resume after a revision or a printed cursor (default: new events only).",
)
@click.option("--type", "types", multiple=True, help="Only these event types (repeatable).")
@click.option(
    "--count", type=click.IntRange(min=1), default=None, help="Stop after this many events."
)
@click.option(
    "--timeout", type=float, default=None, help="Stop after this many seconds without events."
)
@output_option
def watch_cmd(
    *,
    namespace: str,
    pattern: str,
    since: str | None,
    types: tuple[str, ...],
    count: int | None,
    timeout: float | None,
) -> None:
    """Tail the namespace's change feed, one line per event, each with its cursor.

    Ctrl-C stops it (exit 0) and prints the cursor to resume from on stderr; so do
    --count and --timeout. Events are in revision order, each once."""
    cfg = config()
    ns = cfg.memory().namespace(namespace)
    start = parse_since(since)
    seen = 0
    cursor = since
    idle_since = time.monotonic()
    try:
        with ns.watch(pattern, types=types or None, since=start) as watch:
            cursor = watch.cursor
            while count is None or seen < count:
                # Short waits so Ctrl-C is handled promptly on every platform.
                ev = watch.get(timeout=0.25)
                if ev is None:
                    if timeout is not None and time.monotonic() - idle_since >= timeout:
                        break
                    continue
                idle_since = time.monotonic()
                seen += 1
                cursor = ev.cursor
                if cfg.json:
                    echo_json(_event_json(ev))
                else:
                    click.echo(_event_line(ev))
    except KeyboardInterrupt:
        pass
    if cursor:
        click.echo(f"resume with: --since {cursor}", err=True)


@click.command("audit")
@click.argument("namespace")
@click.option("--agent", "who", default=None, help="Only this agent's records.")
@click.option("--action", default=None, help="Only this action (put, delete, grant, ...).")
@click.option("--limit", type=int, default=100, show_default=True)
@output_option
def audit_cmd(*, namespace: str, who: str | None, action: str | None, limit: int) -> None:
    """Who did what, newest first."""
    records = config().memory().namespace(namespace).audit(agent=who, action=action, limit=limit)

    def render() -> Any:
        rows = [
            [when(r.time), r.agent, r.action, r.key, r.outcome, r.revision, r.op_id]
            for r in records
        ]
        cols = ["time", "agent", "action", "key", "outcome", "rev", "op id"]
        return table(f"audit of {namespace}", cols, rows)

    emit(jsonable(records), render)


@click.command("stats")
@click.argument("namespaces", nargs=-1)
@output_option
def stats_cmd(namespaces: tuple[str, ...]) -> None:
    """Per-namespace counters (default: every namespace this agent may read)."""
    memory = config().memory()
    names = list(namespaces) or memory.list_namespaces()
    data = {name: memory.namespace(name).stats() for name in names}

    def render() -> Any:
        counters = sorted({c for s in data.values() for c in s})
        rows = [[c, *(data[n].get(c, 0) for n in names)] for c in counters]
        return table("stats", ["counter", *names], rows)

    emit(data, render)


@click.command("locks")
@click.argument("namespace")
@output_option
def locks_cmd(namespace: str) -> None:
    """Locks held now in a namespace: holder, fencing token, expiry."""
    infos = config().memory().namespace(namespace).locks()

    def render() -> Any:
        rows = [
            [i.name, i.mode, i.holder, i.token, when(i.expires_at), len(i.holders)] for i in infos
        ]
        return table(
            f"locks in {namespace}", ["lock", "mode", "holder", "token", "expires", "holders"], rows
        )

    emit(jsonable(infos), render)


@click.command("agents")
@click.option("--all", "everyone", is_flag=True, help="Include agents whose presence expired.")
@output_option
def agents_cmd(everyone: bool) -> None:
    """Agents with a presence heartbeat (mem.heartbeat / mem.lease)."""
    infos = config().memory().agents(alive=not everyone)

    def render() -> Any:
        rows = [[i.agent, i.alive, when(i.last_seen), when(i.expires_at)] for i in infos]
        return table("agents", ["agent", "alive", "last seen", "expires"], rows)

    emit(jsonable(infos), render)

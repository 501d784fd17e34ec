"""``swarm-memory inbox ls|rm``: the agents' inboxes (direct messages) as a whole."""

from __future__ import annotations

from typing import Any

import click

from swarm_memory import errors
from swarm_memory.cli.base import (
    CliError,
    ExitCode,
    config,
    confirm,
    emit,
    jsonable,
    output_option,
    table,
    when,
)


@click.group("inbox")
def inbox_group() -> None:
    """Agents' inboxes: list them, delete one (messages are sent and read by the library)."""


@inbox_group.command("ls")
@output_option
def inbox_ls() -> None:
    """Every inbox, by owner: messages held, delivered but unacknowledged (pending), last
    send/read/ack, and when it expires if nothing happens (any agent may list)."""
    infos = list(config().memory().inboxes())

    def render() -> Any:
        rows = [
            [i.owner, i.length, i.pending, when(i.last_active), when(i.expires_at) or "never"]
            for i in infos
        ]
        columns = ["owner", "messages", "pending", "last active", "expires"]
        return table(f"{len(rows)} inboxes", columns, rows)

    emit(jsonable(infos), render)


@inbox_group.command("rm")
@click.argument("owner")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Show what would go; delete nothing.")
@output_option
def inbox_rm(*, owner: str, yes: bool, dry_run: bool) -> None:
    """Delete OWNER's inbox with every message in it (exit 3 if it has none).

    Only the owner may (exit 4 otherwise): run it as that agent, `--agent OWNER`."""
    cfg = config()
    memory = cfg.memory()
    info = memory.inbox_info(owner)
    if info is None:
        raise CliError(ExitCode.NOT_FOUND, f"agent {owner!r} has no inbox")
    data = {"dry_run": dry_run, "owner": owner, "messages": info.length}
    if dry_run:
        emit(data, lambda: f"dry run: would delete the inbox of {owner!r} ({info.length} messages)")
        return
    confirm(f"delete the inbox of {owner!r} and its {info.length} messages?", yes)
    try:
        deleted = memory.delete_inbox(owner)
    except errors.PermissionDenied:
        # Said here rather than by describe(): an inbox has no namespace or level to name.
        raise CliError(
            ExitCode.PERMISSION,
            f"permission denied: only {owner!r} may delete its inbox, not agent "
            f"{cfg.agent!r} (run as --agent {owner})",
        ) from None
    if not deleted:  # it expired or was deleted since we looked
        raise CliError(ExitCode.NOT_FOUND, f"agent {owner!r} has no inbox")
    emit({**data, "deleted": True}, lambda: f"deleted the inbox of {owner!r}")

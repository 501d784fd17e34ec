"""``swarm-memory ns list|create|info|grant|revoke|clear|delete``."""

from __future__ import annotations

from typing import Any, cast

import click

from swarm_memory.cli.base import (
    CliError,
    ExitCode,
    config,
    confirm,
    emit,
    jsonable,
    output_option,
    parse_assignments,
    table,
    when,
)
from swarm_memory.models import LEVELS, OVER_QUOTA, STRATEGIES, NamespaceInfo, PermissionLevel


@click.group("ns")
def ns_group() -> None:
    """Namespaces: the unit of atomicity, permissions and sharding."""


def _info_rows(info: NamespaceInfo) -> list[list[Any]]:
    perms = ", ".join(f"{a}={lvl}" for a, lvl in sorted(info.permissions.items()))
    return [
        ["name", info.name],
        ["strategy", info.strategy],
        ["default permission", info.default_permission],
        ["permissions", perms],
        ["keys", info.keys],
        ["bytes", info.bytes],
        ["revision", info.revision],
        ["ttl (s)", info.ttl],
        ["max keys", info.max_keys],
        ["max bytes", info.max_bytes],
        ["history", info.history],
        ["over quota", info.over_quota],
        ["max events", info.max_events],
        ["created", f"{when(info.created_at)} by {info.created_by}"],
    ]


@ns_group.command("list")
@output_option
def ns_list() -> None:
    """Namespaces this agent may read."""
    memory = config().memory()
    infos = [memory.namespace_info(name) for name in memory.list_namespaces()]
    data = [
        {"name": i.name, "strategy": i.strategy, "keys": i.keys, "revision": i.revision}
        for i in infos
    ]

    def render() -> Any:
        rows = [[d["name"], d["strategy"], d["keys"], d["revision"]] for d in data]
        return table(f"{len(rows)} namespaces", ["namespace", "strategy", "keys", "rev"], rows)

    emit(data, render)


@ns_group.command("create")
@click.argument("namespace")
@click.option("--default-permission", type=click.Choice(LEVELS), default="write", show_default=True)
@click.option(
    "--permission",
    "-p",
    "permissions",
    multiple=True,
    metavar="AGENT=LEVEL",
    help="An agent's level (repeatable).",
)
@click.option("--strategy", type=click.Choice(STRATEGIES), default="latest-wins", show_default=True)
@click.option("--ttl", type=float, default=None, help="Default entry TTL, seconds.")
@click.option("--max-keys", type=int, default=None)
@click.option("--max-bytes", type=int, default=None)
@click.option("--history", type=int, default=0, show_default=True, help="Past versions kept.")
@click.option("--over-quota", type=click.Choice(OVER_QUOTA), default="reject", show_default=True)
@click.option("--max-events", type=int, default=None, help="Events kept in the feed.")
@click.option("--exist-ok", is_flag=True, help="No error if it exists.")
@output_option
def ns_create(
    *,
    namespace: str,
    default_permission: str,
    permissions: tuple[str, ...],
    strategy: str,
    ttl: float | None,
    max_keys: int | None,
    max_bytes: int | None,
    history: int,
    over_quota: str,
    max_events: int | None,
    exist_ok: bool,
) -> None:
    """Create a namespace (this agent becomes its admin; exit 5 if it exists)."""
    acl = cast(dict[str, PermissionLevel], parse_assignments(permissions, "--permission"))
    info = (
        config()
        .memory()
        .create_namespace(
            namespace,
            default_permission=cast(PermissionLevel, default_permission),
            permissions=acl,
            strategy=cast(Any, strategy),
            ttl=ttl,
            max_keys=max_keys,
            max_bytes=max_bytes,
            history=history,
            over_quota=cast(Any, over_quota),
            max_events=max_events,
            exist_ok=exist_ok,
        )
    )
    emit(jsonable(info), lambda: table(f"namespace {namespace}", ["", ""], _info_rows(info)))


@ns_group.command("info")
@click.argument("namespace")
@output_option
def ns_info(namespace: str) -> None:
    """Config, counters and permissions."""
    info = config().memory().namespace_info(namespace)
    emit(jsonable(info), lambda: table(f"namespace {namespace}", ["", ""], _info_rows(info)))


@ns_group.command("grant")
@click.argument("namespace")
@click.argument("assignments", nargs=-1, required=True, metavar="AGENT=LEVEL...")
@click.option("--dry-run", is_flag=True, help="Show the change; apply nothing.")
@output_option
def ns_grant(*, namespace: str, assignments: tuple[str, ...], dry_run: bool) -> None:
    """Set agents' levels (none|read|write|admin); admin only."""
    wanted = parse_assignments(assignments, "AGENT=LEVEL")
    for level in wanted.values():
        if level not in LEVELS:
            raise CliError(ExitCode.USAGE, f"unknown level {level!r}; use {', '.join(LEVELS)}")
    memory = config().memory()
    before = memory.namespace_info(namespace).permissions
    changes = {a: {"from": before.get(a), "to": lvl} for a, lvl in wanted.items()}
    if not dry_run:
        memory.namespace(namespace).grant(cast(dict[str, PermissionLevel], wanted))
    data = {"dry_run": dry_run, "changes": changes}
    prefix = "dry run: would set" if dry_run else "set"

    def render() -> str:
        return "\n".join(
            f"{prefix} {a}: {c['from'] or '(default)'} -> {c['to']}" for a, c in changes.items()
        )

    emit(data, render)


@ns_group.command("revoke")
@click.argument("namespace")
@click.argument("agents", nargs=-1, required=True)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Show the change; apply nothing.")
@output_option
def ns_revoke(*, namespace: str, agents: tuple[str, ...], yes: bool, dry_run: bool) -> None:
    """Remove agents' explicit levels (they fall back to the default); admin only."""
    memory = config().memory()
    info = memory.namespace_info(namespace)
    removed = {a: info.permissions.get(a) for a in agents}
    data = {"dry_run": dry_run, "removed": removed, "default": info.default_permission}
    if not dry_run:
        confirm(f"revoke {', '.join(agents)} in namespace {namespace!r}?", yes)
        memory.namespace(namespace).revoke(list(agents))
    prefix = "dry run: would revoke" if dry_run else "revoked"

    def render() -> str:
        return "\n".join(
            f"{prefix} {a} ({lvl or 'no explicit level'}; now {info.default_permission})"
            for a, lvl in removed.items()
        )

    emit(data, render)


@ns_group.command("clear")
@click.argument("namespace")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Count what would go; delete nothing.")
@output_option
def ns_clear(namespace: str, yes: bool, dry_run: bool) -> None:
    """Delete every entry (the namespace, its config and feed stay); admin only."""
    memory = config().memory()
    info = memory.namespace_info(namespace)
    if dry_run:
        data = {"dry_run": True, "namespace": namespace, "entries": info.keys}
        emit(data, lambda: f"dry run: would delete {info.keys} entries from {namespace!r}")
        return
    confirm(f"delete all {info.keys} entries of namespace {namespace!r}?", yes)
    n = memory.clear_namespace(namespace)
    emit({"namespace": namespace, "deleted": n}, lambda: f"deleted {n} entries")


@ns_group.command("delete")
@click.argument("namespace")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Show what would go; delete nothing.")
@output_option
def ns_delete(namespace: str, yes: bool, dry_run: bool) -> None:
    """Delete the namespace with all its entries, feed, audit log and config; admin only."""
    memory = config().memory()
    info = memory.namespace_info(namespace)
    data = {"dry_run": dry_run, "namespace": namespace, "entries": info.keys}
    if dry_run:
        emit(data, lambda: f"dry run: would delete {namespace!r} and its {info.keys} entries")
        return
    confirm(f"delete namespace {namespace!r} and its {info.keys} entries?", yes)
    memory.delete_namespace(namespace)
    emit({**data, "deleted": True}, lambda: f"deleted namespace {namespace!r}")

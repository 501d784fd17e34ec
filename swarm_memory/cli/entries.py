"""Entry commands: ``get``, ``put``, ``delete``, ``ls``, ``history``."""

from __future__ import annotations

import sys
from typing import Any

import click

from swarm_memory.cli.base import (
    CliError,
    ExitCode,
    config,
    confirm,
    dumps,
    emit,
    jsonable,
    live_entries,
    output_option,
    parse_json,
    server_now_ms,
    short,
    table,
    ttl_left,
    when,
)
from swarm_memory.models import Entry


def _entry_row(entry: Entry, now_ms: int) -> dict[str, Any]:
    row = jsonable(entry)
    row["ttl"] = ttl_left(entry.expires_at, now_ms)
    return dict(row)


def _missing(namespace: str, key: str, version: int | None = None) -> CliError:
    what = f"version {version} of key {key!r}" if version is not None else f"key {key!r}"
    return CliError(ExitCode.NOT_FOUND, f"{what} not found in namespace {namespace!r}")


@click.command("get")
@click.argument("namespace")
@click.argument("key")
@click.option("--version", type=int, default=None, help="A past version kept in history.")
@output_option
def get_cmd(*, namespace: str, key: str, version: int | None) -> None:
    """Print one entry (exit 3 if absent)."""
    memory = config().memory()
    entry = memory.namespace(namespace).get(key, version=version)
    if entry is None:
        raise _missing(namespace, key, version)
    row = _entry_row(entry, server_now_ms(memory))

    def render() -> Any:
        rows = [[name, dumps(row[name]) if name == "value" else row[name]] for name in row]
        return table(f"{namespace} / {key}", ["", ""], rows)

    emit(row, render)


@click.command("put")
@click.argument("namespace")
@click.argument("key")
@click.argument("value")
@click.option("--string", "as_string", is_flag=True, help="Store VALUE as a JSON string.")
@click.option("--ttl", type=float, default=None, help="Expire after this many seconds.")
@click.option("--expected-version", type=int, default=None, help="Compare-and-set (0: absent).")
@click.option("--create", is_flag=True, help="Only if the key is absent.")
@click.option("--op-id", default=None, help="Operation id: a replay returns the first outcome.")
@output_option
def put_cmd(
    *,
    namespace: str,
    key: str,
    value: str,
    as_string: bool,
    ttl: float | None,
    expected_version: int | None,
    create: bool,
    op_id: str | None,
) -> None:
    """Write VALUE (JSON; '-' reads stdin) under the namespace's strategy."""
    text = sys.stdin.read() if value == "-" else value
    parsed = text if as_string else parse_json(text)
    if create and expected_version is not None:
        raise CliError(ExitCode.USAGE, "--create and --expected-version exclude each other")
    ns = config().memory().namespace(namespace)
    if create:
        entry = ns.create(key, parsed, ttl=ttl, op_id=op_id)
    else:
        entry = ns.put(key, parsed, expected_version=expected_version, ttl=ttl, op_id=op_id)
    data = {
        "key": entry.key,
        "version": entry.version,
        "mod_revision": entry.mod_revision,
        "expires_at": jsonable(entry.expires_at),
    }
    emit(data, lambda: f"{key}: version {entry.version} (revision {entry.mod_revision})")


@click.command("delete")
@click.argument("namespace")
@click.argument("key")
@click.option("--expected-version", type=int, default=None, help="Only at this version.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Show what would be deleted; change nothing.")
@output_option
def delete_cmd(
    *, namespace: str, key: str, expected_version: int | None, yes: bool, dry_run: bool
) -> None:
    """Delete one entry (exit 3 if absent)."""
    ns = config().memory().namespace(namespace)
    entry = ns.get(key)
    if entry is None:
        raise _missing(namespace, key)
    if dry_run:
        data = {"dry_run": True, "key": key, "version": entry.version, "deleted": False}
        emit(data, lambda: f"dry run: would delete {key!r} (version {entry.version})")
        return
    confirm(f"delete {key!r} (version {entry.version}) from namespace {namespace!r}?", yes)
    deleted = ns.delete(key, expected_version=expected_version)
    if not deleted:  # removed by someone else between the read and now
        raise _missing(namespace, key)
    emit({"key": key, "deleted": True}, lambda: f"deleted {key!r}")


@click.command("ls")
@click.argument("namespace")
@click.argument("pattern", default="*")
@click.option("--limit", type=int, default=1000, show_default=True, help="At most this many.")
@output_option
def ls_cmd(*, namespace: str, pattern: str, limit: int) -> None:
    """List live keys matching a glob, with version, size and TTL."""
    memory = config().memory()
    now_ms = server_now_ms(memory)
    rows = [
        {
            "key": entry.key,
            "version": entry.version,
            "size": entry.size,
            "updated_by": entry.updated_by,
            "updated_at": entry.updated_at,  # -o json: ISO 8601 (jsonable), as get
            "ttl": ttl_left(entry.expires_at, now_ms),
            "value": entry.value,
        }
        for entry in live_entries(memory.namespace(namespace), pattern, limit)
    ]

    def render() -> Any:
        cells = [
            [
                r["key"],
                r["version"],
                r["size"],
                r["updated_by"],
                when(r["updated_at"]),
                r["ttl"],
                short(r["value"], 40),
            ]
            for r in rows
        ]
        title = f"{namespace}: {len(rows)} keys matching {pattern!r}"
        return table(title, ["key", "ver", "bytes", "by", "updated", "ttl s", "value"], cells)

    emit(rows, render)


@click.command("history")
@click.argument("namespace")
@click.argument("key")
@output_option
def history_cmd(*, namespace: str, key: str) -> None:
    """Kept versions of a key, newest first (exit 3 if the key has none)."""
    versions = config().memory().namespace(namespace).history(key)
    if not versions:
        raise _missing(namespace, key)
    rows = [jsonable(e) for e in versions]

    def render() -> Any:
        cells = [
            [e.version, e.mod_revision, e.updated_by, when(e.updated_at), short(e.value)]
            for e in versions
        ]
        return table(f"{namespace} / {key}", ["ver", "rev", "by", "updated", "value"], cells)

    emit(rows, render)

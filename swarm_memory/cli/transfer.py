"""``export`` / ``import``: a namespace as JSON Lines with versions, TTLs and a checksum.

Format (``swarm-memory/export-v1``), one JSON object per line::

    {"type": "header", "format": "swarm-memory/export-v1", "namespace": ..., "revision": ...,
     "exported_at": ..., "config": {...}}
    {"type": "entry", "key": ..., "value": ..., "version": ..., "ttl": seconds | null}
    ...
    {"type": "checksum", "algorithm": "sha256", "entries": N, "digest": "<hex>"}

The digest covers the exact bytes of every line before it. ``import`` verifies it before
writing anything, so a truncated or edited file is refused whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, cast

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from swarm_memory.cli.base import (
    PAGE,
    CliError,
    ExitCode,
    chunks,
    config,
    confirm,
    dumps,
    emit,
    jsonable,
    live_entries,
    output_option,
    parse_json,
    server_now_ms,
    ttl_left,
)
from swarm_memory.client import Namespace, SwarmMemory
from swarm_memory.errors import ConflictError, NamespaceNotFound
from swarm_memory.models import Entry, NamespaceInfo

FORMAT = "swarm-memory/export-v1"
# Every create_namespace option NamespaceInfo reports: the header carries the whole
# config, so --create-namespace rebuilds the namespace as it was.
CONFIG_FIELDS = (
    "default_permission",
    "permissions",
    "strategy",
    "ttl",
    "max_keys",
    "max_bytes",
    "history",
    "over_quota",
    "max_events",
    "require_lock",
)


@contextlib.contextmanager
def progress(description: str, total: int | None) -> Iterator[Any]:
    """A progress bar on stderr when it is a terminal; silent otherwise (CI, pipes)."""
    err = Console(stderr=True)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )
    with bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


def _line(obj: dict[str, Any]) -> bytes:
    return (dumps(obj) + "\n").encode("utf-8")


@contextlib.contextmanager
def _opened(path: str, mode: str) -> Iterator[IO[bytes]]:
    """``-`` is stdin/stdout (left open). Opened here, not by click, so an unusable path
    is one ``swarm-memory: error:`` line like every other error (exit 2: a bad argument)."""
    if path == "-":
        yield sys.stdout.buffer if "w" in mode else sys.stdin.buffer
        return
    try:
        # Entered below; a with-statement here would wrap OSError from the body too.
        file = cast(IO[bytes], open(path, mode))  # noqa: SIM115
    except OSError as exc:
        raise CliError(ExitCode.USAGE, f"cannot open {path}: {exc.strerror or exc}") from None
    with file:
        yield file


@click.command("export")
@click.argument("namespace")
@click.argument("path", metavar="FILE", default="-")
@click.option("--pattern", default="*", show_default=True, help="Only keys matching this glob.")
@output_option
def export_cmd(namespace: str, path: str, pattern: str) -> None:
    """Write the namespace's entries to FILE (default stdout) as JSON Lines.

    Not a point-in-time snapshot: entries are read page by page; the header's revision
    is the namespace revision when the export started."""
    memory = config().memory()
    ns = memory.namespace(namespace)
    info = ns.info()  # before FILE is opened: an unknown namespace leaves no empty file
    now_ms = server_now_ms(memory)
    with _opened(path, "wb") as file:
        count, digest = _write_export(namespace, ns, info, now_ms, file, pattern=pattern)
    if path != "-":  # keep stdout clean for the export itself
        emit(
            {"namespace": namespace, "entries": count, "digest": digest},
            lambda: f"exported {count} entries of {namespace!r} (sha256 {digest})",
        )


def _write_export(
    namespace: str,
    ns: Namespace,
    info: NamespaceInfo,
    now_ms: int,
    file: IO[bytes],
    *,
    pattern: str,
) -> tuple[int, str]:
    """Header, entries, checksum line; returns (entries, hex digest)."""
    digest = hashlib.sha256()
    header = {
        "type": "header",
        "format": FORMAT,
        "namespace": namespace,
        "revision": info.revision,
        "exported_at": jsonable(datetime.fromtimestamp(now_ms / 1000, UTC)),
        "config": {name: getattr(info, name) for name in CONFIG_FIELDS},
    }
    count = 0
    with progress(f"export {namespace}", info.keys) as advance:
        for obj in _export_lines(header, live_entries(ns, pattern), now_ms):
            data = _line(obj)
            digest.update(data)
            file.write(data)
            count += 1
            advance()
    trailer = {"type": "checksum", "algorithm": "sha256", "entries": count - 1}
    file.write(_line({**trailer, "digest": digest.hexdigest()}))
    file.flush()
    return count - 1, digest.hexdigest()


def _export_lines(
    header: dict[str, Any], entries: Iterator[Entry], now_ms: int
) -> Iterator[dict[str, Any]]:
    yield header
    for e in entries:
        ttl = ttl_left(e.expires_at, now_ms)
        if ttl is not None and ttl <= 0:
            continue  # expired, not yet swept
        yield {"type": "entry", "key": e.key, "value": e.value, "version": e.version, "ttl": ttl}


# ---------------------------------------------------------------------------- import
@dataclass
class Dump:
    header: dict[str, Any]
    entries: list[dict[str, Any]]


def _bad(reason: str) -> CliError:
    return CliError(ExitCode.USAGE, f"not a valid swarm-memory export: {reason}; nothing imported")


def read_dump(data: bytes) -> Dump:
    """Parse and verify a dump; raises CliError (exit 2) before anything is written."""
    lines = data.splitlines(keepends=True)
    if len(lines) < len(("header", "checksum")):
        raise _bad("too short (no header or no checksum line)")
    try:
        trailer = json.loads(lines[-1])
    except ValueError:
        raise _bad("the last line is not the checksum line (truncated?)") from None
    if not isinstance(trailer, dict) or trailer.get("type") != "checksum":
        raise _bad("the last line is not the checksum line (truncated?)")
    if trailer.get("algorithm") != "sha256":
        raise _bad(f"unknown checksum algorithm {trailer.get('algorithm')!r}")
    digest = hashlib.sha256(b"".join(lines[:-1])).hexdigest()
    if digest != trailer.get("digest"):
        raise CliError(
            ExitCode.USAGE,
            "checksum mismatch: the file was changed or truncated since export; nothing imported",
        )
    objs = [parse_json(line.decode("utf-8"), f"line {n + 1}") for n, line in enumerate(lines[:-1])]
    header = objs[0]
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise _bad(f"the first line is not a {FORMAT} header")
    entries = objs[1:]
    if trailer.get("entries") != len(entries) or not all(
        isinstance(e, dict) and e.get("type") == "entry" and isinstance(e.get("key"), str)
        for e in entries
    ):
        raise _bad("entry lines do not match the checksum line")
    return Dump(header, cast(list[dict[str, Any]], entries))


def _plan(mode: str, entry: dict[str, Any], current: Entry | None) -> str:
    if current is None:
        return "create"
    if mode == "skip":
        return "skip"
    if mode == "overwrite":
        return "overwrite"
    return "write" if current.version == entry.get("version") else "conflict"


def _exported_config(dump: Dump) -> dict[str, Any]:
    """The header's namespace config (older exports lack permissions and require_lock)."""
    return {k: v for k, v in dict(dump.header.get("config") or {}).items() if k in CONFIG_FIELDS}


def _target(memory: SwarmMemory, name: str, dump: Dump, create: bool, dry_run: bool) -> str:
    """``"exists"``, ``"created"`` (now, without require_lock yet), or ``"would create"``
    (dry run)."""
    try:
        memory.namespace_info(name)
        return "exists"
    except NamespaceNotFound:
        if not create:
            raise CliError(
                ExitCode.NOT_FOUND,
                f"namespace {name!r} not found; pass --create-namespace to create it with "
                "the exported configuration",
            ) from None
    if dry_run:
        return "would create"
    cfg = _exported_config(dump)
    # require_lock is switched on after the entries are in: the import holds no locks,
    # and every unfenced write into such a namespace is refused.
    cfg.pop("require_lock", None)
    memory.create_namespace(name, **cfg)
    return "created"


def _apply(
    ns: Namespace, mode: str, action: str, entry: dict[str, Any], current: Entry | None
) -> str:
    key, value, ttl = entry["key"], entry.get("value"), entry.get("ttl")
    try:
        if action == "create":
            ns.create(key, value, ttl=ttl)
        elif action == "write":  # cas: only while the target is at the exported version
            ns.put(key, value, expected_version=entry["version"], ttl=ttl)
        elif action == "overwrite":
            # An explicit version works under every strategy (first-wins, version, ...).
            # Start from the version the plan read; a lost race carries the winner.
            for _ in range(5):
                try:
                    ns.put(key, value, expected_version=current.version if current else 0, ttl=ttl)
                    break
                except ConflictError as exc:
                    current = exc.current
            else:
                return "conflict"
        else:
            return action
    except ConflictError:
        return "skip" if mode == "skip" else "conflict"
    return action


@click.command("import")
@click.argument("path", metavar="FILE")
@click.option("--namespace", "-n", default=None, help="Target (default: the exported one).")
@click.option(
    "--mode",
    type=click.Choice(["skip", "overwrite", "cas"]),
    default="skip",
    show_default=True,
    help="skip: keep existing keys; overwrite: replace them; cas: replace only keys still at "
    "the exported version (others are conflicts, exit 5). Absent keys are created.",
)
@click.option("--create-namespace", is_flag=True, help="Create it with the exported config.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before overwriting.")
@click.option("--dry-run", is_flag=True, help="Verify and show the plan; write nothing.")
@output_option
def import_cmd(
    *,
    path: str,
    namespace: str | None,
    mode: str,
    create_namespace: bool,
    yes: bool,
    dry_run: bool,
) -> None:
    """Load a file written by ``export`` (checksum verified first).

    Values are written through the target namespace's strategy and get new versions
    there; TTLs restart from the time that was left at export."""
    with _opened(path, "rb") as file:
        dump = read_dump(file.read())
    name = namespace or str(dump.header.get("namespace"))
    memory = config().memory()
    target = _target(memory, name, dump, create_namespace, dry_run)
    exists = target != "would create"
    ns = memory.namespace(name)
    keys = [e["key"] for e in dump.entries]
    current: dict[str, Entry | None] = {}
    if exists:
        for page in chunks(keys, PAGE):
            current.update(ns.get_many(page))
    plan = [_plan(mode, e, current.get(e["key"])) for e in dump.entries]
    counts = {a: plan.count(a) for a in ("create", "write", "overwrite", "skip", "conflict")}
    if dry_run:
        data = {
            "dry_run": True,
            "namespace": name,
            "mode": mode,
            "create_namespace": not exists,
            "plan": counts,
        }
        emit(data, lambda: f"dry run ({mode}) into {name!r}: " + _summary(counts))
        return
    if counts["overwrite"]:
        confirm(f"overwrite {counts['overwrite']} existing entries in {name!r}?", yes)
    outcome = dict.fromkeys(counts, 0)
    with progress(f"import {name}", len(plan)) as advance:
        for entry, planned in zip(dump.entries, plan, strict=True):
            done = planned
            if planned in ("create", "write", "overwrite"):
                done = _apply(ns, mode, planned, entry, current.get(entry["key"]))
            outcome[done] += 1
            advance()
    if target == "created" and _exported_config(dump).get("require_lock"):
        memory.update_namespace(name, require_lock=True)
    emit(
        {"namespace": name, "mode": mode, "result": outcome},
        lambda: f"imported into {name!r} ({mode}): " + _summary(outcome),
    )
    if outcome["conflict"]:
        raise CliError(
            ExitCode.CONFLICT,
            f"{outcome['conflict']} entries changed in {name!r} since the export; left as they are",
        )


def _summary(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {a}" for a, n in counts.items() if n) or "nothing to do"

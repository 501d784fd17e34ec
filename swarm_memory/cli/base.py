"""What every ``swarm-memory`` command shares: configuration, connection, output, exit codes.

The CLI is a thin shell over :class:`~swarm_memory.SwarmMemory`. Errors are mapped to exit
codes by their class (and printed from their structured attributes), never by parsing
messages; every error is one line on stderr, and a URL is never printed with its password.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from enum import IntEnum
from typing import Any, NoReturn, TypeVar

import click
import pydantic
import redis
from rich.console import Console, RenderableType
from rich.table import Table

from swarm_memory import _shell, errors
from swarm_memory.client import Namespace, SwarmMemory
from swarm_memory.models import Entry
from swarm_memory.settings import Settings
from swarm_memory.settings import redact_url as _redact_url

F = TypeVar("F", bound=Callable[..., Any])


class ExitCode(IntEnum):
    """Documented in the README's CLI section; tests assert each one."""

    OK = 0
    ERROR = 1  # anything else (server refused, quota, aborted at a prompt, ...)
    USAGE = 2  # bad option / argument / JSON value / URL / config, tampered import file
    NOT_FOUND = 3  # namespace, key or version not found
    PERMISSION = 4  # the agent's level is too low
    CONFLICT = 5  # version conflict, namespace exists, import conflicts
    UNREACHABLE = 6  # Redis unreachable, or it refused the credentials
    CHECK_FAILED = 7  # demo found a lost update; doctor found a problem
    INTERRUPTED = 130  # Ctrl-C (except `watch`, for which Ctrl-C is the normal stop)


class CliError(Exception):
    """An error the CLI itself detects (bad JSON, missing key, declined prompt)."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ----------------------------------------------------------------------- redaction
# The library redacts the URLs in its own errors (and Settings reprs) too.
redact_url = _redact_url
_URL_IN_TEXT = re.compile(r"\b(?:rediss?|unix|redis\+\w+)://\S+")


def scrub(text: str, url: str | None) -> str:
    """One line, URLs redacted, and the configured password removed wherever it appears."""
    line = " ".join(text.split())
    line = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), line)
    for secret in _shell.url_passwords(url):
        line = line.replace(secret, "***")
    return line


# ----------------------------------------------------------------------- errors
def exit_code_for(exc: errors.SwarmMemoryError) -> ExitCode:
    """By class: the tree in errors.py decides, never the message."""
    if isinstance(exc, errors.InvalidInput | errors.ClusterModeMismatch):  # fix the config
        return ExitCode.USAGE
    if isinstance(exc, errors.NamespaceNotFound | errors.VersionNotFound | errors.NodeNotFound):
        return ExitCode.NOT_FOUND
    if isinstance(exc, errors.PermissionDenied):
        return ExitCode.PERMISSION
    if isinstance(exc, errors.SessionNotOpen):
        return ExitCode.NOT_FOUND if exc.state == "absent" else ExitCode.CONFLICT
    if isinstance(
        exc, errors.ConflictError | errors.NamespaceExists | errors.OpIdReused | errors.LockError
    ):
        return ExitCode.CONFLICT
    if isinstance(exc, errors.TransportError):
        return ExitCode.UNREACHABLE
    return ExitCode.ERROR


def describe(exc: errors.SwarmMemoryError) -> str:
    """A one-line message built from the error's structured attributes where it has them."""
    if isinstance(exc, errors.PermissionDenied) and exc.required in ("acl", "identity"):
        return f"permission denied: {exc.message}"  # Redis's ACL, not the namespace's map
    if isinstance(exc, errors.PermissionDenied):
        return (
            f"permission denied: agent {exc.agent!r} has {exc.granted!r} in namespace "
            f"{exc.namespace!r}, {exc.action} needs {exc.required!r}"
        )
    if isinstance(exc, errors.NamespaceNotFound):
        return f"namespace {exc.namespace!r} not found"
    if isinstance(exc, errors.ConflictError) and not isinstance(
        exc, errors.VersionRequired | errors.RetryLimitExceeded | errors.NodeConflict
    ):
        current = "absent" if exc.current is None else f"version {exc.current.version}"
        expected = "" if exc.expected is None else f"expected version {exc.expected}, "
        return f"conflict on key {exc.key!r}: {expected}current is {current}"
    if isinstance(exc, errors.InvalidURL):
        return exc.message  # says "invalid Redis URL <redacted>: why" already
    if isinstance(exc, errors.InvalidInput):
        return f"invalid {exc.field}: {exc.message}"
    return exc.message


def fail(code: ExitCode, message: str, url: str | None = None) -> NoReturn:
    click.echo(f"swarm-memory: error: {scrub(message, url)}", err=True)
    raise click.exceptions.Exit(int(code))


def settings_problem(exc: pydantic.ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "settings"
    return f"invalid configuration {where} (SWARM_MEMORY_{where.upper()}): {first['msg']}"


# ----------------------------------------------------------------------- configuration
@dataclasses.dataclass
class Config:
    """Root options; ``Settings`` reads every other ``SWARM_MEMORY_*`` variable."""

    url: str | None = None
    agent: str = "cli"
    prefix: str | None = None
    cluster: bool | None = None
    output: str = "table"
    _settings: Settings | None = None
    _memory: SwarmMemory | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            overrides: dict[str, Any] = {}
            if self.url is not None:
                overrides["redis_url"] = self.url
            if self.prefix is not None:
                overrides["key_prefix"] = self.prefix
            if self.cluster is not None:
                overrides["cluster"] = self.cluster
            self._settings = Settings(**overrides)
        return self._settings

    @property
    def target_url(self) -> str | None:
        """The URL commands connect to (for redaction; may be None)."""
        if self.url:
            return self.url
        try:
            return self.settings.redis_url
        except pydantic.ValidationError:
            return None

    @property
    def json(self) -> bool:
        return self.output == "json"

    def memory(self) -> SwarmMemory:
        """Connect on first use, after one round trip that says what it waits for (see
        :func:`first_contact`); closed at exit."""
        if self._memory is None:
            memory = SwarmMemory.from_url(agent=self.agent, settings=self.settings)
            click.get_current_context().call_on_close(memory.close)
            first_contact(memory)
            self._memory = memory
        return self._memory

    def close(self) -> None:
        if self._memory is not None:
            self._memory.close()
            self._memory = None


WAIT_NOTICE_S = 1.5  # a healthy Redis answers in milliseconds; past this, say why we wait


def server_address(client: Any) -> str:
    """``host:port`` (or the socket path) the client talks to first."""
    if isinstance(client, redis.RedisCluster):
        cluster: Any = client  # redis-py leaves get_default_node untyped
        node = cluster.get_default_node()
        return f"{node.host}:{node.port}"
    kw = client.connection_pool.connection_kwargs
    if "path" in kw:
        return str(kw["path"])
    return f"{kw.get('host', 'localhost')}:{kw.get('port', 6379)}"


def first_contact(memory: SwarmMemory) -> None:
    """PING once before the command runs. A server that accepts connections but never
    answers would otherwise leave the command silent for every retry attempt times the
    socket timeout; after WAIT_NOTICE_S this says on stderr what it waits for, and the
    PING gives up after one socket timeout (no retries: a person is waiting)."""
    settings = memory.settings
    where = server_address(memory.redis)
    notice = threading.Timer(
        WAIT_NOTICE_S,
        lambda: click.echo(
            f"swarm-memory: waiting for Redis at {where} "
            f"(timeout {settings.socket_timeout:g} s)...",
            err=True,
        ),
    )
    notice.daemon = True
    notice.start()
    try:
        memory.redis.ping()  # redis-py's errors: the root command maps them (root.py)
    finally:
        notice.cancel()


def config() -> Config:
    """The Config of the running command, with its own ``-o`` applied."""
    return click.get_current_context().ensure_object(Config)


def _set_output(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        ctx.ensure_object(Config).output = value
    return value


def output_option(fn: F) -> F:
    """``-o table|json`` accepted after the command too (``swarm-memory ls team -o json``)."""
    return click.option(
        "-o",
        "--output",
        type=click.Choice(["table", "json"]),
        default=None,
        expose_value=False,
        is_eager=True,
        callback=_set_output,
        help="Output format (default: the global -o, else table).",
    )(fn)


def confirm(prompt: str, yes: bool) -> None:
    """Ask on stderr unless ``--yes``; a declined prompt or no input aborts (exit 1)."""
    if yes:
        return
    try:
        ok = click.confirm(prompt, default=False, err=True)
    except click.exceptions.Abort:  # end of input: finish the prompt's line first
        click.echo(err=True)
        ok = False
    if not ok:
        raise CliError(ExitCode.ERROR, "aborted (nothing changed); pass --yes to confirm")


# ----------------------------------------------------------------------- output
def jsonable(obj: Any) -> Any:
    """Entries, infos and records as plain JSON. Datetimes: ISO 8601 with the UTC offset
    and always milliseconds (the server clock's resolution), one format everywhere."""
    if isinstance(obj, datetime):
        return obj.isoformat(timespec="milliseconds")
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [jsonable(v) for v in obj]
    return obj


def dumps(value: Any) -> str:
    """Exact JSON (big ints keep every digit, floats round-trip, [] stays [])."""
    return json.dumps(jsonable(value), ensure_ascii=False, allow_nan=False)


def echo_json(value: Any) -> None:
    # Never through rich: it would wrap long lines and break the JSON.
    click.echo(dumps(value))


def console() -> Console:
    return Console(soft_wrap=False, highlight=False)


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> Table:
    """A table; with no column names given (``["", ""]``), a headerless key/value table."""
    t = Table(title=title, title_justify="left", show_header=any(columns))
    for column in columns:
        t.add_column(column, overflow="fold")
    for row in rows:
        t.add_row(*("" if cell is None else str(cell) for cell in row))
    return t


def emit(data: Any, render: Callable[[], RenderableType | str]) -> None:
    """JSON with ``-o json``, else the rich rendering."""
    if config().json:
        echo_json(data)
        return
    rendered = render()
    if isinstance(rendered, str):
        click.echo(rendered)
    else:
        console().print(rendered)


def short(value: Any, width: int = 60) -> str:
    text = dumps(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def when(moment: datetime | None) -> str:
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


# ----------------------------------------------------------------------- values
def parse_json(text: str, what: str = "value") -> Any:
    """Parse a JSON argument; NaN/Infinity are refused like the codec refuses them."""

    def refuse(token: str) -> Any:
        raise CliError(ExitCode.USAGE, f"{what} is not valid JSON: {token} is not allowed")

    try:
        return json.loads(text, parse_constant=refuse)
    except json.JSONDecodeError as exc:
        raise CliError(
            ExitCode.USAGE,
            f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} "
            "(quote strings, e.g. '\"text\"', or pass --string)",
        ) from None


def parse_assignments(items: tuple[str, ...], what: str) -> dict[str, str]:
    """``agent=level`` pairs."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, level = item.partition("=")
        if not sep or not name or not level:
            raise CliError(ExitCode.USAGE, f"{what} must look like AGENT=LEVEL, got {item!r}")
        out[name] = level
    return out


def server_now_ms(memory: SwarmMemory) -> int:
    """The Redis server clock (TTLs are relative to it, DESIGN.md decision 4)."""
    seconds, micros = memory.redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


def ttl_left(expires_at: datetime | None, now_ms: int) -> float | None:
    if expires_at is None:
        return None
    return round(expires_at.timestamp() - now_ms / 1000, 3)


PAGE = 200  # keys per get_many round trip


def live_entries(ns: Namespace, pattern: str, limit: int | None = None) -> Iterator[Entry]:
    """Entries of the keys matching ``pattern`` (at most ``limit``), one ``get_many`` per
    page of names; keys deleted or expired between the listing and the read are left out."""
    names = itertools.islice(ns.keys(pattern), limit)
    while page := list(itertools.islice(names, PAGE)):
        yield from (e for e in ns.get_many(page).values() if e is not None)


def chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()

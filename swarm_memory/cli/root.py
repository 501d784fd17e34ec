"""The root ``swarm-memory`` group: global options, every error to one line and an exit
code, the ``demo`` command, and the list of every other command (one module each).

Configuration comes from options or ``SWARM_MEMORY_*`` variables (``_REDIS_URL``,
``_AGENT``, ``_KEY_PREFIX``, ``_CLUSTER``, ``_OUTPUT`` and every other Settings field).
Exit codes (README, "CLI"): 0 ok, 1 error, 2 bad input, 3 not found, 4 permission denied,
5 conflict, 6 Redis unreachable or refused the credentials, 7 a check failed (demo,
doctor), 130 interrupted. Every error is one line on stderr; passwords are never printed.
"""

from __future__ import annotations

from typing import Any

import click
import pydantic
import redis.exceptions as rexc

from swarm_memory import errors
from swarm_memory._drive import setup_error
from swarm_memory.cli.acl import acl_group
from swarm_memory.cli.agent import context_group, outcomes_group, session_group
from swarm_memory.cli.base import (
    CliError,
    Config,
    ExitCode,
    config,
    describe,
    exit_code_for,
    fail,
    output_option,
    settings_problem,
)
from swarm_memory.cli.doctor import doctor_cmd
from swarm_memory.cli.entries import delete_cmd, get_cmd, history_cmd, ls_cmd, put_cmd
from swarm_memory.cli.events import agents_cmd, audit_cmd, locks_cmd, stats_cmd, watch_cmd
from swarm_memory.cli.exporter import exporter_cmd
from swarm_memory.cli.graph import graph_group
from swarm_memory.cli.inbox import inbox_group
from swarm_memory.cli.ns import ns_group
from swarm_memory.cli.transfer import export_cmd, import_cmd


def _redis_error(exc: rexc.RedisError) -> tuple[ExitCode, str]:
    """redis-py errors that reach the CLI outside the library's driver (doctor, TIME)."""
    if isinstance(exc, rexc.AuthenticationError | rexc.AuthenticationWrongNumberOfArgsError):
        return ExitCode.UNREACHABLE, f"Redis refused the credentials: {exc}"
    if isinstance(exc, rexc.ConnectionError | rexc.TimeoutError):
        return ExitCode.UNREACHABLE, f"Redis unreachable: {exc}"
    if isinstance(exc, rexc.ResponseError) and str(exc).startswith(("NOAUTH", "WRONGPASS")):
        return ExitCode.UNREACHABLE, f"Redis refused the credentials: {exc}"
    if isinstance(exc, rexc.NoPermissionError) or str(exc).startswith("NOPERM"):
        return ExitCode.PERMISSION, f"permission denied by Redis's ACL: {exc}"
    if "Cluster" in type(exc).__name__:
        return ExitCode.UNREACHABLE, f"Redis Cluster unreachable: {exc}"
    return ExitCode.ERROR, f"Redis refused the command: {exc}"


class RootGroup(click.Group):
    """Turns every error into one line on stderr and a documented exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        cfg = ctx.ensure_object(Config)
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.ClickException, click.Abort):
            raise
        except errors.SwarmMemoryError as exc:
            fail(exit_code_for(exc), describe(exc), cfg.target_url)
        except CliError as exc:
            fail(exc.code, exc.message, cfg.target_url)
        except pydantic.ValidationError as exc:
            fail(ExitCode.USAGE, settings_problem(exc), cfg.target_url)
        except rexc.RedisError as exc:
            code, message = _redis_error(exc)
            fail(code, message, cfg.target_url)
        except rexc.RedisClusterException as exc:  # not a RedisError in redis-py
            mapped = setup_error(exc)
            fail(exit_code_for(mapped), describe(mapped), cfg.target_url)
        except KeyboardInterrupt:
            fail(ExitCode.INTERRUPTED, "interrupted", cfg.target_url)
        except BrokenPipeError:  # `swarm-memory export ns | head`
            raise click.exceptions.Exit(int(ExitCode.ERROR)) from None
        except OSError as exc:  # a write to stdout or a file that failed midway
            where = f": {exc.filename}" if exc.filename else ""
            fail(ExitCode.ERROR, f"{exc.strerror or exc}{where}", cfg.target_url)


@click.group(cls=RootGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--url",
    default=None,
    metavar="URL",
    help="Redis URL (default: SWARM_MEMORY_REDIS_URL). redis://[user:password@]host:port/db",
)
@click.option(
    "--agent",
    envvar="SWARM_MEMORY_AGENT",
    default="cli",
    show_default=True,
    help="Agent identity for permission checks (SWARM_MEMORY_AGENT).",
)
@click.option("--prefix", default=None, help="Key prefix (default: SWARM_MEMORY_KEY_PREFIX or sm).")
@click.option("--cluster/--no-cluster", default=None, help="Redis Cluster (SWARM_MEMORY_CLUSTER).")
@click.option(
    "-o",
    "--output",
    envvar="SWARM_MEMORY_OUTPUT",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Output format (SWARM_MEMORY_OUTPUT).",
)
@click.version_option(package_name="swarm-memory", prog_name="swarm-memory")
@click.pass_context
def cli(
    ctx: click.Context,
    *,
    url: str | None,
    agent: str,
    prefix: str | None,
    cluster: bool | None,
    output: str,
) -> None:
    """Shared memory for agent swarms on Redis. `swarm-memory demo` runs a swarm."""
    cfg = ctx.ensure_object(Config)
    # A command's own -o is parsed after this callback runs, so it overrides this one.
    cfg.url, cfg.agent, cfg.prefix, cfg.cluster = url, agent, prefix, cluster
    cfg.output = output


@cli.command("demo")
@click.option("--agents", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--tasks", type=click.IntRange(1, 100_000), default=200, show_default=True)
@click.option(
    "--embedded",
    type=click.Choice(["auto", "redis-server", "fakeredis"]),
    default="auto",
    show_default=True,
    help="Which embedded server to start when no URL is configured.",
)
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Give up after.")
@output_option
def demo_cmd(*, agents: int, tasks: int, embedded: str, timeout: float) -> None:
    """Run a swarm of agent processes on a shared task board and verify nothing was lost.

    With no Redis configured it starts an embedded one (redis-server on a free port if
    installed, else an in-process fakeredis server). Exit 7 if any update was lost."""
    from swarm_memory.cli.demo import run  # noqa: PLC0415 - multiprocessing only when asked for

    cfg = config()
    url = cfg.url or cfg.settings.redis_url
    code = run(
        agents=agents,
        tasks=tasks,
        url=url,
        embedded=embedded,
        timeout=timeout,
        as_json=cfg.json,
        settings=cfg.settings,
    )
    if code:
        raise click.exceptions.Exit(code)


for _command in (
    ns_group,
    acl_group,
    get_cmd,
    put_cmd,
    delete_cmd,
    ls_cmd,
    history_cmd,
    watch_cmd,
    locks_cmd,
    agents_cmd,
    audit_cmd,
    stats_cmd,
    export_cmd,
    import_cmd,
    doctor_cmd,
    inbox_group,
    graph_group,
    exporter_cmd,
    outcomes_group,
    context_group,
    session_group,
):
    cli.add_command(_command)

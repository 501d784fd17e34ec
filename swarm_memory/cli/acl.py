"""``swarm-memory acl plan|apply|revoke|rotate``: one Redis ACL user per agent, generated
from the permission maps (``swarm_memory.acl``). Run as an operator (the default user or
one allowed ``ACL``). Passwords are never printed: new ones go to ``--secrets-dir``, one
``<agent>.password`` file each (mode 0600)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from swarm_memory import acl
from swarm_memory.cli.base import CliError, ExitCode, config


def _users(agents: tuple[str, ...]) -> list[acl.AgentUser]:
    memory = config().memory()
    prefix = memory.settings.key_prefix
    return acl.plan(acl.read_maps(memory.redis, prefix), agents, prefix=prefix)


def _write_secret(directory: Path | None, agent: str, password: str) -> None:
    if directory is None:
        raise CliError(ExitCode.USAGE, "new passwords need --secrets-dir (they are never printed)")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{agent}.password"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    click.echo(f"{agent}: password written to {path}")


_AGENTS = click.option(
    "--agent", "agents", multiple=True, help="Also plan this agent (one that relies on defaults)."
)
_SECRETS = click.option(
    "--secrets-dir", type=click.Path(file_okay=False, path_type=Path), default=None
)


@click.group("acl")
def acl_group() -> None:
    """Redis ACL users per agent (authenticated mode; README "Security")."""


@acl_group.command("plan")
@_AGENTS
@click.option("--check", is_flag=True, help="Exit 7 when users differ from the maps (drift).")
def plan_cmd(agents: tuple[str, ...], check: bool) -> None:
    """Print the ACL SETUSER lines (a dry run; no passwords)."""
    users = _users(agents)
    if not check:
        for user in users:
            click.echo(user.line())
        return
    differs = acl.drift(config().memory().redis, users)
    for agent in differs:
        click.echo(f"drift: the ACL user of {agent!r} differs from the maps (run acl apply)")
    if differs:
        raise CliError(ExitCode.CHECK_FAILED, f"{len(differs)} ACL user(s) out of date")
    click.echo(f"{len(users)} ACL user(s) match the maps")


@acl_group.command("apply")
@_AGENTS
@_SECRETS
def apply_cmd(agents: tuple[str, ...], secrets_dir: Path | None) -> None:
    """Create or update every agent's user (every primary on Cluster)."""
    users = _users(agents)
    existing = {u.agent for u in users if acl.getuser(config().memory().redis, u.agent)}
    if secrets_dir is None and any(u.agent not in existing for u in users):
        raise CliError(ExitCode.USAGE, "new users need --secrets-dir (passwords are never printed)")
    for agent, password in acl.apply(config().memory().redis, users).items():
        _write_secret(secrets_dir, agent, password)
    click.echo(f"{len(users)} ACL user(s) applied")


@acl_group.command("revoke")
@click.argument("agent")
def revoke_cmd(agent: str) -> None:
    """Delete AGENT's user and close its connections."""
    acl.revoke(config().memory().redis, agent)
    click.echo(f"{agent}: ACL user deleted")


@acl_group.command("rotate")
@click.argument("agent")
@_SECRETS
@click.option("--finish", is_flag=True, help="Remove every password but the one in --secrets-dir.")
def rotate_cmd(agent: str, secrets_dir: Path | None, finish: bool) -> None:
    """Add a new password (both work until --finish removes the old ones)."""
    redis = config().memory().redis
    if finish:
        if secrets_dir is None:
            raise CliError(ExitCode.USAGE, "--finish reads the new password from --secrets-dir")
        keep = (secrets_dir / f"{agent}.password").read_text().strip()
        removed = acl.finish_rotation(redis, agent, keep)
        click.echo(f"{agent}: {removed} old password(s) removed")
        return
    if secrets_dir is None:
        raise CliError(ExitCode.USAGE, "rotate needs --secrets-dir (passwords are never printed)")
    _write_secret(secrets_dir, agent, acl.rotate(redis, agent))

"""``swarm-memory``: the command line, a thin shell over the library (the ``[cli]`` extra).

The CLI imports the library; the library never imports the CLI. Its modules:

=============  =========================================================================
``root``       the root group: global options, errors to exit codes, ``demo``, the
               command list
``base``       what every command shares: configuration, connection, output, exit codes
``entries``    ``get``, ``put``, ``delete``, ``ls``, ``history``
``events``     ``watch``, ``audit``, ``stats``, ``locks``, ``agents``
``ns``         ``ns list|create|info|grant|revoke|clear|delete``
``inbox``      ``inbox ls|rm``
``transfer``   ``export``, ``import`` (JSON Lines with a checksum)
``doctor``     ``doctor``: is this Redis fit to hold swarm memory?
``exporter``   ``exporter``: serves :mod:`swarm_memory.exporter` (also
               ``python -m swarm_memory.exporter``)
``demo``       the main job (``swarm-memory demo``, ``python -m swarm_memory``): the swarm,
               its live table and the verification
``demo_agent`` one agent process of the demo
=============  =========================================================================

This module itself imports neither click nor rich, so that without the extra
``swarm-memory`` says in one line what to install instead of printing a traceback, and
the demo's agent processes import only the library. :data:`cli` (the click group) is
loaded on first use.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from swarm_memory.cli.root import cli

__all__ = ["INSTALL_CLI", "cli", "main"]

INSTALL_CLI = "pip install 'swarm-memory[cli]'"
# The [cli] extra's packages (pyproject.toml): a missing one is a missing extra.
_EXTRA = frozenset({"click", "rich"})


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point (``swarm-memory``); exits with the command's code. Without the
    ``[cli]`` extra it prints one line on stderr saying what to install, and exits 1."""
    try:
        from swarm_memory.cli.root import cli  # noqa: PLC0415 - click/rich may be missing
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing not in _EXTRA:
            raise
        sys.stderr.write(
            f"swarm-memory: error: the command line needs {missing} (the [cli] extra): "
            f"{INSTALL_CLI}\n"
        )
        raise SystemExit(1) from None
    cli.main(args=list(argv) if argv is not None else None, prog_name="swarm-memory")


def __getattr__(name: str) -> Any:
    if name == "cli":  # the click group, imported on first use (it needs click and rich)
        from swarm_memory.cli.root import cli  # noqa: PLC0415

        return cli
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

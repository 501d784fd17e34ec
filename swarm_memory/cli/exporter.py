"""``swarm-memory exporter``: serve the Prometheus exporter (``swarm_memory.exporter``)
until stopped.

A click command like every other one (``python -m swarm_memory.exporter`` runs this same
command), so its help, its errors and its exit codes are the CLI's.
"""

from __future__ import annotations

import signal
import threading

import click

from swarm_memory.cli.base import CliError, ExitCode, config

# The exporter's own defaults (swarm_memory/exporter; tests/ops checks they agree). Not imported
# from there: the CLI imports prometheus_client only when the exporter runs.
DEFAULT_PORT = 9808
DEFAULT_ADDR = "127.0.0.1"  # never all interfaces unless asked


@click.command("exporter")
@click.option(
    "--url",
    default=None,
    metavar="URL",
    help="Redis URL (default: the global --url, else SWARM_MEMORY_REDIS_URL).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    envvar="SWARM_MEMORY_EXPORTER_PORT",
    default=DEFAULT_PORT,
    show_default=True,
    help="Listen port; 0 picks a free one (SWARM_MEMORY_EXPORTER_PORT).",
)
@click.option(
    "--addr",
    envvar="SWARM_MEMORY_EXPORTER_ADDR",
    default=DEFAULT_ADDR,
    show_default=True,
    help="Listen address (SWARM_MEMORY_EXPORTER_ADDR); 0.0.0.0 for every interface.",
)
@click.option(
    "--prefix",
    default=None,
    help="Key prefix (default: the global --prefix, else SWARM_MEMORY_KEY_PREFIX or sm).",
)
@click.option(
    "--cluster/--no-cluster",
    default=None,
    help="Redis Cluster (default: the global flag, else SWARM_MEMORY_CLUSTER).",
)
def exporter_cmd(
    *, url: str | None, port: int, addr: str, prefix: str | None, cluster: bool | None
) -> None:
    """Serve Prometheus metrics read from Redis at http://ADDR:PORT/metrics until
    SIGTERM or Ctrl-C. It reads Redis directly (no agent permissions): give it a
    read-only Redis user."""
    from swarm_memory import exporter  # noqa: PLC0415 - prometheus only when asked for

    cfg = config()
    # This command's own flags win over the global ones (and both over the environment).
    if url is not None:
        cfg.url = url
    if prefix is not None:
        cfg.prefix = prefix
    if cluster is not None:
        cfg.cluster = cluster
    settings = cfg.settings
    try:
        running = exporter.serve(settings=settings, port=port, addr=addr)
    except OSError as exc:  # the listening socket: the Redis client connects lazily
        raise CliError(
            ExitCode.ERROR,
            f"cannot listen on {addr}:{port}: {exc.strerror or exc} "
            "(another exporter running? pick another --port)",
        ) from None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    click.echo(f"swarm-memory exporter on http://{addr}:{running.port}/metrics")
    try:
        stop.wait()
    finally:
        running.close()

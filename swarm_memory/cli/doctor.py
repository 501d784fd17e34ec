"""``swarm-memory doctor``: is this Redis fit to hold swarm memory?

Reads (PING, INFO, CONFIG GET, SCRIPT EXISTS, TIME, ACL GETUSER) on every primary; the
ACL drift check sets and deletes one throwaway probe user per agent. Exit 0 when no check
failed, 7 when one did; warnings do not fail.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import click
import redis
import redis.exceptions as rexc

from swarm_memory import acl
from swarm_memory.cli.base import ExitCode, config, emit, output_option, redact_url, table
from swarm_memory.client import SwarmMemory
from swarm_memory.errors import ClusterModeMismatch
from swarm_memory.scripts import all_scripts, library

MIN_VERSION = (7, 0)  # sharded pub/sub (SSUBSCRIBE/SPUBLISH), used by the event doorbell
MAX_SKEW_S = 2.0


@dataclass
class Check:
    node: str
    check: str
    status: str  # ok | warn | fail | info
    detail: str


def _config_get(client: redis.Redis, name: str) -> str | None:
    reply: Any = client.config_get(name)
    value = reply.get(name, reply.get(name.encode())) if isinstance(reply, dict) else None
    return value.decode() if isinstance(value, bytes) else value


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".")[:2] if p.isdigit())


def _server_checks(node: str, client: redis.Redis, cluster_configured: bool) -> list[Check]:
    out: list[Check] = []

    def add(check: str, status: str, detail: str) -> None:
        out.append(Check(node, check, status, detail))

    started = time.perf_counter()
    client.ping()
    add("ping", "ok", f"{(time.perf_counter() - started) * 1000:.2f} ms round trip")
    try:
        info: dict[str, Any] = client.info()
    except rexc.ResponseError as exc:
        add("server", "warn", f"INFO refused ({exc}); an in-process fakeredis has no INFO")
        info = {}
    if info:
        version = str(info.get("redis_version", "?"))
        ok = _version(version) >= MIN_VERSION
        add(
            "version",
            "ok" if ok else "fail",
            f"Redis {version}" + ("" if ok else " (7.0+ needed: sharded pub/sub)"),
        )
        enabled = str(info.get("cluster_enabled", "0")) == "1"
        if enabled and not cluster_configured:
            add("cluster mode", "fail", "server runs in cluster mode: set SWARM_MEMORY_CLUSTER=1")
        elif cluster_configured and not enabled:
            add(
                "cluster mode",
                "fail",
                "server is standalone, but the client is set to Cluster: unset "
                "SWARM_MEMORY_CLUSTER (--no-cluster)",
            )
        else:
            add("cluster mode", "ok", "cluster" if enabled else "standalone")
        role = info.get("role", "?")
        replicas = info.get("connected_slaves", 0)
        add("replication", "info", f"role {role}, {replicas} connected replicas")
        out.extend(_persistence(node, client, info))
    out.extend(_memory_policy(node, client))
    shas = [s.sha for s in all_scripts().values()]
    try:
        lib = library().name
        loaded = bool(client.execute_command("FUNCTION", "LIST", "LIBRARYNAME", lib))
    except rexc.ResponseError:
        loaded = False  # no Functions here, or this user may not list them
    try:
        if loaded:
            add("scripts", "ok", f"library {lib} loaded (FCALL)")
        else:
            cached = sum(bool(x) for x in client.script_exists(*shas))
            add(
                "scripts", "ok", f"{cached}/{len(shas)} cached (the client loads them on first use)"
            )
    except rexc.ResponseError as exc:
        add("scripts", "warn", f"SCRIPT EXISTS refused: {exc}")
    before = time.time()
    seconds, micros = client.time()
    after = time.time()
    skew = int(seconds) + int(micros) / 1e6 - (before + after) / 2
    status = "ok" if abs(skew) <= MAX_SKEW_S else "warn"
    add(
        "clock",
        status,
        f"server - local = {skew * 1000:+.1f} ms (the library uses the server clock only)",
    )
    return out


def _persistence(node: str, client: redis.Redis, info: dict[str, Any]) -> list[Check]:
    try:
        save = _config_get(client, "save") or ""
        aof = _config_get(client, "appendonly") == "yes"
    except rexc.ResponseError as exc:
        return [Check(node, "persistence", "warn", f"CONFIG GET refused: {exc}")]
    if info.get("rdb_last_bgsave_status", "ok") != "ok":
        return [Check(node, "persistence", "fail", "the last RDB save failed")]
    if aof and info.get("aof_last_write_status", "ok") != "ok":
        return [Check(node, "persistence", "fail", "the last AOF write failed")]
    if not aof and not save.strip():
        return [
            Check(
                node,
                "persistence",
                "warn",
                "none (no RDB save points, AOF off): a restart loses everything; enable "
                "AOF and RDB save points as deploy/redis.conf does (appendonly yes, save ...)",
            )
        ]
    parts = (["AOF on"] if aof else []) + ([f"RDB save {save}"] if save.strip() else [])
    return [Check(node, "persistence", "ok", ", ".join(parts))]


def _memory_policy(node: str, client: redis.Redis) -> list[Check]:
    try:
        policy = _config_get(client, "maxmemory-policy") or "?"
        limit = int(_config_get(client, "maxmemory") or 0)
    except rexc.ResponseError as exc:
        return [Check(node, "maxmemory", "warn", f"CONFIG GET refused: {exc}")]
    if limit == 0:
        # No limit: nothing is evicted and no write is refused; Redis grows until the host
        # runs out of memory, and then the kernel's OOM killer may kill it (the policy
        # only applies once maxmemory is set).
        status, why = (
            "warn",
            "Redis grows until the host runs out of memory, where the kernel's OOM killer "
            "may kill it and lose every write not yet persisted; set maxmemory with "
            "noeviction as deploy/redis.conf does",
        )
    elif policy == "noeviction":
        status, why = "ok", "when memory is full, writes are refused (OOM error), never evicted"
    elif policy.startswith("allkeys"):
        status, why = "fail", "may evict namespace metadata and indexes; use noeviction"
    else:
        status, why = "warn", "may evict entries that have a TTL early; noeviction is safest"
    size = f"{limit} bytes" if limit else "unlimited"
    return [Check(node, "maxmemory", status, f"policy {policy}, maxmemory {size}: {why}")]


def _security_checks(node: str, client: Any, prefix: str) -> list[Check]:
    """The security posture (README "Security"): TLS, the default user, and whether every
    agent of the permission maps has an ACL user of its own that matches the maps."""
    out: list[Check] = []

    def add(check: str, status: str, detail: str) -> None:
        out.append(Check(node, check, status, detail))

    pool = getattr(client, "connection_pool", None)
    kwargs = pool.connection_kwargs if pool is not None else client.get_connection_kwargs()
    connection_class = getattr(pool, "connection_class", None) if pool is not None else None
    tls = "SSL" in getattr(connection_class, "__name__", "") or bool(kwargs.get("ssl"))
    if tls:
        add("tls", "ok", "connections are encrypted (rediss://)")
    else:
        add("tls", "warn", "plaintext connections: use rediss:// where the network is shared")
    try:
        default = acl.getuser(client, "default")
        maps = acl.read_maps(client, prefix)
    except (rexc.RedisError, rexc.RedisClusterException) as exc:
        add("acl", "info", f"cannot read the ACL as this user ({exc}): run doctor as an admin")
        return out
    flags = default.get("flags", []) if default else []
    if default and "on" in flags and "nopass" in flags:
        add(
            "default user",
            "warn",
            "on without a password: any client that reaches Redis can act as any agent "
            "(cooperative mode); set a password or turn it off once agents have their users",
        )
    else:
        add("default user", "ok", "needs a password or is off")
    users = acl.plan(maps, prefix=prefix)
    missing = [u.agent for u in users if acl.getuser(client, u.agent) is None]
    if missing:
        add(
            "agent users",
            "warn",
            f"{len(missing)} of {len(users)} agents have no ACL user of their own (they share "
            f"one: cooperative), e.g. {', '.join(missing[:5])}: swarm-memory acl apply",
        )
    else:
        add("agent users", "ok", f"every agent of the maps has its own ACL user ({len(users)})")
    stale = sorted(set(acl.drift(client, users)) - set(missing))
    if stale:
        add(
            "acl drift",
            "warn",
            f"ACL users out of date with the permission maps: {', '.join(stale[:5])}: "
            "swarm-memory acl apply",
        )
    elif users and not missing:
        add("acl drift", "ok", "ACL users match the permission maps")
    return out


@click.command("doctor")
@output_option
def doctor_cmd() -> None:
    """Check the server: version, persistence, maxmemory policy, scripts, cluster, clock."""
    cfg = config()
    configured = cfg.settings.cluster
    try:
        memory = cfg.memory()
    except ClusterModeMismatch:
        # Checking the mode is doctor's job: look at the server as it is, report the mismatch.
        settings = cfg.settings.model_copy(update={"cluster": False})
        memory = SwarmMemory.from_url(agent=cfg.agent, settings=settings)
        click.get_current_context().call_on_close(memory.close)
    client: Any = memory.redis
    cluster = isinstance(client, redis.RedisCluster)
    if cluster:
        nodes = [(f"{n.host}:{n.port}", n.redis_connection) for n in client.get_primaries()]
    else:
        kw = client.connection_pool.connection_kwargs
        nodes = [(f"{kw.get('host', kw.get('path', '?'))}:{kw.get('port', '')}", client)]
    checks: list[Check] = []
    for name, node_client in nodes:
        checks.extend(_server_checks(name, node_client, configured))
    checks.extend(_security_checks(nodes[0][0], client, memory.settings.key_prefix))
    failed = [c for c in checks if c.status == "fail"]
    url = redact_url(cfg.target_url or "")
    data = {
        "url": url,
        "agent": cfg.agent,
        "prefix": memory.settings.key_prefix,
        "cluster": configured,
        "ok": not failed,
        "checks": [asdict(c) for c in checks],
    }

    def render() -> Any:
        rows = [[c.node, c.check, c.status.upper(), c.detail] for c in checks]
        title = f"doctor: {url} (agent {cfg.agent}, prefix {memory.settings.key_prefix})"
        return table(title, ["node", "check", "status", "detail"], rows)

    emit(data, render)
    if failed:
        names = ", ".join(sorted({c.check for c in failed}))
        click.echo(f"swarm-memory: doctor: {len(failed)} check(s) failed: {names}", err=True)
        raise click.exceptions.Exit(int(ExitCode.CHECK_FAILED))

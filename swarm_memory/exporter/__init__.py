"""Server-side metrics: a Prometheus custom collector that reads Redis at scrape time.

Run it as ``swarm-memory exporter`` (``swarm_memory/cli/exporter.py``) or
``python -m swarm_memory.exporter --url redis://... --port 9808 --addr 0.0.0.0`` (the same
command, through ``__main__.py``; both need the ``[cli]`` extra); embed it with
:func:`serve`, or register :class:`SwarmCollector` on a registry of your own. This module
needs only the library's own dependencies and never imports the CLI.

What it reads, each scrape (nothing is cached between scrapes):

* the namespace registry (``<prefix>:registry``, paged ``ZRANGE``) — it never scans the
  keyspace (no ``KEYS``/``SCAN``);
* per namespace, with plain read commands against that namespace's own keys (all of them
  share the namespace's hash tag, so they live on one Cluster node): the ``meta`` hash
  (entries, bytes, revision, quotas), the ``stats`` hash the scripts maintain, the event
  stream (``XLEN`` and its oldest entry), the lock index and the lease set (``ZCOUNT``
  from the server's ``TIME``). Namespaces are read in pipelines of ``page`` namespaces; on
  Cluster redis-py's cluster pipeline routes each command to its slot's node;
* per namespace with outcome logs, their counters (``exporter/outcomes.py``: bounded
  ``log``/``strategy`` labels);
* presence (``<prefix>:{@presence}:exp``/``seen``): live and known agents, as counts;
* Redis health from ``PING`` and ``INFO`` on every primary: up, memory, maxmemory and its
  policy, persistence (AOF, last RDB save, last write status).

It is an operator tool: it reads Redis directly and so **bypasses agent permissions**
(the scripts' permission checks gate agents, not whoever holds the Redis credentials).
Give it a read-only Redis ACL user in production (``+@read +ping +info +time``).

Labels are ``namespace`` (plus ``op`` for the scripts' per-operation counters and
``policy`` for the eviction policy): never a key, agent, lock or op id, so the number of
series grows with namespaces only. Every family is listed in :data:`FAMILIES`.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import redis
import redis.exceptions as rexc
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from swarm_memory import _shell
from swarm_memory.exporter import outcomes as _outcomes
from swarm_memory.keys import GraphKeys, NamespaceKeys, PresenceKeys, registry_key
from swarm_memory.settings import Settings

DEFAULT_PORT = 9808
DEFAULT_ADDR = "127.0.0.1"

# Stats fields with a family of their own; every other field the scripts count becomes
# swarm_memory_namespace_operations_total{op=<field>}.
_SPECIAL_STATS = {
    "denied": ("swarm_memory_namespace_denied", "Calls refused by a permission check."),
    "expired": ("swarm_memory_namespace_expired", "Entries removed by the sweeper (TTL)."),
    "evicted": ("swarm_memory_namespace_evicted", "Entries evicted by evict-oldest quota."),
    "lock_acquire": ("swarm_memory_namespace_lock_acquires", "Locks acquired."),
    "lock_release": ("swarm_memory_namespace_lock_releases", "Locks released."),
    "lock_busy": (
        "swarm_memory_namespace_lock_busy",
        "Lock acquire attempts refused because the lock was held.",
    ),
    "fence_rejected": (
        "swarm_memory_namespace_fence_rejected",
        "Writes rejected for carrying a stale fencing token.",
    ),
}
# A stats field is an operation name written by our scripts; anything else is ignored so
# a stray field can never add unbounded series.
_OP_FIELD = re.compile(r"[a-z][a-z0-9_]{0,31}")
_MAX_OP_FIELDS = 64
_PER_NS = 10  # pipelined reads per namespace (_namespaces)

# name -> (type, help, labels): the complete list of what the exporter exports.
FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "swarm_memory_redis_up": ("gauge", "1 if every Redis primary answered PING.", ()),
    "swarm_memory_redis_primaries": ("gauge", "Redis primaries that answered.", ()),
    "swarm_memory_redis_memory_used_bytes": ("gauge", "used_memory, summed over primaries.", ()),
    "swarm_memory_redis_memory_max_bytes": (
        "gauge",
        "maxmemory summed over primaries; 0 if any primary is unlimited.",
        (),
    ),
    "swarm_memory_redis_maxmemory_policy": (
        "gauge",
        "Primaries running each maxmemory-policy (anything but noeviction evicts keys).",
        ("policy",),
    ),
    "swarm_memory_redis_aof_enabled": ("gauge", "1 if AOF is on on every primary.", ()),
    "swarm_memory_redis_persistence_ok": (
        "gauge",
        "1 if the last RDB save and the last AOF write succeeded on every primary.",
        (),
    ),
    "swarm_memory_redis_rdb_changes_since_last_save": (
        "gauge",
        "Writes not yet in an RDB snapshot, summed over primaries.",
        (),
    ),
    "swarm_memory_redis_rdb_last_save_timestamp_seconds": (
        "gauge",
        "Oldest last successful RDB save over primaries (unix time).",
        (),
    ),
    "swarm_memory_redis_connected_clients": ("gauge", "Client connections, summed.", ()),
    "swarm_memory_namespaces": ("gauge", "Namespaces in the registry.", ()),
    "swarm_memory_namespace_entries": ("gauge", "Live entries.", ("namespace",)),
    "swarm_memory_namespace_bytes": ("gauge", "Encoded value bytes stored.", ("namespace",)),
    "swarm_memory_namespace_revision": ("gauge", "Namespace revision.", ("namespace",)),
    "swarm_memory_namespace_max_entries": ("gauge", "max_keys quota (when set).", ("namespace",)),
    "swarm_memory_namespace_max_bytes": ("gauge", "max_bytes quota (when set).", ("namespace",)),
    "swarm_memory_namespace_events_stream_length": (
        "gauge",
        "Events retained in the namespace's stream (XLEN).",
        ("namespace",),
    ),
    "swarm_memory_namespace_event_retention_revisions": (
        "gauge",
        "Revision minus the oldest retained event's revision: how far a watcher may fall "
        "behind before it gets EventsTrimmed.",
        ("namespace",),
    ),
    "swarm_memory_namespace_locks_held": ("gauge", "Locks whose lease is live.", ("namespace",)),
    "swarm_memory_namespace_leases_live": (
        "gauge",
        "Agents holding a live lease in the namespace (a count).",
        ("namespace",),
    ),
    "swarm_memory_namespace_operations_total": (
        "counter",
        "Per-operation counters kept by the scripts (stats hash), by op.",
        ("namespace", "op"),
    ),
    **{
        name + "_total": ("counter", help_text, ("namespace",))
        for name, help_text in _SPECIAL_STATS.values()
    },
    **_outcomes.FAMILIES,
    "swarm_memory_graph_nodes": (
        "gauge",
        "Memory graph nodes (expired ones until swept), for namespaces holding a graph.",
        ("namespace",),
    ),
    "swarm_memory_graph_links": ("gauge", "Memory graph links.", ("namespace",)),
    "swarm_memory_graph_bundle_members": (
        "gauge",
        "Memory graph bundle memberships (node in a task's bundle).",
        ("namespace",),
    ),
    "swarm_memory_graph_expiring_nodes": (
        "gauge",
        "Memory graph nodes that have an expiry.",
        ("namespace",),
    ),
    "swarm_memory_agents_live": ("gauge", "Agents whose presence heartbeat is live.", ()),
    "swarm_memory_agents_known": ("gauge", "Agents that ever sent a heartbeat.", ()),
    "swarm_memory_exporter_scrape_duration_seconds": ("gauge", "Time this scrape took.", ()),
    "swarm_memory_exporter_scrape_errors": (
        "gauge",
        "Reads that failed during this scrape (0 = complete data).",
        (),
    ),
}


def _s(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _int(raw: Any) -> int | None:
    if raw is None:
        return None
    try:
        return int(_s(raw))
    except ValueError:
        return None


@dataclass
class _Families:
    """The metric families of one scrape, built from FAMILIES."""

    by_name: dict[str, GaugeMetricFamily | CounterMetricFamily]

    @classmethod
    def new(cls) -> _Families:
        out: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        for name, (kind, help_text, labels) in FAMILIES.items():
            if kind == "counter":
                out[name] = CounterMetricFamily(
                    name.removesuffix("_total"), help_text, labels=labels
                )
            else:
                out[name] = GaugeMetricFamily(name, help_text, labels=labels)
        return cls(out)

    def add(self, name: str, value: float, *labels: str) -> None:
        self.by_name[name].add_metric(list(labels), value)


class SwarmCollector(Collector):
    """Reads swarm_memory's server-side state from Redis on every ``collect()``.

    ``client``: a redis-py ``Redis`` or ``RedisCluster`` (bytes or str replies). ``prefix``:
    the key prefix (``Settings.key_prefix``). ``page``: namespaces per pipeline round trip.
    Register it on your own registry: ``registry.register(SwarmCollector(client))``.
    Redis errors never escape ``collect()``: an unreachable Redis gives
    ``swarm_memory_redis_up 0``, a failed read counts in
    ``swarm_memory_exporter_scrape_errors``.
    """

    def __init__(self, client: Any, *, prefix: str = "sm", page: int = 200) -> None:
        self.client = client
        self.prefix = prefix
        self.page = page
        self._cluster = isinstance(client, redis.RedisCluster)

    def describe(self) -> Iterable[Metric]:
        # Names only, so registering needs no Redis round trip.
        return list(_Families.new().by_name.values())

    def collect(self) -> Iterable[Metric]:
        started = time.perf_counter()
        fam = _Families.new()
        errors = 0
        try:
            self.client.ping()
        except rexc.RedisError:
            fam.add("swarm_memory_redis_up", 0)
            errors += 1
        else:
            fam.add("swarm_memory_redis_up", 1)
            errors += self._health(fam)
            errors += self._namespaces(fam)
        fam.add("swarm_memory_exporter_scrape_errors", errors)
        fam.add("swarm_memory_exporter_scrape_duration_seconds", time.perf_counter() - started)
        return list(fam.by_name.values())

    # -- Redis health ----------------------------------------------------------------

    def _infos(self) -> list[dict[str, Any]]:
        if self._cluster:
            replies = self.client.info(target_nodes=redis.RedisCluster.PRIMARIES)
            # One node answers with its INFO dict, several with {node name: INFO dict}.
            if "redis_version" in replies:
                return [replies]
            return list(replies.values())
        return [self.client.info()]

    def _health(self, fam: _Families) -> int:
        try:
            infos = self._infos()
        except rexc.ResponseError:
            # fakeredis (and servers with INFO renamed away) cannot report health beyond
            # PING; that is not a scrape error.
            fam.add("swarm_memory_redis_primaries", 1)
            return 0
        except rexc.RedisError:
            return 1
        fam.add("swarm_memory_redis_primaries", len(infos))
        fam.add(
            "swarm_memory_redis_memory_used_bytes", sum(int(i.get("used_memory", 0)) for i in infos)
        )
        limits = [int(i.get("maxmemory", 0)) for i in infos]
        fam.add("swarm_memory_redis_memory_max_bytes", 0 if 0 in limits else sum(limits))
        policies: dict[str, int] = {}
        for info in infos:
            policy = _s(info.get("maxmemory_policy", "unknown"))
            policies[policy] = policies.get(policy, 0) + 1
        for policy, n in sorted(policies.items()):
            fam.add("swarm_memory_redis_maxmemory_policy", n, policy)
        fam.add(
            "swarm_memory_redis_aof_enabled",
            int(all(int(i.get("aof_enabled", 0)) == 1 for i in infos)),
        )
        ok = all(
            _s(i.get("rdb_last_bgsave_status", "ok")) == "ok"
            and _s(i.get("aof_last_write_status", "ok")) == "ok"
            for i in infos
        )
        fam.add("swarm_memory_redis_persistence_ok", int(ok))
        fam.add(
            "swarm_memory_redis_rdb_changes_since_last_save",
            sum(int(i.get("rdb_changes_since_last_save", 0)) for i in infos),
        )
        fam.add(
            "swarm_memory_redis_rdb_last_save_timestamp_seconds",
            min(int(i.get("rdb_last_save_time", 0)) for i in infos),
        )
        fam.add(
            "swarm_memory_redis_connected_clients",
            sum(int(i.get("connected_clients", 0)) for i in infos),
        )
        return 0

    # -- namespaces and presence -------------------------------------------------------

    def _registry(self) -> Iterator[str]:
        key = registry_key(self.prefix)
        start = 0
        while True:
            names = self.client.zrange(key, start, start + self.page - 1)
            yield from (_s(n) for n in names)
            if len(names) < self.page:
                return
            start += self.page

    def _now_ms(self) -> int:
        # Server time (DESIGN.md decision 4): lease expiries are server-clock ms.
        secs, micros = self.client.time()
        return int(secs) * 1000 + int(micros) // 1000

    def _namespaces(self, fam: _Families) -> int:
        errors = 0
        try:
            now = self._now_ms()
            names = list(self._registry())
        except rexc.RedisError:
            return 1
        fam.add("swarm_memory_namespaces", len(names))
        for i in range(0, len(names), self.page):
            chunk = names[i : i + self.page]
            pipe = self.client.pipeline(transaction=False)
            for ns in chunk:
                k = NamespaceKeys.of(self.prefix, ns)
                pipe.hmget(k.meta, "state", "n", "b", "rev", "mk", "mb")
                pipe.hgetall(k.stats)
                pipe.xlen(k.events)
                pipe.xrange(k.events, "-", "+", count=1)
                pipe.zcount(k.locks, now + 1, "+inf")
                pipe.zcount(k.lease, now + 1, "+inf")
                gmeta, _n, _f, _ix, _c, gexp, adj, _w, bundles = GraphKeys.of(
                    self.prefix, ns
                ).fixed()
                pipe.hget(gmeta, "n")
                pipe.zcard(adj)
                pipe.zcard(bundles)
                pipe.zcard(gexp)
                _outcomes.probe(pipe, k)
            try:
                replies = pipe.execute(raise_on_error=False)
            except rexc.RedisError:
                errors += 1
                continue
            width = _PER_NS + _outcomes.PROBE_REPLIES
            for j, ns in enumerate(chunk):
                part = replies[width * j : width * j + width]
                if any(isinstance(r, Exception) for r in part):
                    errors += 1
                    continue
                self._namespace(fam, ns, part[:_PER_NS])
                try:
                    found = _outcomes.namespace_series(self.client, self.prefix, ns, part[_PER_NS:])
                except rexc.RedisError:
                    errors += 1
                    continue
                for name, value, labels in found:
                    fam.add(name, value, *labels)
        try:
            # Both presence keys share the {@presence} tag: one pipeline, one round trip.
            p = PresenceKeys.of(self.prefix)
            pipe = self.client.pipeline(transaction=False)
            pipe.zcount(p.expiry, now + 1, "+inf")
            pipe.hlen(p.seen)
            live, known = pipe.execute()
            fam.add("swarm_memory_agents_live", live)
            fam.add("swarm_memory_agents_known", known)
        except rexc.RedisError:
            errors += 1
        return errors

    def _namespace(self, fam: _Families, ns: str, part: list[Any]) -> None:
        meta, stats, xlen, first, locks, leases, g_nodes, g_links, g_bundled, g_expiring = part
        state, n, b, rev, mk, mb = meta
        if state is None:  # registered but gone (deleted between the two reads)
            return
        revision = _int(rev) or 0
        fam.add("swarm_memory_namespace_entries", _int(n) or 0, ns)
        fam.add("swarm_memory_namespace_bytes", _int(b) or 0, ns)
        fam.add("swarm_memory_namespace_revision", revision, ns)
        if _int(mk):
            fam.add("swarm_memory_namespace_max_entries", _int(mk) or 0, ns)
        if _int(mb):
            fam.add("swarm_memory_namespace_max_bytes", _int(mb) or 0, ns)
        fam.add("swarm_memory_namespace_events_stream_length", int(xlen), ns)
        retained = 0
        if first:
            oldest = _int(_s(first[0][0]).split("-", 1)[0]) or 0
            retained = max(0, revision - oldest)
        fam.add("swarm_memory_namespace_event_retention_revisions", retained, ns)
        fam.add("swarm_memory_namespace_locks_held", int(locks), ns)
        fam.add("swarm_memory_namespace_leases_live", int(leases), ns)
        if g_nodes is not None:  # a memory graph lives here (lua/graph.lua)
            fam.add("swarm_memory_graph_nodes", _int(g_nodes) or 0, ns)
            fam.add("swarm_memory_graph_links", int(g_links) // 2, ns)  # stored both ways
            fam.add("swarm_memory_graph_bundle_members", int(g_bundled) // 2, ns)
            fam.add("swarm_memory_graph_expiring_nodes", int(g_expiring), ns)
        counters = {_s(f): _int(v) or 0 for f, v in dict(stats).items()}
        for field, (name, _help) in _SPECIAL_STATS.items():
            # Always present (0 until the first one) so rates and alerts have a series.
            fam.add(name + "_total", counters.pop(field, 0), ns)
        ops = sorted(f for f in counters if _OP_FIELD.fullmatch(f))[:_MAX_OP_FIELDS]
        for op in ops:
            fam.add("swarm_memory_namespace_operations_total", counters[op], ns, op)


def make_client(settings: Settings, url: str | None = None) -> redis.Redis | redis.RedisCluster:
    """A redis-py client for the exporter from ``url`` or ``settings.redis_url``.
    Raises InvalidInput (InvalidURL), ClusterModeMismatch, TransportError."""
    client: redis.Redis | redis.RedisCluster = _shell.make_client(url, settings)
    return client


@dataclass
class Exporter:
    """A running exporter: its HTTP server (``port`` is the bound one), registry, client."""

    server: Any
    thread: threading.Thread
    registry: CollectorRegistry
    client: Any

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
        self.client.close()


def serve(
    url: str | None = None,
    *,
    settings: Settings | None = None,
    port: int = DEFAULT_PORT,
    addr: str = DEFAULT_ADDR,
) -> Exporter:
    """Serve ``/metrics`` for the swarm_memory data on ``url`` (or
    ``SWARM_MEMORY_REDIS_URL``) at ``http://addr:port`` on a daemon thread and return at
    once. ``port=0`` binds a free port (see ``Exporter.port``). The registry is a fresh
    one holding only :class:`SwarmCollector`. Raises InvalidInput when no URL is known,
    OSError when the port is taken."""
    settings = settings or Settings()
    client = make_client(settings, url)
    registry = CollectorRegistry()
    registry.register(SwarmCollector(client, prefix=settings.key_prefix))
    try:
        server, thread = start_http_server(port, addr, registry=registry)
    except OSError:
        client.close()
        raise
    return Exporter(server, thread, registry, client)

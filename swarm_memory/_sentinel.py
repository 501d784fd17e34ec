"""Redis Sentinel: the ``redis+sentinel://`` URL and the client built from it.

    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]
        [?sentinel_password=...&ssl=true&ssl_ca_certs=...]

The hosts are Sentinels (default port 26379); ``service`` is the name they monitor the
primary under; ``user``/``password`` are the data servers' credentials and
``sentinel_password`` the Sentinels' own. The client asks the Sentinels for the current
primary and asks again after a failover (redis-py's ``SentinelConnectionPool``): writes
then go to the new primary, and ``Settings.wait_replicas`` keeps working (WAIT runs on
the connection that carried the write).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

import redis.asyncio.sentinel
import redis.sentinel

from swarm_memory.errors import InvalidURL
from swarm_memory.settings import redact_url

SCHEME = "redis+sentinel"
DEFAULT_PORT = 26379
MAX_PORT = 65535
# Query parameters passed on to the data connections (the rest are refused).
_PASSED_ON = frozenset({"ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs"})


@dataclass(frozen=True)
class SentinelTarget:
    hosts: list[tuple[str, int]]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    ssl: bool = False
    extra: dict[str, str] = field(default_factory=dict)


def is_sentinel_url(url: str) -> bool:
    return url.lower().startswith(SCHEME + "://")


def parse(url: str) -> SentinelTarget:
    """Raise InvalidURL (nothing sent) for a malformed Sentinel URL."""

    def bad(reason: str) -> InvalidURL:
        shown = redact_url(url)
        return InvalidURL(f"invalid Sentinel URL {shown}: {reason}", field="url", value=shown)

    # Split by hand: urlsplit validates one bracketed host and rejects "[::1],[::2]:26380".
    rest_of_url, _, query_text = url[len(SCHEME) + 3 :].partition("?")
    rest_of_url = rest_of_url.partition("#")[0]
    netloc, slash, path = rest_of_url.partition("/")
    userinfo, _, hostlist = netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, sep, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if sep else None
    hosts: list[tuple[str, int]] = []
    for raw in hostlist.split(","):
        item = raw.strip()
        if item.startswith("["):  # [IPv6] or [IPv6]:port: the port follows the bracket
            host, _, after = item[1:].partition("]")
            sep, port = after[:1], after[1:]
            if after and sep != ":":
                raise bad(f"bad host {item!r}")
        else:
            host, sep, port = item.rpartition(":")
            if not sep:  # no port: the whole item is the host
                host = item
        if not host:
            raise bad("no Sentinel host")
        if sep and not (port.isdigit() and 0 < int(port) <= MAX_PORT):
            raise bad(f"bad port {port!r}")
        hosts.append((host, int(port) if sep else DEFAULT_PORT))
    service, *rest = [p for p in (slash + path).split("/") if p] or [""]
    if not service or len(rest) > 1:
        raise bad("the path must be /<service name>[/<db>]")
    db = 0
    if rest:
        if not rest[0].isdigit():
            raise bad(f"bad database number {rest[0]!r}")
        db = int(rest[0])
    query = dict(parse_qsl(query_text))
    sentinel_password = query.pop("sentinel_password", None)
    ssl = query.pop("ssl", "false").lower() in ("1", "true", "yes")
    unknown = sorted(set(query) - _PASSED_ON)
    if unknown:
        raise bad("unknown query parameter " + ", ".join(repr(k) for k in unknown))
    return SentinelTarget(
        hosts, unquote(service), db, username, password, sentinel_password, ssl, query
    )


def make_client(target: SentinelTarget, options: dict[str, Any], *, is_async: bool) -> Any:
    """A redis-py client of the current primary, found through the Sentinels."""
    data = dict(options, db=target.db, username=target.username, password=target.password)
    if target.ssl:
        data.update(ssl=True, **target.extra)
    timeouts = {k: options[k] for k in ("socket_timeout", "socket_connect_timeout")}
    sentinel_kwargs = dict(timeouts, password=target.sentinel_password)
    module: Any = redis.asyncio.sentinel if is_async else redis.sentinel
    sentinel = module.Sentinel(target.hosts, sentinel_kwargs=sentinel_kwargs, **timeouts)
    client = sentinel.master_for(target.service, **data)
    # The clients of the Sentinels themselves: closed with the client (see companions()).
    client._swarm_companions = list(sentinel.sentinels)
    return client

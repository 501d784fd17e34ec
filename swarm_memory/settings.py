"""Configuration, read from ``SWARM_MEMORY_*`` environment variables only when asked.

Nothing here runs at import time: ``Settings()`` reads the environment when it is
constructed, and the clients construct it only if the caller passes no ``settings``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _is_secret_param(name: str) -> bool:
    """Query parameters that carry secrets: ``password``, ``ssl_password`` (a TLS key's
    passphrase), any ``*password*``. File paths (``ssl_keyfile``) are not secrets."""
    return "password" in name.lower()


def redact_url(url: str) -> str:
    """``redis://user:secret@host:6379/0`` -> ``redis://user:***@host:6379/0`` (and any
    ``password=`` or ``ssl_password=`` query parameter). Unparseable input is redacted
    wholesale."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            user, sep, _password = userinfo.partition(":")
            netloc = f"{user}:***@{host}" if sep else f"{userinfo}@{host}"
        query = parts.query
        if query:
            pairs = [
                (k, "***" if _is_secret_param(k) else v)
                for k, v in parse_qsl(query, keep_blank_values=True)
            ]
            query = urlencode(pairs, safe="*", quote_via=quote)
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return "<unparseable URL>"


class Settings(BaseSettings):
    """Every tunable of the client. Field names map to ``SWARM_MEMORY_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="SWARM_MEMORY_", frozen=True, extra="ignore")

    redis_url: str | None = Field(
        default=None, description="Redis URL; None means 'use the embedded default' where offered."
    )
    key_prefix: str = Field(default="sm", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    cluster: bool = Field(default=False, description="Treat redis_url as a Redis Cluster seed.")

    # Transport. redis-py's own retries are turned off for clients we build; these drive
    # the single tenacity layer (DESIGN.md decision 6).
    socket_timeout: float = Field(default=5.0, gt=0)
    connect_timeout: float = Field(default=5.0, gt=0)
    # Async clients only (swarm_memory/_pipeline.py): script calls of every task of one
    # AsyncSwarmMemory share one connection, each written as soon as it is issued and
    # its reply matched in order, instead of a pool connection per call in flight
    # (standalone and Sentinel clients speaking RESP2; never Cluster, fakeredis, WAIT
    # pipelines or other commands). A call without a reply within socket_timeout drops
    # that connection (failing the calls behind it, retried like any lost reply). On by
    # default: with 50 tasks on one client it is where most of a put's client time went
    # (docs/performance.md, "async pipelining"). False: redis-py's pool for every call.
    pipeline: bool = Field(
        default=True, description="Async: pipeline script calls over one connection."
    )
    retry_attempts: int = Field(
        default=4, ge=1, le=50, description="Tries per call, first included."
    )
    retry_backoff: float = Field(default=0.05, ge=0, description="First backoff, seconds; doubles.")
    retry_backoff_max: float = Field(default=1.0, ge=0)

    # Durability (DESIGN.md decision 10): after each write, WAIT for this many replicas
    # to acknowledge it, on the same connection. 0 = off. Standalone / Sentinel only.
    wait_replicas: int = Field(default=0, ge=0, le=64)
    wait_timeout: float = Field(default=1.0, gt=0)
    # A server whose maxmemory-policy is allkeys-* may evict namespace metadata and
    # indexes: writes are refused there unless this is set (DESIGN.md decision 10).
    allow_eviction: bool = Field(
        default=False, description="Write even where maxmemory-policy is allkeys-*."
    )

    # How scripts run (swarm_memory/scripts.py): "functions" = one Redis Functions library
    # loaded once per server, called with FCALL; "eval" = EVALSHA of each script; "auto" =
    # functions where the server has them and this connection may load them (FUNCTION
    # LOAD), else eval (fakeredis always eval).
    script_mode: Literal["auto", "functions", "eval"] = Field(
        default="auto", description="functions (FCALL) | eval (EVALSHA) | auto."
    )

    # Idempotency: how long a write's outcome is remembered for replays of its op id.
    dedupe_window: float = Field(default=300.0, gt=0)

    # Input limits, enforced client-side before anything is sent.
    max_key_bytes: int = Field(default=512, ge=1, le=65536)
    max_value_bytes: int = Field(default=1 << 20, ge=64)
    max_depth: int = Field(default=32, ge=1, le=1000)
    max_ttl: float = Field(default=366 * 86400.0, gt=0)
    compress_threshold: int = Field(
        default=16384, ge=0, description="zlib-compress encoded values above this; 0 = never."
    )

    # Bounded server-side structures.
    stream_maxlen: int = Field(
        default=100_000,
        ge=1,
        description="Events kept (MAXLEN ~) unless the namespace sets max_events.",
    )
    event_value_max: int = Field(
        default=256, ge=0, description="Values up to this many encoded bytes ride in put events."
    )
    audit_maxlen: int = Field(default=10_000, ge=1)
    inbox_maxlen: int = Field(
        default=10_000,
        ge=1,
        description="Unacknowledged messages an inbox holds; a send beyond is refused.",
    )
    inbox_retention: float | None = Field(
        default=7 * 86400.0,
        gt=0,
        le=10 * 366 * 86400.0,
        description="Seconds an inbox with no send, read or ack is kept; None = forever.",
    )
    sweep_batch: int = Field(default=128, ge=1, le=10_000)
    clear_batch: int = Field(default=256, ge=1, le=10_000)
    page_size: int = Field(default=500, ge=1, le=100_000, description="keys() page size.")

    # Watching: a poll bound for lost doorbells, and events read per round trip.
    watch_poll: float = Field(default=0.5, gt=0, description="Seconds between polls when idle.")
    watch_batch: int = Field(default=1000, ge=1, le=100_000)

    # Coordination: agent leases (ephemeral entries, lease-tied locks), lock waiting.
    lease_ttl: float = Field(
        default=30.0, gt=0, description="Seconds an agent's lease lasts without a heartbeat."
    )
    lock_poll: float = Field(
        default=0.25, gt=0, description="Longest wait between lock attempts (doorbells are hints)."
    )
    presence_retention: float = Field(
        default=86400.0, gt=0, description="Seconds a silent agent stays listed by agents()."
    )

    # Client-side CAS loops (update(), custom strategy).
    update_max_attempts: int = Field(default=200, ge=1)
    # The longest random pause between two conflicting attempts (the pause grows from
    # the attempt's own time, doubling per conflict, up to this). 0.1 s rather than
    # 0.02 s: with 32 processes on one key (bench contention, 2 CPUs) the losers'
    # retries cost the winners' CPU. In four alternated runs on a loaded VM the longer
    # cap cut script calls per update by 25-35 % (~10 -> ~6.3-7.4) every time; update(fn)
    # vs a bare client CAS loop moved from 0.47-0.61x to 0.50-0.86x (medians; noisy).
    # At 8 processes it made no measurable difference.
    update_backoff_max: float = Field(default=0.1, ge=0)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # repr() and str() end up in logs and tracebacks: never with the URL's password.
        for name, value in super().__repr_args__():
            if name == "redis_url" and isinstance(value, str):
                yield name, redact_url(value)
            else:
                yield name, value

"""What the sync and async clients share: building a redis-py client from a URL, identity,
options, and the base classes of the memory and namespace handles (``_async/memory.py``
and the generated ``_sync/memory.py`` add the methods that run flows).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any, Generic, Self, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
import redis.asyncio
import redis.exceptions as rexc
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from swarm_memory import _sentinel
from swarm_memory._async.driver import AsyncDriver
from swarm_memory._drive import ScriptObserver, bound_user, setup_error
from swarm_memory._ops import coord as _coord
from swarm_memory._ops.args import consumer_arg
from swarm_memory._ops.effects import AgentSession, Context, Flow, InboxContext, Resolver
from swarm_memory._ops.inbox import InboxState, default_consumer
from swarm_memory._sockets import use_kernel_timeouts
from swarm_memory._sync.driver import Driver
from swarm_memory.codec import Codec, ValueCodec
from swarm_memory.errors import IdentityMismatch, InvalidInput, InvalidOption, InvalidURL
from swarm_memory.keys import agent_arg, namespace_arg
from swarm_memory.metrics import ClientMetrics
from swarm_memory.settings import Settings, redact_url

DriverT = TypeVar("DriverT", Driver, AsyncDriver)
MemoryT = TypeVar("MemoryT")


def resolve_url(url: str | None, settings: Settings) -> str:
    found = url or settings.redis_url
    if not found:
        raise InvalidInput(
            "no Redis URL: pass one or set SWARM_MEMORY_REDIS_URL", field="url", value=None
        )
    return found


def client_options(settings: Settings, *, is_async: bool = False) -> dict[str, Any]:
    """redis-py options for clients we build: its own retries off (tenacity is the one
    retry layer), bytes replies (values are binary-safe), our timeouts.

    Async clients get redis-py's async ``Retry``: given the sync one, redis-py 6+ converts
    it and warns (``redis.asyncio.retry.Retry`` exists, same signature, since 4.2)."""
    retry = AsyncRetry(NoBackoff(), 0) if is_async else Retry(NoBackoff(), 0)
    return {
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.connect_timeout,
        "retry": retry,
        "decode_responses": False,
    }


def url_passwords(url: str | None) -> list[str]:
    """The secrets a URL carries (userinfo password, ``password=`` / ``ssl_password=``
    parameters), as written and percent-decoded."""
    if not url:
        return []
    try:
        parts = urlsplit(url)
        found = [parts.password] if parts.password else []
        found += [v for k, v in parse_qsl(parts.query) if "password" in k.lower() and v]
        return sorted({*found, *(unquote(f) for f in found)}, key=len, reverse=True)
    except ValueError:
        return []


def _accepted_arguments(cls: type) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None:
            names.update(inspect.signature(init).parameters)
    return names


def _invalid_url(target: str, exc: Exception, connection_class: type | None = None) -> InvalidURL:
    reason = str(exc)
    if isinstance(exc, TypeError) and connection_class is not None:
        # redis-py passes unknown query parameters on as keyword arguments; name them.
        accepted = _accepted_arguments(connection_class)
        unknown = sorted({k for k, _ in parse_qsl(urlsplit(target).query)} - accepted)
        if unknown:
            reason = "unknown query parameter " + ", ".join(repr(k) for k in unknown)
    for secret in url_passwords(target):
        reason = reason.replace(secret, "***")
    shown = redact_url(target)
    return InvalidURL(f"invalid Redis URL {shown}: {reason}", field="url", value=shown)


def check_url(target: str) -> None:
    """Raise :class:`InvalidURL` for a URL redis-py cannot use, without any I/O.

    redis-py finds a bad scheme or port when the client is built but an unknown query
    parameter only on the first connection (and a Cluster client connects before it
    would look): building one connection object, unconnected, finds all of them now.
    """
    connection_class: type | None = None
    try:
        pool = redis.ConnectionPool.from_url(target)
        connection_class = pool.connection_class
        connection_class(**pool.connection_kwargs)
    except (ValueError, TypeError) as exc:
        raise _invalid_url(target, exc, connection_class) from None


def make_client(url: str | None, settings: Settings, *, is_async: bool = False) -> Any:
    """A redis-py client for ``url`` (or ``settings.redis_url``): standalone or Cluster,
    sync or async. Raises InvalidInput (InvalidURL), ClusterModeMismatch, TransportError.

    The sync Cluster client connects here (redis-py reads the slot map when it is built);
    the others connect on their first command, where the driver maps the same errors."""
    target = resolve_url(url, settings)
    options = client_options(settings, is_async=is_async)
    if _sentinel.is_sentinel_url(target):
        if settings.cluster:
            raise InvalidURL(
                "a Sentinel URL names one primary: it does not go with cluster=True",
                field="url",
                value=redact_url(target),
            )
        return _sentinel.make_client(_sentinel.parse(target), options, is_async=is_async)
    check_url(target)
    cls: Any
    if is_async:
        cls = redis.asyncio.RedisCluster if settings.cluster else redis.asyncio.Redis
    else:
        cls = redis.RedisCluster if settings.cluster else redis.Redis
    try:
        client = cls.from_url(target, **options)
    except (ValueError, TypeError) as exc:  # a parameter the Cluster client refuses
        raise _invalid_url(target, exc) from None
    except (rexc.RedisError, rexc.RedisClusterException) as exc:
        raise setup_error(exc) from exc
    if cls is redis.Redis:
        use_kernel_timeouts(client)  # (no poll() before each send and receive: _sockets.py)
    return client


def companions(client: Any) -> list[Any]:
    """Clients a client we built depends on and closes with it (a Sentinel URL's
    connections to the Sentinels)."""
    found: list[Any] = getattr(client, "_swarm_companions", [])
    return found


def check_client(client: Any) -> None:
    kwargs: dict[str, Any] = {}
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        kwargs = getattr(pool, "connection_kwargs", {})
    elif hasattr(client, "get_connection_kwargs"):
        kwargs = client.get_connection_kwargs()
    if kwargs.get("decode_responses"):
        raise InvalidOption(
            "the redis client must not use decode_responses=True (values are binary)",
            field="client",
        )


def make_codec(settings: Settings, codec: Codec | None) -> ValueCodec:
    return ValueCodec(
        codec,
        max_bytes=settings.max_value_bytes,
        max_depth=settings.max_depth,
        compress_threshold=settings.compress_threshold,
    )


class MemoryBase(Generic[DriverT]):
    """Identity, settings, codec and driver of a SwarmMemory / AsyncSwarmMemory."""

    def __init__(
        self,
        client: Any,
        *,
        agent: str,
        settings: Settings | None = None,
        codec: Codec | None = None,
        metrics: ClientMetrics | None = None,
        _driver: DriverT | None = None,
        _owns_client: bool = False,
    ) -> None:
        self.agent = agent_arg(agent)
        self.settings = settings or Settings()
        self._codec = make_codec(self.settings, codec)
        self._raw_codec = codec
        if _driver is None:
            check_client(client)
            _driver = self._new_driver(client, self.settings)
        if metrics is not None:  # opt-in instrumentation, shared by as_agent identities
            _driver.metrics = metrics
        self._driver: DriverT = _driver
        self._owns_client = _owns_client
        # Inbox consumers of this identity, by name: their buffers and scan cursors.
        self._consumer = default_consumer()
        self._inbox_states: dict[str, InboxState] = {}
        # Lease state of this identity (ephemeral writes, lease-tied locks, heartbeats).
        self._session = AgentSession(self.settings.lease_ttl)

    def _new_driver(self, client: Any, settings: Settings) -> DriverT:
        raise NotImplementedError

    @property
    def redis(self) -> Any:
        """The redis-py client underneath (shared by every :meth:`as_agent` identity)."""
        return self._driver.client

    def as_agent(self, agent: str) -> Self:
        """Another identity over the same connection pool.

        Raises :class:`IdentityMismatch` on a client connected as an agent's own ACL user
        (authenticated mode): its scripts would refuse every call as another agent."""
        user = bound_user(self._driver.client)
        if user is not None and agent_arg(agent) != user:
            raise IdentityMismatch(
                f"this client connects as the Redis user {user!r}: it cannot act as agent "
                f"{agent!r} (connect with that agent's credentials)",
                action="as_agent",
                required="identity",
                granted="none",
                agent=agent,
            )
        return type(self)(
            self._driver.client,
            agent=agent,
            settings=self.settings,
            codec=self._raw_codec,
            _driver=self._driver,
        )

    def observe_scripts(self, observer: ScriptObserver) -> None:
        """Call ``observer(script_name, keys, args)`` before every script call (tests,
        tracing). Shared by every identity made with :meth:`as_agent`."""
        self._driver.observers.append(observer)

    def _ctx(self, namespace: str, resolver: Resolver | None = None) -> Context:
        return Context(
            namespace_arg(namespace),
            self.agent,
            self.settings,
            self._codec,
            resolver,
            self._session,
        )

    def _heartbeat(self, ttl_ms: int) -> Flow[int]:
        """One heartbeat of this identity (presence, and its lease where it holds any)."""
        return _coord.heartbeat(self.agent, self.settings, self._session, self._ctx, ttl_ms)

    def _leave(self) -> Flow[None]:
        """End this identity's lease everywhere now."""
        return _coord.leave_all(self.agent, self.settings, self._session, self._ctx)

    def _lease_ms(self, ttl: Any, namespaces: Iterable[str] | None) -> int:
        return _coord.lease_ttl_ms(self._session, self.settings, ttl, namespaces)

    def _inbox_ctx(self) -> InboxContext:
        # authenticated: sends to others go through lanes (their inboxes are not ours)
        lanes = self._driver.auth_mode == "authenticated"
        return InboxContext(self.agent, self.settings, self._codec, lanes)

    def _inbox_state(self, consumer: str | None) -> InboxState:
        name = consumer_arg(consumer) or self._consumer
        state = self._inbox_states.get(name)
        if state is None:
            state = self._inbox_states[name] = InboxState(self.agent, name)
        return state

    def _check_resolver(self, resolver: Resolver | None) -> None:
        if resolver is not None and not callable(resolver):
            raise InvalidInput("resolver must be callable", field="resolver", value=resolver)


class HandleBase(Generic[MemoryT]):
    """A namespace handle: (namespace, agent) plus the memory it came from."""

    def __init__(self, memory: MemoryT, ctx: Context) -> None:
        self.memory = memory
        self._ctx = ctx

    @property
    def name(self) -> str:
        return self._ctx.namespace

    @property
    def agent(self) -> str:
        return self._ctx.agent

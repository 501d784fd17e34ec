"""What the sync and async shells share: construction, identity, options.

Only the driver differs between them (``_drive.py``); the methods that run flows live in
``client.py`` and ``aio.py`` because their signatures differ (awaited or not).
"""

from __future__ import annotations

from typing import Any, Generic, Self, TypeVar

from redis.backoff import NoBackoff
from redis.retry import Retry

from swarm_memory._drive import AsyncDriver, ScriptObserver, SyncDriver
from swarm_memory._inbox import InboxContext, InboxState, consumer_arg, default_consumer
from swarm_memory._ops import AgentSession, Context, Resolver
from swarm_memory.codec import Codec, ValueCodec
from swarm_memory.errors import InvalidInput, InvalidOption
from swarm_memory.keys import validate_agent, validate_namespace
from swarm_memory.metrics import ClientMetrics
from swarm_memory.settings import Settings

DriverT = TypeVar("DriverT", SyncDriver, AsyncDriver)
MemoryT = TypeVar("MemoryT")


def resolve_url(url: str | None, settings: Settings) -> str:
    found = url or settings.redis_url
    if not found:
        raise InvalidInput(
            "no Redis URL: pass one or set SWARM_MEMORY_REDIS_URL", field="url", value=None
        )
    return found


def client_options(settings: Settings) -> dict[str, Any]:
    """redis-py options for clients we build: its own retries off (tenacity is the one
    retry layer), bytes replies (values are binary-safe), our timeouts."""
    return {
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.connect_timeout,
        "retry": Retry(NoBackoff(), 0),
        "decode_responses": False,
    }


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
        self.agent = validate_agent(agent)
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
        """Another identity over the same connection pool."""
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
            validate_namespace(namespace),
            self.agent,
            self.settings,
            self._codec,
            resolver,
            self._session,
        )

    def _inbox_ctx(self) -> InboxContext:
        return InboxContext(self.agent, self.settings, self._codec)

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

"""What a flow yields and what it is given: the effect types, ``Flow``, and the contexts.

A flow is a generator: it yields effects (:class:`ScriptCall`, :class:`Command`,
:class:`Sleep`, :class:`Listen` / :class:`WaitBell` / :class:`Unlisten`,
:class:`CallUser`), is sent each effect's result, and returns the operation's result.
``_drive.py`` performs the effects, synchronously or with asyncio; nothing under
``swarm_memory._ops`` touches a socket (the httpx/httpcore layout).

The contexts say who calls, where, and how values are encoded: :class:`Context` for the
namespace flows, :class:`InboxContext` for the inbox flows; :class:`AgentSession` is one
identity's lease state, shared by its contexts.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from swarm_memory.codec import ValueCodec
from swarm_memory.keys import InboxKeys, NamespaceKeys, inbox_index_key, key_arg
from swarm_memory.models import Entry
from swarm_memory.scripts import Script
from swarm_memory.settings import Settings

T = TypeVar("T")


class ScriptCall(NamedTuple):
    """One script call. (A named tuple: every call makes one, in ~0.2 µs, against ~0.55
    µs for a frozen dataclass's ``__init__``.)"""

    script: Script
    keys: list[str]
    args: list[str | bytes | int]
    op_id: str | None  # set for writes: the reply may be lost, the op id makes a retry safe
    # The call writes nothing (a read): run as FCALL_RO / EVALSHA_RO (the script must then
    # issue no write command; scripts.py registers every script twice, "<function>_ro"
    # with the no-writes flag), which a user with read-only keys (%R~) may make.
    readonly: bool = False


@dataclass(frozen=True, slots=True)
class Command:
    args: tuple[str | bytes | int | float, ...]
    write: bool = False


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class Listen:
    """Subscribe to a (shard) channel; the driver returns a handle for :class:`WaitBell`.
    Drivers close every handle a flow left open when the flow ends, however it ends."""

    channel: str


@dataclass(frozen=True, slots=True)
class WaitBell:
    """Wait up to ``seconds`` for a message equal to ``message`` on a :class:`Listen`
    handle. Returns True if it came; a broken subscription just waits out the time (the
    caller polls: a doorbell is only a hint)."""

    handle: Any
    message: bytes
    seconds: float


@dataclass(frozen=True, slots=True)
class Unlisten:
    handle: Any


@dataclass(frozen=True, slots=True)
class CallUser:
    """Call the caller's own function (a ``get_or_set`` factory): the driver calls it,
    awaits it if it is a coroutine (async client), and throws whatever it raises back
    into the flow, so the flow can clean up (release a lock) before it propagates."""

    fn: Callable[[], Any]


Effect = ScriptCall | Command | Sleep | Listen | WaitBell | Unlisten | CallUser
Flow = Generator[Effect, Any, T]


@dataclass(frozen=True, slots=True)
class Incoming:
    """What a ``custom``-strategy resolver gets besides the current entry."""

    key: str
    value: Any
    agent: str


Resolver = Callable[[Entry | None, Incoming], Any]


@dataclass(eq=False)
class AgentSession:
    """Per-identity lease state: the lease ttl its ephemeral writes and lease-tied locks
    use, and the namespaces where it holds something tied to its lease (heartbeats renew
    the lease there)."""

    lease_ttl: float
    namespaces: set[str] = field(default_factory=set)
    leased: bool = False  # True once lease()/heartbeat() ran: new locks get tied to it

    def ttl_ms(self) -> int:
        return max(1, int(self.lease_ttl * 1000))


@dataclass(frozen=True, slots=True)
class Context:
    """Everything a namespace flow needs: who, where, and how to encode."""

    namespace: str
    agent: str
    settings: Settings
    codec: ValueCodec
    resolver: Resolver | None = None
    session: AgentSession | None = None  # the identity's lease state (shared, mutable)
    # Worked out once per context (a namespace handle's), not per call: the key names
    # (an lru_cache lookup each time otherwise) and the write script's constant head
    # arguments, as the write flow sends them.
    keys: NamespaceKeys = field(init=False, repr=False, compare=False)
    # "<dedupe window ms> <stream maxlen> <audit maxlen> <value bytes> <event_value_max>"
    write_limits: str = field(init=False, repr=False, compare=False)
    # How many more puts go straight to write.lua: lua/put.lua said this namespace's puts
    # are write.lua's (a merge strategy, say); see _ops/entries.py, GENERAL_PUTS. Mutable,
    # one count per context (a namespace handle keeps its own).
    general_puts: list[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        s = self.settings
        setattr_ = object.__setattr__  # a frozen dataclass
        setattr_(self, "keys", NamespaceKeys.of(s.key_prefix, self.namespace))
        setattr_(
            self,
            "write_limits",
            f"{int(s.dedupe_window * 1000)} {s.stream_maxlen} {s.audit_maxlen} "
            f"{s.max_value_bytes} {s.event_value_max}",
        )
        setattr_(self, "general_puts", [0])

    def key(self, key: object) -> str:
        return key_arg(key, self.settings.max_key_bytes)

    def err(self, **kw: Any) -> dict[str, Any]:
        return {"namespace": self.namespace, "agent": self.agent, **kw}


def bind_lease(ctx: Context) -> int:
    """The lease (ms) a write or lock of this call ties to the agent — and, as a side
    effect, the namespace is recorded in the session so that heartbeats renew it there."""
    if ctx.session is None:
        return max(1, int(ctx.settings.lease_ttl * 1000))
    ctx.session.namespaces.add(ctx.namespace)
    return ctx.session.ttl_ms()


@dataclass(frozen=True, slots=True)
class InboxContext:
    """Everything an inbox flow needs: the calling agent and how it encodes."""

    agent: str
    settings: Settings
    codec: ValueCodec
    # Send to other agents through lanes (keys.InboxKeys.lane): the client is in
    # authenticated mode, where its ACL user may not write other agents' inboxes.
    lanes: bool = False

    def keys(self, owner: str, lanes: list[str] | tuple[str, ...] = ()) -> list[str]:
        """The inbox script's keys for ``owner``'s inbox, plus the lanes of ``lanes``."""
        inbox = InboxKeys.of(self.settings.key_prefix, owner)
        return inbox.fixed() + [inbox.lane(sender) for sender in lanes]

    @property
    def index(self) -> str:
        return inbox_index_key(self.settings.key_prefix)

    @property
    def retention_ms(self) -> int:
        """``inbox_retention`` for the script: whole ms, 0 = keep forever."""
        retention = self.settings.inbox_retention
        return 0 if retention is None else max(1, round(retention * 1000))

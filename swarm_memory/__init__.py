"""swarm_memory: shared, versioned, permission-checked memory for agent swarms on Redis."""

from swarm_memory._ops import Incoming
from swarm_memory.aio import AsyncNamespace, AsyncSwarmMemory
from swarm_memory.client import Namespace, SwarmMemory
from swarm_memory.codec import Codec, JsonCodec
from swarm_memory.errors import (
    ConflictError,
    EventsTrimmed,
    InvalidInput,
    InvalidName,
    InvalidOption,
    InvalidTTL,
    InvalidValue,
    InvalidVersion,
    LastAdminError,
    NamespaceError,
    NamespaceExists,
    NamespaceNotFound,
    NotAnInteger,
    NotReplicated,
    OpIdReused,
    OutcomeUnknown,
    PermissionDenied,
    QuotaExceeded,
    RequestTimeout,
    ResolverError,
    RetryLimitExceeded,
    ServerError,
    SwarmMemoryError,
    TransportError,
    VersionNotFound,
    VersionRequired,
)
from swarm_memory.events import AsyncSubscription, AsyncWatch, Subscription, Watch
from swarm_memory.inbox import AsyncInbox, Inbox
from swarm_memory.merge import merge_patch
from swarm_memory.metrics import ClientMetrics
from swarm_memory.models import (
    AuditRecord,
    Entry,
    Event,
    Message,
    NamespaceInfo,
    Snapshot,
    SweepResult,
)
from swarm_memory.settings import Settings

__version__ = "0.1.0"

__all__ = [
    "AsyncInbox",
    "AsyncNamespace",
    "AsyncSubscription",
    "AsyncSwarmMemory",
    "AsyncWatch",
    "AuditRecord",
    "ClientMetrics",
    "Codec",
    "ConflictError",
    "Entry",
    "Event",
    "EventsTrimmed",
    "Inbox",
    "Incoming",
    "InvalidInput",
    "InvalidName",
    "InvalidOption",
    "InvalidTTL",
    "InvalidValue",
    "InvalidVersion",
    "JsonCodec",
    "LastAdminError",
    "Message",
    "Namespace",
    "NamespaceError",
    "NamespaceExists",
    "NamespaceInfo",
    "NamespaceNotFound",
    "NotAnInteger",
    "NotReplicated",
    "OpIdReused",
    "OutcomeUnknown",
    "PermissionDenied",
    "QuotaExceeded",
    "RequestTimeout",
    "ResolverError",
    "RetryLimitExceeded",
    "ServerError",
    "Settings",
    "Snapshot",
    "Subscription",
    "SwarmMemory",
    "SwarmMemoryError",
    "SweepResult",
    "TransportError",
    "VersionNotFound",
    "VersionRequired",
    "Watch",
    "merge_patch",
]

"""What the two drivers share: the one place that maps redis-py errors to ours, and the
one retry policy (tenacity, DESIGN.md decision 6).

Transport errors are retried with the same op id, which the write script dedupes, so a
retried write is applied at most once. When retries run out, a write that may have
reached the server raises :class:`OutcomeUnknown`; one that cannot have (every attempt
failed while connecting) and a read raise :class:`TransportError`. The drivers
themselves (their I/O) are ``_async/driver.py`` and its generated ``_sync/driver.py``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

import redis.exceptions as rexc
from hiredis import pack_command
from tenacity import retry_if_exception_type, stop_after_attempt, wait_random_exponential

from swarm_memory import errors
from swarm_memory._ops.effects import Command, ScriptCall
from swarm_memory._ops.replies import script_error
from swarm_memory.keys import identity_key
from swarm_memory.scripts import library
from swarm_memory.settings import Settings

if TYPE_CHECKING:
    from swarm_memory.metrics import ClientMetrics

ScriptObserver = Callable[[str, list[str], list[Any]], None]

log = logging.getLogger("swarm_memory")

# authenticated mode (DESIGN.md decision 8): one EVAL when a client first runs a script.
# ARGV[1] is the agent's identity key, ARGV[2] one no agent's user may read ("*" is no
# agent name): a user that passes for it may act as any agent (the default user).
AUTH_PROBE = """
if not redis.acl_check_cmd then return {0, 0, 0} end
return {1, redis.acl_check_cmd("GET", ARGV[1]) and 1 or 0,
  redis.acl_check_cmd("GET", ARGV[2]) and 1 or 0}
"""


def auth_probe_args(prefix: str, agent: str) -> tuple[str, str]:
    return identity_key(prefix, agent), identity_key(prefix, "*")


def auth_mode_of(reply: Any, agent: str) -> tuple[str, str]:
    """("authenticated" | "cooperative", why) from the :data:`AUTH_PROBE` reply."""
    has_check, own, anyone = (int(x) for x in reply)
    if not has_check:
        return "cooperative", "the server has no ACL checks in scripts (fakeredis?)"
    if anyone:
        return "cooperative", "this connection's Redis user may act as any agent"
    if not own:
        return "authenticated", f"but this connection's Redis user is not agent {agent!r}"
    return "authenticated", f"this connection's Redis user is agent {agent!r}"


def bound_user(client: Any) -> str | None:
    """The ACL user name a client connects as, unless it is the default user."""
    kwargs: dict[str, Any] = {}
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        kwargs = getattr(pool, "connection_kwargs", {})
    elif hasattr(client, "get_connection_kwargs"):
        kwargs = client.get_connection_kwargs()
    user = kwargs.get("username")
    return None if user in (None, "", "default") else str(user)


# Refusals during a Cluster reshard or failover: the node did not run the command (a
# slot moved or is being migrated, or the cluster is down), so a retry with the same op
# id is safe and cannot apply twice.
REFUSED = (rexc.TryAgainError, rexc.MovedError, rexc.AskError, rexc.ClusterDownError)
# Transport failures, and redis-py's "TTL exhausted" (its own redirect loop gave up; a
# connection error inside it may have followed a send): the outcome may be unknown.
RETRYABLE = (rexc.ConnectionError, rexc.TimeoutError, rexc.ClusterError, *REFUSED)


def _failed_connecting(exc: BaseException) -> bool:
    """True when ``exc`` was raised while a connection was being set up (connect, the
    handshake, the pool's health check), so no byte of our command reached the server.

    redis-py's exceptions do not say this, and their messages differ between versions;
    the call path does: every supported redis-py (8.x, sync and asyncio, standalone
    and cluster) sends a command only after ``get_connection``/``connect`` returned.
    """
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        module = tb.tb_frame.f_globals.get("__name__", "")
        if code.co_name in _CONNECT_FRAMES and module.startswith("redis."):
            return True
        tb = tb.tb_next
    return False


_CONNECT_FRAMES = frozenset({"connect", "get_connection", "connect_check_health", "on_connect"})


def setup_error(exc: BaseException) -> errors.SwarmMemoryError:
    """Map an error raised while a client sets itself up: the sync RedisCluster connects
    when it is built, the async one on its first command.

    redis-py's cluster setup errors are not RedisErrors and carry no attributes: the
    server's "cluster mode is not enabled" reply is known only by its text.
    """
    if isinstance(exc, rexc.RedisClusterException):
        if "cluster mode is not enabled" in str(exc).lower():
            return errors.ClusterModeMismatch(
                "the server is not a Redis Cluster (cluster mode is not enabled on it), "
                "but the client was told it is: unset SWARM_MEMORY_CLUSTER (--no-cluster)",
                configured_cluster=True,
                server_cluster=False,
            )
        return errors.TransportError(f"Redis Cluster unreachable: {exc}")
    if isinstance(exc, rexc.AuthenticationError):
        return errors.TransportError(f"Redis refused the credentials: {exc}")
    if isinstance(exc, RETRYABLE):
        return errors.TransportError(f"Redis unreachable: {exc}")
    return errors.ServerError(f"Redis refused the command: {exc}")


def final_error(
    effect: ScriptCall | Command, exc: BaseException, *, maybe_sent: bool = True
) -> errors.SwarmMemoryError:
    """Map a redis-py error that survived the retry policy. ``maybe_sent`` is False when
    every attempt failed before its command could reach the server: a write that was
    never sent was not applied, so it is "unreachable", not "outcome unknown"."""
    if isinstance(exc, rexc.RedisClusterException):
        return setup_error(exc)
    if isinstance(exc, rexc.AuthenticationError):
        return errors.TransportError(f"Redis refused the credentials: {exc}")
    if isinstance(exc, RETRYABLE):
        op_id = effect.op_id if isinstance(effect, ScriptCall) else None
        is_write = op_id is not None or (isinstance(effect, Command) and effect.write)
        if is_write and maybe_sent and op_id is not None:
            return errors.OutcomeUnknown(
                f"no reply from Redis after retries; the write may or may not be applied "
                f"(retry with op_id={op_id!r} to learn its outcome): {exc}",
                op_id=op_id,
            )
        if is_write and maybe_sent:
            return errors.TransportError(f"Redis unreachable; write outcome unknown: {exc}")
        if is_write:
            return errors.TransportError(
                f"Redis unreachable after retries; the write was not sent: {exc}"
            )
        return errors.TransportError(f"Redis unreachable after retries: {exc}")
    if (
        isinstance(exc, rexc.NoPermissionError)
        or "NOPERM" in str(exc)
        or _SCRIPT_NOPERM in str(exc)
    ):
        return errors.PermissionDenied(
            f"Redis refused {call_name(effect)} to this connection's ACL user: {exc}",
            action=call_name(effect),
            required="acl",
            granted="none",
        )
    if isinstance(exc, rexc.ResponseError) and isinstance(effect, ScriptCall | Command):
        corrupt = script_error(effect, str(exc))  # CorruptData naming the key
        if corrupt is not None:
            return corrupt
    return errors.ServerError(f"Redis refused the command: {exc}")


def is_fakeredis(client: Any) -> bool:
    pool = getattr(client, "connection_pool", None)
    kinds = (type(client), getattr(pool, "connection_class", None))
    return any(getattr(k, "__module__", "").startswith("fakeredis") for k in kinds)


# A script call's own send (standalone and Sentinel clients, see :func:`direct_pool`):
# the command is packed by hiredis's C packer in one call, which takes str (as UTF-8),
# int and bytes as they are. redis-py's generic path (execute_command: its serializer's
# per-argument encoding, its retry wrapper, its response callbacks) was about a third of
# a put's client CPU (docs/performance.md, "Client side: CPU per call").

# The commands a direct send issues; a response callback set for any of them (none by
# default) is redis-py's business: such a client keeps execute_command.
DIRECT_COMMANDS = ("FCALL", "FCALL_RO", "EVALSHA", "EVALSHA_RO")


def pack(command: tuple[Any, ...]) -> bytes:
    """``command`` in RESP, as redis-py would send it: a value it refuses (a bool, None:
    no script argument is one) raises its DataError."""
    try:
        packed: bytes = pack_command(command)
    except TypeError as exc:
        raise rexc.DataError(str(exc)) from exc
    return packed


def direct_pool(client: Any) -> Any:
    """The connection pool whose connections a script call may use directly (pack the
    command, ``send_packed_command``, ``read_response``, release), or None for redis-py's
    ``execute_command``. Direct only where that is all execute_command would do: a
    standalone or Sentinel client (a Cluster routes and follows redirects), not a
    single-connection one, no client-side cache, no response callback for the script
    commands, and redis-py's own retries off (as ``from_url`` makes them: a client with
    them on keeps retrying behind our back, as it does through execute_command). Not
    fakeredis, whose connections are not sockets."""
    if is_fakeredis(client) or "Cluster" in type(client).__name__:
        return None
    pool = getattr(client, "connection_pool", None)
    if pool is None or getattr(client, "connection", None) is not None:
        return None
    if getattr(client, "single_connection_client", False) or getattr(
        client, "_single_connection_client", False
    ):
        return None
    if getattr(pool, "cache", None) is not None:
        return None
    callbacks = getattr(client, "response_callbacks", None) or {}
    if any(name in callbacks for name in DIRECT_COMMANDS):
        return None
    retry = getattr(pool, "connection_kwargs", {}).get("retry")
    if retry is None or retry.get_retries() != 0:
        return None
    return pool


def recording_off(recorder: ModuleType) -> Callable[[], bool]:
    """A check that redis-py's observability ``recorder`` module (sync or asyncio) is
    known to be off: its ``record_operation_duration`` then returns before doing
    anything (it finds no collector, and the miss cached), so a caller may skip the
    call and the work of its arguments. The check reads the two module globals the
    helper reads first; a redis-py without them gets a check that is never true (every
    call recorded, as before). Enabling observability resets both (its ``init``), so the
    next call records again."""
    names = vars(recorder)
    for prefix in ("_async_", "_"):
        collector, resolved = prefix + "metrics_collector", prefix + "collector_resolved"
        if collector in names and resolved in names:
            return functools.partial(_recorder_off, names, collector, resolved)
    return lambda: False


def _recorder_off(names: dict[str, Any], collector: str, resolved: str) -> bool:
    return names[collector] is None and names[resolved] is True


def wire_args(keys: list[str], args: list[Any]) -> list[Any]:
    """A script call's keys and args, str and int already bytes: redis-py's encoder then
    returns each at its first check. One comprehension here costs less than its generic
    per-argument encoding (a put's 40 arguments: about a quarter of the packing time).
    Anything else (bytes, or a type redis-py refuses) goes as it was."""
    return [
        a
        if type(a) is bytes
        else a.encode()
        if type(a) is str
        else b"%d" % a
        if type(a) is int
        else a
        for a in (*keys, *args)
    ]


def cannot_fcall(exc: BaseException) -> bool:
    """True for an FCALL error that means the call did not run because the library cannot
    be used: the function is not loaded, the server has no FCALL, or this user may not
    run it (an ACL without FCALL)."""
    text = str(exc).lower()
    return (
        "function not found" in text
        or "unknown command" in text
        or ("permission" in text and "'fcall" in text)  # NOPERM (redis-py drops the code)
    )


def located(call: ScriptCall, exc: rexc.ResponseError, functions: bool) -> rexc.ResponseError:
    """``exc`` with the Lua line numbers in its message pointing into the .lua files."""
    message = str(exc)
    where = library().locate(message) if functions else call.script.locate(message)
    if where == message:
        return exc
    return type(exc)(where)


# What Redis 7 answers when a script's redis.call touches a key the user may not.
_SCRIPT_NOPERM = "user executing the script can't"


# Read-only calls (ScriptCall.readonly) run without writes: EVALSHA_RO, which a user
# whose keys are read-only (%R~) may send, where the server has it (Redis >= 7; not
# Redis 6 nor fakeredis: there they run as EVALSHA, learnt on the first call). A
# denial so answered was not recorded (a script without writes cannot audit): it is run
# again with writes, and Redis refusing that (a read-only user) leaves it unaudited.
def lacks_read_only_scripts(exc: BaseException) -> bool:
    """The server does not know EVALSHA_RO / EVAL_RO."""
    return "unknown command" in str(exc).lower()


def is_denial(reply: Any) -> bool:
    """A script's permission or identity denial (every script's ``{"denied", ...}``)."""
    return isinstance(reply, list) and bool(reply) and reply[0] == b"denied"


def refused_by_acl(exc: BaseException) -> bool:
    """Redis's ACL refused the call (the user may not write those keys)."""
    return isinstance(exc, rexc.NoPermissionError) or _SCRIPT_NOPERM in str(exc)


class Attempts:
    """Whether any attempt of one effect may have reached the server (see
    :func:`_failed_connecting`)."""

    __slots__ = ("maybe_sent",)

    def __init__(self) -> None:
        self.maybe_sent = False

    def failed(self, exc: BaseException) -> None:
        if not isinstance(exc, REFUSED) and not _failed_connecting(exc):
            self.maybe_sent = True


def call_name(effect: object) -> str:
    """The retries metric's label: a script name, a Redis command name or the effect's
    kind (bounded sets)."""
    if isinstance(effect, ScriptCall):
        return effect.script.name
    if isinstance(effect, Command):
        return str(effect.args[0]).upper()
    return type(effect).__name__.lower()


def eviction_policy_error(reply: Any, settings: Settings) -> errors.SwarmMemoryError | None:
    """The error every write raises on a server whose ``maxmemory-policy`` (a CONFIG GET
    reply: a pair list, a dict, or a dict per Cluster node) may evict any key."""
    if settings.allow_eviction:
        return None
    for policy in _policies(reply):
        if policy.startswith("allkeys"):
            return errors.UnsafeEvictionPolicy(
                f"the Redis server's maxmemory-policy is {policy!r}: it may evict namespace "
                "metadata and indexes, losing acknowledged writes. Set it to noeviction "
                "(deploy/redis.conf), or Settings(allow_eviction=True) to write anyway",
                policy=policy,
            )
    return None


def _policies(reply: Any) -> list[str]:
    def text(value: Any) -> str:
        return value.decode(errors="replace") if isinstance(value, bytes) else str(value)

    if isinstance(reply, dict):
        found: list[str] = []
        for name, value in reply.items():
            if isinstance(value, dict | list):
                found += _policies(value)  # one reply per Cluster node
            elif text(name) == "maxmemory-policy":
                found.append(text(value))
        return found
    if isinstance(reply, list | tuple) and len(reply) == len(("name", "value")):
        return [text(reply[1])]
    return []


class DriverBase:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Cluster + wait_replicas: a client per primary, so that a write and its WAIT
        # share one connection (a cluster client would send a keyless WAIT elsewhere).
        self.node_clients: dict[str, Any] = {}
        # maxmemory-policy, read once before the first write (None: not read yet).
        self.policy_checked = False
        self.policy_error: errors.SwarmMemoryError | None = None
        self.observers: list[ScriptObserver] = []
        # "functions" | "eval" (Settings.script_mode), chosen before the first script
        # call. functions: the library is FUNCTION LOADed when an FCALL finds it missing
        # (on Cluster, redis-py sends it to every primary; replicas get it by
        # replication): on a client's first call if no client loaded it yet, after a
        # restart, a FUNCTION FLUSH or a failover to a node that never had it; the call
        # did not run and is resent. Where it cannot be loaded (no Functions; an agent's
        # ACL user without FUNCTION, when no admin's client loaded it): eval from then on.
        # eval: scripts are SCRIPT LOADed once per client before their first EVALSHA, so
        # the NOSCRIPT path (a fallback to EVAL) is as rare.
        self.script_mode: str | None = None
        self.loaded: set[str] = set()
        self.hub: Any = None  # the event hub (events.py), made on first watch()
        # authenticated | cooperative, learnt before the first script call (AUTH_PROBE).
        self.auth_mode: str | None = None
        # Whether the server runs read-only scripts (EVALSHA_RO); None: not tried yet.
        self.read_only_scripts: bool | None = None
        # Opt-in client metrics (metrics.py); None costs one attribute check per call.
        self.metrics: ClientMetrics | None = None

    def mode_to_try(self, client: Any) -> str:
        """The script mode to try first: the setting, or for "auto" "eval" on fakeredis
        (whose Functions differ from Redis's) and "functions" elsewhere."""
        mode = self.settings.script_mode
        if mode == "auto":
            return "eval" if is_fakeredis(client) else "functions"
        return mode

    def learnt_auth_mode(self, reply: Any, agent: str) -> str:
        mode, why = auth_mode_of(reply, agent)
        if self.auth_mode is None:
            log.info("swarm_memory: %s mode: %s", mode, why)
        self.auth_mode = mode
        return mode

    def notify(self, call: ScriptCall) -> None:
        call.script.check(call.keys, call.args)
        for observer in self.observers:
            observer(call.script.name, call.keys, call.args)

    def acked(self, call: ScriptCall, acked: Any) -> None:
        required = self.settings.wait_replicas
        if int(acked) < required:
            assert call.op_id is not None
            raise errors.NotReplicated(
                f"write applied on the primary but only {int(acked)} of {required} replicas "
                f"acknowledged it within {self.settings.wait_timeout}s",
                op_id=call.op_id,
                required=required,
                acked=int(acked),
            )

    def wait_args(self) -> tuple[str, int, int]:
        return ("WAIT", self.settings.wait_replicas, int(self.settings.wait_timeout * 1000))

    def retry_kwargs(self) -> dict[str, Any]:
        s = self.settings
        return {
            "stop": stop_after_attempt(s.retry_attempts),
            "wait": wait_random_exponential(multiplier=s.retry_backoff, max=s.retry_backoff_max),
            "retry": retry_if_exception_type(RETRYABLE),
            "reraise": True,
        }

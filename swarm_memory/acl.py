"""Redis ACL users generated from the permission maps (authenticated mode, DESIGN.md
decision 8; ``swarm-memory acl ...``).

One user per agent, named after the agent. :func:`plan` is pure: namespace maps in,
``ACL SETUSER`` rules out. Each user gets

- ``resetkeys resetchannels -@all``, then only the commands the client needs
  (:data:`COMMANDS`: no FLUSHALL, KEYS, CONFIG, SCRIPT FLUSH, FUNCTION, DEBUG, SHUTDOWN,
  ACL, ...);
- per namespace where its level (its own, else the default) is not ``none``: the
  namespace's keys, read-only (``%R~``) where the level is ``read`` and read-write
  (``~``) above, and its doorbell channels (``&``); no other namespace's keys or
  channels;
- its identity key readable (``%R~``: what every script checks, ``keys.identity_key``),
  its own inbox (keys and doorbell), its lane in every other inbox and their senders
  sets (sends, ``lua/lane.lua``), presence, the inbox index, and the registry
  read-only.

Grants, revokes and namespace changes do not change users by themselves: :func:`apply`
reconciles (``swarm-memory acl apply``), and :func:`drift` (``acl plan --check``) names
the users that differ from the maps. On Cluster every call goes to every primary.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import redis

from swarm_memory.keys import (
    ACL_MARK,
    InboxKeys,
    NamespaceKeys,
    PresenceKeys,
    agent_arg,
    identity_key,
    inbox_index_key,
    registry_key,
)
from swarm_memory.scripts import library


class PermissionMap(Protocol):
    """What a plan reads of a namespace (a ``NamespaceInfo`` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def default_permission(self) -> str: ...
    @property
    def permissions(self) -> Mapping[str, str]: ...


@dataclass(frozen=True, slots=True)
class NamespaceMap:
    name: str
    default_permission: str
    permissions: Mapping[str, str]


def read_maps(client: Any, prefix: str = "sm") -> list[NamespaceMap]:
    """Every namespace's permission map, read directly (an operator's view: no agent's
    level limits what it sees). Run as a user that may read every namespace."""
    maps = []
    for raw in client.zrange(registry_key(prefix), 0, -1):
        name = _text(raw)
        keys = NamespaceKeys.of(prefix, name)
        default = client.hget(keys.meta, "dp")
        if default is None:
            continue  # being created or deleted
        perms = {
            _text(a): _text(lvl)
            for a, lvl in client.hgetall(keys.acl).items()
            if _text(a) != ACL_MARK  # the namespace's default level, no agent
        }
        maps.append(NamespaceMap(name, _text(default), perms))
    return maps


# What the client sends: scripts (EVALSHA, EVAL, SCRIPT LOAD), the reads and pages it
# does outside them, pub/sub doorbells, WAIT, and what redis-py sends on connect and on
# Cluster. Dangerous and admin commands go after the categories that would allow them.
COMMANDS = (
    "-@all",
    "+@read",
    "+@write",
    "+@scripting",
    "+@pubsub",
    "+@connection",
    "+@transaction",
    "-@dangerous",
    "-@admin",
    "-function",
    "-script|flush",
    "-script|kill",
    "+info",
    "+time",
    "+wait",
    "+cluster|slots",
    "+cluster|shards",
    "+cluster|nodes",
    "+cluster|info",
    "+cluster|myid",
)


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


@dataclass(frozen=True, slots=True)
class AgentUser:
    """The ACL rules of one agent's user (passwords apart)."""

    agent: str
    rules: tuple[str, ...]

    def setuser(self, *passwords: str) -> list[str]:
        """``ACL SETUSER`` arguments; passwords only for a new user (``>pw``)."""
        return ["ACL", "SETUSER", self.agent, "on", *(">" + p for p in passwords), *self.rules]

    def line(self) -> str:
        """The ``ACL SETUSER`` line, without passwords (safe to print)."""
        return " ".join(self.setuser())


def level_of(info: PermissionMap, agent: str) -> str:
    return str(info.permissions.get(agent, info.default_permission))


def agents_of(maps: Iterable[PermissionMap], extra: Iterable[str] = ()) -> list[str]:
    """Every agent the maps name, plus ``extra`` (agents that rely on defaults)."""
    found = {agent_arg(a) for a in extra}
    for info in maps:
        found.update(a for a, lvl in info.permissions.items() if lvl != "none")
    return sorted(found)


def plan(
    maps: Iterable[PermissionMap], agents: Iterable[str] = (), *, prefix: str = "sm"
) -> list[AgentUser]:
    """One :class:`AgentUser` per agent of :func:`agents_of`, by name."""
    infos = sorted(maps, key=lambda i: i.name)
    users = []
    for agent in agents_of(infos, agents):
        p = _glob_escape
        keys = [
            "%R~" + p(identity_key(prefix, agent)),
            "%R~" + p(registry_key(prefix)),
            "~" + p(inbox_index_key(prefix)),  # a send adds its recipient (a listing only)
            "~" + p(InboxKeys.of(prefix, agent).base) + "*",
            # Sends to other agents: its own lane in every inbox ("?": the lane's three
            # keys; the name ends the key, so no other sender's lane matches) and every
            # inbox's senders set (a hint shared by all senders: README "Security").
            "~" + p(prefix) + ":{@inbox:*}:lane:?:" + p(agent),
            "~" + p(prefix) + ":{@inbox:*}:senders",
            "~" + p(PresenceKeys.of(prefix).base) + "*",
        ]
        channels = ["&" + p(InboxKeys.of(prefix, agent).base) + "*"]
        for info in infos:
            level = level_of(info, agent)
            if level == "none":
                continue
            base = p(NamespaceKeys.of(prefix, info.name).base) + "*"
            # read: Redis refuses every write to the namespace's keys, raw or scripted
            # (EVALSHA declares its keys read-write: such a user's reads run as
            # EVALSHA_RO, ScriptCall.readonly). write/admin: the scripts hold the level.
            keys.append(("%R~" if level == "read" else "~") + base)
            channels.append("&" + base)
        rules = ("resetkeys", "resetchannels", *keys, *channels, *COMMANDS)
        users.append(AgentUser(agent, rules))
    return users


def new_password() -> str:
    return secrets.token_urlsafe(32)


def password_hash(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def primaries(client: Any) -> list[Any]:
    """Where ACL commands go: every primary of a Cluster, else the one server."""
    if hasattr(client, "get_primaries"):
        return [{"target_nodes": node} for node in client.get_primaries()]
    return [{}]


def _each(client: Any, *args: Any) -> list[Any]:
    return [client.execute_command(*args, **target) for target in primaries(client)]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def getuser(client: Any, name: str) -> dict[str, Any] | None:
    """``ACL GETUSER`` as a dict of text (the first primary's), None when absent."""
    reply = client.execute_command("ACL", "GETUSER", name, **primaries(client)[0])
    if not reply:
        return None
    if isinstance(reply, dict):
        items = list(reply.items())
    else:
        items = list(zip(reply[::2], reply[1::2], strict=True))
    out: dict[str, Any] = {}
    for k, v in items:
        if isinstance(v, list):
            out[_text(k)] = [_text(x) if not isinstance(x, list) else x for x in v]
        else:
            out[_text(k)] = _text(v)
    return out


def _comparable(user: Mapping[str, Any]) -> tuple[Any, ...]:
    return (user.get("keys"), user.get("channels"), user.get("commands"), user.get("selectors"))


def drift(client: Any, users: Iterable[AgentUser]) -> list[str]:
    """Agents whose user is missing or differs from its plan. Compared through Redis's own
    normal form: the plan is set on a throwaway user, read back, and deleted."""
    differs = []
    for user in users:
        current = getuser(client, user.agent)
        probe = f"{user.agent}.swarm-memory-plan"
        _each(client, "ACL", "SETUSER", probe, "off", *user.rules)
        try:
            wanted = getuser(client, probe)
        finally:
            _each(client, "ACL", "DELUSER", probe)
        if current is None or wanted is None or _comparable(current) != _comparable(wanted):
            differs.append(user.agent)
    return differs


def apply(client: Any, users: Iterable[AgentUser]) -> dict[str, str]:
    """Create or update every user (on every primary), and load the scripts' Functions
    library there (see :func:`load_library`). Existing users keep their passwords; new
    ones get a generated password, returned by agent (print none of it)."""
    created = {}
    for user in users:
        if getuser(client, user.agent) is None:
            created[user.agent] = new_password()
            _each(client, *user.setuser(created[user.agent]))
        else:
            _each(client, *user.setuser())
    load_library(client)
    return created


def load_library(client: Any) -> bool:
    """FUNCTION LOAD the scripts' library on every primary. Agents' users may call FCALL
    but not load (``-function``): without this they run EVALSHA until some admin's client
    has loaded it. False where the server has no Functions (Redis < 7)."""
    try:
        _each(client, "FUNCTION", "LOAD", "REPLACE", library().source)
    except redis.ResponseError:
        return False
    return True


def revoke(client: Any, agent: str) -> None:
    """Delete the agent's user (every primary); Redis closes the connections
    authenticated as it (``ACL DELUSER``; a ``CLIENT KILL USER`` after it would fail:
    no such user)."""
    _each(client, "ACL", "DELUSER", agent_arg(agent))


def rotate(client: Any, agent: str) -> str:
    """Add a new password (returned) beside the old ones; both work until
    :func:`finish_rotation`."""
    password = new_password()
    _each(client, "ACL", "SETUSER", agent_arg(agent), ">" + password)
    return password


def finish_rotation(client: Any, agent: str, keep: str) -> int:
    """Remove every password of the agent's user but ``keep``; returns how many."""
    user = getuser(client, agent_arg(agent))
    if user is None:
        return 0
    keep_hash = password_hash(keep)
    old = [h for h in user.get("passwords", []) if h != keep_hash]
    for h in old:
        _each(client, "ACL", "SETUSER", agent, "!" + h)  # "!<sha256>": remove that password
    return len(old)

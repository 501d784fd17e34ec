"""Lua scripts shipped inside the package, loaded with importlib.resources.

Each script file starts with a machine-readable header::

    --! keys: meta acl ... +items(entry hist)
    --! args: agent op_id ... +items(op key ...)
    --! returns: {"ok", rev, ...} | {"dup", record} | {"nons"} | ...

The loader prepends ``_lib.lua`` and checks every call against the header: the number of
fixed keys and args, and that variable parts come in whole groups. A call that does not
fit raises before it reaches Redis. The reply tags the header lists (``Script.returns``)
are the ones ``swarm_memory._ops.replies`` must handle; a unit test holds them equal.

Every call also carries one ARGV beyond its header, appended by the driver: the identity
key of the agent the call names (``keys.identity_key``), which ``_lib.lua`` takes off and
checks before the script runs (authenticated mode, DESIGN.md decision 8).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

from swarm_memory.keys import identity_key

_HEADER = re.compile(r"^--! (keys|args|returns): (.*)$", re.MULTILINE)
_GROUP = re.compile(r"\+(\w+)(?:\(([^)]*)\))?")
# The quoted names opening each alternative of a returns header: {"ok", ...} | {"ok"|"dup", ...}
_OPENING_TAGS = re.compile(r'\{\s*("\w+"(?:\s*\|\s*"\w+")*)')
_TAG = re.compile(r'"(\w+)"')


def parse_returns(text: str) -> frozenset[str]:
    """The reply tags a ``--! returns`` header lists."""
    openings = _OPENING_TAGS.findall(text)
    return frozenset(tag for opening in openings for tag in _TAG.findall(opening))


@dataclass(frozen=True, slots=True)
class Signature:
    fixed: tuple[str, ...]
    groups: tuple[tuple[str, int], ...]  # (name, arity); arity 0 = free-form tail

    @classmethod
    def parse(cls, text: str) -> Signature:
        fixed: list[str] = []
        groups: list[tuple[str, int]] = []
        for token in re.findall(r"\+\w+(?:\([^)]*\))?|[^\s+]+", text):
            m = _GROUP.fullmatch(token)
            if m:
                inner = (m.group(2) or "").split()
                groups.append((m.group(1), len(inner)))
            elif groups:
                raise ValueError(f"fixed name {token!r} after a variable group")
            else:
                fixed.append(token)
        return cls(tuple(fixed), tuple(groups))

    # count -> accepts(count). Every script call is checked against its header; cached,
    # the check is a dict lookup instead of a reachability table per call (put_many(100)
    # spent 0.7 ms here). Bounded: counts are bounded by the batch limits.
    _known: dict[int, bool] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def accepts(self, count: int) -> bool:
        known = self._known.get(count)
        if known is None:
            known = self._known[count] = _accepts(
                len(self.fixed), tuple(a for _, a in self.groups), count
            )
        return known


def _accepts(n_fixed: int, arities: tuple[int, ...], count: int) -> bool:
    rest = count - n_fixed
    if rest < 0:
        return False
    if not arities:
        return rest == 0
    if 0 in arities:
        return True
    # Is `rest` a sum of whole groups? (coin-change reachability; counts are small)
    reachable = [True] + [False] * rest
    for total in range(1, rest + 1):
        reachable[total] = any(a <= total and reachable[total - a] for a in arities)
    return reachable[rest]


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    source: str
    sha: str
    keys: Signature
    args: Signature
    returns: frozenset[str] = frozenset()  # the reply tags its header lists
    agent_arg: int = 0  # where the calling agent's name is in its args

    def identity_args(self, args: list[str | bytes | int], prefix: str) -> list[str | bytes | int]:
        """``args`` plus the identity key of the agent they name (see the module doc)."""
        agent = args[self.agent_arg]
        name = agent.decode() if isinstance(agent, bytes) else str(agent)
        return [*args, identity_key(prefix, name)]

    def check(self, keys: list[str], args: list[str | bytes | int]) -> None:
        if not self.keys.accepts(len(keys)) or not self.args.accepts(len(args)):
            raise ValueError(
                f"script {self.name}: {len(keys)} keys / {len(args)} args do not fit its header"
            )


SCRIPT_NAMES = (
    "write",
    "read",
    "ns",
    "purge",
    "sweep",
    "events",
    "inbox",
    "lane",
    "lock",
    "reap",
    "presence",
    "agent",
    "graph",
)


def _read(name: str) -> str:
    return (
        resources.files("swarm_memory").joinpath("lua").joinpath(f"{name}.lua").read_text("utf-8")
    )


@cache
def load(name: str) -> Script:
    body = _read(name)
    headers = dict(_HEADER.findall(body))
    if "keys" not in headers or "args" not in headers or "returns" not in headers:
        raise RuntimeError(f"lua/{name}.lua lacks its --! keys / args / returns header")
    source = _read("_lib") + "\n" + body
    args = Signature.parse(headers["args"])
    if "agent" not in args.fixed:
        raise RuntimeError(f"lua/{name}.lua: its args header names no agent")
    return Script(
        name=name,
        source=source,
        sha=hashlib.sha1(source.encode("utf-8")).hexdigest(),
        keys=Signature.parse(headers["keys"]),
        args=args,
        returns=parse_returns(headers["returns"]),
        agent_arg=args.fixed.index("agent"),
    )


def all_scripts() -> dict[str, Script]:
    return {name: load(name) for name in SCRIPT_NAMES}

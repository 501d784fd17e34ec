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

How a script is built from its file (DESIGN.md decision 2, "each script carries only the
library parts it uses"): ``_lib.lua`` is cut into parts, one per top-level ``local``
definition (with the comment above it); a script takes the per-call state at the top of
``_lib.lua``, every part its body names, and, transitively, every part those name — so a
new script needs no include list. Its body becomes an entry function,
``local function sm_<name>(keys, args)``, that first calls ``enter`` (the per-call state
and the identity check). Two forms come from that one text:

- :attr:`Script.source`: the parts, the entry function, and a last line that calls it
  with ``KEYS`` and ``ARGV`` — what ``EVALSHA`` runs (fakeredis; a user that may not load
  Functions; a server without them).
- :func:`library`: every part once and every script's entry function, each registered
  with ``redis.register_function`` as ``sm<hash>_<name>`` (and ``sm<hash>_<name>_ro``
  with ``no-writes`` for ``FCALL_RO``) — one ``FUNCTION LOAD`` per server, after which a
  call runs no library code but its own. The library's name carries a hash of its
  source, so clients of two versions never replace each other's functions.

Lua reports errors by line of the text it ran; :meth:`Script.locate` and
:meth:`Library.locate` turn those into ``<file>.lua:<line>``.
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


# (first line in the generated text, number of lines, file, its first line there)
Segment = tuple[int, int, str, int]
_LINE_REF = re.compile(r"@?user_(?:script|function):(\d+)")


def _locate(segments: tuple[Segment, ...], message: str) -> str:
    """``message`` with every ``user_script:<n>`` / ``user_function:<n>`` line reference
    of the generated text followed by the file and line it came from."""

    def sub(m: re.Match[str]) -> str:
        line = int(m.group(1))
        for first, count, file, file_first in segments:
            if first <= line < first + count:
                return f"{m.group(0)} ({file}:{file_first + line - first})"
        return m.group(0)

    return _LINE_REF.sub(sub, message)


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    source: str
    sha: str
    keys: Signature
    args: Signature
    returns: frozenset[str] = frozenset()  # the reply tags its header lists
    agent_arg: int = 0  # where the calling agent's name is in its args
    # Where each line of ``source`` comes from (see :meth:`locate`).
    segments: tuple[Segment, ...] = ()
    # The name it is registered under in the Functions library (see :func:`library`);
    # FCALL_RO takes ``function + "_ro"``, registered with the ``no-writes`` flag.
    function: str = ""

    def locate(self, message: str) -> str:
        """An error message of this script's EVAL with its line numbers located."""
        return _locate(self.segments, message)

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
    "put",
    "read",
    "get",
    "ns",
    "purge",
    "sweep",
    "lru",
    "events",
    "inbox",
    "lane",
    "lock",
    "acquire",
    "release",
    "reap",
    "presence",
    "agent",
    "graph",
)


def _read(name: str) -> str:
    return (
        resources.files("swarm_memory").joinpath("lua").joinpath(f"{name}.lua").read_text("utf-8")
    )


_PART = re.compile(r"^local\s+(?:function\s+(\w+)|([\w\s,]+?)\s*=)")
_STATE_END = "--- end of per-call state"
_NAME = re.compile(r"[A-Za-z_]\w*")
_COMMENT = re.compile(r"--[^\n]*")


@dataclass(frozen=True, slots=True)
class _Part:
    names: tuple[str, ...]  # what it defines
    first: int  # its first line in _lib.lua (1-based)
    lines: tuple[str, ...]
    uses: frozenset[str]  # every name its code mentions


def _names_in(lines: tuple[str, ...] | list[str]) -> frozenset[str]:
    return frozenset(_NAME.findall(_COMMENT.sub("", "\n".join(lines))))


@cache
def _lib_parts() -> tuple[tuple[str, ...], tuple[_Part, ...]]:
    """(the per-call state's lines, the parts after it) of ``_lib.lua``."""
    lines = _read("_lib").split("\n")
    end = lines.index(_STATE_END)
    state = tuple(lines[: end + 1])
    starts: list[tuple[int, tuple[str, ...]]] = []  # (line index, names), comments included
    for i in range(end + 1, len(lines)):
        m = _PART.match(lines[i])
        if not m:
            continue
        names = (m.group(1),) if m.group(1) else tuple(n.strip() for n in m.group(2).split(","))
        first = i
        while first > end + 1 and lines[first - 1].startswith("--"):
            first -= 1
        starts.append((first, names))
    parts = []
    for j, (first, names) in enumerate(starts):
        stop = starts[j + 1][0] if j + 1 < len(starts) else len(lines)
        body = tuple(lines[first:stop])
        parts.append(_Part(names, first + 1, body, _names_in(body)))
    return state, tuple(parts)


def _parts_for(body_lines: list[str]) -> list[_Part]:
    """The parts a body needs, transitively, in file order (``enter`` always)."""
    _, parts = _lib_parts()
    by_name = {n: p for p in parts for n in p.names}
    wanted: set[int] = set()
    todo = [*_names_in(body_lines), "enter"]
    while todo:
        name = todo.pop()
        part = by_name.get(name)
        if part is None or id(part) in wanted:
            continue
        wanted.add(id(part))
        todo.extend(part.uses)
    return [p for p in parts if id(p) in wanted]


class _Text:
    """Generated Lua text with a record of where each line came from."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.segments: list[Segment] = []

    def add(self, lines: tuple[str, ...] | list[str], file: str, first: int) -> None:
        if lines:
            self.segments.append((len(self.lines) + 1, len(lines), file, first))
            self.lines.extend(lines)

    def line(self, text: str) -> None:
        self.lines.append(text)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


# The sixteen fixed names of a namespace script (keys.py, NamespaceKeys.fixed), as its
# header spells them, and the _lib.lua state each one is assigned to.
NAMESPACE_KEYS = (
    "meta", "acl", "stats", "idx", "lru", "exp", "events", "audit",
    "ops", "opst", "bell", "lease", "eph", "locks", "lockh", "lbell",
)  # fmt: skip


def _k_name(name: str) -> str:
    return "K_" + name.upper()


def _key_layout(fixed: tuple[str, ...]) -> str:
    """Lua that assigns a script's fixed key names when its header takes only some of the
    sixteen (each name a call passes costs the server ~1.2k instructions; read.lua needs
    7), and nil to the others, so that a name the script did not declare fails loudly
    instead of reaching a key of the call before. "" for the standard layout and for
    scripts outside a namespace (inbox, lanes, presence), which enter() handles."""
    if fixed[:16] == NAMESPACE_KEYS or not set(fixed) <= set(NAMESPACE_KEYS):
        return ""
    got = ", ".join(_k_name(k) for k in fixed)
    values = ", ".join(f"keys[{i + 1}]" for i in range(len(fixed)))
    rest = [_k_name(k) for k in NAMESPACE_KEYS if k not in fixed]
    line = f"{got} = {values} "
    if rest:
        line += f"{', '.join(rest)} = nil "
    return line


def _entry(text: _Text, name: str, body: list[str], fixed: tuple[str, ...]) -> None:
    # One line, so the body's lines keep a fixed offset; the body runs inside a function,
    # so its `return`s end the call and its locals are the call's own.
    layout = _key_layout(fixed)
    n_fixed = f", {len(fixed)}" if layout else ""
    text.line(
        f"local function sm_{name}(keys, args) {layout}"
        f"local refused = enter(keys, args{n_fixed}) if refused then return refused end"
    )
    text.add(body, f"{name}.lua", 1)
    text.line("end")


def _fixed_keys(body: list[str]) -> tuple[str, ...]:
    """The fixed key names a script's ``--! keys:`` header lists."""
    headers = dict(_HEADER.findall("\n".join(body)))
    return Signature.parse(headers.get("keys", "")).fixed


def _build_eval(name: str, body: list[str], fixed: tuple[str, ...]) -> _Text:
    state, _ = _lib_parts()
    text = _Text()
    # EVAL's KEYS and ARGV are globals; the library's state shadows them below.
    text.line("local sm_keys, sm_args = KEYS, ARGV")
    text.add(state, "_lib.lua", 1)
    for part in _parts_for(body):
        text.add(part.lines, "_lib.lua", part.first)
    _entry(text, name, body, fixed)
    text.line(f"return sm_{name}(sm_keys, sm_args)")
    return text


@cache
def load(name: str) -> Script:
    raw = _read(name)
    headers = dict(_HEADER.findall(raw))
    if "keys" not in headers or "args" not in headers or "returns" not in headers:
        raise RuntimeError(f"lua/{name}.lua lacks its --! keys / args / returns header")
    body = raw.split("\n")
    if body and body[-1] == "":
        body.pop()
    keys = Signature.parse(headers["keys"])
    text = _build_eval(name, body, keys.fixed)
    source = text.text()
    args = Signature.parse(headers["args"])
    if "agent" not in args.fixed:
        raise RuntimeError(f"lua/{name}.lua: its args header names no agent")
    return Script(
        name=name,
        source=source,
        sha=hashlib.sha1(source.encode("utf-8")).hexdigest(),
        keys=keys,
        args=args,
        returns=parse_returns(headers["returns"]),
        agent_arg=args.fixed.index("agent"),
        segments=tuple(text.segments),
        function=f"sm{library().tag}_{name}",
    )


@dataclass(frozen=True, slots=True)
class Library:
    """Every script as one Redis Functions library (see the module doc)."""

    name: str
    tag: str  # a hash of the library's Lua text: in its name and every function's
    source: str  # what FUNCTION LOAD takes, "#!lua name=..." first
    segments: tuple[Segment, ...]

    def locate(self, message: str) -> str:
        """An error message of an FCALL with its line numbers located."""
        return _locate(self.segments, message)


@cache
def library() -> Library:
    state, parts = _lib_parts()
    bodies = {}
    for name in SCRIPT_NAMES:
        body = _read(name).split("\n")
        if body and body[-1] == "":
            body.pop()
        bodies[name] = body
    text = _Text()
    text.line("")  # the "#!lua name=..." line, once the tag is known
    text.add(state, "_lib.lua", 1)
    for part in parts:
        text.add(part.lines, "_lib.lua", part.first)
    for name, body in bodies.items():
        _entry(text, name, body, _fixed_keys(body))
    code = text.text()
    tag = hashlib.sha1(code.encode("utf-8")).hexdigest()[:12]
    registrations = []
    for name in SCRIPT_NAMES:
        fn = f"sm{tag}_{name}"
        registrations.append(
            f'redis.register_function{{function_name="{fn}", callback=sm_{name}}}\n'
            f'redis.register_function{{function_name="{fn}_ro", callback=sm_{name}, '
            'flags={"no-writes"}}\n'
        )
    lib_name = f"swarm_memory_{tag}"
    source = f"#!lua name={lib_name}" + code + "".join(registrations)
    return Library(lib_name, tag, source, tuple(text.segments))


def all_scripts() -> dict[str, Script]:
    return {name: load(name) for name in SCRIPT_NAMES}

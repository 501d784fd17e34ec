"""Decoders of the records inside script replies: one shape per record, named fields.

Scripts answer flat arrays, and store compact records (netstrings, space-separated op
records). Each record kind has a :class:`~typing.NamedTuple` shape, read front to
back by :class:`Fields`, so no decoder computes positions: an entry is an
:class:`EntryRecord`, a written item an :class:`ItemRecord`, a lock holder a
``coord.HolderRecord``, and so on. A reply or record that ends early, or has fields left
over, raises :class:`MalformedReply` (a ``ValueError`` and a ``ServerError``), never an
``IndexError`` from deep inside a decoder; every loop is bounded by the data it reads.
Decoders of stored data run inside :func:`decoding`, which turns any failure into one
:class:`~swarm_memory.errors.CorruptData` naming the Redis key it came from.

The records here are the ones several areas read: entries, written items (the write
script serves entries, coordination and transactions) and op records; each is decoded
into the public models (``Entry``). An area's own reply shapes (an event, a lock record,
an inbox message) live with its flows, read with the same :class:`Fields`. The tags that
start each reply are ``replies.py``'s.
"""

from __future__ import annotations

import contextlib
import re
import zlib
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from swarm_memory import errors
from swarm_memory._ops.effects import Context
from swarm_memory.codec import JSON_FORMAT
from swarm_memory.models import (
    Entry,
    ms_to_datetime,
    new_entry,
)


class MalformedReply(errors.ServerError, ValueError):
    """A reply or stored record does not have the shape its decoder reads. Decoders of
    stored data turn it into :class:`~swarm_memory.errors.CorruptData` naming the key
    (:func:`decoding`); one that escapes is still a ServerError, never a bare ValueError."""


R = TypeVar("R", bound=tuple[Any, ...])


def text(raw: bytes | str | int) -> str:
    """A reply field as str (Redis sends bytes, or an int for a Lua number)."""
    if isinstance(raw, bytes):
        return raw.decode("utf-8")
    return str(raw)


MAX_PARTS = 1 << 20  # parts unpack() reads at most, whatever a record says


def unpack(packed: bytes, max_parts: int = MAX_PARTS) -> list[bytes]:
    """Inverse of ``pack`` in lua/_lib.lua (netstrings), bounded: every length is checked
    before use (digits only, within the record), so a corrupt record raises
    :class:`MalformedReply` instead of looping; each part advances past its colon."""
    if not isinstance(packed, bytes):
        raise MalformedReply(f"a packed record must be bytes, not {type(packed).__name__}")
    out: list[bytes] = []
    pos, end = 0, len(packed)
    while pos < end:
        colon = packed.find(b":", pos, pos + 12)
        digits = packed[pos:colon]
        if colon < 0 or not digits.isdigit():
            raise MalformedReply(f"a packed record has a malformed length at byte {pos}")
        stop = colon + 1 + int(digits)
        if stop > end:
            raise MalformedReply("a packed record's part runs past its end")
        if len(out) >= max_parts:
            raise MalformedReply(f"a packed record has more than {max_parts} parts")
        out.append(packed[colon + 1 : stop])
        pos = stop
    return out


# What decoding stored data can raise besides MalformedReply (a ValueError): bad numbers
# and text (ValueError, UnicodeDecodeError), a value its codec refuses (the codec's
# ValueError / InvalidInput, zlib.error), a missing field (LookupError), a nested reply
# where a field belongs (TypeError), a time out of range (OverflowError), a value nested
# past the recursion limit (RecursionError: json's and msgspec's decoders recurse; a
# write is refused far below that depth, Settings.max_depth).
DECODE_ERRORS = (ValueError, TypeError, LookupError, OverflowError, RecursionError, zlib.error)


def corrupt(key: str | None, problem: str, **ctx: Any) -> errors.CorruptData:
    """The error for data at Redis key ``key`` that does not parse."""
    return errors.CorruptData(
        f"corrupt data at {key}: {problem}"[:500], key=key, problem=problem[:300], **ctx
    )


def corrupt_from(key: str | None, exc: BaseException, **ctx: Any) -> errors.CorruptData:
    """The error for ``exc``, one of :data:`DECODE_ERRORS`, raised decoding ``key``."""
    return corrupt(key, f"{type(exc).__name__}: {exc}", **ctx)


@contextlib.contextmanager
def decoding(key: str | None, **ctx: Any) -> Iterator[None]:
    """Decode stored data from ``key``: any decoding failure inside is one
    :class:`~swarm_memory.errors.CorruptData` naming it (``ctx``: namespace, agent).
    (The per-entry decoders, run for every entry of a get_many or put_many, catch
    DECODE_ERRORS themselves: the same error, without a context manager per entry.)"""
    try:
        yield
    except DECODE_ERRORS as exc:
        raise corrupt_from(key, exc, **ctx) from exc


class Fields:
    """A reply (or a record) read front to back, one field or one record at a time.
    ``tag`` is the reply's tag when the fields follow one (``Replies.check``)."""

    __slots__ = ("_items", "_pos", "tag")

    def __init__(self, items: Sequence[Any], start: int = 0, tag: bytes = b"") -> None:
        self._items = items
        self._pos = start
        self.tag = tag

    def __len__(self) -> int:
        """Fields not read yet."""
        return len(self._items) - self._pos

    def next(self) -> Any:
        if self._pos >= len(self._items):
            raise MalformedReply(f"reply ends after {self._pos} fields")
        self._pos += 1
        return self._items[self._pos - 1]

    def peek(self) -> Any:
        return self._items[self._pos] if self._pos < len(self._items) else None

    def number(self) -> int:
        raw = self.next()
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise MalformedReply(f"not an integer: {raw!r:.40}") from None

    def string(self) -> str:
        return text(self.next())

    def take(self, n: int) -> list[Any]:
        if not 0 <= n <= len(self):
            raise MalformedReply(f"reply has {len(self)} fields left, not {n}")
        self._pos += n
        return list(self._items[self._pos - n : self._pos])

    def record(self, shape: type[R]) -> R:
        """The next record of ``shape`` (a NamedTuple: as many fields as it names)."""
        fields: tuple[str, ...] = shape._fields  # type: ignore[attr-defined]
        made: R = shape._make(self.take(len(fields)))  # type: ignore[attr-defined]
        return made

    def records(self, shape: type[R]) -> list[R]:
        """Records of ``shape`` up to the end."""
        width = len(shape._fields)  # type: ignore[attr-defined]
        if len(self) % width:
            raise MalformedReply(f"{len(self)} fields do not make whole {shape.__name__}s")
        return [self.record(shape) for _ in range(len(self) // width)]

    def strings(self, n: int | None = None) -> list[str]:
        """The next ``n`` fields (default: the rest) as str."""
        return [text(x) for x in self.take(len(self) if n is None else n)]

    def rest(self) -> list[Any]:
        return self.take(len(self))

    def end(self) -> None:
        if len(self):
            raise MalformedReply(f"{len(self)} unexpected fields at the end of the reply")


def pairs(flat: Sequence[Any]) -> dict[str, Any]:
    """A flat ``[name, value, ...]`` list (HGETALL, stream entry fields) as a dict; the
    values stay as sent."""
    if len(flat) % 2:
        raise MalformedReply("a field list of odd length")
    return {text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}


class StreamEntry(NamedTuple):
    """A Redis stream entry: ``[id, [name, value, ...]]`` (events, audit, messages)."""

    id: bytes
    fields: list[Any]


# ---------------------------------------------------------------------------- entries
class EntryRecord(NamedTuple):
    """An entry as the scripts send it (``entry_fields`` in lua/_lib.lua); a lone ``""``
    in its place means the key is absent."""

    version: Any
    create_revision: Any
    mod_revision: Any
    created_ms: Any
    updated_ms: Any
    expires_ms: Any
    updated_by: Any
    fmt: Any
    value: bytes


class HistoryMeta(NamedTuple):
    """The metadata of one kept old version (its ``m<version>`` history field, packed)."""

    create_revision: bytes
    mod_revision: bytes
    created_ms: bytes
    updated_ms: bytes
    expires_ms: bytes
    updated_by: bytes
    fmt: bytes


ABSENT = b""


_MAX_EXACT = 1 << 53
_INT_TEXT = re.compile(rb"-?[0-9]{1,17}")
_MAX_DIGITS = 15  # below 2^53 whatever the digits (2^53 has 16)


def _stored_int(value: Any) -> int:
    """An integer from a reply: a RESP integer, or stored text that is one (digits, an
    optional minus, below 2^53 — what the scripts' stored_int accepts, spelled plainly)."""
    if isinstance(value, int):
        return value
    # The common case first: a few ASCII digits (bytes.isdigit is ASCII-only).
    if type(value) is bytes and 0 < len(value) <= _MAX_DIGITS and value.isdigit():
        return int(value)
    if not isinstance(value, bytes) or not _INT_TEXT.fullmatch(value):
        raise ValueError(f"not a stored integer: {value!r:.40}")
    n = int(value)
    if not -_MAX_EXACT < n < _MAX_EXACT:
        raise ValueError(f"integer out of range: {n}")
    return n


# Reply fields that were server times, as they came (an int or the stored text), with
# their datetimes: an entry's times repeat (a hot key read again, an update keeping its
# creation time), and a hit skips the parse and the conversion (~0.25 µs each). Only
# fields that parsed are kept, so a hit is what parsing would return; a bad field still
# raises. Bounded; dict reads and writes are atomic under the GIL.
_TIMES: dict[Any, datetime] = {}
_TIMES_MAX = 512


def _time(raw: Any) -> datetime:
    # Only ints and bytes are kept: a float or a bool equal to a kept int must still be
    # refused by _stored_int.
    found = _TIMES.get(raw) if type(raw) is int or type(raw) is bytes else None
    if found is None:
        found = ms_to_datetime(_stored_int(raw))
        if len(_TIMES) >= _TIMES_MAX:
            _TIMES.clear()
        _TIMES[raw] = found  # parsed: an int or bytes
    return found


def times(created_ms: Any, updated_ms: Any) -> tuple[datetime, datetime]:
    # An entry written once was created when it was updated: one conversion serves both.
    updated = _time(updated_ms)
    if created_ms == updated_ms:
        return updated, updated
    return _time(created_ms), updated


_NO_EXPIRY = (0, b"0")  # how the scripts send "no expiry" (a number, or stored text)


def _expiry(expires_ms: Any) -> datetime | None:
    if (type(expires_ms) is int or type(expires_ms) is bytes) and expires_ms in _NO_EXPIRY:
        return None  # what parsing 0 returns, without the parse
    x = _stored_int(expires_ms)
    return ms_to_datetime(x) if x > 0 else None


def entry(ctx: Context, key: str, rec: EntryRecord) -> Entry:
    # Numbers come as integers or, from a get, as the stored text (lua/get.lua): both
    # parsed strictly here, inside decoding() (a bad one is CorruptData naming the key).
    version = _stored_int(rec.version)
    if version < 1:
        raise ValueError(f"version {version} < 1")
    created, updated = times(rec.created_ms, rec.updated_ms)
    return new_entry(
        key,
        ctx.codec.decode(rec.value, text(rec.fmt)),
        version,
        _stored_int(rec.create_revision),
        _stored_int(rec.mod_revision),
        created,
        updated,
        text(rec.updated_by),
        _expiry(rec.expires_ms),
        len(rec.value),
    )


def maybe_entry(ctx: Context, key: str, f: Fields) -> Entry | None:
    """The next entry record, or None for the absent marker."""
    if f.peek() == ABSENT:
        f.next()
        return None
    try:
        return entry(ctx, key, f.record(EntryRecord))
    except DECODE_ERRORS as exc:
        raise corrupt_from(ctx.keys.entry(key), exc, **ctx.err()) from exc


_PACKED_PARTS = 8  # ver cr mr ct mt x by f
_JSON = JSON_FORMAT.encode()


def packed_entry(ctx: Context, key: str, f: Fields) -> Entry | None:
    """The next entry as a get sends it (lua/get.lua): its stored metadata, packed
    ("<ver> <cr> <mr> <ct> <mt> <x> <by> <f>", lua/_lib.lua read_entry), then its value;
    or the absent marker. An empty <mr>, <mt> or <f> is the shorthand lua/_lib.lua
    entry_meta writes for <cr>, <ct> and "json". Parsed strictly: CorruptData naming the
    key (the script sends "m" as stored, unread where the namespace has no expiry index:
    this is its check)."""
    m = f.next()
    if m == ABSENT:
        return None
    try:
        parts = m.split(b" ", _PACKED_PARTS - 1) if isinstance(m, bytes) else []
        if len(parts) != _PACKED_PARTS or not parts[6]:
            raise ValueError(f"packed entry metadata is not {_PACKED_PARTS} parts: {m!r:.60}")
        ver, cr, mr, ct, mt, x, by, fmt = parts
        if not mr:
            mr = cr
        if not mt:
            mt = ct
        if not fmt:
            fmt = _JSON
        return entry(ctx, key, EntryRecord(ver, cr, mr, ct, mt, x, by, fmt, f.next()))
    except DECODE_ERRORS as exc:
        raise corrupt_from(ctx.keys.entry(key), exc, **ctx.err()) from exc


def entries(ctx: Context, keys: list[str], f: Fields) -> dict[str, Entry | None]:
    """One packed entry or absent marker per key, in order (a get's reply)."""
    out = {key: packed_entry(ctx, key, f) for key in keys}
    f.end()
    return out


def history_entry(ctx: Context, key: str, version: int, meta: bytes, value: bytes) -> Entry:
    m = Fields(unpack(meta)).record(HistoryMeta)
    return entry(ctx, key, EntryRecord(version, *m, value))


class KeptVersion(NamedTuple):
    """An old version as read.lua's "version" action sends it."""

    version: Any
    meta: bytes
    value: bytes


def version_entry(ctx: Context, key: str, f: Fields) -> Entry | None:
    """The "version" reply: absent, the current entry (when it is that version), or a
    kept old version."""
    if f.peek() == ABSENT or len(f) == len(EntryRecord._fields):
        return maybe_entry(ctx, key, f)
    with decoding(ctx.keys.history(key), **ctx.err()):
        kept = f.record(KeptVersion)
        return history_entry(ctx, key, int(kept.version), kept.meta, kept.value)


def history(ctx: Context, key: str, f: Fields) -> list[Entry]:
    """The current entry, then the kept versions' HGETALL, newest first."""
    current = maybe_entry(ctx, key, f)
    if current is None:
        return []
    with decoding(ctx.keys.history(key), **ctx.err()):
        rest = f.rest()
        if len(rest) % 2:
            raise MalformedReply("a field list of odd length")
        kept = dict(zip(rest[::2], rest[1::2], strict=True))
        versions = sorted((int(name[1:]) for name in kept if name.startswith(b"m")), reverse=True)
        return [current] + [
            history_entry(ctx, key, ver, kept[b"m%d" % ver], kept[b"v%d" % ver]) for ver in versions
        ]


# -------------------------------------------------------------------- written items
class ItemRecord(NamedTuple):
    """One written item of a write reply (or of its op record when replayed)."""

    status: str  # w (written) d (deleted) t (touched) a (absent) c (compared)
    version: Any
    create_revision: Any
    mod_revision: Any
    created_ms: Any
    updated_ms: Any
    expires_ms: Any
    size: Any
    value: bytes  # set when the server computed the value (merge, incr), else ""
    fmt: Any


def item_record(f: Fields) -> ItemRecord:
    fields = f.take(len(ItemRecord._fields))
    fields[0] = text(fields[0])  # the status
    return ItemRecord._make(fields)


def item_entry(ctx: Context, key: str, source: Any, rec: ItemRecord) -> Entry:
    """The entry a write left: the server's value if it sent one, else ``source`` (the
    caller's value). A server value that does not decode (a merge into a stored value
    that was not the JSON its format says) is CorruptData naming the entry."""
    try:
        return _item_entry(ctx, key, source, rec)
    except DECODE_ERRORS as exc:
        raise corrupt_from(ctx.keys.entry(key), exc, **ctx.err()) from exc


def _item_entry(ctx: Context, key: str, source: Any, rec: ItemRecord) -> Entry:
    value = ctx.codec.decode(rec.value, text(rec.fmt)) if rec.value else source
    created, updated = times(rec.created_ms, rec.updated_ms)
    return new_entry(
        key,
        value,
        int(rec.version),
        int(rec.create_revision),
        int(rec.mod_revision),
        created,
        updated,
        ctx.agent,
        _expiry(rec.expires_ms),
        int(rec.size),
    )


class WriteResult(NamedTuple):
    revision: int
    sweep_due: bool
    items: list[ItemRecord]
    evicted: list[str]
    replayed: bool
    digest: str


def write_ok(f: Fields, *, sweep_due: bool | None = None, digest: str | None = None) -> WriteResult:
    """``rev sweep_due n_items ItemRecord... n_evicted name...``: the write script's "ok"
    reply after its tag, or the body of a packed op record (``digest`` read before it)."""
    if digest is None and sweep_due is None:
        fast = _write_ok_fast(f)
        if fast is not None:
            return fast
    revision = f.number()
    due = f.next() != 0
    items = [item_record(f) for _ in range(f.number())]
    n_evicted = f.number()
    evicted = f.strings(n_evicted) if n_evicted else []  # none, almost always
    replayed = digest is not None
    due = due if sweep_due is None else sweep_due
    return WriteResult(revision, due, items, evicted, replayed, digest or "")


_ITEM_WIDTH = len(ItemRecord._fields)
_OK_COUNTS = 4  # rev, sweep_due, n_items, n_evicted: an "ok" without items


def _write_ok_fast(f: Fields) -> WriteResult | None:
    """:func:`write_ok` of a write's own reply, read by index (~0.6 µs, against ~2 µs
    through a method call per field) when its counts are RESP integers, as the script
    sends them, its items all there and nothing evicted; else None, and the general
    reader decodes (or refuses) it. Either way the same result, and ``f`` read as far."""
    r, p = f._items, f._pos
    if len(r) - p < _OK_COUNTS:
        return None
    revision, due, n = r[p], r[p + 1], r[p + 2]
    if type(revision) is not int or type(n) is not int or n < 0:
        return None
    end = p + 3 + n * _ITEM_WIDTH
    if end >= len(r):
        return None
    n_evicted = r[end]
    if type(n_evicted) is not int or n_evicted != 0:
        return None
    items = [
        ItemRecord(text(r[q]), *r[q + 1 : q + _ITEM_WIDTH]) for q in range(p + 3, end, _ITEM_WIDTH)
    ]
    f._pos = end + 1
    return WriteResult(revision, due != 0, items, [], False, "")


class CompactHead(NamedTuple):
    """``w1 <digest|-> <rev> <now> <n_items> <n_evicted> <n_values>`` (lua/write.lua)."""

    tag: bytes
    digest: bytes
    revision: bytes
    now_ms: bytes
    n_items: bytes
    n_evicted: bytes
    n_values: bytes


class CompactWritten(NamedTuple):
    """A written item in a compact op record: its mod revision and time are the record's."""

    status: bytes  # b"w"
    version: bytes
    create_revision: bytes
    created_ms: bytes
    expires_ms: bytes
    size: bytes


class CompactItem(NamedTuple):
    """Any other item in a compact op record."""

    status: bytes
    version: bytes
    create_revision: bytes
    mod_revision: bytes
    created_ms: bytes
    updated_ms: bytes
    expires_ms: bytes
    size: bytes


class EchoedValue(NamedTuple):
    """A value a CAS write echoed into its op record, for item number ``item``."""

    item: bytes
    value: bytes
    fmt: bytes


_COMPACT = b"w1 "


def parse_op_record(record: bytes, sweep_due: bool) -> WriteResult | None:
    """The first outcome of a replayed op id, rebuilt from its op record (the compact
    format lua/write.lua stores, or the packed reply earlier versions stored). None for
    a record this request cannot have written (another script's, e.g. a broadcast).
    A write's record that does not parse raises MalformedReply (or another of
    DECODE_ERRORS): the caller names the op records' key."""
    if not isinstance(record, bytes):
        raise MalformedReply(f"an op record must be bytes, not {type(record).__name__}")
    if record.startswith(_COMPACT):
        return _parse_compact_record(record, sweep_due)
    if record[:1].isdigit() and b":" in record:
        return _parse_packed_record(record, sweep_due)
    return None


def _parse_compact_record(record: bytes, sweep_due: bool) -> WriteResult:
    raw_head, _, rest = record.partition(b"|")
    head_fields = Fields(raw_head.split(b" "))
    head = head_fields.record(CompactHead)
    head_fields.end()
    n, n_values = int(head.n_items), int(head.n_values)
    if not 0 <= n <= MAX_PARTS or not 0 <= n_values <= n:
        raise MalformedReply("an op record's counts are out of range")
    parts = rest.split(b"|", n)
    tail = Fields(unpack(parts[n]) if len(parts) > n and parts[n] else [])
    echoed = {int(v.item): v for v in (tail.record(EchoedValue) for _ in range(n_values))}
    items = []
    if len(parts) < n:
        raise MalformedReply(f"an op record lists {len(parts)} of its {n} items")
    for i, raw in enumerate(parts[:n], 1):
        f = raw.split(b" ")
        if f[0] == b"w":
            w = Fields(f).record(CompactWritten)
            v = echoed.get(i)
            items.append(
                ItemRecord(
                    "w",
                    w.version,
                    w.create_revision,
                    head.revision,
                    w.created_ms,
                    head.now_ms,
                    w.expires_ms,
                    w.size,
                    v.value if v else b"",
                    v.fmt if v else b"",
                )
            )
        elif len(f) == len(CompactItem._fields):
            c = CompactItem._make(f)
            items.append(ItemRecord(text(c.status), *c[1:], b"", b""))
        else:
            raise MalformedReply("malformed op record item")
    digest = "" if head.digest == b"-" else text(head.digest)
    return WriteResult(int(head.revision), sweep_due, items, tail.strings(), True, digest)


def _parse_packed_record(record: bytes, sweep_due: bool) -> WriteResult:
    # The whole first reply, netstring-packed: digest, then the "ok" reply's body.
    f = Fields(unpack(record))
    digest = f.string()
    return write_ok(f, sweep_due=sweep_due, digest=digest)

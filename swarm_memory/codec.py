"""Value encoding: JSON by default (never pickle), size/depth limits, optional zlib.

An encoded value travels with a short *format tag* stored next to it in Redis:
``<codec name>`` or ``<codec name>+z`` when zlib-compressed. Redis never decodes user
JSON (DESIGN.md decision 9): server-side merges operate on the encoded text, and only
the plain ``json`` format (never compressed) is eligible for them.
"""

from __future__ import annotations

import json
import json.encoder
import json.scanner
import math
import sys
import threading
import zlib
from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol, runtime_checkable

import msgspec

from swarm_memory.errors import InvalidOption, InvalidValue

JSON_FORMAT = "json"
_COMPRESSED = "+z"


@runtime_checkable
class Codec(Protocol):
    """A value codec. ``name`` is stored with every value it encodes."""

    name: str

    def encode(self, value: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...


class JsonCodec:
    """Strict JSON: no NaN/inf, no sets/bytes/objects; compact, UTF-8, key order kept."""

    name = JSON_FORMAT

    # One encoder for every call: json.dumps with options builds a new JSONEncoder each
    # time. Same options, same bytes.
    _encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    # For plain values (encode_checked). msgspec's encoders and decoders are thread-safe
    # since 0.15: one of each for every thread.
    _msgspec_encoder = msgspec.json.Encoder()

    def encode(self, value: Any) -> bytes:
        text = _encode_text(self._encoder, value)
        # After encoding: the encoder has refused cycles and non-JSON types by now, so
        # the walk needs no depth bound. Keys that are not strings raise TypeError.
        check_value(value, sys.maxsize)
        return text.encode("utf-8")

    def encode_checked(self, value: Any, plain: bool = False) -> bytes:
        """:meth:`encode` of a value whose object keys are known to be strings (checked
        by :func:`check_value`): the same bytes without a second walk over it.

        ``plain``: check_value found the value plain (see :func:`check_value`). Such a
        value is written by msgspec's encoder, in about a tenth of the time (a 4-member
        object, timeit: 0.22 against 1.98 µs), to the very bytes json writes:
        tests/unit/test_json_encode.py compares the two over generated values. Outside
        plain values they differ (msgspec writes ``1e16`` for json's ``1e+16``, NaN as
        ``null``, and encodes sets, bytes, dates and more that json refuses), so anything
        else, and anything msgspec raises on, is json's."""
        if plain:
            try:
                return self._msgspec_encoder.encode(value)
            except (TypeError, ValueError, OverflowError, RecursionError):
                pass  # json's own path: its bytes, or its error
        return _encode_text(self._encoder, value).encode("utf-8")

    # msgspec's decoder first: what it accepts, it reads in about a third of the time
    # (a 32-member object, timeit: 2.1 against 6.2 µs) and into what json.loads gives
    # (the same types and floats, integers of any size, the last of a repeated key in the
    # first one's place: tests/unit/test_json_decode.py compares the two over texts of
    # every kind, malformed ones included). What it refuses (NaN, Infinity, a float out of
    # range, a lone surrogate, a BOM, bad UTF-8, nesting past the recursion limit) takes
    # json's path below, so the error, or the value json allows there, is json.loads' own.
    _msgspec_decoder = msgspec.json.Decoder()
    _decoder = json.JSONDecoder()
    # One value at an index -> (value, end): the scanner decode() runs, made the same way
    # (json.decoder passes the decoder too; typeshed names the context's type oddly).
    _scan = json.scanner.make_scanner(_decoder)  # type: ignore[arg-type]

    def decode(self, data: bytes) -> Any:
        try:
            return self._msgspec_decoder.decode(data)
        except (msgspec.DecodeError, ValueError, RecursionError):
            pass
        # Our encoder writes UTF-8 without a BOM: decode that directly (json.loads sniffs
        # the encoding of every bytes value); anything else takes json.loads' own path,
        # so the result (or the error) is exactly json.loads'.
        try:
            text = data.decode("utf-8")
            # What we write is one value filling the text, no whitespace around it: the
            # scanner alone reads that, as decode() would (it only skips whitespace
            # around the scan). Anything else (whitespace, trailing data) is decode()'s.
            try:
                value, end = self._scan(text, 0)
            except StopIteration:  # no value at 0: whitespace first, or not JSON
                end = -1
            if end == len(text):
                return value
            return self._decoder.decode(text)
        except (ValueError, AttributeError):  # UnicodeDecodeError is a ValueError
            return json.loads(data)


# JSONEncoder.encode builds its C encoder (c_make_encoder) on every call: ~0.9 of its
# ~2.1 µs for a small object (timeit, this VM). Each thread keeps one, built with the
# options encode() would pass it (ensure_ascii=False: encode_basestring; compact
# separators; keys in order; allow_nan=False), and its own cycle markers, which a failed
# encode can leave filled: they are cleared then. Without the C accelerator (another
# Python), JSONEncoder.encode itself.
_threads = threading.local()


def _encode_text(encoder: json.JSONEncoder, value: Any) -> str:
    make = getattr(json.encoder, "c_make_encoder", None)  # not in typeshed
    if make is None or encoder is not JsonCodec._encoder:
        return encoder.encode(value)
    try:
        c_encode, markers = _threads.json
    except AttributeError:
        markers = {}
        c_encode = make(
            markers,
            encoder.default,
            json.encoder.encode_basestring,
            None,
            ":",
            ",",
            False,
            False,
            False,
        )
        _threads.json = (c_encode, markers)
    try:
        return "".join(c_encode(value, 0))
    except BaseException:
        markers.clear()
        raise


def check_depth(value: Any, max_depth: int) -> None:
    """Raise :class:`InvalidValue` if containers nest deeper than ``max_depth``.

    Iterative, so a hostile million-deep list cannot hit Python's recursion limit here;
    it also catches cycles (a cycle is infinitely deep).
    """
    _walk(value, max_depth, False)


def check_value(value: Any, max_depth: int) -> bool:
    """:func:`check_depth`, and a TypeError for an object key that is not a string, in
    one walk (what encoding a value with the JSON codec checks first).

    ``json`` writes ``1``, ``1.5``, ``True`` and ``None`` keys as ``"1"``, ``"1.5"``,
    ``"true"``, ``"null"``: the value read back would have other keys than the one
    written, so such a value is refused instead of silently changed.

    Returns whether the value is *plain*: only dicts with str keys, lists, str, int,
    bool, None, and floats json writes without an exponent (0, and 1e-4 <= |x| < 1e16),
    every one of exactly that type (no subclass). msgspec writes those to json's bytes
    (:meth:`JsonCodec.encode_checked`)."""
    return _walk(value, max_depth, True)


def _walk(value: Any, max_depth: int, string_keys: bool) -> bool:
    # Level by level over containers; a scalar costs a type check (a float two compares).
    # Returns whether the value is plain (check_value); the checks never depend on it.
    t = type(value)
    if t in _SCALARS:
        return t is not float or _plain_float(value)
    if not _is_container(value):
        return False
    plain = True
    level = [value]
    depth = 1
    while level:
        if depth > max_depth:
            raise InvalidValue(
                f"value nests deeper than the limit of {max_depth}", field="value", value=depth
            )
        below: list[Any] = []
        for item in level:
            t = type(item)
            if t is list:
                children = item
            elif not (t is dict or isinstance(item, Mapping)):  # dict: no ABC check
                children, plain = item, False  # a tuple: json writes a list, msgspec too
            elif not string_keys:
                children = item.values()
            else:
                plain = plain and t is dict
                children = []  # one pass over the items: keys checked, children kept
                for key, child in item.items():
                    if type(key) is not str:
                        if not isinstance(key, str):
                            raise TypeError(
                                f"object keys must be strings, got {type(key).__name__} key "
                                f"{key!r} (JSON would store it as a string)"
                            )
                        plain = False
                    t = type(child)
                    if t not in _SCALARS:
                        children.append(child)
                    elif t is float and not _plain_float(child):
                        plain = False
            for child in children:
                t = type(child)
                if t in _SCALARS:
                    if t is float and not _plain_float(child):
                        plain = False
                elif _is_container(child):
                    below.append(child)
                else:
                    plain = False  # json decides: an error, or its default
        level = below
        depth += 1
    return plain


def _plain_float(x: float) -> bool:
    # NaN and the infinities fail both compares (json refuses them).
    return _FIXED_MIN <= abs(x) < _FIXED_END or x == 0.0


# repr(), json's float text, writes an exponent below 1e-4 and from 1e16 on.
_FIXED_MIN, _FIXED_END = 1e-4, 1e16


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _is_container(value: Any) -> bool:
    # The plain types first: an isinstance check against the Mapping ABC is slower.
    return type(value) in _PLAIN_CONTAINERS or isinstance(value, Mapping | list | tuple)


_PLAIN_CONTAINERS = frozenset({dict, list, tuple})


def _reject_non_finite(value: Any) -> None:
    # json.dumps(allow_nan=False) catches these too; this gives a clearer message.
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidValue(f"{value!r} is not valid JSON", field="value", value=repr(value))


class Encoded(NamedTuple):
    """An encoded value and its format tag. (A named tuple: built once per value
    written, at about half a frozen dataclass's cost.)"""

    data: bytes
    fmt: str

    @property
    def size(self) -> int:
        return len(self.data)


class ValueCodec:
    """Applies a :class:`Codec`, the limits, and compression; decodes by format tag."""

    def __init__(
        self,
        codec: Codec | None = None,
        *,
        max_bytes: int,
        max_depth: int,
        compress_threshold: int,
        extra: Mapping[str, Codec] | None = None,
    ) -> None:
        self.codec: Codec = codec or JsonCodec()
        if not isinstance(self.codec, Codec) or not self.codec.name or "+" in self.codec.name:
            raise InvalidOption("codec must have a name without '+'", field="codec", value=codec)
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        self.compress_threshold = compress_threshold
        self._by_name: dict[str, Codec] = {JSON_FORMAT: JsonCodec(), self.codec.name: self.codec}
        if extra:
            self._by_name.update(extra)

    def encode(self, value: Any, *, allow_compress: bool = True) -> Encoded:
        """Encode ``value``; raise :class:`InvalidValue` on anything the codec rejects."""
        _reject_non_finite(value)
        codec = self.codec
        # The default codec: its checks in one walk (check_value), then its encoder alone.
        json_codec = codec if type(codec) is JsonCodec else None
        plain = False
        if json_codec is None:
            check_depth(value, self.max_depth)
        else:
            try:
                plain = check_value(value, self.max_depth)
            except TypeError as exc:  # a key that is not a string
                raise InvalidValue(
                    f"value is not encodable with the {codec.name!r} codec: {exc}",
                    field="value",
                    value=type(value).__name__,
                ) from exc
        try:
            data = (
                codec.encode(value)
                if json_codec is None
                else json_codec.encode_checked(value, plain)
            )
        except RecursionError as exc:
            raise InvalidValue("value nests too deeply to encode", field="value") from exc
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidValue(
                f"value is not encodable with the {self.codec.name!r} codec: {exc}",
                field="value",
                value=type(value).__name__,
            ) from exc
        if not isinstance(data, bytes):
            raise InvalidValue("codec returned non-bytes", field="value")
        fmt = self.codec.name
        if allow_compress and self.compress_threshold and len(data) > self.compress_threshold:
            packed = zlib.compress(data, 6)
            if len(packed) < len(data):
                data, fmt = packed, fmt + _COMPRESSED
        if len(data) > self.max_bytes:
            raise InvalidValue(
                f"encoded value is {len(data)} bytes, above the limit of {self.max_bytes}",
                field="value",
                value=len(data),
            )
        return Encoded(data, fmt)

    def decode(self, data: bytes, fmt: str) -> Any:
        name, compressed = (
            (fmt[: -len(_COMPRESSED)], True)
            if fmt.endswith(_COMPRESSED)
            else (
                fmt,
                False,
            )
        )
        codec = self._by_name.get(name)
        if codec is None:
            raise InvalidOption(
                f"stored value uses codec {name!r}, which this client does not know",
                field="codec",
                value=name,
            )
        if compressed:
            data = zlib.decompress(data)
        return codec.decode(data)

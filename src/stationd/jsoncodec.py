"""JSON on the ingest hot path: orjson (several times faster than the stdlib,
measured in docs/performance.rst), with the stdlib for what orjson refuses
or reads differently (integers beyond 64 bits).  Encoding, both give the same
bytes for the same value: compact, UTF-8, keys sorted when asked; decoding,
the same value (or the stdlib's error).

Decoding refuses what the stdlib would read but the store could not keep as
it was sent: a number beyond a double's range (``1e400``, which the stdlib
reads as infinity and encoders then write as ``null`` or ``Infinity``:
NumberOutOfRange) and nesting deeper than MAX_DEPTH levels (TooDeep; deeper
still, the stdlib's recursion would fail anywhere a value is walked)."""

import codecs
import hashlib
import json
import math
from typing import Any

import orjson

# json.loads reads UTF-16 and UTF-32 bodies too (json.detect_encoding): their codecs are looked up
# (imported) now, not while the first such body is decoded (the decoder fuzzing forbids imports).
for _encoding in ("utf-16", "utf-16-be", "utf-16-le", "utf-32", "utf-32-be", "utf-32-le"):
    codecs.lookup(_encoding)


# How deeply a JSON body may nest (a value that is a list or an object is one
# level, each list or object in it one more).  Event data nests at most
# DATA_DEPTH levels, so that an event's data inside an import body
# ({"events": [{"data": ..., "files": [{"meta": ...}]}]}, 5 levels more)
# stays within MAX_DEPTH on the node it is exported to.
MAX_DEPTH = 128
DATA_DEPTH = MAX_DEPTH - 8


class TooDeep(ValueError):
    """A JSON value nests deeper than allowed."""


class NumberOutOfRange(ValueError):
    """A JSON number beyond what a double holds (its nearest double would be infinite)."""


def dumps(value, sort_keys=False):
    """Compact UTF-8 JSON bytes."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else 0)
    except TypeError:
        try:
            return json.dumps(value, sort_keys=sort_keys, separators=(",", ":"),
                              ensure_ascii=False).encode("utf-8")
        except RecursionError:
            raise TooDeep("the value nests too deeply to encode as JSON") from None


def dumps_text(value):
    """For SQLAlchemy's JSON columns, which want str."""
    return dumps(value).decode("utf-8")


# Digits as "0": a run of 20 zeros, or "-" and 19, may be an integer beyond
# 64 bits, which orjson reads as a float, silently.  ("-" is not one of the
# digits: "8827-3478-4038-9856-" is a run in many a UUID.)
_DIGITS = bytes.maketrans(b"123456789", b"0" * 9)
_LONG, _LONG_NEGATIVE = b"0" * 20, b"-" + b"0" * 19


def finite_float(text):
    """float(text) for json.loads(parse_float=...): NumberOutOfRange where that is infinite."""
    value = float(text)
    if math.isinf(value):
        raise NumberOutOfRange(f"the number {text[:40]}{'...' if len(text) > 40 else ''} is out of range "
                               "(beyond about 1.8e308, the largest a double holds)")
    return value


def depth(value, limit=MAX_DEPTH):
    """How deeply ``value`` nests (0 for a scalar), counted up to ``limit + 1`` at most; no recursion."""
    level, found = [value] if type(value) in (dict, list) else [], 0
    while level and found <= limit:
        found += 1
        below = []
        for item in level:
            for inner in (item.values() if type(item) is dict else item):
                kind = type(inner)
                if kind is dict or kind is list:
                    below.append(inner)
        level = below
    return found


def check_depth(value, limit=MAX_DEPTH, what="the JSON body"):
    """``value``, or TooDeep if it nests deeper than ``limit`` levels."""
    if depth(value, limit) > limit:
        raise TooDeep(f"{what} nests deeper than {limit} levels")
    return value


def loads(data, parse_constant=None, max_depth=MAX_DEPTH):
    """A value from JSON bytes, as ``json.loads(data, parse_constant=...)`` gives it; TooDeep if it
    nests deeper than ``max_depth``, NumberOutOfRange for a number beyond a double (both ValueError).

    orjson reads integers from -2**63 to 2**64 - 1 exactly and bigger ones
    as floats: bodies with a run of 20 digits, or of 19 after a "-" (in a
    number or not), go to the stdlib, and so does whatever orjson refuses
    (invalid JSON, NaN, 1e400, lone surrogates, UTF-16, a BOM): the stdlib's
    value or its ValueError, as before.  The scan costs about a fifth of
    orjson's decoding; the stdlib takes three times as long as orjson.
    The depth is walked only when the body has more brackets than
    ``max_depth`` (about 0.6 us an event of a 100-event batch).
    """
    value, decoded = None, False
    if isinstance(data, bytes):
        digits = data.translate(_DIGITS)
        if _LONG not in digits and _LONG_NEGATIVE not in digits:
            try:
                value, decoded = orjson.loads(data), True  # (orjson refuses 1e400 and beyond 1024 levels)
            except orjson.JSONDecodeError:
                pass
    if not decoded:
        try:
            value = json.loads(data, parse_constant=parse_constant, parse_float=finite_float)
        except RecursionError:
            raise TooDeep(f"the JSON body nests deeper than {max_depth} levels") from None
    brackets = (data.count(b"[") + data.count(b"{")) if isinstance(data, bytes) else (
        data.count("[") + data.count("{"))
    if brackets > max_depth:
        check_depth(value, max_depth)
    return value


# PostgreSQL cannot keep U+0000 in jsonb text: such an event would be
# acknowledged and then refused by the store (or by an upstream node on
# PostgreSQL), so it is refused at ingest, on every backend alike.
NUL_MESSAGE = "data holds a NUL character (U+0000), which the store cannot keep"


def has_nul(data: Any) -> bool:
    # The JSON text shows a NUL as \u0000: one fast scan; the walk settles the
    # rare text that only looks like one (a backslash, then "u0000").
    return b"\\u0000" in dumps(data) and _walk_nul(data)


def _walk_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_walk_nul(k) or _walk_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_walk_nul(v) for v in value)
    return False


def canonical(data: dict[str, Any]) -> tuple[str, str]:
    """(the JSON text of ``data``, compact with keys sorted, and its SHA-256 hex digest): one
    encoding serves the digest (with station, type and time the natural key), the NUL check
    and the stored text.  ValueError if it holds a NUL."""
    text = dumps(data, sort_keys=True)
    if b"\\u0000" in text and _walk_nul(data):
        raise ValueError(NUL_MESSAGE)
    return text.decode("utf-8"), hashlib.sha256(text).hexdigest()

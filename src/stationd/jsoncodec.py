"""JSON on the ingest hot path: orjson (several times faster than the stdlib,
measured in docs/performance.rst), with the stdlib for what orjson refuses
or reads differently (integers beyond 64 bits).  Encoding, both give the same
bytes for the same value: compact, UTF-8, keys sorted when asked; decoding,
the same value (or the stdlib's error)."""

import hashlib
import json
from typing import Any

import orjson


def dumps(value, sort_keys=False):
    """Compact UTF-8 JSON bytes."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else 0)
    except TypeError:
        return json.dumps(value, sort_keys=sort_keys, separators=(",", ":"),
                          ensure_ascii=False).encode("utf-8")


def dumps_text(value):
    """For SQLAlchemy's JSON columns, which want str."""
    return dumps(value).decode("utf-8")


# Digits as "0": a run of 20 zeros, or "-" and 19, may be an integer beyond
# 64 bits, which orjson reads as a float, silently.  ("-" is not one of the
# digits: "8827-3478-4038-9856-" is a run in many a UUID.)
_DIGITS = bytes.maketrans(b"123456789", b"0" * 9)
_LONG, _LONG_NEGATIVE = b"0" * 20, b"-" + b"0" * 19


def loads(data, parse_constant=None):
    """A value from JSON bytes, as ``json.loads(data, parse_constant=...)`` gives it.

    orjson reads integers from -2**63 to 2**64 - 1 exactly and bigger ones
    as floats: bodies with a run of 20 digits, or of 19 after a "-" (in a
    number or not), go to the stdlib, and so does whatever orjson refuses
    (invalid JSON, NaN, 1e400, lone surrogates, UTF-16, a BOM): the stdlib's
    value or its ValueError, as before.  The scan costs about a fifth of
    orjson's decoding; the stdlib takes three times as long as orjson.
    """
    if isinstance(data, bytes):
        digits = data.translate(_DIGITS)
        if _LONG not in digits and _LONG_NEGATIVE not in digits:
            try:
                return orjson.loads(data)
            except orjson.JSONDecodeError:
                pass
    return json.loads(data, parse_constant=parse_constant)


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

"""Safe decoding of HiSPARC event uploads.

HiSPARC stations upload a batch of events whose ``data`` form field is a
pickle: protocol 0 from Python 2 stations (byte strings as ``S'...'``),
protocol 2 or later from Python 3 stations (with ``datetime`` objects and
numpy scalars inside).  Unpickling untrusted data runs arbitrary code, so this
module unpickles with a fixed allow-list: the ``datetime`` classes, and
stand-ins for ``_codecs.encode`` (latin-1 only), empty ``bytes()``,
``numpy.dtype`` and numpy's ``scalar`` that rebuild plain Python numbers with
:mod:`struct`.  numpy itself is never imported.  Anything else is refused
with :class:`DecodeError`.
"""

import datetime
import io
import json
import math
import pickle
import struct

from stationd.jsoncodec import DATA_DEPTH, finite_float

_UTC = datetime.timezone.utc
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=_UTC)
_MAX_VALUES, _MAX_CHARS = 2**20, 2**26  # what one payload may expand to
_EVENT_COST = 16  # an event's header costs about as much work as 16 values


class DecodeError(ValueError):
    """The payload cannot be decoded (HiSPARC answer 208)."""


class _Global:
    """A callable handed out by find_class.

    Pickle's BUILD opcode sets state on whatever object is on its stack,
    including globals; refusing here keeps a payload from tampering with the
    decoder for later requests.  Not a type, so NEWOBJ on it fails too.
    """

    __slots__ = ("_func",)

    def __init__(self, func):
        self._func = func

    def __call__(self, *args):
        return self._func(*args)

    def __setstate__(self, state):
        raise DecodeError("cannot set state on an allowed global")


def _latin1_encode(text, encoding="latin1"):
    """``_codecs.encode``, as Python 3 uses it to pickle bytes at protocol < 3."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise DecodeError("_codecs.encode is allowed only for str to latin-1")
    return text.encode("latin-1")


def _empty_bytes():
    """``bytes()``, as Python 3 pickles ``b''`` at protocol < 3; nothing else."""
    return b""


_CODES = {"i1": "b", "i2": "h", "i4": "i", "i8": "q", "u1": "B", "u2": "H", "u4": "I", "u8": "Q",
          "f2": "e", "f4": "f", "f8": "d", "b1": "?"}
_ALIASES = {"int8": "i1", "int16": "i2", "int32": "i4", "int64": "i8",
            "uint8": "u1", "uint16": "u2", "uint32": "u4", "uint64": "u8",
            "float16": "f2", "float32": "f4", "float64": "f8", "?": "b1", "bool": "b1"}


class _Dtype:
    """Stand-in for ``numpy.dtype``: the struct format of a plain number type.

    numpy pickles a dtype as ``dtype(name, align, copy)`` followed by BUILD
    with a state tuple whose item 1 is the byte order ('|': not applicable).
    """

    __slots__ = ("code", "order")

    def __init__(self, name, align=False, copy=True):
        name = _text(name, "numpy dtype name")
        self.order = "|"
        if len(name) > 1 and name[0] in "<>=|":
            self.order, name = name[0], name[1:]
        self.code = _CODES.get(_ALIASES.get(name, name))
        if self.code is None:
            raise DecodeError(f"unsupported numpy dtype {name[:20]!r}")

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) < 2 or state[1] not in ("<", ">", "=", "|"):
            raise DecodeError("bad numpy dtype state")
        self.order = state[1]


def _scalar(dtype, raw):
    """numpy's ``scalar(dtype, raw_bytes)``, rebuilt as a Python int/float/bool."""
    if not isinstance(dtype, _Dtype):
        raise DecodeError("numpy scalar without a dtype")
    if isinstance(raw, str):  # a Python 2 str, read as latin-1
        raw = raw.encode("latin-1")
    if not isinstance(raw, bytes) or len(raw) != struct.calcsize("<" + dtype.code):
        raise DecodeError("numpy scalar of the wrong size")
    order = dtype.order
    if order == "|":
        if len(raw) != 1:
            raise DecodeError("numpy scalar without a byte order")
        order = "<"
    return struct.unpack(order + dtype.code, raw)[0]


_ALLOWED = {
    ("datetime", "datetime"): datetime.datetime,
    ("datetime", "date"): datetime.date,
    ("datetime", "time"): datetime.time,
    ("datetime", "timedelta"): datetime.timedelta,
    ("datetime", "timezone"): datetime.timezone,
    ("_codecs", "encode"): _Global(_latin1_encode),
    ("__builtin__", "bytes"): _Global(_empty_bytes),
    ("builtins", "bytes"): _Global(_empty_bytes),
    ("numpy", "dtype"): _Global(_Dtype),
    ("numpy.core.multiarray", "scalar"): _Global(_scalar),
    ("numpy._core.multiarray", "scalar"): _Global(_scalar),
}


class _Unpickler(pickle.Unpickler):
    """Resolves globals from the allow-list only; no persistent IDs."""

    def find_class(self, module, name):
        try:
            return _ALLOWED[module, name]
        except (KeyError, TypeError):
            raise pickle.UnpicklingError(f"global {module!s:.40}.{name!s:.40} is not allowed") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent IDs are not allowed")


def unpickle(data: bytes):
    """Safe unpickling with an allow-list. Raises DecodeError for anything else."""
    try:
        # A file with peek() lets the C unpickler prefetch; a bare BytesIO
        # costs a Python read() call an opcode (2.1 -> 0.9 ms a batch).
        file = io.BufferedReader(io.BytesIO(data), max(len(data), io.DEFAULT_BUFFER_SIZE))
        return _Unpickler(file, encoding="latin1").load()
    except DecodeError:
        raise
    except Exception as exc:  # any failure of a hostile or broken pickle is just bad input
        raise DecodeError(f"bad pickle: {type(exc).__name__}: {exc!s:.120}") from exc


def _text(value, what):
    """str, or bytes read as latin-1 (Python 2 strings)."""
    if isinstance(value, (bytes, bytearray)):
        return value.decode("latin-1")
    if isinstance(value, str):
        return value
    raise DecodeError(f"{what} is not a string")


def _keyed(value, what):
    """A dict with text keys (as it is when they already are: the common case)."""
    if not isinstance(value, dict):
        raise DecodeError(f"{what} is not a mapping")
    for key in value:
        if type(key) is not str:
            return {_text(key, f"{what} key"): item for key, item in value.items()}
    return value


def _epoch_seconds(value):
    """UTC epoch seconds of a datetime (naive means UTC) or ISO 8601 string, truncated."""
    if isinstance(value, (str, bytes)):
        try:
            value = datetime.datetime.fromisoformat(_text(value, "datetime"))
        except ValueError:
            raise DecodeError("datetime is not ISO 8601") from None
    if not isinstance(value, datetime.datetime):
        raise DecodeError("datetime is not a datetime")
    if value.utcoffset() is None:
        value = value.replace(tzinfo=_UTC)
    delta = value - _EPOCH
    return delta.days * 86400 + delta.seconds


class _JSONSafe:
    """Makes values JSON-safe, within a budget: pickle memo references let a
    small payload name one big object millions of times."""

    def __init__(self, values=_MAX_VALUES, chars=_MAX_CHARS):
        self.values, self.chars = values, chars

    def spend(self, values=1, chars=0):
        self.values -= values
        self.chars -= chars
        if self.values < 0 or self.chars < 0:
            raise DecodeError("payload expands too far")

    def __call__(self, value, depth=2):
        kind = type(value)
        if kind is int or kind is str:  # the common cases first: they dominate batches
            self.spend(1, len(value) if kind is str else 0)
            return value
        self.spend(1, len(value) if isinstance(value, (str, bytes, bytearray)) else 0)
        if isinstance(value, float) and not math.isfinite(value):
            return None  # JSON (and PostgreSQL jsonb) has no NaN or infinity
        if value is None or isinstance(value, (str, bool, int, float)):
            return value
        if isinstance(value, (bytes, bytearray)):
            return value.decode("latin-1")
        if isinstance(value, (list, tuple, dict)) and depth > DATA_DEPTH:
            # (data is level 1: a value in it level 2)  Deeper, an export of it would be refused.
            raise DecodeError(f"data nests deeper than {DATA_DEPTH} levels")
        if isinstance(value, (list, tuple)):
            return [self(item, depth + 1) for item in value]
        if isinstance(value, dict):
            return {_text(key, "data key"): self(item, depth + 1) for key, item in value.items()}
        if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
            return value.isoformat()
        raise DecodeError(f"unsupported data value of type {type(value).__name__}")


def _event(event, jsonsafe):
    """One normalized event: type, time_ns, data."""
    event = _keyed(event, "event")
    if "header" not in event:
        raise DecodeError("no header")
    header = _keyed(event["header"], "header")
    for key in ("eventtype_uploadcode", "datetime", "nanoseconds"):
        if key not in header:
            raise DecodeError(f"header lacks {key}")
    ns = header["nanoseconds"]
    if isinstance(ns, bool) or not isinstance(ns, int) or not 0 <= ns < 10**9:
        raise DecodeError("nanoseconds is not an int in [0, 1e9)")
    datalist = event.get("datalist")
    if not isinstance(datalist, list):
        raise DecodeError("datalist is not a list")
    data, repeated, chars = {}, set(), 0
    for item in datalist:
        try:  # the common case: a dict with text keys
            code, value = item["data_uploadcode"], item["data"]
        except (KeyError, TypeError, IndexError):
            item = _keyed(item, "datalist item")
            if "data_uploadcode" not in item or "data" not in item:
                raise DecodeError("datalist item lacks data_uploadcode or data") from None
            code, value = item["data_uploadcode"], item["data"]
        if type(code) is not str:
            code = _text(code, "data_uploadcode")
        kind = type(value)
        if kind is str:  # text and ints are already JSON-safe; counted below
            chars += len(value)
        elif kind is not int:
            value = jsonsafe(value)
        if code in repeated:
            data[code].append(value)
        elif code in data:
            data[code] = [data[code], value]
            repeated.add(code)
        else:
            data[code] = value
    jsonsafe.spend(_EVENT_COST + len(datalist), chars)
    kind = _text(header["eventtype_uploadcode"], "eventtype_uploadcode")
    if not 0 < len(kind) <= 64 or "\x00" in kind:
        raise DecodeError("eventtype_uploadcode must be 1 to 64 characters")
    time_ns = _epoch_seconds(header["datetime"]) * 10**9 + ns
    if not -(2**63) <= time_ns < 2**63:
        raise DecodeError("datetime is outside what can be stored (years 1678 to 2262)")
    return {"type": kind, "time_ns": time_ns, "data": data}


def events_from_payload(payload) -> list[dict]:
    """Turn the decoded list of HiSPARC events into normalized events; DecodeError on bad shape."""
    if not isinstance(payload, list):
        raise DecodeError("payload is not a list of events")
    jsonsafe, events = _JSONSafe(), []
    for index, event in enumerate(payload):
        try:
            events.append(_event(event, jsonsafe))
        except DecodeError as exc:
            raise DecodeError(f"event {index}: {exc}") from None
        except (RecursionError, OverflowError) as exc:
            raise DecodeError(f"event {index}: {type(exc).__name__}") from None
    return events


def decode_upload(data: bytes, fmt: str = "pickle") -> list[dict]:
    """fmt "pickle": unpickle(data); fmt "json": json.loads(data).

    Then events_from_payload. Any error -> DecodeError.
    """
    if fmt == "pickle":
        payload = unpickle(data)
    elif fmt == "json":
        try:
            # A literal beyond a double (1e400) is refused, not stored as null; the constants
            # Python's json writes for NaN and infinity become null as they do from a pickle.
            payload = json.loads(data, parse_float=finite_float)
        except (ValueError, TypeError, RecursionError) as exc:
            raise DecodeError(f"bad JSON: {exc!s:.120}") from exc
    else:
        raise DecodeError(f"unknown upload format {fmt!r:.40}")
    try:
        return events_from_payload(payload)
    except DecodeError:
        raise
    except Exception as exc:  # shapes no check foresaw are still just bad input
        raise DecodeError(f"bad payload: {type(exc).__name__}") from exc

"""MeteorPi's v2 model (../shared/METEORPI.md 4.3) as stationd's records: ids, times, metadata, searches.

An observatory is a station, an observation an event (``obs_type`` its type,
``obs_time`` its time, its ``meta`` list the event's data object), a file
record a file (``meta`` the file's meta object).  docs/meteorpi.rst has the
whole mapping and what does not map.  Everything here is pure: it checks and
converts, the store (stationd.store.meteorpi) and the routes
(stationd.web.meteorpi) do the rest.
"""

import dataclasses
import json
import math
import re
import uuid
from collections.abc import Mapping
from fractions import Fraction
from typing import Any, NamedTuple, cast
from urllib.parse import unquote_plus

from stationd import jsoncodec
from stationd.times import MAX_NS, MIN_NS

# Events and files keep UUIDs (stationd's own import checks them); an imported
# observation or file gets one derived from its MeteorPi id, so a re-sent one
# lands on the same record.
NAMESPACE = uuid.UUID("5d1f4c62-7a4b-4bd0-9a38-4e0f6d1c2b9e")
# MeteorPi's own ids are time-and-hash strings; anything it could put in a URL segment is taken.
PUBLIC_ID = re.compile(r"^[^/\x00-\x1f\x7f]{1,64}$")
# An observatory id is a station id (stationd.store.stations.check_id), so that its records can
# travel up a chain of stationd nodes, whose import checks it.
OBSTORY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MD5 = re.compile(r"^[0-9a-fA-F]{32}$")
META_KEY = re.compile(r"^[A-Za-z0-9_.:/-]{1,64}$")  # what a JSON path holds unquoted (stationd.store.query)
DEFAULT_LIMIT = 100
MAX_LIMIT = 10000  # "limit": 0 (no limit) is served up to this many
MAX_BINS = 250  # /activity and /skyclarity, as the originals
SKY_CLARITY_TYPE = "meteorpi:timelapse/frame/bgrdSub/lensCorr"
SKY_CLARITY_KEY = "meteorpi:skyClarity"


class ModelError(ValueError):
    """A search or an imported record that MeteorPi's model would not have made."""


def local_id(kind: str, public_id: str) -> str:
    """The UUID of the event ("observation") or file ("file") MeteorPi calls ``public_id``."""
    return str(uuid.uuid5(NAMESPACE, f"{kind}:{public_id}"))


def to_ns(seconds: float) -> int:
    """Float seconds (MeteorPi's times) as integer nanoseconds, exactly rounded (to_seconds gives the
    same float back), held to what the store can compare (a search bound beyond is the same as at it)."""
    return min(max(round(Fraction(seconds) * 10**9), MIN_NS), MAX_NS)


def to_seconds(ns: int) -> float:
    return ns / 10**9  # (int / int: correctly rounded)


def meta_list(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """An event's data (or a file's meta) as MeteorPi Meta items: numbers and strings as they are, each item
    of a list as an item of the same key, anything else (objects, booleans, null) as its JSON text."""
    items: list[dict[str, Any]] = []
    append = items.append
    for key, value in values.items():
        # (type() is: bool is not a number here; a page of HiSPARC events holds ~9,000 items)
        for one in value if type(value) is list else (value,):
            kind = type(one)
            if kind is int or kind is float:
                append({"type": "number", "key": key, "value": one})
            elif kind is str:
                append({"type": "string", "key": key, "value": one})
            else:
                append({"type": "string", "key": key, "value": json.dumps(one, separators=(",", ":"))})
    return items


def meta_dict(items: object, what: str = "meta") -> dict[str, Any]:
    """MeteorPi Meta items as a data object; a key given more than once holds the list of its values."""
    if not isinstance(items, list):
        raise ModelError(f"{what} must be a list of {{type, key, value}}")
    values: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, dict):
            raise ModelError(f"each item of {what} must be an object {{type, key, value}}")
        key, kind, value = item.get("key"), item.get("type"), item.get("value")
        if not isinstance(key, str) or not 0 < len(key) <= 255:
            raise ModelError(f"a key of {what} must be text of 1 to 255 characters")
        if kind == "number":
            if not _finite(value):
                raise ModelError(f"{what} {key}: a number item needs a finite number (within a double) as its value")
        elif kind == "string":
            if not isinstance(value, str):
                raise ModelError(f"{what} {key}: a string item needs text as its value")
        else:
            raise ModelError(f"{what} {key}: type must be number or string, not {kind!r}")
        if key in values:
            earlier = values[key]
            values[key] = (earlier if isinstance(earlier, list) else [earlier]) + [value]
        else:
            values[key] = value
    if jsoncodec.has_nul(values):
        raise ModelError(f"{what}: {jsoncodec.NUL_MESSAGE.removeprefix('data ')}")
    return values


# -- searches (4.3.7, 4.3.8) --------------------------------------------------


@dataclasses.dataclass
class Search:
    """An ObservationSearch or a FileRecordSearch, checked (None: not given)."""

    obstory_ids: list[str] | None = None
    lat_min: float | None = None
    lat_max: float | None = None
    long_min: float | None = None
    long_max: float | None = None
    time_min: float | None = None  # strict
    time_max: float | None = None  # strict
    observation_type: str | None = None
    observation_id: str | None = None
    exclude_imported: bool = False
    exclude_export_to: str | None = None
    skip: int = 0
    limit: int = DEFAULT_LIMIT  # 0: no limit (served up to MAX_LIMIT)
    meta: list[tuple[str, str, float | str]] = dataclasses.field(default_factory=list)  # (key, op, value)
    # files only
    mime_type: str | None = None
    semantic_type: str | None = None
    repository_fname: str | None = None


_CONSTRAINTS = {"string_equals": "eq", "number_equals": "eq", "less": "le", "greater": "ge"}
_OBSERVATION_FIELDS = {"obstory_ids", "lat_min", "lat_max", "long_min", "long_max", "time_min", "time_max",
                       "observation_type", "observation_id", "exclude_imported", "exclude_export_to", "skip",
                       "limit", "meta"}
_FILE_FIELDS = _OBSERVATION_FIELDS | {"mime_type", "semantic_type", "repository_fname"}


def decode_search(segment: str) -> dict[str, Any]:
    """The search object of a URL path segment, as the clients put it there (4.2): JSON, URL-encoded twice;
    the server's path decoding undid the first, this undoes the second (a ``+`` is a space, ``%2B`` a plus)."""
    try:
        value = jsoncodec.loads(unquote_plus(segment).encode("utf-8"))
    except ValueError as e:
        raise ModelError(f"the search is not JSON (URL-encoded twice, as the MeteorPi clients send it): {e}")
    if not isinstance(value, dict):
        raise ModelError("the search must be a JSON object")
    return value


def _finite(value: object) -> bool:
    """A JSON number a double holds (not a bool; 10**400 is not: OverflowError)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _number(value: object, name: str) -> float:
    if not _finite(value):
        raise ModelError(f"{name} must be a number (within a double)")
    return float(cast(float, value))  # (_finite: an int or a float)


def _text(value: object, name: str, limit: int = 255) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= limit or "\x00" in value:
        raise ModelError(f"{name} must be text of 1 to {limit} characters (and no NUL)")
    return value


def _count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ModelError(f"{name} must be a whole number, 0 or more")
    return value


def parse_search(fields: Mapping[str, Any], files: bool = False) -> Search:
    """A search dict (null values count as not given, as the JS client drops them) as a Search.
    Fields this kind of search has not are ignored, as the originals' from_dict ignored them."""
    allowed = _FILE_FIELDS if files else _OBSERVATION_FIELDS
    search = Search()
    for name, value in fields.items():
        if value is None or name not in allowed:
            continue
        if name == "obstory_ids":
            ids = [value] if isinstance(value, str) else value
            if not isinstance(ids, list) or not ids:
                raise ModelError("obstory_ids must be a list of observatory ids")
            search.obstory_ids = [_text(v, "obstory_ids", 64) for v in ids]
        elif name in ("lat_min", "lat_max", "long_min", "long_max", "time_min", "time_max"):
            setattr(search, name, _number(value, name))
        elif name in ("exclude_imported",):
            if not isinstance(value, bool):
                raise ModelError(f"{name} must be true or false")
            search.exclude_imported = value
        elif name in ("skip", "limit"):
            setattr(search, name, _count(value, name))
        elif name == "meta":
            search.meta = _constraints(value)
        else:
            setattr(search, name, _text(value, name))
    return search


def _constraints(value: object) -> list[tuple[str, str, float | str]]:
    if not isinstance(value, list):
        raise ModelError("meta must be a list of {key, type, value} constraints")
    parsed: list[tuple[str, str, float | str]] = []
    for item in value:
        if not isinstance(item, dict):
            raise ModelError("each meta constraint must be an object {key, type, value}")
        key, kind, target = item.get("key"), item.get("type"), item.get("value")
        if not isinstance(key, str) or not META_KEY.match(key):
            raise ModelError(f"meta constraint key {key!r}: use letters, digits and _.:/- (at most 64)")
        if kind not in _CONSTRAINTS:
            raise ModelError(f"meta constraint type must be one of {', '.join(_CONSTRAINTS)}, not {kind!r}")
        if kind == "string_equals":
            parsed.append((key, "eq", _text(target, f"meta constraint {key}", 1024)))
        else:
            parsed.append((key, _CONSTRAINTS[kind], _number(target, f"meta constraint {key}")))
    return parsed


class Bins(NamedTuple):
    """The bins of /activity and /skyclarity: ``n`` of them, ``width_ns`` wide, the first from ``first_ns``."""

    first_ns: int
    width_ns: int
    n: int


def bins(utc_min: float, utc_max: float, period: float) -> Bins:
    """From utc_min, ``period`` wide, until one ends at or after utc_max (at most MAX_BINS)."""
    if not (math.isfinite(utc_min) and math.isfinite(utc_max) and math.isfinite(period)) or period <= 0:
        raise ModelError("utc_min and utc_max must be times and period a number of seconds above 0")
    first, width = to_ns(utc_min), to_ns(period)
    if width <= 0:
        raise ModelError("period must be at least a nanosecond")
    return Bins(first, width, max(1, min(MAX_BINS, -(-(to_ns(utc_max) - first) // width))))


# -- imported records (5.2) ---------------------------------------------------


def _public_id(value: object, name: str) -> str:
    if not isinstance(value, str) or not PUBLIC_ID.match(value):
        raise ModelError(f"{name} must be an id of 1 to 64 characters with no / or control characters, "
                         f"not {value!r}")
    return value


def _obstory_id(value: object, name: str = "obstory_id") -> str:
    if not isinstance(value, str) or not OBSTORY_ID.match(value):
        raise ModelError(f"{name} must be an observatory id of letters, digits and _.- (at most 64; it is "
                         f"a station id here), not {value!r}")
    return value


def _time(value: object, name: str) -> int:
    seconds = _number(value, name)
    if not -9e9 < seconds < 9e9:  # (what nanoseconds in 64 bits hold: to 2255)
        raise ModelError(f"{name} must be a Unix time in seconds")
    return to_ns(seconds)


def _optional_text(record: Mapping[str, Any], name: str, limit: int = 255) -> str | None:
    value = record.get(name)
    return None if value is None or value == "" else _text(value, name, limit)


def parse_metadata(item: object) -> dict[str, Any]:
    """An ObservatoryMetadata (4.3.4) as a station metadata row (and the observatory it names)."""
    if not isinstance(item, dict):
        raise ModelError("metadata must be an object")
    kind, value = item.get("type"), item.get("value")
    if kind == "number":
        if not _finite(value):
            raise ModelError("a number metadata item needs a finite number (within a double) as its value")
    elif kind == "string":
        if not isinstance(value, str) or "\x00" in value:
            raise ModelError("a string metadata item needs text as its value")
    else:
        raise ModelError(f"metadata type must be number or string, not {kind!r}")
    lat, lng = item.get("obstory_lat"), item.get("obstory_lng")
    return {"id": _public_id(item.get("metadata_id"), "metadata_id"),
            "station": _obstory_id(item.get("obstory_id")),
            "station_name": _optional_text(item, "obstory_name"),
            "latitude": None if lat is None else _number(lat, "obstory_lat"),
            "longitude": None if lng is None else _number(lng, "obstory_lng"),
            "key": _text(item.get("key"), "key"),
            "time_ns": _time(item.get("time"), "time"),
            "created_ns": None if item.get("time_created") is None else _time(item["time_created"], "time_created"),
            "user_created": _optional_text(item, "user_created", 64),
            "value": value}


def parse_observation(observation: object) -> dict[str, Any]:
    """An Observation (4.3.1): its id, observatory, type, time and meta as data.  Its ``files`` are not
    read: they come as file messages of their own (as the originals do)."""
    if not isinstance(observation, dict):
        raise ModelError("observation must be an object")
    public = _public_id(observation.get("obs_id", observation.get("id")), "obs_id")
    return {"public_id": public, "id": local_id("observation", public),
            "station": _obstory_id(observation.get("obstory_id")),
            "station_name": _optional_text(observation, "obstory_name"),
            "type": _text(observation.get("obs_type"), "obs_type", 64),
            "time_ns": _time(observation.get("obs_time"), "obs_time"),
            "data": meta_dict(observation.get("meta", []))}


def parse_file_record(record: object) -> dict[str, Any]:
    """A FileRecord (4.3.2) as a file, with the observation it belongs to (if any)."""
    if not isinstance(record, dict):
        raise ModelError("file must be an object")
    public = _public_id(record.get("repository_fname", record.get("id")), "repository_fname")
    md5 = record.get("file_md5")
    if not isinstance(md5, str) or not MD5.match(md5):
        raise ModelError("file_md5 must be 32 hex digits")
    size = record.get("file_size")
    observation = record.get("observation_id")
    return {"public_id": public, "id": local_id("file", public), "md5": md5.lower(),
            "station": _obstory_id(record.get("obstory_id")),
            "station_name": _optional_text(record, "obstory_name"),
            "observation": None if observation is None else _public_id(observation, "observation_id"),
            "time_ns": _time(record.get("file_time"), "file_time"),
            "name": _text(record.get("file_name") or public, "file_name"),
            "mime_type": _text(record.get("mime_type") or "application/octet-stream", "mime_type", 127),
            "semantic_type": _optional_text(record, "semantic_type", 127),
            "size": None if size is None else _count(size, "file_size"),
            "meta": meta_dict(record.get("meta", []), "file meta")}

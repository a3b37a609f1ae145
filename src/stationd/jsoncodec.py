"""JSON on the ingest hot path: orjson (several times faster than the stdlib,
measured in docs/performance.rst), with the stdlib for what orjson refuses
(integers beyond 64 bits).  Both give the same bytes for the same value:
compact, UTF-8, keys sorted when asked."""

import json

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


loads = orjson.loads

"""The query API: events, files (with their contents) and stations.

Reads are public when [web] public_read is true, else need any key.  Bad
parameters answer 400 naming the parameter; see docs/api.rst for the rules.
"""

import email.utils
import math
import os
import re

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.web import static

from stationd.filestore import FileStore
from stationd.store import Store
from stationd.store import query as store_query
from stationd.store import stations
from stationd.times import parse_query_time
from stationd.web.auth import Authenticator, require
from stationd.web.http import HTTPError, error_body, json_body, route

_FIELD = re.compile(r"^(field|meta)\.([A-Za-z0-9_-]{1,64})\.(eq|lt|le|gt|ge)$")
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?")  # JSON's number syntax
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_EVENT_PARAMS = {"station", "type", "after", "before", "quarantined", "order", "limit", "cursor"}
_FILE_PARAMS = {"station", "semantic_type", "mime_type", "after", "before", "order", "limit", "cursor"}


def bad(parameter, message):
    return HTTPError(400, f"{parameter}: {message}", code="bad_parameter")


def _args(request):
    try:
        return {name.decode("utf-8"): [v.decode("utf-8") for v in values]
                for name, values in request.args.items()}
    except UnicodeDecodeError:
        raise HTTPError(400, "query parameters must be UTF-8", code="bad_parameter") from None


def _one(args, name):
    values = args.get(name, [])
    if len(values) > 1:
        raise bad(name, "give it once")
    return values[0] if values else None


def _constraint_value(name, op, text):
    """A number compares as a number; text in double quotes as text, and so does anything else
    with eq.  lt/le/gt/ge with neither: a 400 (it could only ever match nothing)."""
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    match = _NUMBER.fullmatch(text)
    if not match:
        if op != "eq":
            raise bad(name, f"{op} compares numbers: give one, or text in double quotes to compare text; "
                            f"not {text!r}")
        return text
    if not (match.group(1) or match.group(2)) and len(text) <= 20:
        number = int(text)
        if -(2**63) <= number < 2**63:  # what the stores compare as integers
            return number
    number = float(text)
    if math.isinf(number):
        raise bad(name, f"the number {text[:40]}{'...' if len(text) > 40 else ''} is out of range")
    return number


def parse_query(args, allowed, constraint_prefix):
    """A store Query from the query string, or a 400 naming the parameter."""
    query = store_query.Query()
    for name in args:
        match = _FIELD.match(name)
        if match and match.group(1) == constraint_prefix:
            for value in args[name]:
                query.constraints.append((match.group(2), match.group(3), _constraint_value(name, match.group(3),
                                                                                            value)))
        elif name not in allowed:
            hint = f"; constraints are {constraint_prefix}.<name>.<eq|lt|le|gt|ge>" if "." in name else ""
            raise bad(name, f"unknown parameter{hint}")
    query.stations = args.get("station", [])
    query.types = args.get("type", []) or args.get("semantic_type", [])
    query.mime_types = args.get("mime_type", [])
    for name in ("after", "before"):
        value = _one(args, name)
        if value is not None:
            try:
                setattr(query, f"{name}_ns", parse_query_time(value))
            except ValueError as e:
                raise bad(name, str(e)) from None
    if query.after_ns is not None and query.before_ns is not None and query.after_ns > query.before_ns:
        raise bad("after", "later than before: nothing can match")
    quarantined = _one(args, "quarantined") or "false"
    if quarantined not in ("true", "false", "any"):
        raise bad("quarantined", "use true, false or any")
    query.quarantined = {"true": True, "false": False, "any": None}[quarantined]
    query.order = _one(args, "order") or "desc"
    if query.order not in ("asc", "desc"):
        raise bad("order", "use asc or desc")
    limit = _one(args, "limit")
    if limit is not None:
        if not re.fullmatch(r"\d{1,6}", limit) or not 1 <= int(limit) <= store_query.MAX_LIMIT:
            raise bad("limit", f"use an integer from 1 to {store_query.MAX_LIMIT}")
        query.limit = int(limit)
    cursor = _one(args, "cursor")
    if cursor:
        try:
            query.cursor = store_query.decode_cursor(cursor, query.order)
        except store_query.CursorError as e:
            raise bad("cursor", str(e)) from None
    return query


def _http_date(ns):
    return email.utils.formatdate(ns / 1e9, usegmt=True).encode("ascii")


class QueryRoutes:
    def __init__(self, store: Store, auth: Authenticator, files: FileStore, clock: IReactorTime):
        self.store, self.auth, self.files, self.clock = store, auth, files, clock

    @route("GET", "/api/v1/events")
    @require(read=True)
    async def events(self, request):
        query = parse_query(_args(request), _EVENT_PARAMS, "field")
        found, cursor = await self.store.read(store_query.find_events, query)
        return json_body(request, {"events": found, "next": cursor})

    @route("GET", "/api/v1/events/<event_id>")
    @require(read=True)
    async def event(self, request, event_id):
        event = await self.store.read(store_query.get_event, event_id)
        if event is None:
            raise HTTPError(404, f"no event {event_id}")
        return json_body(request, event)

    @route("GET", "/api/v1/files")
    @require(read=True)
    async def list_files(self, request):
        query = parse_query(_args(request), _FILE_PARAMS, "meta")
        query.quarantined = None  # files have no quarantine
        found, cursor = await self.store.read(store_query.find_files, query)
        return json_body(request, {"files": found, "next": cursor})

    async def _file(self, file_id):
        record = await self.store.read(store_query.get_file, file_id)
        if record is None:
            raise HTTPError(404, f"no file {file_id}")
        return record

    @route("GET", "/api/v1/files/<file_id>")
    @require(read=True)
    async def file(self, request, file_id):
        return json_body(request, await self._file(file_id))

    @route("GET", "/api/v1/files/<file_id>/content")
    @require(read=True)
    async def content(self, request, file_id):
        return await serve_content(request, self.files, await self._file(file_id))

    @route("GET", "/api/v1/stations")
    @require(read=True)
    async def stations(self, request):
        now_ns = int(self.clock.seconds() * 1e9)
        return json_body(request, {"stations": await self.store.read(stations.public_stations, now_ns)})

    @route("GET", "/api/v1/stations/<station_id>")
    @require(read=True)
    async def station(self, request, station_id):
        now_ns = int(self.clock.seconds() * 1e9)

        def described(conn):
            row = stations.get_station(conn, station_id)
            if row is None:
                return None
            station, history = stations.public_station(conn, row, now_ns)
            return {**station, "history": history, "counts": store_query.station_counts(conn, station_id)}

        station = await self.store.read(described)
        if station is None:
            raise HTTPError(404, f"no station {station_id}")
        return json_body(request, station)


async def serve_content(request, files: FileStore, record: dict) -> bytes | None:
    """Answer with the content of file ``record`` ({"id", "sha256", "name", "mime_type", "created_ns"}):
    ETag, Last-Modified, conditional requests, a single byte range (206), HEAD; streamed from disk."""
    file_id = record["id"]
    try:
        content = open(files.path(record["sha256"]), "rb")
    except FileNotFoundError:
        raise HTTPError(404, f"the content of file {file_id} is not on this node (yet)",
                        code="content_missing") from None
    size = os.fstat(content.fileno()).st_size
    etag = f'"{record["sha256"]}"'.encode("ascii")
    request.setHeader(b"etag", etag)
    request.setHeader(b"last-modified", _http_date(record["created_ns"]))
    request.setHeader(b"accept-ranges", b"bytes")
    request.setHeader(b"content-type", record["mime_type"].encode("latin-1"))
    request.setHeader(b"content-disposition", _disposition(record["name"]))
    # A content is whatever its sender said it is (an SVG or HTML with script, say): opened in a
    # browser, it runs nothing on the node's origin.
    request.setHeader(b"content-security-policy", b"default-src 'none'; sandbox")
    if _not_modified(request, etag, record["created_ns"]):
        content.close()
        request.setResponseCode(304)
        return b""
    span = _range(request, etag, size)
    if span == "unsatisfiable":
        content.close()
        request.setResponseCode(416)
        request.setHeader(b"content-range", b"bytes */%d" % size)
        request.setHeader(b"content-type", b"application/json")
        return error_body("range_not_satisfiable", f"the file has {size} bytes")
    producer: static.StaticProducer
    if span is None:
        request.setHeader(b"content-length", b"%d" % size)
        producer = static.NoRangeStaticProducer(request, content)
    else:
        start, end = span
        request.setResponseCode(206)
        request.setHeader(b"content-range", b"bytes %d-%d/%d" % (start, end, size))
        request.setHeader(b"content-length", b"%d" % (end - start + 1))
        producer = static.SingleRangeStaticProducer(request, content, start, end - start + 1)
    if request.method == b"HEAD":
        content.close()
        return b""
    # Streamed from disk as the client reads (a pull producer): a large
    # file never sits in memory.  The producer finishes the request.
    done: defer.Deferred[None] = defer.Deferred()
    request.notifyFinish().addBoth(lambda _: None if done.called else done.callback(None))
    producer.start()
    await done
    return None


def _disposition(name):
    safe = re.sub(r'[^A-Za-z0-9._ -]', "_", name)[:200] or "file"
    return f'inline; filename="{safe}"'.encode("ascii")


def _not_modified(request, etag, modified_ns):
    """RFC 9110 13.2.2: If-None-Match decides when present, else If-Modified-Since."""
    if_none_match = request.getHeader(b"if-none-match")
    if if_none_match is not None:
        tags = [t.strip().removeprefix(b"W/") for t in if_none_match.split(b",")]
        return b"*" in tags or etag in tags
    since = request.getHeader(b"if-modified-since")
    if since is not None:
        try:
            when = email.utils.parsedate_to_datetime(since.decode("latin-1"))
        except (TypeError, ValueError):
            return False
        return int(modified_ns // 10**9) <= when.timestamp()
    return False


def _range(request, etag, size):
    """(first, last) byte of a single satisfiable range; None for the whole
    file (no Range, a stale If-Range, several or malformed ranges: all of
    which RFC 9110 answers with the full content); "unsatisfiable"."""
    header = request.getHeader(b"range")
    if header is None:
        return None
    if_range = request.getHeader(b"if-range")
    if if_range is not None and if_range.strip() != etag:
        return None
    match = _RANGE.match(header.decode("latin-1").strip())
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":  # the last N bytes
        if int(last) == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - int(last)), size - 1
    first = int(first)
    if last != "" and int(last) < first:
        return None  # not a valid range: ignored
    if first >= size:
        return "unsatisfiable"
    return first, size - 1 if last == "" else min(int(last), size - 1)

"""The MeteorPi v2 routes (../shared/METEORPI.md 3.2, 3.3): the obstory query API and the importv2 protocol.

Mounted under ``[meteorpi] path`` (default /api), as the originals were.
Answers are shaped as theirs (JSON, or JSONP with ``?callback=``; CORS as
flask-cors sent it; ``Accept-Ranges: bytes`` on every one), but errors carry
real HTTP statuses and nothing is answered before it is durable.  Camera
exporters log in with HTTP Basic auth as a user of role importer (MeteorPi's
``import``); ``stationd-admin set-password`` gives a user its password.
What maps to what, and what does not: docs/meteorpi.rst.
"""

import collections
import functools
import re
import uuid
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from werkzeug.formparser import FormDataParser
from werkzeug.http import parse_options_header

from stationd import jsoncodec, meteorpi
from stationd.filestore import ContentMismatch, FileStore
from stationd.ingest import Ingest
from stationd.metrics import Metrics
from stationd.store import Store
from stationd.store import meteorpi as store_meteorpi
from stationd.store import stations
from stationd.web.auth import Authenticator, api_key, basic_credentials, BASIC_CHALLENGE
from stationd.web.http import HTTPError, read_body, route
from stationd.web.query import serve_content

log = Logger()
_CALLBACK = re.compile(r"^[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)*$")
_ALLOW_HEADERS = ("authorization", "content-type")  # flask-cors's allow_headers in the originals
_ALLOW_METHODS = b"DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"
MAX_REFUSED = 1000  # uploads refused, remembered for their record's next POST
# The paths the originals answered, for their CORS preflights.
PATHS = ("/obstories", "/obstory/<obstory_id>/metadata", "/obstory/<obstory_id>/statusdict",
         "/obstory/<obstory_id>/statusdict/<unix_time>", "/obstory/<obstory_id>/status", "/obs/<search>",
         "/files/<search>", "/files/content/<file_id>", "/files/content/<file_id>/<file_name>",
         "/skyclarity/<obstory_id>/<utc_min>/<utc_max>/<period>",
         "/activity/<obstory_id>/<semantic_type>/<utc_min>/<utc_max>/<period>", "/login", "/importv2",
         "/importv2/data/<file_id>/<md5>")


def _cors(request: Any) -> None:
    origin = request.getHeader(b"origin")
    request.setHeader(b"access-control-allow-origin", origin or b"*")
    if origin:
        request.setHeader(b"vary", b"Origin")


def _callback(request: Any) -> bytes | None:
    values = request.args.get(b"callback")
    if not values or not values[0]:
        return None
    name = values[0]
    if len(name) > 128 or not _CALLBACK.match(name.decode("latin-1")):
        raise HTTPError(400, "callback must be a JavaScript name (letters, digits, _ and $, dotted)")
    if request.getHeader(b"authorization") is not None:
        # A <script> of any site's page would be sent the credentials the browser holds for this node.
        raise HTTPError(400, "JSONP answers only requests without credentials; send them with JSON")
    return name


def answer(request: Any, value: Any, status: int = 200) -> bytes:
    """``value`` as JSON, or as JSONP (``callback(json);``, application/javascript) when ``?callback=`` names one."""
    request.setResponseCode(status)
    try:
        callback = _callback(request)
    except HTTPError:
        callback = None  # (the error itself is answered as JSON)
    body = jsoncodec.dumps(value)
    if callback is None:
        request.setHeader(b"content-type", b"application/json")
        return body
    request.setHeader(b"content-type", b"application/javascript")
    return callback + b"(" + body + b");"


def meteorpi_route(method: str, path: str, errors: str = "error") -> Callable[..., Any]:
    """Declare a MeteorPi route: CORS and Accept-Ranges on its answers; an HTTPError answered in the
    originals' shape: ``{"error": message}`` (queries), ``{"state": "failed", "message"}`` (import), and
    ``{"message"}`` for credentials refused, as their requires_auth answered."""

    def declare(handler: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(handler)
        async def shaped(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            _cors(request)
            request.setHeader(b"accept-ranges", b"bytes")
            try:
                _callback(request)
                return await handler(self, request, *args, **kwargs)
            except HTTPError as e:
                for name, value in e.headers.items():
                    request.setHeader(name.encode("ascii"), value.encode("latin-1"))
                if e.status in (401, 403, 429) or errors == "message":
                    body: dict[str, Any] = {"message": e.message}
                elif errors == "state":
                    body = {"state": "failed", "message": e.message}
                else:
                    body = {"error": e.message}
                return answer(request, body, e.status)

        return route(method, path)(shaped)

    return declare


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise HTTPError(400, f"{what} must be a number, not {text[:40]!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise HTTPError(400, f"{what} must be a finite number")
    return value


class MeteorPiRoutes:
    """The routes; ``mount_path`` ([meteorpi] path) goes before each (stationd.web.http.routes_of)."""

    def __init__(self, store: Store, auth: Authenticator, files: FileStore, ingest: Ingest, metrics: Metrics,
                 node_id: str, mount_path: str, clock: IReactorTime) -> None:
        self.store, self.auth, self.files, self.ingest, self.metrics = store, auth, files, ingest, metrics
        self.node_id, self.clock = node_id, clock
        self.mount_path = mount_path.rstrip("/")
        # (file id, md5) -> why its last upload was refused: the exporter reads no upload's answer
        # and would send the record, be asked for the content and send it again without end; its
        # record is answered with the refusal once, which it counts as a failure and backs off on.
        self._refused: collections.OrderedDict[tuple[str, str], str] = collections.OrderedDict()

    def _now_ns(self) -> int:
        return int(self.clock.seconds() * 1e9)

    async def _user(self, request: Any, roles: tuple[str, ...]) -> dict[str, Any]:
        """The caller, by Basic credentials (or a stationd key), if one of ``roles`` may pass (() any role)."""
        credentials = basic_credentials(request)
        if credentials is not None:
            return await self.auth.check_basic(request, roles, credentials)
        if api_key(request) is not None:
            return await self.auth.check(request, roles, read=False)
        raise HTTPError(401, "No authorization header supplied", headers=BASIC_CHALLENGE)

    async def _reader(self, request: Any) -> None:
        if not self.auth.public_read:
            await self._user(request, ())

    # -- query API (3.2) -----------------------------------------------------

    @meteorpi_route("GET", "/obstories")
    async def obstories(self, request: Any) -> bytes:
        """Every observatory (station), keyed by its id."""
        await self._reader(request)
        return answer(request, await self.store.read(store_meteorpi.observatories, self._now_ns()))

    async def _obstory(self, obstory_id: str) -> None:
        if await self.store.read(stations.get_station, obstory_id) is None:
            raise HTTPError(404, f'No such observatory "{obstory_id}".')

    @meteorpi_route("GET", "/obstory/<obstory_id>/metadata")
    async def obstory_metadata(self, request: Any, obstory_id: str) -> bytes:
        await self._reader(request)
        return answer(request, {"status": await self.store.read(store_meteorpi.metadata, obstory_id)})

    @meteorpi_route("GET", "/obstory/<obstory_id>/statusdict")
    @meteorpi_route("GET", "/obstory/<obstory_id>/statusdict/<unix_time>")
    async def status_dict(self, request: Any, obstory_id: str, unix_time: str | None = None) -> bytes:
        """Each metadata key's latest value before ``unix_time`` (default now)."""
        await self._reader(request)
        before = self._now_ns() if unix_time is None else meteorpi.to_ns(_number(unix_time, "the time"))
        await self._obstory(obstory_id)
        return answer(request, {"status": await self.store.read(store_meteorpi.status_dict, obstory_id, before)})

    @meteorpi_route("POST", "/obstory/<obstory_id>/status")
    async def set_status(self, request: Any, obstory_id: str) -> bytes:
        """Record a metadata item (MeteorPi's obstory_admin: stationd's admin); the status dict at its time."""
        user = await self._user(request, ("admin",))
        body = _json(request)
        await self._obstory(obstory_id)
        try:
            item = meteorpi.parse_metadata({
                "metadata_id": uuid.uuid4().hex,
                "obstory_id": obstory_id, "key": body.get("key"), "time": body.get("time"),
                "type": "number" if isinstance(body.get("value"), (int, float)) else "string",
                "value": body.get("value"), "user_created": user["name"]})
        except meteorpi.ModelError as e:
            raise HTTPError(400, str(e)) from None
        await self.store.run(store_meteorpi.import_metadata, item, self.node_id, user["name"], self._now_ns())
        status = await self.store.read(store_meteorpi.status_dict, obstory_id, item["time_ns"] + 1)
        return answer(request, {"status": status})

    def _search(self, segment: str, files: bool) -> meteorpi.Search:
        try:
            return meteorpi.parse_search(meteorpi.decode_search(segment), files=files)
        except meteorpi.ModelError as e:
            raise HTTPError(400, str(e)) from None

    @meteorpi_route("GET", "/obs/<search>")
    async def observations(self, request: Any, search: str) -> bytes:
        """Observations (events) matching an ObservationSearch, newest first, with MeteorPi's count."""
        await self._reader(request)
        found, count = await self.store.read(store_meteorpi.search_observations, self._search(search, False),
                                             self.node_id, self._now_ns())
        return answer(request, {"obs": found, "count": count})

    @meteorpi_route("GET", "/files/<search>")
    async def file_records(self, request: Any, search: str) -> bytes:
        """File records matching a FileRecordSearch, newest first, with MeteorPi's count."""
        await self._reader(request)
        found, count = await self.store.read(store_meteorpi.search_files, self._search(search, True),
                                             self.node_id, self._now_ns())
        return answer(request, {"files": found, "count": count})

    @meteorpi_route("GET", "/files/content/<file_id>")
    @meteorpi_route("GET", "/files/content/<file_id>/<file_name>")
    async def content(self, request: Any, file_id: str, file_name: str | None = None) -> Any:
        """A file's content (a single byte range with Range); the name only names the download."""
        await self._reader(request)
        record = await self.store.read(store_meteorpi.file_content, file_id)
        if record is None:  # (the originals' not_found())
            return answer(request, {"message": "Entity not found", "entity_id": file_id}, 404)
        return await serve_content(request, self.files, record)

    @meteorpi_route("GET", "/skyclarity/<obstory_id>/<utc_min>/<utc_max>/<period>")
    async def sky_clarity(self, request: Any, obstory_id: str, utc_min: str, utc_max: str, period: str) -> bytes:
        """The mean sky clarity of lens-corrected frames in each bin (a bare JSON array)."""
        await self._reader(request)
        spans = self._bins(utc_min, utc_max, period)
        return answer(request, await self.store.read(store_meteorpi.sky_clarity, obstory_id, spans))

    @meteorpi_route("GET", "/activity/<obstory_id>/<semantic_type>/<utc_min>/<utc_max>/<period>")
    async def activity(self, request: Any, obstory_id: str, semantic_type: str, utc_min: str, utc_max: str,
                       period: str) -> bytes:
        """Observations of one type in each bin."""
        await self._reader(request)
        spans = self._bins(utc_min, utc_max, period)
        counts = await self.store.read(store_meteorpi.activity, obstory_id, semantic_type, spans)
        return answer(request, {"activity": counts})

    def _bins(self, utc_min: str, utc_max: str, period: str) -> meteorpi.Bins:
        try:
            return meteorpi.bins(_number(utc_min, "utc_min"), _number(utc_max, "utc_max"), _number(period, "period"))
        except meteorpi.ModelError as e:
            raise HTTPError(400, str(e)) from None

    @meteorpi_route("GET", "/login", errors="message")
    async def login(self, request: Any) -> bytes:
        """The caller, as MeteorPi's User: ``{"user": {"user_id", "roles"}}``."""
        user = await self._user(request, ())
        return answer(request, {"user": {"user_id": user["name"], "roles": _roles(user["role"])}})

    # -- import (3.3, 5.2) ---------------------------------------------------

    @meteorpi_route("POST", "/importv2", errors="state")
    async def import_entity(self, request: Any) -> bytes:
        """One entity of a camera's export: metadata, an observation, or a file record (which is stored
        once its content has been uploaded: until then the answer asks for it)."""
        user = await self._user(request, ("importer",))
        body = _json(request)
        kind = body.get("type")
        if kind not in ("metadata", "observation", "file") or kind not in body:
            raise HTTPError(400, 'the body must be {"type": "metadata", "observation" or "file", '
                                 '"<type>": the record}')
        parse = {"metadata": meteorpi.parse_metadata, "observation": meteorpi.parse_observation,
                 "file": meteorpi.parse_file_record}[kind]
        try:
            record = parse(body[kind])
        except meteorpi.ModelError as e:
            self.metrics.ingest_events.labels("meteorpi", "rejected").inc()
            log.warn("MeteorPi import from {user}: {kind} refused: {reason}", user=user["name"], kind=kind,
                     reason=str(e))
            raise HTTPError(422, f"{kind} refused: {e}; nothing was stored") from None
        origin, now_ns = f"meteorpi:{record['station']}", self._now_ns()
        if kind == "metadata":
            await self.store.run(store_meteorpi.import_metadata, record, origin, user["name"], now_ns)
        elif kind == "observation":
            await self._observation(record, origin, now_ns)
        else:
            refused = self._refused.pop((record["public_id"], record["md5"]), None)
            if refused is not None:
                raise HTTPError(422, f"the content last uploaded for file {record['public_id']} was refused "
                                     f"({refused}); it is asked for again on the next try")
            content = await self.store.read(store_meteorpi.upload, record["public_id"], record["md5"])
            if content is None or not await deferToThread(self.files.has, content.sha256):
                return answer(request, {"state": "need_file_data", "file_id": record["public_id"]})
            await self.store.run(store_meteorpi.import_file, record, content, origin, now_ns)
        return answer(request, {"state": "complete"})

    async def _observation(self, observation: dict[str, Any], origin: str, now_ns: int) -> None:
        data_json, digest = jsoncodec.canonical(observation["data"])
        reason = self.ingest.quarantine_reason(observation["time_ns"], now_ns)
        event = {"id": observation["id"], "station": observation["station"], "type": observation["type"],
                 "time_ns": observation["time_ns"], "received_ns": now_ns, "data_json": data_json, "digest": digest,
                 "origin": origin, "quarantined": reason is not None, "quarantine_reason": reason, "files": []}
        counts = await self.store.run(store_meteorpi.import_observation, observation, event)
        result = "duplicate" if not counts["accepted"] else "quarantined" if reason else "accepted"
        self.metrics.ingest_events.labels("meteorpi", result).inc()

    @meteorpi_route("POST", "/importv2/data/<file_id>/<md5>", errors="state")
    async def import_data(self, request: Any, file_id: str, md5: str) -> bytes:
        """A file's content, as multipart/form-data field ``file``; kept only if its MD5 is ``md5``."""
        user = await self._user(request, ("importer",))
        if not meteorpi.PUBLIC_ID.match(file_id) or not meteorpi.MD5.match(md5):
            raise HTTPError(400, "the path must be /importv2/data/<repository_fname>/<md5 hex>")
        mimetype, options = parse_options_header((request.getHeader(b"content-type") or b"").decode("latin-1"))
        if mimetype != "multipart/form-data" or "boundary" not in options:
            raise HTTPError(415, "send the content as multipart/form-data, in the field file")
        request.content.seek(0)
        try:
            sha256, size = await deferToThread(self._store_upload, request.content, mimetype, options, md5)
        except ContentMismatch as e:
            log.warn("MeteorPi upload of {file_id} from {user} refused: {reason}", file_id=file_id,
                     user=user["name"], reason=str(e))
            self._refused[file_id, md5.lower()] = str(e)
            while len(self._refused) > MAX_REFUSED:
                self._refused.popitem(last=False)
            raise HTTPError(422, f"file {file_id}: {e}; nothing was kept") from None
        await self.store.run(store_meteorpi.record_upload, file_id, md5.lower(), sha256, size, user["name"],
                             self._now_ns())
        return answer(request, {"state": "continue"})

    def _store_upload(self, body: Any, mimetype: str, options: dict[str, str], md5: str) -> tuple[str, int]:
        """(In a thread.)  Parse the form, keep the field's content if its MD5 is right."""
        parser = FormDataParser(silent=False, max_form_parts=16)
        try:
            _, _, parts = parser.parse(body, mimetype, None, options)
        except ValueError as e:
            raise HTTPError(400, f"the multipart body is malformed: {e}") from None
        part = parts.get("file")
        if part is None:
            raise HTTPError(400, "the multipart body has no field named file")
        try:
            return self.files.put(part.stream, expect_md5=md5)
        finally:
            part.close()

    def preflight(self, request: Any, **_: str) -> bytes:
        """A CORS preflight, answered as flask-cors did: any origin, the methods, and of the headers
        asked for those the originals allowed."""
        _cors(request)
        request.setHeader(b"accept-ranges", b"bytes")
        request.setHeader(b"access-control-allow-methods", _ALLOW_METHODS)
        asked = (request.getHeader(b"access-control-request-headers") or b"").decode("latin-1")
        allowed = [h.strip() for h in asked.split(",") if h.strip().lower() in _ALLOW_HEADERS]
        if allowed:
            request.setHeader(b"access-control-allow-headers", ", ".join(allowed).encode("latin-1"))
        request.setHeader(b"allow", _ALLOW_METHODS)
        request.setResponseCode(200)
        return b""

    for _path in PATHS:
        preflight = route("OPTIONS", _path)(preflight)
    del _path


def _roles(role: str) -> list[str]:
    """A stationd role as MeteorPi's roles: every user is a ``user``; importers may ``import``; admins
    are ``obstory_admin`` too."""
    return ["user"] + {"importer": ["import"], "admin": ["obstory_admin", "import"]}.get(role, [])


def _json(request: Any) -> dict[str, Any]:
    """The body as a JSON object, whatever its Content-Type (the originals read every body so)."""
    try:
        value = jsoncodec.loads(read_body(request) or b"null")
    except ValueError as e:
        raise HTTPError(400, f"the body is not JSON: {e}") from None
    if not isinstance(value, dict):
        raise HTTPError(400, "the body must be a JSON object")
    return value

"""The OpenAPI 3.1 description of the routes a node mounts.

Every route a component declares (stationd.web.http.route) is described in
OPERATIONS, by method and template; spec() refuses a mounted route that is
not, so a route cannot be added without its description (tests/test_openapi.py).
Who may call a route is read from its handler (stationd.web.auth.require), not
written twice.
"""

from collections.abc import Mapping
from typing import Any

from stationd.web.http import routes_of, template

JSON = "application/json"
Schema = dict[str, Any]


class UndescribedRoute(Exception):
    """A mounted route that OPERATIONS does not describe."""


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: tuple[str, ...] = (), **properties: Schema) -> Schema:
    """A JSON object; properties not named here may appear too."""
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


TEXT: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
NUM: Schema = {"type": "number"}
BOOL: Schema = {"type": "boolean"}
ANY_OBJECT: Schema = {"type": "object"}
TIME: Schema = {"type": "string", "description": "ISO 8601, UTC, nine fraction digits"}

SCHEMAS: dict[str, Schema] = {
    "Error": obj(("error",), error=obj(("code", "message"), code=TEXT, message=TEXT, details={})),
    "Event": obj(("id", "station", "type", "time", "time_ns", "data"),
                 id=TEXT, station=TEXT, type=TEXT, time=TIME, time_ns=INT, received_at=TIME, data=ANY_OBJECT,
                 files=array({}), origin=nullable(TEXT), quarantined=BOOL, quarantine_reason=nullable(TEXT)),
    "File": obj(("id", "name", "size", "sha256"),
                id=TEXT, station=nullable(TEXT), time=nullable(TIME), time_ns=nullable(INT), name=TEXT,
                mime_type=TEXT, semantic_type=nullable(TEXT), size=INT, sha256=TEXT, meta=ANY_OBJECT,
                created_at=TIME, created_ns=INT, origin=nullable(TEXT)),
    "Station": obj(("id",), id=TEXT, cluster=nullable(TEXT), name=nullable(TEXT), status=nullable(ANY_OBJECT)),
    "Sensor": obj(("name",), name=TEXT, driver=TEXT, interval=NUM, time=nullable(TIME),
                  fields={"type": "object", "additionalProperties": obj(value={}, unit=nullable(TEXT))},
                  state={"enum": ["waiting", "ok", "failing"]}, last_error=nullable(TEXT), alarms=array(TEXT)),
    "ConfigVersion": obj(("name", "version", "valid_from"), name=TEXT, version=INT, valid_from=TIME,
                         valid_from_ns=INT, author=nullable(TEXT), created_at=TIME, content={}),
    "User": obj(("name", "role"), name=TEXT, role={"enum": ["admin", "station", "importer", "editor", "reader"]},
                email=nullable(TEXT), first_name=nullable(TEXT), last_name=nullable(TEXT), created_at=TIME,
                key_rotated_at=nullable(TIME)),
    "ExportTarget": obj(("name",), name=TEXT, source={"enum": ["config", "api"]}, paused=BOOL,
                        settings=ANY_OBJECT, api_key_set=BOOL, status=ANY_OBJECT),
    "IngestAnswer": obj(("accepted", "duplicates", "quarantined"), accepted=INT, duplicates=INT, quarantined=INT),
    "MeteorPiMeta": obj(("type", "key", "value"), type={"enum": ["number", "string"]}, key=TEXT,
                        value={"anyOf": [NUM, TEXT]}),
    "MeteorPiFile": obj(("id", "obstory_id", "repository_fname", "file_time", "file_size", "file_name",
                         "mime_type", "meta"),
                        id=TEXT, obstory_id=TEXT, obstory_name=TEXT, observation_id=TEXT, repository_fname=TEXT,
                        file_time=NUM, file_size=INT, file_name=TEXT, mime_type=TEXT, semantic_type=TEXT,
                        file_md5=TEXT, meta=array(ref("MeteorPiMeta"))),
    "MeteorPiObservation": obj(("obstory_id", "id", "obs_id", "obs_time", "obs_type", "files", "meta"),
                               obstory_id=TEXT, id=TEXT, obstory_name=TEXT, obs_id=TEXT, obs_time=NUM, obs_type=TEXT,
                               files=array(ref("MeteorPiFile")), meta=array(ref("MeteorPiMeta"))),
    "MeteorPiObservatory": obj(("uid", "publicId", "name", "latitude", "longitude", "firstSeen", "lastSeen"),
                               uid=INT, publicId=TEXT, name=TEXT, latitude=nullable(NUM), longitude=nullable(NUM),
                               firstSeen=NUM, lastSeen=NUM),
}

ERRORS = {
    "400": "Malformed parameters or body (`bad_request`, `bad_json`, `too_deep` beyond 128 levels, `bad_parameter`, "
           "...)",
    "401": "No or unknown API key (`WWW-Authenticate: Bearer realm=\"stationd\"`)",
    "403": "The key's role may not use this route",
    "404": "Unknown path or record",
    "409": "Conflict with what is stored",
    "413": "Body over `[web] max_body_size`, refused as it arrives",
    "415": "Content type or encoding not accepted",
    "416": "A range past the end of the content (`range_not_satisfiable`; `Content-Range: bytes */<size>`)",
    "422": "Well-formed but invalid content (`number_out_of_range`: a number beyond a double, such as 1e400); "
           "`details` says where",
    "429": "Too many failed API keys or passwords from this client; retry after `Retry-After` seconds",
    "503": "Cannot be made durable now; retry after `Retry-After` seconds",
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": ref("Error")}}}


def json_answer(schema: Schema, description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def media_answer(media: str, description: str, schema: Schema | None = None) -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": schema or TEXT}}}


def query(name: str, description: str, schema: Schema | None = None, *, repeat: bool = False) -> dict[str, Any]:
    item = schema or TEXT
    return {"name": name, "in": "query", "description": description, "required": False,
            "schema": array(item) if repeat else item, **({"explode": True} if repeat else {})}


def json_body(schema: Schema, description: str = "") -> dict[str, Any]:
    return {"required": True, "description": description, "content": {JSON: {"schema": schema}}}


def op(tag: str, summary: str, description: str = "", *, ok: dict[str, Any], status: str = "200",
       params: tuple[dict[str, Any], ...] = (), body: dict[str, Any] | None = None,
       errors: tuple[int, ...] = (), access: tuple[tuple[str, ...], bool] | str | None = None,
       also: dict[str, dict[str, Any]] | None = None, schemes: tuple[str, ...] | None = None) -> dict[str, Any]:
    """An operation; ``access`` only for a route whose handler does not carry it (auth.require):
    "open", or (roles, read) as require() takes them.  ``also``: further answers, by status.
    ``schemes``: the credentials it takes, if not API keys; its errors are then all in ``also``
    (the MeteorPi routes answer theirs in their originals' shapes)."""
    operation: dict[str, Any] = {"tags": [tag], "summary": summary, "ok": ok, "status": status,
                                 "params": list(params), "errors": errors, "access": access,
                                 "also": also or {}, "schemes": schemes}
    if description:
        operation["description"] = description
    if body is not None:
        operation["body"] = body
    return operation


LIMIT = query("limit", "Page size", {"type": "integer", "minimum": 1, "maximum": 10000, "default": 100})
CURSOR = query("cursor", "The `next` of the previous page (same filters and order)")
ORDER = query("order", "By time, then id", {"enum": ["desc", "asc"], "default": "desc"})
AFTER = query("after", "Inclusive; ISO 8601 with a zone and up to nine fraction digits, or epoch seconds")
BEFORE = query("before", "Exclusive; as `after`")
DATESTR = ("`YYYYMMDD` (the night starting that date, site time), `YYYYMMDDTHH:MM:SS[.fff]` (UTC), ISO 8601, "
           "`current` or empty (now), `latest`")
FPLANE_PARAMS = (query("full_fplane", "1: every slot, unused ones commented out; 0: active units only",
                       {"enum": ["0", "1"], "default": "1"}),
                 query("actual_pos", "1: measured positions where the version has them",
                       {"enum": ["0", "1"], "default": "0"}))
CONFIG_POST = json_body(obj(("config",), config=ANY_OBJECT, commit={"anyOf": [BOOL, TEXT, INT]},
                            valid_from={"anyOf": [TEXT, NUM]}),
                        "`commit` false (the default) previews: nothing is stored")
FPLANE_TEXT = media_answer("text/plain", "The fplane file (FPlaneServer's format)")
STATUS = obj(("node", "node_id", "version", "uptime", "components"),
             node=TEXT, node_id=TEXT, version=TEXT, uptime=NUM, components=ANY_OBJECT, ingest=ANY_OBJECT,
             exports=ANY_OBJECT, sensors=ANY_OBJECT)
IMPORT_EVENT = obj(("id", "station", "type", "data"), id=TEXT, station=TEXT, type=TEXT, time_ns=INT, time=TEXT,
                   received_ns=INT, data=ANY_OBJECT, origin=nullable(TEXT), quarantined=BOOL,
                   quarantine_reason=nullable(TEXT), files=array(ref("File")))
TARGET_SETTINGS = {"type": "object", "properties": {"paused": BOOL},
                   "additionalProperties": {"anyOf": [TEXT, NUM, BOOL, array(TEXT), {"type": "null"}]}}
TAGS = (("core", "Liveness, version and the node's state"), ("ingest", "Stations sending events"),
        ("query", "Events, files and stations"), ("configs", "Instrument configurations (FPlaneServer's too)"),
        ("import", "Records from downstream nodes"), ("sensors", "The node's sensors and display (QIoT's routes too)"),
        ("admin", "Users, stations, files and export targets"), ("metrics", "Prometheus"),
        ("docs", "This description"), ("dashboard", "The page for people"),
        ("meteorpi", "MeteorPi's obstory query API and importv2 protocol, under `[meteorpi] path` "
                     "(docs/meteorpi.rst); CORS on every answer, `Accept-Ranges: bytes`, JSONP with `callback`"))
HTML = media_answer("text/html", "An HTML page, with no external assets")


def meteorpi_errors(*statuses: int, shape: str = "error") -> dict[str, dict[str, Any]]:
    """The MeteorPi routes' error answers: ``{"error"}`` (queries), ``{"state": "failed", "message"}``
    (import) or ``{"message"}`` (credentials refused, and /login), as the originals shaped theirs."""
    bodies = {"error": obj(("error",), error=TEXT), "message": obj(("message",), message=TEXT),
              "state": obj(("state", "message"), state={"const": "failed"}, message=TEXT)}
    return {str(status): json_answer(bodies["message" if status in (401, 403, 429) else shape],
                                     ERRORS[str(status)].split(" (`")[0]) for status in statuses}


SEARCH = "`search`: the search object as the MeteorPi clients send it, compact JSON URL-encoded twice."
CALLBACK = query("callback", "JSONP: the answer becomes `callback(json);` (`application/javascript`)")


def meteorpi_op(summary: str, description: str = "", *, ok: dict[str, Any], errors: tuple[int, ...] = (),
                write: str = "", shape: str = "error", params: tuple[dict[str, Any], ...] = (),
                body: dict[str, Any] | None = None, also: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """A MeteorPi route: reads public with public_read (else, like ``write``, any user, by HTTP Basic auth or
    a key); ``write``: the role it needs ("" for any user)."""
    access = ((write,) if write else (), not write and shape == "error")
    statuses = errors + ((401, 403, 429) if write or shape != "error" else (401, 429))
    return op("meteorpi", summary, description, ok=ok, params=(*params, CALLBACK), body=body, access=access,
              also={**(also or {}), **meteorpi_errors(*sorted(set(statuses)), shape=shape)},
              schemes=("basic", "bearer"))

OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    # core
    ("GET", "/heartbeat"): op("core", "Liveness", "Answers `OK` while the node runs.", access="open",
                              ok=media_answer("text/plain", "OK", {"const": "OK"})),
    ("GET", "/version"): op("core", "Version of the node", access="open", ok=json_answer(obj(
        ("name", "version", "node", "node_id"), name={"const": "stationd"}, version=TEXT, node=TEXT, node_id=TEXT,
        python=TEXT, twisted=TEXT))),
    ("GET", "/api/v1/status"): op("core", "The node's state",
                                  "Components, ingest counts since start, spool depth, export targets, sensors.",
                                  ok=json_answer(STATUS)),
    # HiSPARC upload
    ("POST", "/upload"): op(
        "ingest", "HiSPARC station upload",
        "The form a HiSPARC station sends.  The answer is always HTTP 200 with one code as text: `100` stored "
        "(committed or fsynced in the spool), `201` checksum mismatch, `203` wrong password, `206` unknown "
        "station, `208` payload not decodable (nothing in it is executed), `400` malformed (also, with "
        "`Retry-After`, when the batch cannot be made durable now, when this client has failed too many "
        "passwords, or when the station's or the client's password checks are queued to the limit).",
        access="open",
        body={"required": True, "content": {"application/x-www-form-urlencoded": {"schema": obj(
            ("station_id", "password", "checksum", "data"), station_id=TEXT, password=TEXT,
            checksum={"type": "string", "description": "MD5 hex of `data` encoded latin-1"},
            data={"type": "string", "description": "A pickled list of events (or JSON with `format=json`)"},
            format={"enum": ["pickle", "json"]})}}},
        ok=media_answer("text/plain", "One HiSPARC answer code",
                        {"enum": ["100", "201", "203", "206", "208", "400"]}),
        errors=(413,)),
    # native ingest
    ("POST", "/api/v1/stations/{station_id}/events"): op(
        "ingest", "Send events of a station",
        "Answered once the batch is durable.  `Idempotency-Key` makes a retry answer the first answer again "
        "(`Idempotent-Replayed: true`).  The body may be gzip or deflate encoded.  One invalid event refuses "
        "the batch (422 `invalid_events`).",
        access=(("station", "admin"), False),
        params=({"name": "Idempotency-Key", "in": "header", "required": False, "schema": TEXT},),
        body=json_body(obj(("events",), events=array(obj(
            ("type",), type=TEXT, time={"anyOf": [TEXT, NUM]}, time_ns=INT, data=ANY_OBJECT)))),
        ok=json_answer(ref("IngestAnswer")), errors=(400, 404, 413, 415, 422, 503)),
    # query
    ("GET", "/api/v1/events"): op(
        "query", "Events, a page at a time",
        "Keyset pages: follow `next` with the same filters.  `field.<name>.<op>=value` (op: eq lt le gt ge) "
        "filters on a top-level field of `data`; a quoted value compares with text.",
        params=(query("station", "Station id (any of them)", repeat=True),
                query("type", "Event type (any of them)", repeat=True), AFTER, BEFORE,
                query("quarantined", "Quarantined events", {"enum": ["false", "true", "any"], "default": "false"}),
                ORDER, LIMIT, CURSOR),
        ok=json_answer(obj(("events", "next"), events=array(ref("Event")), next=nullable(TEXT))),
        errors=(400,)),
    ("GET", "/api/v1/events/{event_id}"): op("query", "One event, with its files as records",
                                             ok=json_answer(ref("Event")), errors=(404,)),
    ("GET", "/api/v1/files"): op(
        "query", "File records, a page at a time", "`meta.<name>.<op>=value` as `field.` for events.",
        params=(query("station", "Station id", repeat=True), query("semantic_type", "", repeat=True),
                query("mime_type", "", repeat=True), AFTER, BEFORE, ORDER, LIMIT, CURSOR),
        ok=json_answer(obj(("files", "next"), files=array(ref("File")), next=nullable(TEXT))), errors=(400,)),
    ("GET", "/api/v1/files/{file_id}"): op("query", "One file record, with the ids of its events",
                                           ok=json_answer(ref("File")), errors=(404,)),
    ("GET", "/api/v1/files/{file_id}/content"): op(
        "query", "A file's content",
        "Streamed, with `ETag` (quoted SHA-256), `Last-Modified` and one byte range (206); `If-None-Match` "
        "and `If-Modified-Since` answer 304, a range past the end 416.",
        params=({"name": "Range", "in": "header", "required": False, "schema": TEXT},
                {"name": "If-None-Match", "in": "header", "required": False, "schema": TEXT}),
        ok=media_answer("*/*", "The content, in its record's content type (`mime_type`)", {"type": "string"}),
        also={"206": media_answer("*/*", "The byte range asked for (`Content-Range`)", {"type": "string"}),
              "304": {"description": "Not modified (`If-None-Match`, `If-Modified-Since`): no body"}},
        errors=(404, 416)),
    ("GET", "/api/v1/stations"): op("query", "Stations, each with its current status entry",
                                    ok=json_answer(obj(("stations",), stations=array(ref("Station"))))),
    ("GET", "/api/v1/stations/{station_id}"): op(
        "query", "A station, its status history and counts of its events",
        ok=json_answer(obj(("id",), id=TEXT, history=array(ANY_OBJECT), counts=ANY_OBJECT)), errors=(404,)),
    # instrument configurations
    ("GET", "/fplane"): op("configs", "Today's fplane file", params=FPLANE_PARAMS, ok=FPLANE_TEXT, errors=(404,)),
    ("GET", "/fplane/"): op("configs", "Today's fplane file", params=FPLANE_PARAMS, ok=FPLANE_TEXT, errors=(404,)),
    ("GET", "/fplane/{datestr}"): op("configs", "The fplane file valid at a date", f"`datestr`: {DATESTR}.",
                                     params=FPLANE_PARAMS, ok=FPLANE_TEXT, errors=(400, 404)),
    ("POST", "/fplane"): op("configs", "Preview or store an fplane version",
                            "Answers the rendered file, with `X-Stationd-Config-Version` when stored.",
                            params=FPLANE_PARAMS, body=CONFIG_POST, ok=FPLANE_TEXT, errors=(400, 409, 422)),
    ("GET", "/api/v1/configs"): op("configs", "Named configurations", ok=json_answer(obj(("configs",), configs=array(
        obj(("name",), name=TEXT, versions=INT, latest_valid_from=nullable(TIME)))))),
    ("GET", "/api/v1/configs/{name}"): op("configs", "The version valid now", ok=json_answer(ref("ConfigVersion")),
                                          errors=(400, 404)),
    ("GET", "/api/v1/configs/{name}/{datestr}"): op(
        "configs", "The version valid at a date", f"`datestr`: {DATESTR}.", ok=json_answer(ref("ConfigVersion")),
        errors=(400, 404)),
    ("GET", "/api/v1/configs/{name}/versions"): op(
        "configs", "Every version, by valid_from", ok=json_answer(obj(("versions",), versions=array(ANY_OBJECT))),
        errors=(400, 404)),
    ("GET", "/api/v1/configs/{name}/diff"): op(
        "configs", "What changed between two versions",
        params=(query("from", "Version number", INT), query("to", "Version number", INT)),
        ok=json_answer(ANY_OBJECT), errors=(400, 404)),
    ("POST", "/api/v1/configs/{name}"): op(
        "configs", "Preview or store a version", body=CONFIG_POST,
        ok=json_answer(obj(("name", "version", "content"), name=TEXT, version={"type": "null"}, content={}),
                       "The preview: the validated content, nothing stored (`version` null)"),
        also={"201": json_answer(ref("ConfigVersion"), "Stored (`commit` true): the new version")},
        errors=(400, 409, 422)),
    # import
    ("POST", "/api/v1/import"): op(
        "import", "Records from a downstream node's exporter",
        "Stored in one transaction before the answer, idempotently.  `need`: files whose contents this node "
        "does not hold yet.",
        body=json_body(obj(("origin", "events"), origin=TEXT, events=array(IMPORT_EVENT))),
        ok=json_answer(obj(("accepted", "duplicates", "need"), accepted=INT, duplicates=INT, stations_added=INT,
                           need=array(TEXT), node=TEXT, node_id=TEXT)),
        errors=(400, 409, 413, 415, 422, 503)),
    ("PUT", "/api/v1/import/files/{file_id}"): op(
        "import", "The content of a file announced by an import",
        body={"required": True, "content": {"application/octet-stream": {"schema": {
            "type": "string", "contentMediaType": "application/octet-stream"}}}},
        ok=json_answer(ANY_OBJECT), errors=(404, 413, 422)),
    # sensors and the display
    ("GET", "/api/v1/sensors"): op("sensors", "Sensors with their last readings",
                                   ok=json_answer(obj(("sensors",), sensors=array(ref("Sensor"))))),
    ("GET", "/api/v1/sensors/{name}"): op("sensors", "One sensor", ok=json_answer(ref("Sensor")), errors=(404,)),
    ("GET", "/api/v1/sensors/{name}/readings"): op(
        "sensors", "A sensor's readings, oldest first",
        "`since <= time < until` (default: the last hour); with `step`, averaged into buckets with min and max.",
        params=(query("since", "ISO 8601 or epoch seconds"), query("until", "ISO 8601 or epoch seconds"),
                query("step", "A duration: `60`, `60s`, `5m`, `1h`, `1d` (1 s to 366 d)")),
        ok=json_answer(obj(("sensor", "readings"), sensor=TEXT, since=TIME, until=TIME, step=nullable(NUM),
                           readings=array(obj(("time", "values"), time=TIME, values=ANY_OBJECT, min=ANY_OBJECT,
                                              max=ANY_OBJECT)))),
        errors=(400, 404)),
    ("GET", "/api/sensors"): op("sensors", "Sensor links, as the QIoT sensor app answered",
                                ok=json_answer(obj(("result",), result=array(TEXT)))),
    ("GET", "/api/sensors/{name}"): op("sensors", "A sensor's last reading, as the QIoT sensor app answered",
                                       ok=json_answer(obj(("result",), result=ANY_OBJECT)), errors=(404, 503)),
    ("POST", "/api/lcd"): op("sensors", "Show a message on the display (QIoT's route)",
                             body=json_body(obj(("message",), message=TEXT)),
                             ok=json_answer(obj(("result",), result=ANY_OBJECT)), errors=(400, 413)),
    # metrics, docs, dashboard
    ("GET", "/metrics"): op("metrics", "Prometheus metrics (text format)", access="open",
                            ok=media_answer("text/plain", "The exposition format, version 0.0.4")),
    ("GET", "/api/openapi.json"): op("docs", "This description (OpenAPI 3.1)", access="open",
                                     ok=json_answer(ANY_OBJECT)),
    ("GET", "/api/docs"): op("docs", "This description as a page", access="open", ok=HTML),
    ("GET", "/"): op("dashboard", "The dashboard", "Asks for a key in the page when reads are not public.",
                     access="open", ok=HTML),
    # admin
    ("GET", "/api/v1/admin/users"): op("admin", "Users", ok=json_answer(obj(("users",), users=array(ref("User"))))),
    ("POST", "/api/v1/admin/users"): op(
        "admin", "Add a user; the answer holds its key, shown once", status="201",
        body=json_body(obj(("name", "role"), name=TEXT, role=TEXT, email=TEXT, first_name=TEXT, last_name=TEXT)),
        ok=json_answer(obj(("user", "api_key"), user=ref("User"), api_key=TEXT)), errors=(400, 409)),
    ("POST", "/api/v1/admin/users/{name}/rotate-key"): op(
        "admin", "A new key for a user; the old one stops working at once",
        ok=json_answer(obj(("name", "api_key"), name=TEXT, api_key=TEXT)), errors=(404,)),
    ("DELETE", "/api/v1/admin/users/{name}"): op("admin", "Remove a user",
                                                 ok=json_answer(obj(("removed",), removed=TEXT)), errors=(404,)),
    ("GET", "/api/v1/admin/stations"): op("admin", "Stations, with whether each has an upload password",
                                          ok=json_answer(obj(("stations",), stations=array(ANY_OBJECT)))),
    ("POST", "/api/v1/admin/stations"): op(
        "admin", "Add a station", status="201",
        body=json_body(obj(("id",), id={"anyOf": [TEXT, INT]}, password=TEXT, cluster=TEXT, name=TEXT)),
        ok=json_answer(obj(("station",), station=ANY_OBJECT)), errors=(400, 409)),
    ("DELETE", "/api/v1/admin/stations/{station_id}"): op(
        "admin", "Remove a station (its events stay)", ok=json_answer(obj(("removed",), removed=TEXT)),
        errors=(404,)),
    ("POST", "/api/v1/admin/stations/{station_id}/status"): op(
        "admin", "Add a status entry to a station's history", status="201",
        body=json_body(obj(valid_from={"anyOf": [TEXT, NUM]}, instrument={}, location=obj(lat=NUM, lon=NUM, alt=NUM),
                           orientation=ANY_OBJECT)),
        ok=json_answer(obj(("station", "history"), station=TEXT, history=array(ANY_OBJECT))),
        errors=(400, 404, 409)),
    ("POST", "/api/v1/admin/events/{event_id}/files"): op(
        "admin", "Attach a file (the body) to an event", status="201",
        params=(query("name", "File name"), query("mime_type", "Content type", {"type": "string",
                                                                              "default": "application/octet-stream"}),
                query("semantic_type", ""), query("meta", "A JSON object")),
        body={"required": True, "content": {"application/octet-stream": {"schema": {
            "type": "string", "contentMediaType": "application/octet-stream"}}}},
        ok=json_answer(obj(("file",), file=ref("File"))), errors=(400, 404, 413)),
    ("GET", "/api/v1/admin/exports"): op("admin", "Export targets, from the file and from the API",
                                         ok=json_answer(obj(("targets",), targets=array(ref("ExportTarget"))))),
    ("POST", "/api/v1/admin/exports"): op(
        "admin", "Add an export target; it starts at once unless paused", status="201",
        body=json_body({**TARGET_SETTINGS, "required": ["name"]},
                       "`name`, `paused`, and any `[export:NAME]` setting in the file's syntax"),
        ok=json_answer(obj(("target",), target=ref("ExportTarget"))), errors=(400, 409)),
    ("PATCH", "/api/v1/admin/exports/{name}"): op(
        "admin", "Change or pause a target made by the API",
        body=json_body(TARGET_SETTINGS, "Settings given replace the stored ones; null: back to the default"),
        ok=json_answer(obj(("target",), target=ref("ExportTarget"))), errors=(400, 404, 409)),
    ("DELETE", "/api/v1/admin/exports/{name}"): op("admin", "Remove a target made by the API, and its cursor",
                                                   ok=json_answer(obj(("removed",), removed=TEXT)),
                                                   errors=(404, 409)),
    # meteorpi (paths under [meteorpi] path)
    ("GET", "/obstories"): meteorpi_op(
        "Every observatory (station), keyed by its id",
        ok=json_answer({"type": "object", "additionalProperties": ref("MeteorPiObservatory")})),
    ("GET", "/obstory/{obstory_id}/metadata"): meteorpi_op(
        "The observatory's 100 newest metadata items, oldest first",
        ok=json_answer(obj(("status",), status=array(array({})))),),
    ("GET", "/obstory/{obstory_id}/statusdict"): meteorpi_op(
        "Each metadata key's latest value now", ok=json_answer(obj(("status",), status=ANY_OBJECT)), errors=(404,)),
    ("GET", "/obstory/{obstory_id}/statusdict/{unix_time}"): meteorpi_op(
        "Each metadata key's latest value before a time (Unix seconds)",
        ok=json_answer(obj(("status",), status=ANY_OBJECT)), errors=(400, 404)),
    ("POST", "/obstory/{obstory_id}/status"): meteorpi_op(
        "Record a metadata item", "MeteorPi's `obstory_admin`: stationd's `admin`.", write="admin",
        body=json_body(obj(("key", "value", "time"), key=TEXT, value={"anyOf": [NUM, TEXT]}, time=NUM)),
        ok=json_answer(obj(("status",), status=ANY_OBJECT)), errors=(400, 404, 413)),
    ("GET", "/obs/{search}"): meteorpi_op(
        "Observations (events) matching an ObservationSearch, newest first", SEARCH,
        ok=json_answer(obj(("obs", "count"), obs=array(ref("MeteorPiObservation")), count=INT)), errors=(400,)),
    ("GET", "/files/{search}"): meteorpi_op(
        "File records matching a FileRecordSearch, newest first", SEARCH,
        ok=json_answer(obj(("files", "count"), files=array(ref("MeteorPiFile")), count=INT)), errors=(400,)),
    ("GET", "/files/content/{file_id}"): meteorpi_op(
        "A file's content, by its repository_fname (or stationd id); one byte range with `Range`",
        ok=media_answer("*/*", "The content", {"type": "string"}), errors=(404, 416),
        also={"206": media_answer("*/*", "The byte range asked for (`Content-Range`)", {"type": "string"})}),
    ("GET", "/files/content/{file_id}/{file_name}"): meteorpi_op(
        "A file's content; the name only names the download",
        ok=media_answer("*/*", "The content", {"type": "string"}), errors=(404, 416),
        also={"206": media_answer("*/*", "The byte range asked for (`Content-Range`)", {"type": "string"})}),
    ("GET", "/skyclarity/{obstory_id}/{utc_min}/{utc_max}/{period}"): meteorpi_op(
        "Mean sky clarity of lens-corrected frames in each bin (at most 250)", ok=json_answer(array(NUM)),
        errors=(400,)),
    ("GET", "/activity/{obstory_id}/{semantic_type}/{utc_min}/{utc_max}/{period}"): meteorpi_op(
        "Observations of a type in each bin (at most 250)", ok=json_answer(obj(("activity",), activity=array(INT))),
        errors=(400,)),
    ("GET", "/login"): meteorpi_op(
        "The caller, as MeteorPi's User", shape="message",
        ok=json_answer(obj(("user",), user=obj(("user_id", "roles"), user_id=TEXT, roles=array(TEXT))))),
    ("POST", "/importv2"): meteorpi_op(
        "One entity of a camera's export (metadata, observation or file)",
        "MeteorPi's `import` role: stationd's `importer`.  Stored before it is answered, once however often "
        "it is sent; a file record is answered `need_file_data` until its content has been uploaded.",
        write="importer", shape="state",
        body=json_body(obj(("type",), type={"enum": ["metadata", "observation", "file"]}, metadata=ANY_OBJECT,
                           observation=ANY_OBJECT, file=ANY_OBJECT)),
        ok=json_answer(obj(("state",), state={"enum": ["complete", "need_file_data"]}, file_id=TEXT)),
        errors=(400, 413, 422, 503)),
    ("POST", "/importv2/data/{file_id}/{md5}"): meteorpi_op(
        "A file's content, as multipart/form-data field `file`; kept only if its MD5 is the path's",
        write="importer", shape="state", ok=json_answer(obj(("state",), state={"const": "continue"})),
        errors=(400, 413, 415, 422, 503)),
}


def _security(access: tuple[tuple[str, ...], bool] | str, public_read: bool) -> tuple[list[dict], str]:
    """The operation's security requirement and the sentence that says who may call it."""
    if isinstance(access, str):  # ("open")
        return [], "Open to anyone."
    roles, read = access
    keys: list[dict] = [{"bearer": []}, {"fps_api": []}]
    if read:
        return ([] if public_read else keys), ("Public (`public_read = true`)." if public_read
                                               else "Any valid key (`public_read = false`).")
    allowed = ", ".join(f"`{role}`" for role in sorted(set(roles) | {"admin"}))
    return keys, f"A key of role {allowed}."


def _operation(owner: str, name: str, handler: Any, method: str, path: str, public_read: bool) -> dict[str, Any]:
    described = OPERATIONS.get((method, path))
    if described is None:
        raise UndescribedRoute(f"{method} {path} ({owner}.{name}) is not described in stationd.web.openapi")
    access = getattr(handler, "stationd_access", None) or described["access"]
    if access is None:
        raise UndescribedRoute(f"{method} {path} ({owner}.{name}): who may call it is not said")
    security, who = _security(access, public_read)
    responses: dict[str, Any] = {described["status"]: described["ok"], **described["also"]}
    errors = set(described["errors"]) | ({401, 403, 429} if security else set())
    if described["schemes"] is not None:
        security, errors = [{scheme: []} for scheme in described["schemes"]] if security else [], set()
    elif JSON in described.get("body", {}).get("content", {}):
        # what read_json answers: malformed or nested too deeply, too large, not JSON, a number beyond a double
        errors |= {400, 413, 415, 422}
    for status in sorted(errors):
        responses[str(status)] = {"$ref": f"#/components/responses/E{status}"}
    responses["default"] = _error("Unexpected failure (`internal_error`; the traceback is in the node's log)")
    path_params = [{"name": p, "in": "path", "required": True, "schema": TEXT}
                   for p in _path_parameters(path)]
    operation = {
        "operationId": f"{owner}.{name}",
        "tags": described["tags"],
        "summary": described["summary"],
        "description": " ".join(filter(None, (described.get("description"), who))),
        "parameters": path_params + described["params"],
        "responses": responses,
        "security": security,
    }
    if "body" in described:
        operation["requestBody"] = described["body"]
    return operation


def _path_parameters(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{") and part.endswith("}")]


def spec(groups: Mapping[str, object], request_path: str, version: str, node_name: str,
         public_read: bool) -> dict[str, Any]:
    """The description of ``groups`` (the mounted components) under ``request_path``."""
    prefix = request_path.rstrip("/")
    paths: dict[str, dict[str, Any]] = {}
    ids: dict[str, int] = {}  # operationId -> how many routes of that method so far
    for group in groups.values():
        owner = type(group).__name__
        for route in routes_of(group):
            if route.method == "OPTIONS":  # (CORS preflights: not operations of the API)
                continue
            operation = _operation(owner, route.name, route.declared, route.method, template(route.declared_path),
                                   public_read)
            ids[operation["operationId"]] = seen = ids.get(operation["operationId"], 0) + 1
            if seen > 1:  # (one method declaring several routes: /fplane, /fplane/, /fplane/<datestr>)
                operation["operationId"] += f"_{seen}"
            paths.setdefault(prefix + template(route.path) or "/", {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": f"stationd node {node_name}", "version": version,
                 "description": "The HTTP API of this stationd node: only its mounted components, under its "
                                "request path.  Every error is `{\"error\": {\"code\", \"message\"}}`."},
        "tags": [{"name": name, "description": text} for name, text in TAGS],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": SCHEMAS,
            "responses": {f"E{status}": _error(text) for status, text in ERRORS.items()},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "`Authorization: Bearer <key>`"},
                "fps_api": {"type": "apiKey", "in": "header", "name": "Authorization",
                            "description": "FPlaneServer's `Authorization: FPS_API APIKEY=<key>`"},
                "basic": {"type": "http", "scheme": "basic",
                          "description": "A user's name and the password `stationd-admin set-password` gave it "
                                         "(the MeteorPi routes)"},
            },
        },
    }

"""Admin routes: users and their API keys (the same operations as stationd-admin), stations,
event files, and export targets at run time."""

from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread

from stationd.exporter import ExportTargets, TargetError
from stationd.filestore import FileStore
from stationd import jsoncodec
from stationd.jsoncodec import has_nul
from stationd.store import Store, files, stations, users
from stationd.times import parse_valid_from
from stationd.web.auth import Authenticator, require
from stationd.web.http import HTTPError, _no_constants, json_body, read_json, route


async def _run(store, operation, *args, **kwargs):
    try:
        return await store.run(operation, *args, **kwargs)
    except (users.NoSuchUser, stations.NoSuchStation, files.NoSuchEvent) as e:
        raise HTTPError(404, str(e)) from None
    except (users.UserExists, stations.StationExists) as e:
        raise HTTPError(409, str(e)) from None
    except (users.UserError, stations.StationError) as e:
        raise HTTPError(400, str(e)) from None


def _text_arg(request, name, default=None, limit=255):
    values = request.args.get(name.encode(), [])
    if not values:
        if default is None:
            raise HTTPError(400, f"{name}: required", code="bad_parameter")
        return default
    try:
        value = values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPError(400, f"{name}: not UTF-8", code="bad_parameter") from None
    if not 0 < len(value) <= limit or "\x00" in value:
        raise HTTPError(400, f"{name}: 1 to {limit} characters, none of them NUL", code="bad_parameter")
    return value


class AdminRoutes:
    def __init__(self, store: Store, auth: Authenticator, files: FileStore, exports: ExportTargets, node_id: str,
                 clock: IReactorTime):
        self.store, self.auth, self.files, self.exports = store, auth, files, exports
        self.origin = node_id
        self.clock = clock

    @route("GET", "/api/v1/admin/users")
    @require("admin")
    async def list_users(self, request):
        return json_body(request, {"users": await self.store.read(users.list_users)})

    @route("POST", "/api/v1/admin/users")
    @require("admin")
    async def add_user(self, request):
        body = read_json(request)
        # (a list as the name was a TypeError in users.add_user, a 500: found by schemathesis)
        for field in ("name", "role", "email", "first_name", "last_name"):
            if body.get(field) is not None and not isinstance(body[field], str):
                raise HTTPError(400, f"{field}: a string", code="bad_user")
        if isinstance(body.get("station"), bool) or not isinstance(body.get("station"), (str, int, type(None))):
            raise HTTPError(400, "station: a station id", code="bad_user")
        fields = {k: body.get(k) for k in ("email", "first_name", "last_name", "station")}
        user, key = await _run(self.store, users.add_user, body.get("name"), body.get("role"), **fields)
        return json_body(request, {"user": user, "api_key": key}, status=201)

    @route("POST", "/api/v1/admin/users/<name>/rotate-key")
    @require("admin")
    async def rotate_key(self, request, name):
        key = await _run(self.store, users.rotate_key, name)
        return json_body(request, {"name": name, "api_key": key})

    @route("DELETE", "/api/v1/admin/users/<name>")
    @require("admin")
    async def remove_user(self, request, name):
        await _run(self.store, users.remove_user, name)
        return json_body(request, {"removed": name})

    @route("GET", "/api/v1/admin/stations")
    @require("admin")
    async def list_stations(self, request):
        return json_body(request, {"stations": await self.store.read(stations.list_stations)})

    @route("POST", "/api/v1/admin/stations")
    @require("admin")
    async def add_station(self, request):
        body = read_json(request)
        password = body.get("password")
        if password is not None and not isinstance(password, str):
            raise HTTPError(400, "password must be a string")
        hashed = await deferToThread(stations.hash_password, password) if password else None
        station = await _run(self.store, stations.add_station, str(body.get("id", "")), hashed,
                             cluster=body.get("cluster"), name=body.get("name"))
        return json_body(request, {"station": station}, status=201)

    @route("DELETE", "/api/v1/admin/stations/<station_id>")
    @require("admin")
    async def remove_station(self, request, station_id):
        await _run(self.store, stations.remove_station, station_id)
        return json_body(request, {"removed": station_id})

    @route("POST", "/api/v1/admin/events/<event_id>/files")
    @require("admin")
    async def attach_file(self, request, event_id):
        """The body is the content; name, mime_type, semantic_type, meta (JSON) in the query."""
        name = _text_arg(request, "name")
        mime_type = _text_arg(request, "mime_type", "application/octet-stream", 127)
        semantic_type = _text_arg(request, "semantic_type", "", 127) or None
        try:  # nested as event data may be: it rides in an export's import body
            meta = jsoncodec.loads(_text_arg(request, "meta", "{}", 65536).encode("utf-8"),
                                   parse_constant=_no_constants, max_depth=jsoncodec.DATA_DEPTH)
        except (jsoncodec.NumberOutOfRange, jsoncodec.TooDeep) as e:
            raise HTTPError(400, f"meta: {e}", code="bad_parameter") from None
        except ValueError:
            meta = None
        if not isinstance(meta, dict):
            raise HTTPError(400, "meta: a JSON object", code="bad_parameter")
        if has_nul(meta):
            raise HTTPError(400, "meta: holds a NUL character (U+0000), which the store cannot keep",
                            code="bad_parameter")
        request.content.seek(0)
        sha256, size = await deferToThread(self.files.put, request.content)
        record = await _run(self.store, files.attach_file, event_id, name=name, mime_type=mime_type,
                            semantic_type=semantic_type, meta=meta, sha256=sha256, size=size,
                            now_ns=int(self.clock.seconds() * 1e9), origin=self.origin)
        return json_body(request, {"file": record}, status=201)

    @route("POST", "/api/v1/admin/stations/<station_id>/status")
    @require("admin")
    async def add_status(self, request, station_id):
        """{"valid_from" (default now), "instrument", "location": {lat, lon, alt}, "orientation"}."""
        body = read_json(request)
        try:
            valid_from = (parse_valid_from(body["valid_from"]) if body.get("valid_from") is not None
                          else int(self.clock.seconds() * 1e9))
        except ValueError as e:
            raise HTTPError(400, f"valid_from: {e}") from None
        history = await _run(self.store, stations.add_status, station_id, valid_from,
                             int(self.clock.seconds() * 1e9), instrument=body.get("instrument"),
                             location=body.get("location"), orientation=body.get("orientation"))
        return json_body(request, {"station": station_id, "history": history}, status=201)

    @route("GET", "/api/v1/admin/exports")
    @require("admin")
    async def list_exports(self, request):
        return json_body(request, {"targets": self.exports.describe()})

    @route("POST", "/api/v1/admin/exports")
    @require("admin")
    async def add_export(self, request):
        """{"name", "paused" (default false), and settings as in [export:NAME]}."""
        settings = read_json(request)
        name, paused = settings.pop("name", None), _paused(settings)
        if not isinstance(name, str):
            raise HTTPError(400, "name: required, a string", code="bad_target")
        target = await _targets(self.exports.add(name, settings, bool(paused)))
        return json_body(request, {"target": target}, status=201)

    @route("PATCH", "/api/v1/admin/exports/<name>")
    @require("admin")
    async def change_export(self, request, name):
        """Settings given replace the stored ones (null: the default); "paused": true/false."""
        settings = read_json(request)
        paused = _paused(settings)
        target = await _targets(self.exports.change(name, settings, paused))
        return json_body(request, {"target": target})

    @route("DELETE", "/api/v1/admin/exports/<name>")
    @require("admin")
    async def remove_export(self, request, name):
        await _targets(self.exports.remove(name))
        return json_body(request, {"removed": name})


def _paused(settings):
    paused = settings.pop("paused", None)
    if paused is not None and not isinstance(paused, bool):
        raise HTTPError(400, "paused: true or false", code="bad_target")
    return paused


async def _targets(operation):
    try:
        return await operation
    except TargetError as e:
        raise HTTPError(e.status, str(e), code=e.code, details=e.details) from None

"""Admin routes: users and their API keys (the same operations as stationd-admin)."""

from twisted.internet.threads import deferToThread

from stationd.store import stations, users
from stationd.web.auth import require
from stationd.web.http import HTTPError, json_body, read_json, route


async def _run(store, operation, *args, **kwargs):
    try:
        return await store.run(operation, *args, **kwargs)
    except (users.NoSuchUser, stations.NoSuchStation) as e:
        raise HTTPError(404, str(e)) from None
    except (users.UserExists, stations.StationExists) as e:
        raise HTTPError(409, str(e)) from None
    except (users.UserError, stations.StationError) as e:
        raise HTTPError(400, str(e)) from None


class Admin:
    def __init__(self, node):
        self.store = node.store
        self.auth = node.auth

    @route("GET", "/api/v1/admin/users")
    @require("admin")
    async def list_users(self, request):
        return json_body(request, {"users": await self.store.read(users.list_users)})

    @route("POST", "/api/v1/admin/users")
    @require("admin")
    async def add_user(self, request):
        body = read_json(request)
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

"""Admin routes: users and their API keys (the same operations as stationd-admin)."""

from stationd.store import users
from stationd.web.auth import require
from stationd.web.http import HTTPError, json_body, read_json, route


async def _run(store, operation, *args, **kwargs):
    try:
        return await store.run(operation, *args, **kwargs)
    except users.NoSuchUser as e:
        raise HTTPError(404, str(e)) from None
    except users.UserExists as e:
        raise HTTPError(409, str(e)) from None
    except users.UserError as e:
        raise HTTPError(400, str(e)) from None


class Admin:
    def __init__(self, node):
        self.store = node.store
        self.auth = node.auth

    @route("GET", "/api/v1/admin/users")
    @require("admin")
    async def list_users(self, request):
        return json_body(request, {"users": await self.store.run(users.list_users)})

    @route("POST", "/api/v1/admin/users")
    @require("admin")
    async def add_user(self, request):
        body = read_json(request)
        fields = {k: body.get(k) for k in ("email", "first_name", "last_name")}
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

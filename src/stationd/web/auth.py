"""API-key authentication and role checks, as one decorator for route handlers; HTTP Basic
auth with users' passwords, for the MeteorPi routes (stationd.web.meteorpi).

Keys and users are looked up through stationd.store.cache, which the store keeps true:
keys added, rotated or removed by ``stationd-admin`` or the admin API count
from the next request on.
"""

import base64
import binascii
import functools
import inspect
import re

from stationd.store import stations
from stationd.store.cache import Cache
from stationd.web.guard import FailureLimiter, PasswordChecks, client_of
from stationd.web.http import HTTPError

_BEARER = re.compile(r"^\s*Bearer\s+(\S+)\s*$", re.IGNORECASE)
# FPlaneServer clients send "FPS_API APIKEY=<key>", the key word in any case.
_FPS_API = re.compile(r"^\s*FPS_API\s+APIKEY\s*=\s*(\S+)\s*$", re.IGNORECASE)
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="stationd"'}


_BASIC = re.compile(r"^\s*Basic\s+([A-Za-z0-9+/=_-]+)\s*$", re.IGNORECASE)
BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="stationd", charset="UTF-8"'}


def basic_credentials(request):
    """(user name, password) of an ``Authorization: Basic`` header, None without one; a 401 if it is garbled."""
    header = (request.getHeader(b"authorization") or b"").decode("latin-1")
    match = _BASIC.match(header)
    if match is None:
        return None
    try:
        name, colon, password = base64.b64decode(match.group(1), validate=False).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        name, colon, password = "", "", ""
    if not colon or not name:
        raise HTTPError(401, "the Basic credentials are not base64 of UTF-8 user:password", headers=BASIC_CHALLENGE)
    return name, password


def api_key(request):
    header = (request.getHeader(b"authorization") or b"").decode("latin-1")
    match = _BEARER.match(header) or _FPS_API.match(header)
    return match.group(1) if match else None


class Authenticator:
    def __init__(self, cache: Cache, public_read: bool, limiter: FailureLimiter | None = None,
                 checks: PasswordChecks | None = None) -> None:
        self.cache = cache
        self.public_read = public_read
        # Unknown keys count against the client (with upload passwords); over
        # the limit, its keys are not looked at: 429 with Retry-After.
        self.limiter = limiter
        self.checks = checks or PasswordChecks(4, 4)  # (users' passwords, queued as stations' are)

    def _limited(self, request, client):
        wait = None if self.limiter is None else self.limiter.retry_after(client)
        if wait is not None:
            request.stationd_auth_failed = True
            raise HTTPError(429, f"too many failed API keys or passwords from {client}: retry after {wait} s",
                            headers={"Retry-After": str(wait)})

    def _failed(self, request, client):
        if self.limiter is not None:
            self.limiter.failed(client)
        request.stationd_auth_failed = True

    async def check_basic(self, request, roles, credentials):
        """The user whose name and password ``credentials`` are (HTTP Basic), if one of ``roles`` may pass;
        else 401 (with a Basic challenge), 403, 429, or 503 while its password checks are queued full."""
        client = client_of(request)
        self._limited(request, client)
        name, password = credentials
        user = await self.cache.login(name)
        stored = user and user["password_hash"]
        matches = stations.remembered(stored, password) if stored else False
        if matches is None:
            matches = await self.checks.check(f"user:{name}", client, stored, password)
            if matches is None:
                raise HTTPError(503, "too many password checks waiting; retry later", headers={"Retry-After": "5"})
        if not matches:
            self._failed(request, client)
            raise HTTPError(401, "unknown user or wrong password", headers=BASIC_CHALLENGE)
        user = {k: v for k, v in user.items() if k != "password_hash"}
        return self.admit(request, user, roles)

    async def check(self, request, roles, read):
        """The caller's user (None for a public read), or 401/403."""
        key = api_key(request)
        if key is None and read and self.public_read:
            return None
        if key is None:
            raise HTTPError(401, "this route needs an API key: Authorization: Bearer <key>",
                            headers=_CHALLENGE)
        if self.limiter is None:
            return self.admit(request, await self.cache.user(key), roles)
        client = client_of(request)
        self._limited(request, client)
        user = await self.cache.user(key)
        if user is None:
            self._failed(request, client)
        return self.admit(request, user, roles)

    def admit(self, request, user, roles):
        """``user``, looked up by the request's key (None: unknown), if one of ``roles`` may pass; else 401/403."""
        if user is None:
            raise HTTPError(401, "unknown API key", headers=_CHALLENGE)
        request.stationd_user = user["name"]
        request.stationd_account = user
        if roles and user["role"] not in roles and user["role"] != "admin":
            raise HTTPError(403, f"this route needs role {' or '.join(roles)}; "
                                 f"{user['name']} has role {user['role']}")
        return user


def require(*roles, read=False):
    """Decorate a handler of a component that has ``self.auth``.

    ``require("editor")``: a key of role editor (or admin).  ``require(read=True)``:
    public when [web] public_read is true, else any valid key.  The handler
    receives the user as ``request.stationd_user`` (its name, for the log).
    """

    def decorate(handler):
        @functools.wraps(handler)
        async def checked(self, request, *args, **kwargs):
            await self.auth.check(request, roles, read)
            result = handler(self, request, *args, **kwargs)
            return await result if inspect.isawaitable(result) else result

        checked.stationd_access = (roles, read)  # (what the OpenAPI spec says of it: web.openapi)
        return checked

    return decorate

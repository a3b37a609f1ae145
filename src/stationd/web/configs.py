"""Instrument configuration routes: FPlaneServer's (/fplane) and generic (/api/v1/configs).

FPlaneServer clients keep working unchanged: GET /fplane/<datestr> with
actual_pos and full_fplane, POST /fplane {config, commit}, and the
"Authorization: FPS_API APIKEY=<key>" header.
"""

import datetime
import re

from twisted.internet.threads import deferToThread

from stationd import fplane
from stationd.instrument_configs import NAME, InstrumentConfigs
from stationd.store import Store
from stationd.store import configs as store_configs
from stationd.times import DATESTR_FORMATS, parse_valid_from
from stationd.web.auth import Authenticator, require
from stationd.web.http import HTTPError, json_body, read_json, route

# JSON true/false, and 1/0 (equal to True/False as keys), as text too.
_VERSION = re.compile(rb"[0-9]{1,9}")  # a version number, within the store's Integer column (32 bits on PostgreSQL)
_FLAGS = {True: True, False: False, "true": True, "false": False, "1": True, "0": False}


def _flag(request, name, default):
    values = request.args.get(name.encode())
    if not values:
        return default
    try:
        return {b"1": True, b"0": False}[values[0].strip()]
    except KeyError:
        raise HTTPError(400, f"{name}: use 0 or 1", code="bad_parameter") from None


def _name(name):
    if not NAME.match(name):
        raise HTTPError(404, f"no configuration {name!r}")
    return name


def _commit(body):
    flag = body.get("commit", False)
    try:
        return _FLAGS[flag.strip().lower() if isinstance(flag, str) else flag]
    except (KeyError, TypeError):
        raise HTTPError(400, "commit: use true or false (or 1/0)", code="bad_parameter") from None


def _invalid(error):
    return HTTPError(422, f"the configuration is refused: {error}", code="invalid_config",
                     details={"problems": error.problems})


def _text(request, text, filename=None):
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    if filename:
        request.setHeader(b"content-disposition", f'attachment; filename="{filename}"'.encode("latin-1"))
    return text.encode("utf-8")


class ConfigRoutes:
    def __init__(self, store: Store, auth: Authenticator, configs: InstrumentConfigs):
        self.store, self.auth, self.configs = store, auth, configs

    async def _version(self, name, datestr):
        try:
            version = await self.configs.at(name, datestr)
        except ValueError as e:
            raise HTTPError(400, str(e), code="bad_date", details={"formats": DATESTR_FORMATS}) from None
        if version is None:
            raise HTTPError(404, f"no version of {name} is valid at {datestr or 'the current time'}")
        return version

    async def _submit(self, request, name):
        """Validate a POSTed config; store it when commit is true: (content, valid_from, version or None)."""
        body = read_json(request)
        content = body.get("config", body.get("content"))
        commit = _commit(body)
        try:
            content = self.configs.validate(name, content)
        except fplane.ConfigInvalid as e:
            raise _invalid(e) from None
        try:
            valid_from = (parse_valid_from(body["valid_from"]) if body.get("valid_from") is not None
                          else self.configs.now_ns())
        except ValueError as e:
            raise HTTPError(400, f"valid_from: {e}", code="bad_parameter") from None
        if not commit:
            return content, valid_from, None
        try:
            version = await self.configs.add(name, content, valid_from, request.stationd_user)
        except store_configs.VersionExists as e:
            raise HTTPError(409, str(e)) from None
        return content, valid_from, version

    # ---- FPlaneServer

    @route("GET", "/fplane")
    @route("GET", "/fplane/")
    @route("GET", "/fplane/<datestr>")
    @require(read=True)
    async def get_fplane(self, request, datestr=""):
        actual, full = _flag(request, "actual_pos", False), _flag(request, "full_fplane", True)
        version = await self._version("fplane", datestr)
        label = datestr or datetime.datetime.now(self.configs.zone).strftime("%Y%m%d")
        return _text(request, await deferToThread(self.configs.render, version, full, actual), f"fplane{label}.txt")

    @route("POST", "/fplane")
    @require("editor")
    async def post_fplane(self, request):
        actual, full = _flag(request, "actual_pos", False), _flag(request, "full_fplane", True)
        content, valid_from, version = await self._submit(request, "fplane")
        if version is None:
            return _text(request, self.configs.preview("fplane", content, request.stationd_user, valid_from, full,
                                                       actual))
        request.setHeader(b"x-stationd-config-version", str(version["version"]).encode())
        return _text(request, await deferToThread(self.configs.render, version, full, actual))

    # ---- generic

    @route("GET", "/api/v1/configs")
    @require(read=True)
    async def list_configs(self, request):
        return json_body(request, {"configs": await self.store.read(store_configs.list_configs)})

    @route("GET", "/api/v1/configs/<name>")
    @route("GET", "/api/v1/configs/<name>/<datestr>")
    @require(read=True)
    async def get_config(self, request, name, datestr=""):
        return json_body(request, await self._version(_name(name), datestr))

    @route("GET", "/api/v1/configs/<name>/versions")
    @require(read=True)
    async def versions(self, request, name):
        listed = await self.store.read(store_configs.list_versions, _name(name))
        if not listed:
            raise HTTPError(404, f"no configuration {name!r}")
        return json_body(request, {"name": name, "versions": listed})

    @route("GET", "/api/v1/configs/<name>/diff")
    @require(read=True)
    async def diff(self, request, name):
        """?from=N&to=M: what changed from version N to version M."""
        numbers = []
        for param in ("from", "to"):
            value = request.args.get(param.encode(), [b""])[0]
            # beyond the column: OverflowError (SQLite) or NumericValueOutOfRange (PostgreSQL), a 500
            if not _VERSION.fullmatch(value):
                raise HTTPError(400, f"{param}: a version number", code="bad_parameter")
            version = await self.store.read(store_configs.get_version, _name(name), int(value))
            if version is None:
                raise HTTPError(404, f"no version {int(value)} of {name}")
            numbers.append(version)
        old, new = (v["content"] for v in numbers)
        if name == "fplane":
            changes = fplane.diff(old, new)
        else:
            changes = [{"key": k, "changed": [old.get(k), new.get(k)]}
                       for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        return json_body(request, {"name": name, "from": numbers[0]["version"], "to": numbers[1]["version"],
                                   "changes": changes})

    @route("POST", "/api/v1/configs/<name>")
    @require("editor")
    async def post_config(self, request, name):
        """{"config", "commit", "valid_from"?}: 201 with the stored version, or 200 with the preview."""
        content, _, version = await self._submit(request, _name(name))
        if version is None:
            return json_body(request, {"name": name, "version": None, "content": content})
        return json_body(request, version, status=201)

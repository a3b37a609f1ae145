"""stationd.client: talk to a node over HTTP(S) with treq.

TLS is verified against ``ca`` (a PEM file) or the system's trust store, the
host name checked by service_identity; a client certificate is presented when
``client_cert`` and ``client_key`` are given (mutual TLS).

The query methods follow the node's ``next`` cursors: ``query_events`` and
``query_files`` return lists, ``iter_events`` and ``iter_files`` yield as
pages arrive (async generators; ``async for`` them inside a coroutine run by
``ensureDeferred``).
"""

import datetime
import decimal
import email.utils
import hashlib
import json
import os
import pickle
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, Protocol, TypeAlias, cast
from urllib.parse import quote, urlencode

import treq
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool, _HTTP11ClientFactory
from twisted.web.iweb import IPolicyForHTTPS, IResponse
from zope.interface import implementer

from stationd import jsoncodec
from stationd.times import parse_time

MAX_PAGE = 10000  # the node's largest page (store.query.MAX_LIMIT)
OPERATORS = ("eq", "lt", "le", "gt", "ge")
_CONSTRAINT = re.compile(r"^([A-Za-z0-9_-]{1,64})\.(eq|lt|le|gt|ge)=(.*)$", re.DOTALL)

# The types of the arguments (for mypy; nothing checks them at run time).
_Path: TypeAlias = str | os.PathLike[str]
_Time: TypeAlias = str | int | float | datetime.datetime  # ISO 8601 with a zone, epoch seconds, an aware datetime
_Several: TypeAlias = str | int | Iterable[str | int] | None  # one value, or several (ORed)
_Constraints: TypeAlias = str | Iterable[str]  # NAME.OP=VALUE, one or several (ANDed)
_Params: TypeAlias = list[tuple[str, str]]  # query parameters, in order
_Setting: TypeAlias = str | int | float | list[str] | None  # an export target's setting (None: the default)
_Order: TypeAlias = Literal["desc", "asc"]
_Quarantined: TypeAlias = bool | Literal["true", "false", "any"]
_Format: TypeAlias = Literal["json", "pickle"]


class _HTTP(Protocol):
    """What Client uses of treq's HTTPClient: its request() (the tests give it StubTreq, or a wrapper of one)."""

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Awaitable[IResponse]: ...


class ClientError(Exception):
    """The node answered with an error, or could not be reached."""

    details: Any  # the node's "details" (any JSON), set only by _answer_error: an upload's error

    def __init__(self, message: str, status: int | None = None, code: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after = retry_after  # seconds, from a Retry-After header


@implementer(IPolicyForHTTPS)
class TLSPolicy:
    """Verify the node against ``ca`` (PEM), optionally present a client certificate."""

    def __init__(self, ca: _Path | None = None, client_cert: _Path | None = None,
                 client_key: _Path | None = None) -> None:
        self.trust: ssl.Certificate | None = None
        if ca is not None:
            with open(ca, "rb") as f:
                self.trust = ssl.Certificate.loadPEM(f.read())
        self.client: ssl.PrivateCertificate | None = None
        if client_cert is not None:
            with open(client_cert, "rb") as c, open(client_key or client_cert, "rb") as k:
                self.client = ssl.PrivateCertificate.loadPEM(c.read() + b"\n" + k.read())

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        if self.trust is None and self.client is None:
            return BrowserLikePolicyForHTTPS().creatorForNetloc(hostname, port)
        return ssl.optionsForClientTLS(
            hostname.decode("ascii"), trustRoot=self.trust, clientCertificate=self.client
        )


class _QuietFactory(_HTTP11ClientFactory):
    noisy = False


class QuietPool(HTTPConnectionPool):
    """A connection pool that logs no "Starting factory"/"Stopping factory" pair a connection
    (an exporter retrying a dead upstream made two lines an attempt).  (Twisted offers no public
    switch: its pool's _factory is the one place.)"""

    _factory = _QuietFactory


class Client:
    # reactor: Any, as the pool uses it (IReactorTime) and Agent's endpoints (IReactorTCP, a name resolver).
    def __init__(self, url: str, api_key: str | None = None, ca: _Path | None = None,
                 client_cert: _Path | None = None, client_key: _Path | None = None,
                 reactor: Any = None, timeout: float = 30, http_client: _HTTP | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.pool = QuietPool(reactor, persistent=True)
        if http_client is None:
            agent = Agent(reactor, contextFactory=TLSPolicy(ca, client_cert, client_key), pool=self.pool,
                          connectTimeout=timeout)
            http_client = treq.client.HTTPClient(agent)
        self.http: _HTTP = http_client

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    async def request(self, method: str, path: str, **kwargs: Any) -> tuple[int, bytes]:
        """Send a request; return (status, body bytes); raise ClientError on failure."""
        headers = {**self._headers(), **kwargs.pop("headers", {})}
        try:
            response = await self.http.request(
                method, self.url + path, headers=headers, timeout=self.timeout, **kwargs
            )
            body = await treq.content(response)
        except Exception as e:
            raise ClientError(f"cannot reach {self.url}: {_reason(e)}") from None
        if response.code >= 400:
            error = _error(response.code, body)
            error.retry_after = _retry_after(response.headers.getRawHeaders("retry-after"))
            raise error
        return response.code, body

    async def get_json(self, path: str, params: _Params | None = None) -> Any:
        _, body = await self.request("GET", path, params=params)
        try:
            return json.loads(body)
        except ValueError:
            raise ClientError(f"{self.url}{path}: the answer is not JSON") from None

    async def heartbeat(self) -> str:
        _, body = await self.request("GET", "/heartbeat")
        return body.decode("utf-8")

    async def status(self) -> dict[str, Any]:
        _, body = await self.request("GET", "/api/v1/status")
        return json.loads(body)

    # Events

    async def iter_events(self, station: _Several = (), type: _Several = (), after: _Time | None = None,
                          before: _Time | None = None, fields: _Constraints = (),
                          quarantined: _Quarantined | None = None, order: _Order | None = None,
                          page_size: int | None = None, limit: int | None = None) -> AsyncIterator[dict[str, Any]]:
        """Yield the events matching the filters, following the cursors.

        ``station``, ``type``: one or several (OR).  ``after`` (inclusive),
        ``before`` (exclusive): ISO 8601 text with a zone, epoch seconds, or
        an aware datetime.  ``fields``: constraints on the data such as
        ``"ph.gt=100"`` (NAME.OP=VALUE, OP one of eq, lt, le, gt, ge; a
        number compares as a number, text or "quoted" text as text; several
        are ANDed).  ``quarantined``: True, False (the node's default) or
        "any".  ``order``: "desc" (default, newest first) or "asc".
        ``page_size``: events per request (the node's default is 100, its
        maximum 10000).  ``limit``: stop after that many events (None: all).
        """
        params = _params(station=station, type=type, after=after, before=before,
                         quarantined=quarantined, order=order) + _constraints("field", fields)
        async for event in self._pages("/api/v1/events", "events", params, page_size, limit):
            yield event

    async def query_events(self, station: _Several = (), type: _Several = (), after: _Time | None = None,
                           before: _Time | None = None, fields: _Constraints = (),
                           quarantined: _Quarantined | None = None, order: _Order | None = None,
                           page_size: int | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """All the events matching the filters (up to ``limit``), as a list; see iter_events."""
        return [event async for event in self.iter_events(
            station, type, after, before, fields, quarantined, order, page_size, limit)]

    async def event(self, event_id: str) -> dict[str, Any]:
        """One event, its "files" as file records."""
        return await self.get_json(f"/api/v1/events/{_segment(event_id)}")

    # Files

    async def iter_files(self, station: _Several = (), semantic_type: _Several = (), mime_type: _Several = (),
                         after: _Time | None = None, before: _Time | None = None, meta: _Constraints = (),
                         order: _Order | None = None, page_size: int | None = None,
                         limit: int | None = None) -> AsyncIterator[dict[str, Any]]:
        """Yield the file records matching the filters, following the cursors.

        As iter_events; ``meta``: constraints on the records' meta such as
        ``"exposure.ge=2"``.
        """
        params = _params(station=station, semantic_type=semantic_type, mime_type=mime_type, after=after,
                         before=before, order=order) + _constraints("meta", meta)
        async for record in self._pages("/api/v1/files", "files", params, page_size, limit):
            yield record

    async def query_files(self, station: _Several = (), semantic_type: _Several = (), mime_type: _Several = (),
                          after: _Time | None = None, before: _Time | None = None, meta: _Constraints = (),
                          order: _Order | None = None, page_size: int | None = None,
                          limit: int | None = None) -> list[dict[str, Any]]:
        """All the file records matching the filters (up to ``limit``), as a list; see iter_files."""
        return [record async for record in self.iter_files(
            station, semantic_type, mime_type, after, before, meta, order, page_size, limit)]

    files = query_files

    async def file(self, file_id: str) -> dict[str, Any]:
        """One file record, with the ids of its "events"."""
        return await self.get_json(f"/api/v1/files/{_segment(file_id)}")

    async def download(self, file_id: str, path: _Path, progress: Callable[[int], None] | None = None) -> int:
        """Write the content of file ``file_id`` to ``path``; the number of bytes.

        Streamed to a temporary file beside ``path`` (never whole in memory),
        checked against the SHA-256 the node sends as the ETag, then renamed
        over ``path``: ``path`` is never left half written.  ``progress`` is
        called with the size of each piece as it is written (e.g. a
        progress.Progress's update).
        """
        url = f"{self.url}/api/v1/files/{_segment(file_id)}/content"
        try:
            # unbuffered: treq would otherwise keep a copy of the whole body.
            response = await self.http.request("GET", url, headers=self._headers(), timeout=self.timeout,
                                               unbuffered=True)
        except Exception as e:
            raise ClientError(f"cannot reach {self.url}: {_reason(e)}") from None
        if response.code >= 400:
            try:
                body = await treq.content(response)
            except Exception as e:
                raise ClientError(f"HTTP {response.code}; the answer broke off: {_reason(e)}",
                                  response.code) from None
            raise _error(response.code, body)
        if response.code != 200:
            raise ClientError(f"HTTP {response.code}: expected the whole content (200)", response.code)
        etag = (response.headers.getRawHeaders("etag") or [""])[0].strip('"').lower()
        path = os.fspath(path)
        directory, name = os.path.split(os.path.abspath(path))
        temp = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.part")
        digest, written = hashlib.sha256(), 0
        # 0o666 less the umask, as open() would give path itself.
        out = os.fdopen(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb")
        try:
            with out:
                def write(chunk: bytes) -> None:
                    nonlocal written
                    out.write(chunk)
                    digest.update(chunk)
                    written += len(chunk)
                    if progress is not None:
                        progress(len(chunk))

                try:
                    await treq.collect(response, write)
                except Exception as e:
                    raise ClientError(f"downloading file {file_id}: {_reason(e)}") from None
                out.flush()
                os.fsync(out.fileno())
            if re.fullmatch(r"[0-9a-f]{64}", etag) and digest.hexdigest() != etag:
                raise ClientError(f"file {file_id}: the content received ({written} bytes) does not match "
                                  f"its SHA-256 {etag}")
            os.replace(temp, path)
        except BaseException:
            try:
                os.remove(temp)
            except FileNotFoundError:
                pass
            raise
        return written

    # Stations

    async def stations(self) -> list[dict[str, Any]]:
        """Every station, with its current status (or None)."""
        return (await self.get_json("/api/v1/stations"))["stations"]

    async def station(self, station_id: str | int) -> dict[str, Any]:
        """One station with its status "history" and event "counts"."""
        return await self.get_json(f"/api/v1/stations/{_segment(station_id)}")

    # Sensors and the display

    async def sensors(self) -> list[dict[str, Any]]:
        """Every sensor with its last reading, state and raised alarms."""
        return (await self.get_json("/api/v1/sensors"))["sensors"]

    async def sensor(self, name: str) -> dict[str, Any]:
        return await self.get_json(f"/api/v1/sensors/{_segment(name)}")

    async def readings(self, name: str, since: _Time | None = None, until: _Time | None = None,
                       step: str | float | None = None) -> list[dict[str, Any]]:
        """A sensor's readings, oldest first ({"time", "values"} and, for averages, "min" and "max")."""
        params = [(k, _time(k, v)) for k, v in (("since", since), ("until", until), ("step", step)) if v is not None]
        return (await self.get_json(f"/api/v1/sensors/{_segment(name)}/readings", params))["readings"]

    async def display(self, message: str) -> str:
        """Show ``message`` on the node's display (role editor); the text as shown."""
        _, answer = await self.request("POST", "/api/lcd", json={"message": message})
        return json.loads(answer)["result"]["message posted"]

    # Instrument configurations

    async def get_config(self, datestr: str = "", name: str = "fplane", short: bool = False,
                         actual: bool = False) -> str | dict[str, Any]:
        """fplane: the text file FPlaneServer served; any other name: the version as JSON."""
        if name == "fplane":
            _, body = await self.request("GET", f"/fplane/{quote(datestr, safe=':')}", params={
                "actual_pos": "1" if actual else "0", "full_fplane": "0" if short else "1"})
            return body.decode("utf-8")
        return await self.get_json(f"/api/v1/configs/{quote(name, safe='')}/{quote(datestr, safe=':')}")

    async def put_config(self, config: Any, commit: bool = False, name: str = "fplane",
                         valid_from: str | float | None = None) -> str | dict[str, Any]:
        """Validate (and with commit, store) a version; fplane: the rendered file, else the JSON answer."""
        body: dict[str, Any] = {"config": config, "commit": bool(commit)}
        if valid_from is not None:
            body["valid_from"] = valid_from
        path = "/fplane" if name == "fplane" else f"/api/v1/configs/{quote(name, safe='')}"
        _, answer = await self.request("POST", path, json=body)
        return answer.decode("utf-8") if name == "fplane" else json.loads(answer)

    # Replication (role importer upstream)

    async def exports(self) -> dict[str, dict[str, Any]]:
        """The node's export targets and their state ({name: {...}})."""
        return (await self.status()).get("exports", {})

    async def export_targets(self) -> list[dict[str, Any]]:
        """Every export target with its settings (not the API key), source and state (role admin)."""
        return (await self.get_json("/api/v1/admin/exports"))["targets"]

    async def add_export(self, name: str, settings: Mapping[str, _Setting], paused: bool = False) -> dict[str, Any]:
        """Add a target; settings as in an [export:NAME] section (lists of words allowed)."""
        return await self._export_change("POST", "", dict(settings, name=name, paused=paused))

    async def change_export(self, name: str, settings: Mapping[str, _Setting] | Iterable[tuple[str, _Setting]] = (),
                            paused: bool | None = None) -> dict[str, Any]:
        """Change an API-added target: settings given replace the stored (None: the default)."""
        body = dict(settings)
        if paused is not None:
            body["paused"] = paused
        return await self._export_change("PATCH", f"/{_segment(name)}", body)

    async def remove_export(self, name: str) -> None:
        await self.request("DELETE", f"/api/v1/admin/exports/{_segment(name)}")

    async def _export_change(self, method: str, path: str, body: Mapping[str, _Setting]) -> dict[str, Any]:
        _, answer = await self.request(method, "/api/v1/admin/exports" + path, json=body)
        return json.loads(answer)["target"]

    async def import_events(self, origin: str, events: list[dict[str, Any]]) -> dict[str, Any]:
        """Hand a batch to the node's import API: {"accepted", "duplicates", "need": [file ids], "node"}."""
        _, body = await self.request("POST", "/api/v1/import", data=jsoncodec.dumps({"origin": origin,
                                                                                     "events": events}),
                                     headers={"Content-Type": "application/json"})
        return json.loads(body)

    async def put_file(self, file_id: str, path: _Path) -> None:
        """Upload a file's content for an import (streamed from ``path``)."""
        with open(path, "rb") as content:
            await self.request("PUT", f"/api/v1/import/files/{_segment(file_id)}", data=content,
                               headers={"Content-Type": "application/octet-stream"})

    # Uploads: the node's two ingest protocols

    async def upload(self, station: str | int, events: Iterable[Mapping[str, Any]], password: str | None = None,
                     protocol: Literal["native", "hisparc"] = "native", idempotency_key: str | None = None,
                     format: _Format = "json") -> dict[str, Any] | str:
        """Send a batch of ``events`` of ``station`` over one of the node's ingest protocols.

        ``protocol="native"`` (the default): the JSON ingest with this client's
        API key (role station bound to ``station``, or admin); the node's
        answer, see upload_events.  ``protocol="hisparc"``: the HiSPARC form
        upload with the station's ``password``; "100", see upload_hisparc.
        Either raises ClientError when the batch is not stored.
        """
        if protocol == "native":
            return await self.upload_events(station, events, idempotency_key)
        if protocol == "hisparc":
            if password is None:
                raise ValueError("the HiSPARC upload needs the station's password")
            return await self.upload_hisparc(station, password, events, format)
        raise ValueError(f"protocol must be 'native' or 'hisparc', not {protocol!r}")

    async def upload_events(self, station: str | int, events: Iterable[Mapping[str, Any]],
                            idempotency_key: str | None = None) -> dict[str, Any]:
        """Native ingest (POST /api/v1/stations/{station}/events) of a list of events.

        An event is {"type", "time" (ISO 8601 with a zone, or epoch seconds)
        or "time_ns", "data": {...}}.  Answered once the batch is durable:
        the node's {"accepted", "duplicates", "quarantined"} plus "replayed"
        (true when the node gave the answer of an earlier request with the
        same ``idempotency_key``: a resend after a lost answer stores nothing
        twice).  ClientError otherwise: 422 "invalid_events" (nothing of the
        batch stored) with ``details`` [{"index", "message"}]; 404 unknown
        station; 401/403 a missing or wrong key; 503 with ``retry_after``.
        """
        headers = {**self._headers(), "Content-Type": "application/json"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        body = json.dumps({"events": list(events)}, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")
        response, answer = await self._post(f"/api/v1/stations/{_segment(station)}/events", body, headers)
        if response.code >= 400:
            raise _answer_error(response, answer)
        try:
            result = json.loads(answer)
            result["replayed"] = (response.headers.getRawHeaders("idempotent-replayed") or [""])[0] == "true"
        except (ValueError, TypeError):
            raise ClientError(f"{self.url}: the answer to an ingest is not a JSON object") from None
        return result

    async def upload_hisparc(self, station: str | int, password: str,
                             events: bytes | bytearray | Iterable[object], format: _Format = "json") -> str:
        """HiSPARC upload (POST /upload) as a station sends it: "100" once the batch is durable.

        ``events``: a list of events, each in the native form (converted, see
        hisparc_events) or the HiSPARC form ({"header", "datalist"}, sent as it
        is), encoded as JSON (``format="json"``) or as a pickle (``"pickle"``,
        protocol 2, as Python 3 stations send); or bytes: a payload already
        encoded in ``format``.  Any other answer raises ClientError whose
        ``code`` is the node's ("201" checksum mismatch, "203" wrong password,
        "206" unknown station, "208" undecodable payload, "400" a malformed
        field or, with ``retry_after``, a node that cannot accept now).
        """
        if format not in ("json", "pickle"):
            raise ValueError(f"format must be 'json' or 'pickle', not {format!r}")
        payload = bytes(events) if isinstance(events, (bytes, bytearray)) else hisparc_payload(events, format)
        # As requests.post(data={...}) sends a station's str fields: the payload
        # read as latin-1, UTF-8 on the wire; the checksum is the payload's MD5.
        fields = {"station_id": str(station), "password": password,
                  "checksum": hashlib.md5(payload).hexdigest(), "data": payload.decode("latin-1")}
        if format == "json":
            fields["format"] = "json"
        response, answer = await self._post("/upload", urlencode(fields).encode("ascii"),
                                            {"Content-Type": "application/x-www-form-urlencoded"})
        if response.code >= 400:
            raise _answer_error(response, answer)
        code = answer.decode("ascii", "replace").strip()
        if code == "100":
            return code
        if code not in HISPARC_ANSWERS:
            raise ClientError(f"{self.url}/upload: an unexpected answer {code[:40]!r}", response.code)
        retry_after = _retry_after(response.headers.getRawHeaders("retry-after"))
        meaning = HISPARC_ANSWERS[code]
        if code == "400" and retry_after is not None:
            meaning = f"the node cannot accept now (retry after {retry_after:g} s)"
        raise ClientError(f"HiSPARC {code}: {meaning}", response.code, code, retry_after)

    async def _post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[IResponse, bytes]:
        """(response, body bytes) of a POST, whatever its status; ClientError if the node is not reached."""
        try:
            response = await self.http.request("POST", self.url + path, headers=headers, data=body,
                                               timeout=self.timeout)
            return response, await treq.content(response)
        except Exception as e:
            raise ClientError(f"cannot reach {self.url}: {_reason(e)}") from None

    async def _pages(self, path: str, key: str, params: _Params, page_size: int | None,
                     limit: int | None) -> AsyncIterator[dict[str, Any]]:
        if page_size is not None and not 1 <= page_size <= MAX_PAGE:
            raise ValueError(f"page_size must be from 1 to {MAX_PAGE}")
        if limit is not None and limit < 0:
            raise ValueError("limit must not be negative")
        count, cursor = 0, None
        while limit is None or count < limit:
            size = page_size
            if limit is not None:
                size = min(page_size or MAX_PAGE, limit - count)  # never more than wanted
            page = await self.get_json(path, params + ([("limit", str(size))] if size else [])
                                       + ([("cursor", cursor)] if cursor else []))
            try:
                items, cursor = page[key], page["next"]
            except (KeyError, TypeError):
                raise ClientError(f"{self.url}{path}: the answer has no {key!r} and 'next'") from None
            for item in items[:None if limit is None else limit - count]:
                yield item
                count += 1
            if not cursor:
                return
            if not items:
                raise ClientError(f"{self.url}{path}: an empty page with a next cursor")

    async def close(self) -> None:
        await self.pool.closeCachedConnections()


def _retry_after(values: Sequence[str] | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None without one."""
    if not values:
        return None
    value = values[0].strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error(status: int, body: bytes) -> ClientError:
    try:
        error = json.loads(body)["error"]
        return ClientError(f"HTTP {status}: {error['message']}", status, error["code"])
    except (ValueError, KeyError, TypeError):
        return ClientError(f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}", status)


def _segment(value: str | int) -> str:
    """An id as one path segment (a "/" or "?" in it must not change the route)."""
    return quote(str(value), safe="")


def _several(name: str, value: _Several) -> _Params:
    if value is None:
        return []
    if isinstance(value, (str, int)):
        value = [value]
    return [(name, str(v)) for v in value]


def _time(name: str, value: _Time) -> str:
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            raise ValueError(f"{name}: a datetime needs a time zone")
        return value.isoformat()
    if isinstance(value, bool):
        raise ValueError(f"{name}: a time is text, epoch seconds or a datetime")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format(decimal.Decimal(repr(value)), "f")  # 1e9 as 1000000000, not 1e+09
    return str(value)


def _params(station: _Several = (), type: _Several = (), semantic_type: _Several = (), mime_type: _Several = (),
            after: _Time | None = None, before: _Time | None = None, quarantined: _Quarantined | None = None,
            order: _Order | None = None) -> _Params:
    params = (_several("station", station) + _several("type", type)
              + _several("semantic_type", semantic_type) + _several("mime_type", mime_type))
    for name, value in (("after", after), ("before", before)):
        if value is not None:
            params.append((name, _time(name, value)))
    if quarantined is not None:
        if quarantined not in (True, False, "true", "false", "any"):
            raise ValueError("quarantined: use True, False or 'any'")
        # A bool as its text, text as it is (checked above): text either way, which mypy cannot tell.
        params.append(("quarantined", cast(str, {True: "true", False: "false"}.get(
            quarantined, quarantined))))  # type: ignore[arg-type]  # the dict's keys are bools
    if order is not None:
        params.append(("order", order))
    return params


def parse_constraint(text: str) -> tuple[str, str, str]:
    """``"ph.gt=100"`` as ("ph", "gt", "100"); ValueError if it is not NAME.OP=VALUE."""
    match = _CONSTRAINT.match(text)
    if not match:
        raise ValueError(f"{text!r} is not NAME.OP=VALUE (NAME of letters, digits, _ and -; "
                         f"OP one of {', '.join(OPERATORS)})")
    return cast("tuple[str, str, str]", match.groups())  # its three groups, none optional


def _constraints(prefix: str, constraints: _Constraints) -> _Params:
    if isinstance(constraints, str):
        constraints = [constraints]
    params = []
    for text in constraints:
        name, op, value = parse_constraint(text)
        params.append((f"{prefix}.{name}.{op}", value))
    return params


def _reason(exception: BaseException) -> str:
    # treq/Agent wrap the real cause (TLS, refused, timeout) in lists of Failures.
    reasons = getattr(exception, "reasons", None)
    if reasons:
        return "; ".join(_reason(r.value) for r in reasons)
    return str(exception) or type(exception).__name__


# Uploads and directory sync

HISPARC_ANSWERS = {
    "100": "stored",
    "201": "checksum mismatch",
    "203": "wrong password (or the station has no upload password)",
    "206": "unknown station",
    "208": "the payload cannot be decoded",
    "400": "a field is missing or malformed",
}
def _answer_error(response: IResponse, body: bytes) -> ClientError:
    error = _error(response.code, body)
    error.retry_after = _retry_after(response.headers.getRawHeaders("retry-after"))
    try:
        error.details = json.loads(body)["error"].get("details")
    except (ValueError, KeyError, TypeError, AttributeError):
        error.details = None
    return error


def hisparc_events(events: Iterable[object], pickled: bool = False) -> list[dict[str, Any]]:
    """Events in the HiSPARC form: {"header": {"eventtype_uploadcode", "datetime", "nanoseconds"},
    "datalist": [{"data_uploadcode", "data"}]}.  Events in the native form are converted (the
    datetime naive UTC: a datetime for a pickle, ISO 8601 text for JSON); HiSPARC ones pass."""
    converted: list[dict[str, Any]] = []
    for index, event in enumerate(events):
        if isinstance(event, dict) and "header" in event:
            converted.append(event)
            continue
        try:
            if not isinstance(event, dict):
                raise TypeError("an event must be a JSON object")
            kind, data = event.get("type"), event.get("data", {})
            if not isinstance(kind, str) or not kind:
                raise TypeError("type must be a non-empty string")
            if not isinstance(data, dict):
                raise TypeError("data must be a JSON object")
            if "time_ns" in event:
                time_ns = event["time_ns"]
                if not isinstance(time_ns, int) or isinstance(time_ns, bool):
                    raise TypeError("time_ns must be an integer")
            elif "time" in event:
                time_ns = parse_time(event["time"])
            else:
                raise ValueError("time (or time_ns) is required")
            seconds, nanoseconds = divmod(time_ns, 10**9)
            when = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=seconds)
        except (ValueError, TypeError, OverflowError) as e:
            raise ValueError(f"event {index}: {e}") from None
        converted.append({"header": {"eventtype_uploadcode": kind, "nanoseconds": nanoseconds,
                                     "datetime": when if pickled else when.isoformat()},
                          "datalist": [{"data_uploadcode": code, "data": value} for code, value in data.items()]})
    return converted


def hisparc_payload(events: Iterable[object], format: _Format = "json") -> bytes:
    """The ``data`` of a HiSPARC upload (bytes) holding ``events`` (see hisparc_events)."""
    if format == "pickle":
        return pickle.dumps(hisparc_events(events, pickled=True), protocol=2)

    def text(value: object) -> str:  # the datetimes of HiSPARC-form events given as objects
        if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
            return value.isoformat()
        raise TypeError(f"{type(value).__name__} is not JSON")

    return json.dumps(hisparc_events(events), separators=(",", ":"), allow_nan=False, default=text).encode("ascii")

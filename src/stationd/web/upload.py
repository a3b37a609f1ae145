"""POST /upload: the HiSPARC station protocol, answered as today's datastore does.

Form fields station_id, password, checksum, data (and format=json); the answer
is always HTTP 200 text/plain with one code, checked in this order:
400 missing or malformed field, 206 unknown station, 203 wrong password,
201 checksum mismatch, 208 undecodable payload, 100 stored (durable).
A full or failing spool answers 400 with Retry-After: stations retry anything
but 100.  So do a client over its failed passwords and a station's or client's
full queue of password checks (stationd.web.guard): 400 is the documented
"not now" answer, where 203 would tell a right password wrong and 208 would
say the data is bad.
"""

import hashlib
from typing import Any

from stationd.decoders import DecoderGone, DecoderPool
from stationd.hisparc import DecodeError
from stationd.ingest import Ingest
from stationd.metrics import Metrics
from stationd.store import stations
from stationd.store.cache import Cache
from stationd.web.guard import FailureLimiter, PasswordChecks, client_of
from stationd.web.http import parse_form, route
from stationd.writer import Busy, SpoolError, SpoolFull, StoreRefused

RETRY_AFTER = b"30"
QUEUE_RETRY_AFTER = "10"  # the password checks of this station or client full


def _field(fields, name):
    values = fields.get(name)
    return values[0] if values else None


def _payload_bytes(raw):
    """The pickle bytes: stations send a str whose latin-1 encoding is the pickle;
    `requests` puts such a str on the wire as UTF-8, Python 2 stations raw bytes."""
    try:
        return raw.decode("utf-8").encode("latin-1")
    except (UnicodeDecodeError, UnicodeEncodeError):
        return raw


class Upload:
    """Served by stationd.web.site.HotRoutes without Klein's routing; the route is declared here too."""

    def __init__(self, cache: Cache, ingest: Ingest, metrics: Metrics, limiter: FailureLimiter,
                 checks: PasswordChecks, decoders: DecoderPool):
        self.cache, self.ingest, self.metrics, self.decoders = cache, ingest, metrics, decoders
        self._answers: dict[str, Any] = {}  # code -> the counter's child
        # Failed passwords and unknown stations count against the client
        # (shared with the API-key checks), and scrypt checks run one at a
        # time from a queue bounded per station and per client, taken
        # round-robin between stations (stationd.web.guard).
        self.limiter, self.checks = limiter, checks

    @route("POST", "/upload")
    async def upload(self, request):
        code = await self._answer(request)
        counter = self._answers.get(code)
        if counter is None:
            counter = self._answers[code] = self.metrics.ingest_requests.labels("hisparc", code)
        counter.inc()
        request.setHeader(b"content-type", b"text/plain")
        return code.encode("ascii")

    async def _answer(self, request):
        form = parse_form(request.content.read())
        station_id, password, checksum, raw = (
            _field(form, name) for name in (b"station_id", b"password", b"checksum", b"data"))
        if None in (station_id, password, checksum, raw):
            return "400"
        try:
            station_id = str(int(station_id))
            password = password.decode("utf-8")
            checksum = checksum.decode("ascii").strip().lower()
        except (ValueError, UnicodeDecodeError):
            return "400"
        refused = await self._password(request, station_id, password)
        if refused is not None:
            return refused
        data = _payload_bytes(raw)
        if hashlib.md5(data).hexdigest() != checksum:
            return "201"
        try:  # (in a decoder process: stationd.decoders)
            events = await self.decoders.decode(data, "json" if _field(form, b"format") == b"json" else "pickle")
        except DecodeError:
            self.ingest.rejected("hisparc", 1)
            return "208"
        except (Busy, DecoderGone):  # (not the payload's fault: the station sends it again)
            request.setHeader(b"retry-after", RETRY_AFTER)
            return "400"
        try:
            await self.ingest.accept("hisparc", station_id, events)
        except (Busy, SpoolFull, SpoolError, StoreRefused):
            request.setHeader(b"retry-after", RETRY_AFTER)
            return "400"
        return "100"

    async def _password(self, request, station_id, password):
        """None if ``password`` is the station's; else the answer: 206, 203, or 400 with Retry-After
        (the client over its failures, or the station's or client's queue of checks full)."""
        client = client_of(request)
        wait = self.limiter.retry_after(client)
        if wait is not None:
            return _refuse(request, str(wait))
        station = await self.cache.station(station_id)
        if station is None:
            self.limiter.failed(client)
            return _refuse(request, None, "206")
        stored = station["password_hash"]
        matches = stations.remembered(stored, password)
        if matches is None:
            matches = await self.checks.check(station_id, client, stored, password)
            if matches is None:
                return _refuse(request, QUEUE_RETRY_AFTER)
        if not matches:
            self.limiter.failed(client)
            return _refuse(request, None, "203")
        return None


def _refuse(request, retry_after, code="400"):
    """``code`` (400 with ``Retry-After``: the documented code stations retry on, the one a full
    spool answers), marked for the access log's summary of failed credentials (web.guard)."""
    request.stationd_auth_failed = True
    if retry_after is not None:
        request.setHeader(b"retry-after", retry_after.encode("ascii"))
    return code

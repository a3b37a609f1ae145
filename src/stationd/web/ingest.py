"""POST /api/v1/stations/{id}/events: native JSON ingest.

Body {"events": [{"type", "time", "data"}]}; "time" is ISO 8601 with a zone
and up to nanosecond digits, or epoch seconds (a number), or "time_ns" an
integer.  One invalid event refuses the whole batch (422, errors by index).
Answered 200 {"accepted", "duplicates", "quarantined"} once durable; a retry
with the same Idempotency-Key gets the first answer again.
"""

from typing import Any

from stationd.ingest import Ingest
from stationd.jsoncodec import canonical
from stationd.metrics import Metrics
from stationd.store.cache import Cache
from stationd.times import parse_time
from stationd.web.auth import Authenticator
from stationd.web.http import HTTPError, json_body, read_json, route
from stationd.writer import Busy, SpoolError, SpoolFull, StoreRefused

RETRY_AFTER = "5"
ROLES = ("station", "admin")


def parse_event(event):
    """A native event as Ingest takes it; ValueError naming what is wrong."""
    if not isinstance(event, dict):
        raise ValueError("an event must be a JSON object")
    kind = event.get("type")
    if not isinstance(kind, str) or not 0 < len(kind) <= 64 or "\x00" in kind:
        raise ValueError("type must be a string of 1 to 64 characters")
    if "time_ns" in event:
        time_ns = event["time_ns"]
        if not isinstance(time_ns, int) or isinstance(time_ns, bool):
            raise ValueError("time_ns must be an integer")
    elif "time" in event:
        time_ns = parse_time(event["time"])
    else:
        raise ValueError("time (or time_ns) is required")
    if not -(2**63) <= time_ns < 2**63:
        raise ValueError("time is outside what can be stored (years 1678 to 2262)")
    data = event.get("data", {})
    if not isinstance(data, dict):
        raise ValueError("data must be a JSON object")
    data_json, digest = canonical(data)
    return {"type": kind, "time_ns": time_ns, "data_json": data_json, "digest": digest}


class NativeIngest:
    """Served by stationd.web.site.HotRoutes without Klein's routing; the route is declared here too."""

    def __init__(self, auth: Authenticator, cache: Cache, ingest: Ingest, metrics: Metrics):
        self.auth, self.cache, self.ingest = auth, cache, ingest
        self._requests: dict[int, Any] = {}  # status -> the counter's child: labels() costs a lock and a lookup
        self._counter = metrics.ingest_requests

    @route("POST", "/api/v1/stations/<station_id>/events")
    async def events(self, request, station_id):
        try:
            status, body = await self._ingest(request, station_id)
        except HTTPError as e:
            self._count(e.status)
            raise
        self._count(status)
        return json_body(request, body, status)

    def _count(self, status):
        counter = self._requests.get(status)
        if counter is None:
            counter = self._requests[status] = self._counter.labels("native", str(status))
        counter.inc()

    async def _ingest(self, request, station_id):
        # Who asks is answered before what is wrong with the body.
        account = await self.auth.check(request, ROLES, read=False)
        if account["role"] == "station" and account["station"] != station_id:
            raise HTTPError(403, f"{account['name']} may only ingest for station {account['station']}")
        batch = _events_of(read_json(request))
        if await self.cache.station(station_id) is None:
            raise HTTPError(404, f"no station {station_id}")
        key = request.getHeader(b"idempotency-key")
        key = key.decode("latin-1").strip()[:255] if key else None
        parsed, errors = [], []
        for index, event in enumerate(batch):
            try:
                parsed.append(parse_event(event))
            except ValueError as e:
                errors.append({"index": index, "message": str(e)})
        if errors:
            self.ingest.rejected("native", len(batch))
            raise _invalid(errors)
        del batch  # the body as decoded: its data is kept as JSON text while the batch waits
        try:
            answer = await self.ingest.accept("native", station_id, parsed, idempotency_key=key)
        except (Busy, SpoolFull, SpoolError) as e:
            raise HTTPError(503, f"cannot accept now: {e}", headers={"Retry-After": RETRY_AFTER}) from None
        except StoreRefused as e:
            raise HTTPError(500, str(e), code="store_refused") from None
        if answer.pop("replayed", False):
            request.setHeader(b"idempotent-replayed", b"true")
        answer.pop("spooled", None)
        return 200, answer


def _events_of(body):
    batch = body.get("events")
    if not isinstance(batch, list) or not batch:
        raise HTTPError(422, "body must be {\"events\": [ ... ]} with at least one event")
    return batch


def _invalid(errors):
    return HTTPError(422, f"{len(errors)} invalid event(s); nothing of this batch was stored",
                     code="invalid_events", details=errors)

"""POST /api/v1/stations/{id}/events: native JSON ingest.

Body {"events": [{"type", "time", "data"}]}; "time" is ISO 8601 with a zone
and up to nanosecond digits, or epoch seconds (a number), or "time_ns" an
integer.  One invalid event refuses the whole batch (422, errors by index).
Answered 200 {"accepted", "duplicates", "quarantined"} once durable; a retry
with the same Idempotency-Key gets the first answer again.
"""

from stationd.ingest import NUL_MESSAGE, has_nul
from stationd.store import events as store_events
from stationd.store import users
from stationd.times import parse_time
from stationd.web.auth import api_key, require
from stationd.web.http import HTTPError, json_body, read_json, route
from stationd.writer import SpoolError, SpoolFull

RETRY_AFTER = "5"


def parse_event(event):
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
    if has_nul(data):
        raise ValueError(NUL_MESSAGE)
    return {"type": kind, "time_ns": time_ns, "data": data}


class NativeIngest:
    def __init__(self, node):
        self.store = node.store
        self.ingest = node.ingest
        self.metrics = node.metrics
        self.auth = node.auth

    @route("POST", "/api/v1/stations/<station_id>/events")
    async def events(self, request, station_id):
        try:
            status, body = await self._ingest(request, station_id)
        except HTTPError as e:
            self.metrics.ingest_requests.labels("native", str(e.status)).inc()
            raise
        self.metrics.ingest_requests.labels("native", str(status)).inc()
        return json_body(request, body, status)

    @require("station", "admin")
    async def _authorized(self, request, station_id):
        self._may_ingest(request, station_id)

    def _may_ingest(self, request, station_id):
        account = request.stationd_account
        if account["role"] == "station" and account["station"] != station_id:
            raise HTTPError(403, f"{account['name']} may only ingest for station {account['station']}")

    async def _ingest(self, request, station_id):
        secret = api_key(request)
        try:
            batch = _events_of(read_json(request))
        except HTTPError:
            await self._authorized(request, station_id)  # who asks is answered before what is wrong
            raise
        if secret is None:
            await self._authorized(request, station_id)  # the 401 every route gives
        key = request.getHeader(b"idempotency-key")
        key = key.decode("latin-1").strip()[:255] if key else None
        parsed, errors = [], []
        for index, event in enumerate(batch):
            try:
                parsed.append(parse_event(event))
            except ValueError as e:
                errors.append({"index": index, "message": str(e)})
        submitted = len(batch)
        del batch  # the body as decoded: its data dicts are not kept while the batch waits (Ingest.record)
        record = self.ingest.record("native", station_id, parsed, idempotency_key=key)
        candidates = [(e["type"], e["time_ns"], e["digest"]) for e in record["events"]]
        # The key, the station, an earlier answer and the known events in one
        # read: each thread hop costs more than the queries (docs/performance.rst).
        user, (exists, earlier, known) = await self.store.read(
            _check, secret, station_id, key, [] if errors else candidates)
        self.auth.admit(request, user, ("station", "admin"))
        self._may_ingest(request, station_id)
        if not exists:
            raise HTTPError(404, f"no station {station_id}")
        if earlier is not None:
            request.setHeader(b"idempotent-replayed", b"true")
            return 200, earlier
        if errors:
            self.metrics.ingest_events.labels("native", "rejected").inc(submitted)
            raise _invalid(errors)

        fresh, seen = [], set(known)
        for event, candidate in zip(record["events"], candidates):
            if candidate not in seen:
                seen.add(candidate)
                fresh.append(event)
        duplicates = len(record["events"]) - len(fresh)
        record["events"] = fresh
        quarantined = self.ingest.quarantined(record)
        answer = {"accepted": len(fresh) - quarantined, "duplicates": duplicates,
                  "quarantined": quarantined}
        record["response"] = answer
        if fresh or key:
            try:
                await self.ingest.spool.append(record)
            except (SpoolFull, SpoolError) as e:
                raise HTTPError(503, f"cannot accept now: {e}", headers={"Retry-After": RETRY_AFTER}) from None
        self.ingest.count_events("native", record, duplicates)
        return 200, answer


def _events_of(body):
    batch = body.get("events")
    if not isinstance(batch, list) or not batch:
        raise HTTPError(422, "body must be {\"events\": [ ... ]} with at least one event")
    return batch


def _check(conn, secret, station, key, candidates):
    return users.authenticate(conn, secret), store_events.ingest_check(conn, station, key, candidates)


def _invalid(errors):
    return HTTPError(422, f"{len(errors)} invalid event(s); nothing of this batch was stored",
                     code="invalid_events", details=errors)



"""What both ingest protocols share: events checked, quarantined and spooled.

Quarantine keeps implausible events (GPS-rollover dates, clocks far ahead)
out of normal queries without losing them.
"""

import os

from twisted.application.internet import TimerService
from twisted.internet.defer import ensureDeferred
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from stationd import jsoncodec
from stationd.store import stations
from stationd.store.events import digest, event_ids

# PostgreSQL cannot keep U+0000 in jsonb text: such an event would be
# acknowledged and then refused by the store (or by an upstream node on
# PostgreSQL), so it is refused at ingest, on every backend alike.
NUL_MESSAGE = "data holds a NUL character (U+0000), which the store cannot keep"


def has_nul(data):
    # The JSON text shows a NUL as \u0000: one fast scan; the walk settles the
    # rare text that only looks like one (a backslash, then "u0000").
    return b"\\u0000" in jsoncodec.dumps(data) and _walk_nul(data)


def _walk_nul(value):
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_walk_nul(k) or _walk_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_walk_nul(v) for v in value)
    return False

log = Logger()


class Ingest:
    def __init__(self, node):
        self.spool = node.spool
        self.metrics = node.metrics
        self.reactor = node.reactor
        self.min_ns = node.config["ingest"]["min_event_time"]
        self.skew_ns = int(node.config["ingest"]["max_future_skew"] * 1e9)

    def record(self, protocol, station, events, idempotency_key=None):
        """A spool record for ``events`` ([{"type", "time_ns", "data"}]) of ``station``; each event's
        ``data`` becomes ``data_json``, its JSON text."""
        now_ns = int(self.reactor.seconds() * 1e9)
        for event, event_id in zip(events, event_ids(now_ns, len(events)), strict=True):
            event["id"] = event_id
            event["digest"] = digest(event["data"])
            # From here on the data travels as its JSON text, which is what the
            # spool frame and the store's column hold anyway.  As dicts and
            # lists waiting for the fsync and the commit, it was most of what
            # the garbage collector walked under native load: 8 % of a core,
            # full passes holding the GIL 17-30 ms (docs/performance.rst).
            event["data_json"] = jsoncodec.dumps_text(event.pop("data"))
            if event["time_ns"] < self.min_ns:
                event["quarantine"] = "before min_event_time"
            elif event["time_ns"] > now_ns + self.skew_ns:
                event["quarantine"] = "more than max_future_skew ahead"
            else:
                event["quarantine"] = None
        return {"protocol": protocol, "station": str(station), "received_ns": now_ns,
                "idempotency_key": idempotency_key, "events": events}

    def quarantined(self, record):
        return sum(1 for e in record["events"] if e["quarantine"] is not None)

    def count_events(self, protocol, record, duplicates=0):
        """Count a spooled record's events, and ``duplicates`` left out of it."""
        quarantined = self.quarantined(record)
        accepted = len(record["events"]) - quarantined
        counter = self.metrics.ingest_events
        for result, n in (("accepted", accepted), ("quarantined", quarantined), ("duplicate", duplicates)):
            if n:
                counter.labels(protocol, result).inc(n)


class StationList(TimerService):
    """Keeps the store's stations in step with the [ingest] station_list CSV.

    Checked every ``interval`` seconds (and on SIGHUP); re-read only when the
    file's size or modification time changed.  A bad file is logged and
    changes nothing; stations not in the file are left alone (they may have
    been added with stationd-admin).
    """

    def __init__(self, path, store, interval=5.0, clock=None):
        super().__init__(interval, self.check)
        if clock is not None:
            self.clock = clock
        self.path = path
        self.store = store
        self._seen = None

    async def load(self):
        rows = stations.read_station_list(self.path)
        stored = await self.store.run(stations.password_hashes)
        hashed = await deferToThread(stations.hashed_rows, stored, rows)
        counts = await self.store.run(stations.put_stations, hashed)
        log.info("Station list {path}: {n} stations, {added} added, {updated} updated",
                 path=self.path, n=len(rows), **counts)
        return counts

    async def _check(self, force):
        try:
            info = os.stat(self.path)
            seen = (info.st_size, info.st_mtime_ns)
            if seen != self._seen or force:
                self._seen = seen
                await self.load()
        except (OSError, stations.StationError) as e:
            log.error("Station list {path} not loaded: {e}", path=self.path, e=e)
        except Exception:
            log.failure("Station list {path} not loaded", path=self.path)

    def check(self, force=False):
        return ensureDeferred(self._check(force))

"""The one road from an upload to the store: events stamped, deduped, quarantined, made durable, counted.

Native ingest, HiSPARC /upload and node-to-node import hand their decoded
events to Ingest; the web handlers only decode HTTP and encode the answer.
Quarantine keeps implausible events (GPS-rollover dates, clocks far ahead)
out of normal queries without losing them.
"""

import os
from typing import TYPE_CHECKING, Any

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from twisted.internet.interfaces import IReactorTime

from stationd.metrics import Metrics
from stationd.records import Answer, Event, Record
from stationd.store import stations
from stationd.store.events import event_ids

if TYPE_CHECKING:
    from stationd.store import Store
    from stationd.writer import GroupCommit

log = Logger()


class Ingest:
    """Accepts checked batches: ``accept`` for a station's events, ``accept_import`` for another
    node's.  ``commits`` (stationd.writer.GroupCommit) makes them durable."""

    def __init__(self, commits: "GroupCommit", metrics: Metrics, clock: IReactorTime, min_event_ns: int,
                 max_future_skew: float):
        self.commits = commits
        self.metrics = metrics
        self.clock = clock
        self.min_ns = min_event_ns
        self.skew_ns = int(max_future_skew * 1e9)
        # (protocol, result) -> the counter's child: labels() costs a lock and a lookup
        self._events: dict[tuple[str, str], Any] = {}

    async def accept(self, protocol: str, station: str, events: list[Event],
                     idempotency_key: str | None = None) -> Answer:
        """Store ``events`` ([{"type", "time_ns", "data_json", "digest"}], see jsoncodec.canonical()) of
        ``station``; the answer {"accepted", "duplicates", "quarantined"} once they are durable
        (with "replayed": the answer given before to the same Idempotency-Key).  Raises
        stationd.writer's Busy, StoreRefused, SpoolFull or SpoolError when it cannot."""
        record = self.record(protocol, station, events, idempotency_key)
        answer = await self.commits.submit(record, sum(len(e["data_json"]) for e in record["events"]))
        if "replayed" not in answer:
            for result, n in (("accepted", answer["accepted"]), ("quarantined", answer["quarantined"]),
                              ("duplicate", answer["duplicates"])):
                if n:
                    self._count(protocol, result, n)
        return answer

    def rejected(self, protocol: str, n: int) -> None:
        self._count(protocol, "rejected", n)

    def _count(self, protocol: str, result: str, n: int) -> None:
        counter = self._events.get((protocol, result))
        if counter is None:
            counter = self._events[protocol, result] = self.metrics.ingest_events.labels(protocol, result)
        counter.inc(n)

    def quarantine_reason(self, time_ns: int, now_ns: int) -> str | None:
        """Why an event of this time is implausible (it is stored quarantined), or None."""
        if time_ns < self.min_ns:
            return "before min_event_time"
        if time_ns > now_ns + self.skew_ns:
            return "more than max_future_skew ahead"
        return None

    def record(self, protocol: str, station: str, events: list[Event], idempotency_key: str | None = None) -> Record:
        """The record of a batch: ids and quarantine stamped, repeats within it left out (counted)."""
        now_ns = int(self.clock.seconds() * 1e9)
        fresh, seen = [], set()
        for event in events:
            candidate = (event["type"], event["time_ns"], event["digest"])
            if candidate not in seen:
                seen.add(candidate)
                fresh.append(event)
        for event, event_id in zip(fresh, event_ids(now_ns, len(fresh)), strict=True):
            event["id"] = event_id
            event["quarantine"] = self.quarantine_reason(event["time_ns"], now_ns)
        return {"protocol": protocol, "station": str(station), "received_ns": now_ns,
                "idempotency_key": idempotency_key, "events": fresh, "duplicates": len(events) - len(fresh)}

    async def accept_import(self, events: list[dict[str, Any]]) -> tuple[dict[str, int], list[dict[str, Any]]]:
        """Store another node's checked events (stationd.web.imports), each with its file records;
        (counts, the file records) once committed.  Raises StoreUnavailable when the store cannot
        take them now (the sender keeps them and retries)."""
        counts, records = await self.commits.submit({"protocol": "import", "events": events},
                                                    sum(len(e["data_json"]) for e in events))
        self.metrics.import_events.labels("accepted").inc(counts["accepted"])
        self.metrics.import_events.labels("duplicate").inc(counts["duplicates"])
        return counts, records


class StationList(TimerService):
    """Keeps the store's stations in step with the [ingest] station_list CSV.

    Checked every ``interval`` seconds (and on SIGHUP); re-read only when the
    file's size or modification time changed.  A bad file is logged and
    changes nothing; stations not in the file are left alone (they may have
    been added with stationd-admin).
    """

    def __init__(self, path: str, store: "Store", interval: float = 5.0, clock: IReactorTime | None = None) -> None:
        super().__init__(interval, self.check)
        if clock is not None:
            self.clock = clock
        self.path = path
        self.store = store
        self._seen: tuple[int, int] | None = None  # (size, mtime_ns) of the file last read

    async def load(self) -> dict[str, int]:
        rows = stations.read_station_list(self.path)
        stored = await self.store.run(stations.password_hashes)
        hashed = await deferToThread(stations.hashed_rows, stored, rows)
        counts = await self.store.run(stations.put_stations, hashed)
        log.info("Station list {path}: {n} stations, {added} added, {updated} updated",
                 path=self.path, n=len(rows), **counts)
        return counts

    async def _check(self, force: bool) -> None:
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

    def check(self, force: bool = False) -> Deferred[None]:
        return ensureDeferred(self._check(force))

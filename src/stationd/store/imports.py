"""Storing what another node exports: events and file records, idempotently by id.

A replayed batch (the exporter did not see our answer) lands once: events
and files that exist, by id or by the natural key, are left as they are.
Events keep the origin they arrived with, so a chain of nodes never sends
an event back where it came from.
"""

import datetime
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from stationd.store.events import _insert, insert_events, renumber
from stationd.store.schema import event_files, files, stations

def import_batch(conn: Connection, batch: Sequence[dict[str, Any]]) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Store checked import events (each with its "files" records); the counts and
    the file records of the batch, for the caller to ask for missing contents."""
    station_ids = sorted({e["station"] for e in batch})
    known = set(conn.execute(select(stations.c.id).where(stations.c.id.in_(station_ids))).scalars())
    new_stations = [{"id": s, "created_at": datetime.datetime.now(datetime.timezone.utc)}
                    for s in station_ids if s not in known]
    if new_stations:  # an upstream node learns stations from their events (no upload password)
        conn.execute(_insert(conn, stations), new_stations)
    rows = [(e["id"], e["station"], e["type"], e["time_ns"], e["received_ns"], e["data_json"],
             e["digest"], e["origin"], e["quarantined"], e["quarantine_reason"]) for e in batch]
    inserted = insert_events(conn, rows)
    records = [dict(f, station=e["station"]) for e in batch for f in e["files"]]
    links = [{"event_id": e["id"], "file_id": f["id"]} for e in batch for f in e["files"]]
    if records:
        linked = {tuple(row) for row in conn.execute(select(event_files.c.event_id, event_files.c.file_id).where(
            event_files.c.event_id.in_({link["event_id"] for link in links})))}
        conn.execute(_insert(conn, files), [{k: r[k] for k in (
            "id", "station", "time_ns", "name", "mime_type", "semantic_type", "size", "sha256", "meta",
            "created_ns", "origin")} for r in records])
        conn.execute(_insert(conn, event_files), links)
        # An event stored before that gained a file goes up the chain again, with it.
        renumber(conn, sorted({link["event_id"] for link in links
                               if (link["event_id"], link["file_id"]) not in linked}))
    return {"accepted": inserted, "duplicates": len(rows) - inserted, "stations_added": len(new_stations)}, records

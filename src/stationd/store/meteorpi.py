"""MeteorPi's observatories, observations and files, read from and written to stationd's tables.

The mapping is stationd.meteorpi's (docs/meteorpi.rst): stations, their
status history and key/value metadata (``station_metadata``), events and
files.  ``meteorpi_ids`` keeps the MeteorPi ids of what was imported, so
they are shown as the cameras named them; what came in through stationd's
own routes is shown under its own ids.
"""

import datetime
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from sqlalchemy import ColumnElement, Float, Text, and_, case, cast, func, literal, select
from sqlalchemy.engine import Connection

from stationd.meteorpi import (
    MAX_LIMIT, SKY_CLARITY_KEY, Bins, SKY_CLARITY_TYPE, Search, local_id, meta_list, to_ns, to_seconds,
)
from stationd.store.events import _insert, renumber
from stationd.store.exports import get_cursor
from stationd.store.imports import import_batch
from stationd.store.query import OPERATORS, json_constraint
from stationd.store.stations import get_station, status_rows, status_rows_by_station
from stationd.store.schema import (
    AnyRow, event_files, events, files, meteorpi_ids, meteorpi_uploads, station_metadata, station_status, stations,
)


# -- observatories and their metadata ----------------------------------------


def _status_items(rows: Iterable[AnyRow]) -> list[tuple[int, str, Any]]:
    """A station's status history as metadata items (time, key, value): each entry's fields at its valid_from."""
    items = []
    for row in rows:
        for key, value in (("instrument", row.instrument), ("latitude", row.latitude),
                           ("longitude", row.longitude), ("altitude", row.altitude)):
            if value is not None:
                items.append((row.valid_from_ns, key, value))
        for key, value in (row.orientation or {}).items():
            if isinstance(value, (int, float, str)) and not isinstance(value, bool):
                items.append((row.valid_from_ns, f"orientation:{key}", value))
    return items


def _location(history: list[AnyRow], now_ns: int) -> AnyRow | None:
    """The entry of a status history that says where the station is now (None: nowhere said)."""
    located = [r for r in history if r.valid_from_ns <= now_ns and r.latitude is not None]
    return located[-1] if located else None


def observatories(conn: Connection, now_ns: int) -> dict[str, dict[str, Any]]:
    """GET /obstories: every station, keyed by its id, with its location now and the span of its metadata."""
    history = status_rows_by_station(conn)
    spans = {row.station: (row.first, row.last) for row in conn.execute(
        select(station_metadata.c.station, func.min(station_metadata.c.time_ns).label("first"),
               func.max(station_metadata.c.time_ns).label("last"))
        .where(station_metadata.c.time_ns > 0).group_by(station_metadata.c.station))}
    found = {}
    for uid, row in enumerate(conn.execute(select(stations.c.id, stations.c.name)
                                           .order_by(stations.c.created_at, stations.c.id)), 1):
        rows = history.get(row.id, [])
        where = _location(rows, now_ns)
        times = [r.valid_from_ns for r in rows if r.valid_from_ns > 0] + [t for t in spans.get(row.id, ()) if t]
        found[row.id] = {"uid": uid, "publicId": row.id, "name": row.name or row.id,
                         "latitude": None if where is None else where.latitude,
                         "longitude": None if where is None else where.longitude,
                         "firstSeen": to_seconds(min(times)) if times else 0,
                         "lastSeen": to_seconds(max(times)) if times else 0}
    return found


def metadata(conn: Connection, station: str, limit: int = 100) -> list[list[Any]]:
    """GET /obstory/{id}/metadata: the ``limit`` newest items, oldest first, as [time, key, value]."""
    rows = conn.execute(select(station_metadata.c.time_ns, station_metadata.c.key, station_metadata.c.value)
                        .where(station_metadata.c.station == station)
                        .order_by(station_metadata.c.time_ns.desc(), station_metadata.c.key).limit(limit)).all()
    items = [(row.time_ns, row.key, row.value) for row in rows] + _status_items(status_rows(conn, station))
    items.sort(key=lambda item: item[0])
    return [[to_seconds(t), key, value] for t, key, value in items[-limit:]]


def status_dict(conn: Connection, station: str, before_ns: int) -> dict[str, Any]:
    """GET /obstory/{id}/statusdict: each key's latest value before ``before_ns`` (status history first, then
    the key/value metadata, so a metadata item of the same key and a later time wins)."""
    latest: dict[str, tuple[int, Any]] = {}
    for time_ns, key, value in _status_items(r for r in status_rows(conn, station) if r.valid_from_ns < before_ns):
        latest[key] = (time_ns, value)
    newest = (select(station_metadata.c.key, func.max(station_metadata.c.time_ns).label("time_ns"))
              .where(station_metadata.c.station == station, station_metadata.c.time_ns < before_ns)
              .group_by(station_metadata.c.key).subquery())
    rows = conn.execute(select(station_metadata.c.key, station_metadata.c.time_ns, station_metadata.c.value)
                        .join(newest, and_(station_metadata.c.key == newest.c.key,
                                           station_metadata.c.time_ns == newest.c.time_ns))
                        .where(station_metadata.c.station == station)
                        .order_by(station_metadata.c.key, station_metadata.c.id))
    for row in rows:
        if row.key not in latest or latest[row.key][0] <= row.time_ns:
            latest[row.key] = (row.time_ns, row.value)
    return {key: value for key, (_, value) in sorted(latest.items())}


# -- searches ----------------------------------------------------------------


def _located(conn: Connection, search: Search, now_ns: int) -> list[str]:
    """The stations whose location now is within the search's bounds (a bound on a coordinate the
    station has not: outside)."""

    def within(value: float | None, low: float | None, high: float | None) -> bool:
        return (low is None and high is None) or (
            value is not None and (low is None or value >= low) and (high is None or value <= high))

    inside = []
    for station, rows in status_rows_by_station(conn).items():
        where = _location(rows, now_ns)
        if where is not None and within(where.latitude, search.lat_min, search.lat_max) and within(
                where.longitude, search.long_min, search.long_max):
            inside.append(station)
    return inside


def _common(conn: Connection, search: Search, table: Any, json_column: Any, node_id: str,
            now_ns: int) -> list[ColumnElement[bool]] | None:
    """The clauses both searches share; None when no row can match."""
    clauses: list[ColumnElement[bool]] = []
    chosen = None if search.obstory_ids is None else set(search.obstory_ids)
    if any(v is not None for v in (search.lat_min, search.lat_max, search.long_min, search.long_max)):
        located = set(_located(conn, search, now_ns))
        chosen = located if chosen is None else chosen & located
    if chosen is not None:
        if not chosen:
            return None
        one = len(chosen) == 1  # (an equality: SQLite's range scan of the (station, time) index)
        clauses.append(table.c.station == next(iter(chosen)) if one else table.c.station.in_(sorted(chosen)))
    if search.time_min is not None:
        clauses.append(table.c.time_ns > to_ns(search.time_min))
    if search.time_max is not None:
        clauses.append(table.c.time_ns < to_ns(search.time_max))
    if search.exclude_imported:
        clauses.append(table.c.origin == node_id)
    for key, op, value in search.meta:
        clauses.append(json_constraint(conn.dialect, json_column, key, OPERATORS[op], value))
    return clauses


def _page(conn: Connection, columns: Sequence[Any], table: Any, clauses: list[ColumnElement[bool]],
          search: Search) -> tuple[list[AnyRow], int]:
    """The search's page, newest first, and MeteorPi's count: exact when the page is full (or empty past the
    start), else the rows up to the page's end (4.3.12)."""
    limit = min(search.limit or MAX_LIMIT, MAX_LIMIT)
    where = and_(True, *clauses)
    rows = conn.execute(select(*columns).where(where).order_by(table.c.time_ns.desc(), table.c.id.desc())
                        .offset(search.skip).limit(limit)).all()
    if len(rows) == limit or (not rows and search.skip):
        count = conn.execute(select(func.count()).select_from(table).where(where)).scalar() or 0
    else:
        count = search.skip + len(rows)
    return list(rows), count


def _public_ids(conn: Connection, local_ids: Iterable[str]) -> dict[str, AnyRow]:
    wanted = sorted(set(local_ids))
    found: dict[str, AnyRow] = {}
    for start in range(0, len(wanted), 500):
        for row in conn.execute(select(meteorpi_ids).where(meteorpi_ids.c.local_id.in_(wanted[start:start + 500]))):
            found[row.local_id] = row
    return found


def _names(conn: Connection, station_ids: Iterable[str]) -> dict[str, str]:
    wanted = sorted(set(station_ids))
    return {row.id: row.name or row.id for row in conn.execute(
        select(stations.c.id, stations.c.name).where(stations.c.id.in_(wanted)))} if wanted else {}


def _local_ids(kind: str, public_id: str) -> list[str]:
    """What a MeteorPi id given in a search or a URL may stand for: an imported record, or a stationd id."""
    return [local_id(kind, public_id), public_id]


def _file_records(conn: Connection, rows: Sequence[AnyRow]) -> list[dict[str, Any]]:
    """File rows (with ``event_id``: the observation it belongs to, if any) as MeteorPi FileRecords."""
    public = _public_ids(conn, [r.id for r in rows] + [r.event_id for r in rows if r.event_id])
    names = _names(conn, [r.station for r in rows])
    records = []
    for row in rows:
        mapped = public.get(row.id)
        fname = mapped.public_id if mapped is not None else row.id
        record: dict[str, Any] = {"id": fname, "obstory_id": row.station, "obstory_name": names.get(row.station),
                                  "repository_fname": fname, "file_time": to_seconds(row.time_ns),
                                  "file_size": row.size, "file_name": row.name, "mime_type": row.mime_type}
        if row.event_id:
            parent = public.get(row.event_id)
            record["observation_id"] = parent.public_id if parent is not None else row.event_id
        if row.semantic_type is not None:
            record["semantic_type"] = row.semantic_type
        if mapped is not None and mapped.md5:
            record["file_md5"] = mapped.md5
        record["meta"] = meta_list(row.meta or {})
        records.append(record)
    return records


_FILE_COLUMNS = (files.c.id, files.c.station, files.c.time_ns, files.c.name, files.c.mime_type,
                 files.c.semantic_type, files.c.size, files.c.meta, files.c.sha256, files.c.created_ns)


def _first_event() -> Any:
    """The event a file belongs to (the first, should it belong to several), as a column of a file row."""
    return (select(func.min(event_files.c.event_id)).where(event_files.c.file_id == files.c.id)
            .scalar_subquery().label("event_id"))


def search_observations(conn: Connection, search: Search, node_id: str, now_ns: int
                        ) -> tuple[list[dict[str, Any]], int]:
    """GET /obs/{search}: (observations, count)."""
    clauses = _common(conn, search, events, events.c.data, node_id, now_ns)
    if clauses is None:
        return [], 0
    clauses.append(~events.c.quarantined)
    if search.observation_type is not None:
        clauses.append(events.c.type == search.observation_type)
    if search.observation_id is not None:
        clauses.append(events.c.id.in_(_local_ids("observation", search.observation_id)))
    if search.exclude_export_to is not None:
        clauses.append(events.c.seq > get_cursor(conn, search.exclude_export_to))
    # (the data as its text, parsed by orjson: SQLAlchemy's json.loads took a fifth of a page)
    rows, count = _page(conn, (events.c.id, events.c.station, events.c.type, events.c.time_ns,
                               cast(events.c.data, Text).label("data")), events, clauses, search)
    ids = [row.id for row in rows]
    file_rows = list(conn.execute(select(*_FILE_COLUMNS, event_files.c.event_id)
                                  .join(event_files, event_files.c.file_id == files.c.id)
                                  .where(event_files.c.event_id.in_(ids)).order_by(files.c.time_ns, files.c.id))
                     ) if ids else []
    linked: dict[str, list[dict[str, Any]]] = {}
    for file_row, record in zip(file_rows, _file_records(conn, file_rows)):
        linked.setdefault(file_row.event_id, []).append(record)
    public = _public_ids(conn, ids)
    names = _names(conn, [row.station for row in rows])
    found = []
    for row in rows:
        mapped = public.get(row.id)
        obs_id = mapped.public_id if mapped is not None else row.id
        found.append({"obstory_id": row.station, "id": obs_id, "obstory_name": names.get(row.station),
                      "obs_id": obs_id, "obs_time": to_seconds(row.time_ns), "obs_type": row.type,
                      "files": linked.get(row.id, []), "meta": meta_list(orjson.loads(row.data))})
    return found, count


def search_files(conn: Connection, search: Search, node_id: str, now_ns: int) -> tuple[list[dict[str, Any]], int]:
    """GET /files/{search}: (file records, count)."""
    clauses = _common(conn, search, files, files.c.meta, node_id, now_ns)
    if clauses is None:
        return [], 0
    if search.mime_type is not None:
        clauses.append(files.c.mime_type == search.mime_type)
    if search.semantic_type is not None:
        clauses.append(files.c.semantic_type == search.semantic_type)
    if search.repository_fname is not None:
        clauses.append(files.c.id.in_(_local_ids("file", search.repository_fname)))
    parents: list[ColumnElement[bool]] = []
    if search.observation_id is not None:
        parents.append(events.c.id.in_(_local_ids("observation", search.observation_id)))
    if search.observation_type is not None:
        parents.append(events.c.type == search.observation_type)
    if search.exclude_export_to is not None:
        parents.append(events.c.seq > get_cursor(conn, search.exclude_export_to))
    if parents:
        clauses.append(files.c.id.in_(select(event_files.c.file_id).join(events, events.c.id == event_files.c.event_id)
                                      .where(*parents)))
    rows, count = _page(conn, (*_FILE_COLUMNS, _first_event()), files, clauses, search)
    return _file_records(conn, rows), count


def _bin_of(spans: Bins, time_column: Any) -> Any:
    """The bin of each row, as the database numbers them (integer division from the first bin's start):
    one query answers all bins."""
    return (time_column - spans.first_ns).self_group().op("/")(spans.width_ns)


def activity(conn: Connection, station: str, kind: str, spans: Bins) -> list[int]:
    """GET /activity: observations of type ``kind`` with start <= time < end in each bin."""
    counts = [0] * spans.n
    for row in conn.execute(select(_bin_of(spans, events.c.time_ns).label("bin"), func.count()).where(
            events.c.station == station, events.c.type == kind, ~events.c.quarantined,
            events.c.time_ns >= spans.first_ns,
            events.c.time_ns < spans.first_ns + spans.width_ns * spans.n).group_by("bin")):
        counts[row[0]] = row[1]
    return counts


def _json_number(conn: Connection, column: Any, key: str) -> Any:
    """``column``'s member ``key`` where it is a JSON number, else NULL."""
    if conn.dialect.name == "postgresql":
        member = column.op("->")(literal(key))
        return case((func.jsonb_typeof(member) == "number", cast(column.op("->>")(literal(key)), Float)))
    path = '$."' + key + '"'  # (a constant of ours: no quote or backslash in it)
    return case((func.json_type(column, path).in_(("integer", "real")), func.json_extract(column, path)))


def sky_clarity(conn: Connection, station: str, spans: Bins) -> list[float]:
    """GET /skyclarity: in each bin, the mean sky clarity of the station's lens-corrected frames strictly
    inside it (0 where there are none)."""
    means = [0.0] * spans.n
    value = _json_number(conn, files.c.meta, SKY_CLARITY_KEY)
    for row in conn.execute(select(_bin_of(spans, files.c.time_ns).label("bin"), func.avg(value)).where(
            files.c.station == station, files.c.semantic_type == SKY_CLARITY_TYPE,
            files.c.time_ns > spans.first_ns, files.c.time_ns < spans.first_ns + spans.width_ns * spans.n,
            (files.c.time_ns - spans.first_ns) % spans.width_ns != 0).group_by("bin")):  # (an edge: in neither)
        means[row[0]] = float(row[1]) if row[1] is not None else 0.0
    return means


def file_content(conn: Connection, file_id: str) -> dict[str, Any] | None:
    """The file a /files/content URL names (a MeteorPi repository_fname, or a stationd file id), as
    stationd.store.query.describe_file gives it; None if there is none."""
    row = conn.execute(select(files).where(files.c.id.in_(_local_ids("file", file_id))).limit(1)).first()
    if row is None:
        return None
    return {"id": row.id, "name": row.name, "mime_type": row.mime_type, "sha256": row.sha256, "size": row.size,
            "created_ns": row.created_ns}


# -- import (POST /importv2) -------------------------------------------------


def _station(conn: Connection, station: str, name: str | None, latitude: float | None = None,
             longitude: float | None = None, now_ns: int = 0) -> None:
    """Register an observatory that is new here, with its name and (fixed, in MeteorPi) location."""
    if get_station(conn, station) is not None:
        return
    conn.execute(_insert(conn, stations), [{"id": station, "name": name,
                                            "created_at": datetime.datetime.now(datetime.timezone.utc)}])
    if latitude is not None and -90 <= latitude <= 90:
        conn.execute(_insert(conn, station_status), [{
            "station": station, "valid_from_ns": 0, "latitude": latitude,
            "longitude": longitude if longitude is not None and -180 <= longitude <= 180 else None,
            "created_ns": now_ns}])


def import_metadata(conn: Connection, item: dict[str, Any], origin: str, user: str, now_ns: int) -> bool:
    """Store an observatory metadata item (stationd.meteorpi.parse_metadata) unless it is stored;
    whether it was new."""
    _station(conn, item["station"], item["station_name"], item["latitude"], item["longitude"], now_ns)
    inserted = conn.execute(_insert(conn, station_metadata), [{
        "id": item["id"], "station": item["station"], "key": item["key"], "time_ns": item["time_ns"],
        "value": item["value"], "created_ns": item["created_ns"] or now_ns,
        "user_created": item["user_created"] or user, "origin": origin}]).rowcount
    return bool(inserted)


def _remember(conn: Connection, kind: str, local: str, public: str, md5: str | None = None) -> None:
    conn.execute(_insert(conn, meteorpi_ids), [{"local_id": local, "kind": kind, "public_id": public, "md5": md5}])


def import_observation(conn: Connection, observation: dict[str, Any], event: dict[str, Any]) -> dict[str, int]:
    """Store an observation (``event``: it in stationd.web.imports.parse_import_event's form) and its MeteorPi
    id, unless stored; the import counts."""
    _station(conn, observation["station"], observation["station_name"])
    _remember(conn, "observation", observation["id"], observation["public_id"])
    counts, _ = import_batch(conn, [event])
    return counts


def upload(conn: Connection, public_id: str, md5: str) -> AnyRow | None:
    """The content uploaded for file ``public_id`` with this MD5, if any."""
    return conn.execute(select(meteorpi_uploads).where(meteorpi_uploads.c.public_id == public_id,
                                                       meteorpi_uploads.c.md5 == md5)).first()


def record_upload(conn: Connection, public_id: str, md5: str, sha256: str, size: int, user: str, now_ns: int) -> None:
    conn.execute(_insert(conn, meteorpi_uploads), [{"public_id": public_id, "md5": md5, "sha256": sha256,
                                                    "size": size, "received_ns": now_ns, "uploaded_by": user}])


def import_file(conn: Connection, record: dict[str, Any], content: AnyRow, origin: str, now_ns: int) -> bool:
    """Store a file record (stationd.meteorpi.parse_file_record) whose content ``content`` (an upload) is
    here, linked to its observation (which may come later: the link waits for it), unless stored; whether
    it was new."""
    _station(conn, record["station"], record["station_name"])
    _remember(conn, "file", record["id"], record["public_id"], record["md5"])
    if conn.execute(select(files.c.id).where(files.c.id == record["id"])).first() is not None:
        return False
    conn.execute(_insert(conn, files), [{
        "id": record["id"], "station": record["station"], "time_ns": record["time_ns"], "name": record["name"],
        "mime_type": record["mime_type"], "semantic_type": record["semantic_type"], "size": content.size,
        "sha256": content.sha256, "meta": record["meta"], "created_ns": now_ns, "origin": origin}])
    if record["observation"] is not None:
        event_id = local_id("observation", record["observation"])
        conn.execute(_insert(conn, event_files), [{"event_id": event_id, "file_id": record["id"]}])
        # An observation stored before that gains a file goes up the chain again, with it.
        renumber(conn, [event_id])
    return True

"""Event and file queries: filters, constraints on JSON fields, keyset paging.

Results are ordered by (time_ns, id), newest first unless ascending; a page
ends with a cursor holding the last (time_ns, id), and the next page starts
strictly after it.  Events stored between two pages therefore land either
before the cursor (and are not seen by this paging) or after it (and are),
never twice, and nothing is skipped: offsets would do both.

JSON constraints compare numbers as numbers and text as text, each only
against values of its own JSON type (a field holding "7" does not match
``gt=5``), with SQLite's JSON functions or PostgreSQL's json operators.
"""

import base64
import binascii
import dataclasses
import json
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Unpack

import orjson
from sqlalchemy import ColumnElement, Numeric, Select, Table, Text, and_, case, cast, func, literal, select, tuple_
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection, Dialect

from stationd.store.schema import AnyRow, event_files, events, files, station_event_counts
from stationd.times import format_ns

OPERATORS = {"eq": operator.eq, "lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge}
MAX_LIMIT = 10000


class CursorError(ValueError):
    pass


@dataclasses.dataclass
class Query:
    """What the query routes accept, already validated."""

    stations: list = dataclasses.field(default_factory=list)
    types: list = dataclasses.field(default_factory=list)  # event types, or file semantic types
    mime_types: list = dataclasses.field(default_factory=list)
    after_ns: int | None = None  # inclusive
    before_ns: int | None = None  # exclusive
    constraints: list = dataclasses.field(default_factory=list)  # (name, op, number or str)
    quarantined: bool | None = False  # None: any
    order: str = "desc"
    limit: int = 100
    cursor: tuple[int, str] | None = None  # (time_ns, id) of the last row of the previous page


def encode_cursor(order: str, time_ns: int, row_id: str) -> str:
    raw = json.dumps([order, time_ns, row_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str, order: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        cursor_order, time_ns, row_id = json.loads(raw)
    except (ValueError, TypeError, binascii.Error):
        raise CursorError("not a cursor this node gave out") from None
    if not (isinstance(time_ns, int) and isinstance(row_id, str)):
        raise CursorError("not a cursor this node gave out")
    if cursor_order != order:
        raise CursorError(f"the cursor is for order={cursor_order}; pass the same order")
    return time_ns, row_id


def json_constraint(dialect: Dialect, column: ColumnElement[Any], name: str, compare: Callable[[Any, Any], Any],
                     value: float | str) -> ColumnElement[bool]:
    """``compare(field name of the JSON column, value)``, true only where the field has value's JSON type."""
    numeric = not isinstance(value, str)
    if dialect.name == "postgresql":
        typeof = func.jsonb_typeof if isinstance(column.type.dialect_impl(dialect), JSONB) else func.json_typeof
        typed = typeof(column.op("->")(literal(name))) == ("number" if numeric else "string")
        text = column.op("->>")(literal(name))
        return compare(case((typed, cast(text, Numeric) if numeric else text)), value)
    # Each SQLite JSON function parses the text again.  json_extract alone
    # would let a string, true or false compare (true as 1, text above every
    # number), so the type is checked too, but only where the comparison
    # holds: most rows of a day cost one parse instead of two (~10 % faster).
    path = '$."' + name + '"'  # names hold no quote or backslash (query: [A-Za-z0-9_-]; meteorpi.META_KEY)
    kinds = ("integer", "real") if numeric else ("text",)
    return and_(compare(func.json_extract(column, path), value), func.json_type(column, path).in_(kinds))


def _where(conn: Connection, table: Table, query: Query, time_column: ColumnElement[int],
           json_column: ColumnElement[Any]) -> list[ColumnElement[bool]]:
    dialect = conn.dialect
    after_ns, before_ns, cursor = query.after_ns, query.before_ns, query.cursor
    # A cursor and the window's bound on the same side: one implies the
    # other, so only the tighter is kept.  With both, SQLite started its index
    # range at the window's bound and walked every entry up to the cursor, so
    # each page of a walk cost more than the one before.
    if cursor is not None and query.order == "asc" and after_ns is not None:
        after_ns, cursor = (None, cursor) if cursor[0] >= after_ns else (after_ns, None)
    if cursor is not None and query.order == "desc" and before_ns is not None:
        before_ns, cursor = (None, cursor) if cursor[0] < before_ns else (before_ns, None)
    clauses: list[ColumnElement[bool]] = []
    if len(query.stations) == 1:  # several: one query each, merged (_page)
        clauses.append(table.c.station == query.stations[0])
    if after_ns is not None:
        clauses.append(time_column >= after_ns)
    if before_ns is not None:
        clauses.append(time_column < before_ns)
    for name, op, value in query.constraints:
        clauses.append(json_constraint(dialect, json_column, name, OPERATORS[op], value))
    if cursor is not None:
        position = tuple_(time_column, table.c.id)
        mark = tuple_(literal(cursor[0]), literal(cursor[1]))
        clauses.append(position < mark if query.order == "desc" else position > mark)
    return clauses


def _page(conn: Connection, statement: Select[Unpack[tuple[Any, ...]]], table: Table,
          time_column: ColumnElement[int], query: Query) -> tuple[Sequence[AnyRow], str | None]:
    direction = (lambda c: c.desc()) if query.order == "desc" else (lambda c: c.asc())
    statement = statement.order_by(direction(time_column), direction(table.c.id)).limit(query.limit + 1)
    rows: Sequence[AnyRow]
    if len(query.stations) > 1:
        # "station IN (...)" ordered by time made SQLite sort every matching
        # event of those stations; a page of each, merged here, reads at most
        # (limit + 1) an index range each.
        rows = [row for station in dict.fromkeys(query.stations)
                for row in conn.execute(statement.where(table.c.station == station))]
        rows.sort(key=lambda row: (row.time_ns, row.id), reverse=query.order == "desc")
        rows = rows[:query.limit + 1]
    else:
        rows = conn.execute(statement).all()
    more = len(rows) > query.limit
    rows = rows[:query.limit]
    cursor = encode_cursor(query.order, rows[-1].time_ns, rows[-1].id) if more else None
    return rows, cursor


def _files_of(conn: Connection, event_ids: Sequence[str]) -> dict[str, list[str]]:
    # Straight to the driver: SQLAlchemy's expanding IN cost more to build
    # for a 1000-event page than the query costs to run.
    linked: dict[str, list[str]]
    linked, mark = {}, "%s" if conn.dialect.name == "postgresql" else "?"
    for start in range(0, len(event_ids), 500):
        chunk = event_ids[start:start + 500]
        rows = conn.exec_driver_sql(f"SELECT event_id, file_id FROM event_files WHERE event_id IN "
                                    f"({', '.join([mark] * len(chunk))}) ORDER BY event_id, file_id", tuple(chunk))
        for event_id, file_id in rows:
            linked.setdefault(event_id, []).append(file_id)
    return linked


_EVENT_COLUMNS = (events.c.id, events.c.station, events.c.type, events.c.time_ns, events.c.received_ns,
                  cast(events.c.data, Text).label("data"), events.c.origin, events.c.quarantined,
                  events.c.quarantine_reason)


def _event(row: AnyRow, linked: Mapping[str, list[str]], received_at: dict[int, str]) -> dict[str, Any]:
    # The data column's JSON text goes into the answer as it is: parsing and
    # re-encoding it was most of a page's cost.  The row is unpacked as a
    # tuple: reading its columns by name cost 4 ms of a 1000-event page.
    # ``received_at`` remembers formatted receipt times: a batch's events share one.
    event_id, station, kind, time_ns, received_ns, data, origin, quarantined, reason = row
    received = received_at.get(received_ns)
    if received is None:
        received = received_at[received_ns] = format_ns(received_ns)
    return {"id": event_id, "station": station, "type": kind, "time": format_ns(time_ns),
            "time_ns": time_ns, "received_at": received,
            "data": orjson.Fragment(data), "files": linked.get(event_id, []), "origin": origin,
            "quarantined": bool(quarantined), "quarantine_reason": reason}


def find_events(conn: Connection, query: Query) -> tuple[list[dict[str, Any]], str | None]:
    """One page of events: (list of events, next cursor or None)."""
    clauses = _where(conn, events, query, events.c.time_ns, events.c.data)
    if query.types:
        clauses.append(events.c.type.in_(query.types))
    if query.quarantined is not None:
        clauses.append(events.c.quarantined == query.quarantined)
    rows, cursor = _page(conn, select(*_EVENT_COLUMNS).where(and_(True, *clauses)), events,
                         events.c.time_ns, query)
    received_at: dict[int, str]
    linked, received_at = _files_of(conn, [row[0] for row in rows]), {}
    return [_event(row, linked, received_at) for row in rows], cursor


def get_event(conn: Connection, event_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(*_EVENT_COLUMNS).where(events.c.id == event_id)).first()
    if row is None:
        return None
    event = _event(row, {}, {})
    event["files"] = [describe_file(f) for f in conn.execute(
        select(files).join(event_files, event_files.c.file_id == files.c.id)
        .where(event_files.c.event_id == event_id).order_by(files.c.time_ns, files.c.id))]
    return event


def describe_file(row: AnyRow) -> dict[str, Any]:
    return {"id": row.id, "station": row.station, "time": format_ns(row.time_ns), "time_ns": row.time_ns,
            "name": row.name, "mime_type": row.mime_type, "semantic_type": row.semantic_type,
            "size": row.size, "sha256": row.sha256, "meta": row.meta, "created_at": format_ns(row.created_ns),
            "created_ns": row.created_ns, "origin": row.origin}


def find_files(conn: Connection, query: Query) -> tuple[list[dict[str, Any]], str | None]:
    """One page of file records: (list of files, next cursor or None)."""
    clauses = _where(conn, files, query, files.c.time_ns, files.c.meta)
    if query.types:
        clauses.append(files.c.semantic_type.in_(query.types))
    if query.mime_types:
        clauses.append(files.c.mime_type.in_(query.mime_types))
    rows, cursor = _page(conn, select(files).where(and_(True, *clauses)), files, files.c.time_ns, query)
    return [describe_file(row) for row in rows], cursor


def get_file(conn: Connection, file_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(files).where(files.c.id == file_id)).first()
    if row is None:
        return None
    described = describe_file(row)
    described["events"] = list(conn.execute(
        select(event_files.c.event_id).where(event_files.c.file_id == file_id)
        .order_by(event_files.c.event_id)).scalars())
    return described


def station_counts(conn: Connection, station: str) -> dict[str, Any]:
    """The station's data: its events but the quarantined ones (counted apart), and the times of
    the first and the last of them (None if none)."""
    row = conn.execute(select(station_event_counts.c.events, station_event_counts.c.quarantined)
                       .where(station_event_counts.c.station == station)).first()
    stored, quarantined = (row[0], row[1]) if row is not None else (0, 0)
    times = []
    for order in (events.c.time_ns.asc(), events.c.time_ns.desc()):  # the (station, time) index, walked
        # from an end to the first event not quarantined (quarantined ones are few)
        time_ns = conn.execute(select(events.c.time_ns).where(events.c.station == station, ~events.c.quarantined)
                               .order_by(order).limit(1)).scalar()
        times.append(None if time_ns is None else format_ns(time_ns))
    return {"events": stored - quarantined, "quarantined": quarantined, "first_event_time": times[0],
            "last_event_time": times[1]}


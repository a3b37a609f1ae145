"""What an export target sends next: events after its cursor, in commit order.

The cursor is the ``seq`` of the last event the target's upstream has
acknowledged; it moves only after that acknowledgement, so a crash or an
outage resends (the importer dedupes by id) and never skips.
"""

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import ColumnElement, Text, and_, case, cast, false, func, select, true
from sqlalchemy.engine import Connection

from sqlalchemy.dialects import postgresql, sqlite

from stationd.store.schema import AnyRow, event_files, events, export_leases, export_state, export_targets, files

if TYPE_CHECKING:
    from stationd.config import ExportTarget

_COLUMNS = (events.c.seq, events.c.id, events.c.station, events.c.type, events.c.time_ns, events.c.received_ns,
            cast(events.c.data, Text).label("data"), events.c.origin, events.c.quarantined,
            events.c.quarantine_reason)


def get_cursor(conn: Connection, target: str) -> int:
    return conn.execute(select(export_state.c.cursor).where(export_state.c.target == target)).scalar() or 0


def set_cursor(conn: Connection, target: str, cursor: int, now_ns: int) -> None:
    updated = conn.execute(export_state.update().where(export_state.c.target == target)
                           .values(cursor=cursor, updated_ns=now_ns))
    if updated.rowcount == 0:
        conn.execute(export_state.insert().values(target=target, cursor=cursor, updated_ns=now_ns))


def claim_lease(conn: Connection, target: str, holder: str, now_ns: int, ttl_ns: int) -> str:
    """Take or renew ``target``'s lease for ``holder`` unless another holds one that has not
    expired; the holder now.  One statement: of processes claiming at once, one wins."""
    insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(export_leases)
    statement = insert.values(target=target, holder=holder, expires_ns=now_ns + ttl_ns).on_conflict_do_update(
        index_elements=[export_leases.c.target],
        set_={"holder": insert.excluded.holder, "expires_ns": insert.excluded.expires_ns},
        where=(export_leases.c.holder == insert.excluded.holder) | (export_leases.c.expires_ns < now_ns))
    conn.execute(statement)
    return conn.execute(select(export_leases.c.holder).where(export_leases.c.target == target)).scalar_one()


def release_lease(conn: Connection, target: str, holder: str) -> None:
    """Give the lease up (a clean stop): another process takes the target at its next look."""
    conn.execute(export_leases.delete().where(export_leases.c.target == target, export_leases.c.holder == holder))


def _filters(target: "ExportTarget") -> list[ColumnElement[bool]]:
    """The clauses an event must meet to go to ``target`` (its stations, types and time range)."""
    clauses: list[ColumnElement[bool]] = []
    if target["stations"]:
        clauses.append(events.c.station.in_(target["stations"]))
    if target["types"]:
        clauses.append(events.c.type.in_(target["types"]))
    if target["after"] is not None:
        clauses.append(events.c.time_ns >= target["after"])
    if target["before"] is not None:
        clauses.append(events.c.time_ns < target["before"])
    return clauses


def _wanted(target: "ExportTarget", exclude_origin: str | None) -> list[ColumnElement[bool]]:
    """_filters, and not from the upstream itself (``exclude_origin``: its node id)."""
    clauses = _filters(target)
    if exclude_origin:
        clauses.append(events.c.origin != exclude_origin)
    return clauses


def next_batch(conn: Connection, target: "ExportTarget", cursor: int, exclude_origin: str | None = None
               ) -> tuple[list[dict[str, Any]], int, bool, tuple[int, int]]:
    """(events in import form, the seq up to which everything was considered, whether a limit cut it,
    (events passed over by the filters, by their origin)).

    At most the target's ``batch_size`` events and ``batch_bytes`` of their
    JSON data (at least one event).  Events that do not pass the target's
    filters, or whose origin is the upstream (``exclude_origin``), are passed
    over: the second value moves past them, so they are not looked at again.
    """
    # The newest seq first, and only events up to it: under PostgreSQL's READ
    # COMMITTED each statement sees the commits made before it, and a batch
    # committed between the two would otherwise be counted as looked at.
    newest = conn.execute(select(func.max(events.c.seq))).scalar() or 0
    limit = target["batch_size"]
    clauses = [events.c.seq > cursor, events.c.seq <= newest, *_wanted(target, exclude_origin)]
    rows = conn.execute(select(*_COLUMNS).where(and_(*clauses)).order_by(events.c.seq).limit(limit)).all()
    total = 0
    for index, row in enumerate(rows):
        total += len(row[6])
        if total > target["batch_bytes"] and index:
            rows = rows[:index]
            break
    cut = len(rows) == limit or total > target["batch_bytes"]
    scanned_to = rows[-1][0] if cut else max(cursor, newest)
    skipped = _passed_over(conn, target, cursor, scanned_to, len(rows), exclude_origin)
    attached = _attached(conn, target, rows) if rows else {}
    # Rows unpacked as tuples: building the dicts by attribute name cost
    # several times as much (docs/performance.rst, Export).
    return [{"id": id_, "station": station, "type": type_, "time_ns": time_ns, "received_ns": received_ns,
             "data": orjson.Fragment(data), "origin": origin, "quarantined": bool(quarantined),
             "quarantine_reason": reason, "files": attached.get(id_, [])}
            for _, id_, station, type_, time_ns, received_ns, data, origin, quarantined, reason in rows], \
        scanned_to, cut, skipped


def _passed_over(conn: Connection, target: "ExportTarget", cursor: int, scanned_to: int, taken: int,
                 exclude_origin: str | None) -> tuple[int, int]:
    """(by the filters, by origin): the events in (cursor, scanned_to] not taken.

    Seqs are handed out one after another, so a range holding as many seqs as
    events taken passed nothing over, and most batches need no count (a gap
    left by a replay or a renumbered event costs one)."""
    if scanned_to - cursor <= taken:
        return 0, 0
    filters = _filters(target)
    passes = and_(*filters) if filters else true()
    from_upstream = and_(passes, events.c.origin == exclude_origin) if exclude_origin else false()
    total, passing, upstream = conn.execute(
        select(func.count(), func.sum(case((passes, 1), else_=0)), func.sum(case((from_upstream, 1), else_=0)))
        .where(events.c.seq > cursor, events.c.seq <= scanned_to)).one()
    return total - (passing or 0), upstream or 0


_FILE_KEYS = ("id", "name", "mime_type", "semantic_type", "size", "sha256", "meta", "time_ns", "created_ns", "origin")
_FILE_COLUMNS = (event_files.c.event_id, *(files.c[k] for k in _FILE_KEYS))


def _attached(conn: Connection, target: "ExportTarget", rows: Sequence[AnyRow]) -> dict[str, list[dict[str, Any]]]:
    """{event id: [file records]} for the events of a batch (rows of _COLUMNS, in seq order)."""
    query = select(*_FILE_COLUMNS).join(files, files.c.id == event_files.c.file_id)
    first, last = rows[0][0], rows[-1][0]
    if last - first < 2 * len(rows):
        # A dense batch (no filter, or one most events pass): the links of its
        # seq range, found through the seq index.  An IN of 5000 ids cost
        # SQLAlchemy ten times as much to build as this costs to run.
        query = query.join(events, events.c.id == event_files.c.event_id).where(
            events.c.seq >= first, events.c.seq <= last)
    else:  # a sparse one: the events between its own are not its business
        query = query.where(event_files.c.event_id.in_([row[1] for row in rows]))
    if target["semantic_types"]:
        query = query.where(files.c.semantic_type.in_(target["semantic_types"]))
    attached: dict[str, list[dict[str, Any]]] = {}
    for event_id, *record in conn.execute(query.order_by(files.c.id)):
        attached.setdefault(event_id, []).append(dict(zip(_FILE_KEYS, record)))
    return attached  # in a dense batch, also files of events the filters passed over: never looked up


def oldest_pending(conn: Connection, target: "ExportTarget", cursor: int, exclude_origin: str | None = None
                   ) -> int | None:
    """received_ns of the first event after the cursor that the target is to send (None: nothing
    waits): what its lag is measured from."""
    return conn.execute(select(events.c.received_ns).where(events.c.seq > cursor, *_wanted(target, exclude_origin))
                        .order_by(events.c.seq).limit(1)).scalar()


def list_targets(conn: Connection) -> dict[str, tuple[dict[str, str], bool]]:
    """The targets added through the admin API: {name: (settings, paused)}."""
    rows = conn.execute(select(export_targets.c.name, export_targets.c.settings, export_targets.c.paused))
    return {row.name: (row.settings, bool(row.paused)) for row in rows}


def put_target(conn: Connection, name: str, settings: Mapping[str, str], paused: bool, now_ns: int) -> None:
    """Add or replace a target; a new one starts from the beginning (cursor 0)."""
    updated = conn.execute(export_targets.update().where(export_targets.c.name == name)
                           .values(settings=settings, paused=paused, updated_ns=now_ns))
    if updated.rowcount == 0:
        conn.execute(export_state.delete().where(export_state.c.target == name))
        conn.execute(export_targets.insert().values(name=name, settings=settings, paused=paused,
                                                    updated_ns=now_ns))


def remove_target(conn: Connection, name: str) -> None:
    conn.execute(export_targets.delete().where(export_targets.c.name == name))
    conn.execute(export_state.delete().where(export_state.c.target == name))

"""File records: metadata of contents kept in the content store, linked to events."""

import uuid
from typing import Any, cast

from sqlalchemy import select
from sqlalchemy.engine import Connection

from stationd.store.events import renumber
from stationd.store.query import get_file
from stationd.store.schema import event_files, events, files


class NoSuchEvent(LookupError):
    pass


def attach_file(conn: Connection, event_id: str, *, name: str, mime_type: str, sha256: str, size: int, now_ns: int,
                origin: str, semantic_type: str | None = None, meta: dict[str, Any] | None = None,
                time_ns: int | None = None) -> dict[str, Any]:
    """Record a file of event ``event_id`` (whose content is already stored); its record.

    The file takes the event's station, and its time unless ``time_ns`` is given.
    """
    event = conn.execute(select(events.c.station, events.c.time_ns).where(events.c.id == event_id)).first()
    if event is None:
        raise NoSuchEvent(f"no event {event_id}")
    file_id = str(uuid.uuid4())
    conn.execute(files.insert().values(
        id=file_id, station=event.station, time_ns=event.time_ns if time_ns is None else time_ns,
        name=name, mime_type=mime_type, semantic_type=semantic_type, size=size, sha256=sha256,
        meta=meta or {}, created_ns=now_ns, origin=origin))
    conn.execute(event_files.insert().values(event_id=event_id, file_id=file_id))
    renumber(conn, [event_id])  # exported already, perhaps: it goes again, with its file
    return cast(dict[str, Any], get_file(conn, file_id))  # (just stored: never None)


def content_of(conn: Connection, file_id: str) -> dict[str, Any] | None:
    """{"sha256", "size"} of a file record's content, or None for an unknown file."""
    row = conn.execute(select(files.c.sha256, files.c.size).where(files.c.id == file_id)).first()
    return None if row is None else {"sha256": row.sha256, "size": row.size}

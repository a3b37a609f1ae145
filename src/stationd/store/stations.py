"""The station registry: HiSPARC station numbers (or names), clusters, passwords.

Upload passwords are short shared secrets typed at stations, so they are
stored with scrypt; each check's result is remembered per stored hash, so
an upload costs a dictionary lookup, not a key derivation, and a changed
password takes effect at once (its new hash is not in the memo).  Failures
are remembered too: a station left with an old password retries its uploads
for ever, and each retry would otherwise cost a key derivation (tens of ms,
more on a small board).
"""

import base64
import csv
import datetime
import hashlib
import hmac
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection, RowMapping

from stationd.store.changes import mark_changed
from stationd.store.schema import AnyRow, station_status, stations
from stationd.times import format_ns

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
_right: set[tuple[str, bytes]] = set()  # (stored hash, SHA-256 of a password) checked, by result
_wrong: set[tuple[str, bytes]] = set()


class StationError(ValueError):
    pass


class NoSuchStation(StationError):
    pass


class StationExists(StationError):
    pass


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, dklen=32, **_SCRYPT)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${b64(salt).decode()}${b64(digest).decode()}"


def _memo(stored: str, password: str) -> tuple[str, bytes]:
    return (stored, hashlib.sha256(password.encode("utf-8")).digest())


def remembered(stored: str | None, password: str) -> bool | None:
    """Whether this password matched this hash when last checked; None if never checked (no scrypt)."""
    if not stored:
        return False
    memo = _memo(stored, password)
    return True if memo in _right else False if memo in _wrong else None


def verify_password(stored: str, password: str) -> bool:
    """scrypt check (tens of ms: call it off the reactor unless remembered() knows)."""
    known = remembered(stored, password)
    if known is not None:
        return known
    matches = _scrypt_matches(stored, password)
    memos = _right if matches else _wrong  # apart, so that guesses never push out right passwords
    if len(memos) > 4096:
        memos.clear()
    memos.add(_memo(stored, password))
    return matches


def _scrypt_matches(stored: str, password: str) -> bool:
    try:
        _, n, r, p, salt, digest = stored.split("$")
        computed = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt),
                                  n=int(n), r=int(r), p=int(p), dklen=32)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(computed, base64.b64decode(digest))


def check_id(station_id: str | int) -> str:
    station_id = str(station_id).strip()
    if not _ID.match(station_id):
        raise StationError(f"bad station id {station_id!r}: use letters, digits and _.- (max 64)")
    return station_id


def _row(row: AnyRow) -> dict[str, Any]:
    station = dict(row._mapping)
    station["has_password"] = bool(station.pop("password_hash"))
    when = station["created_at"]
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    station["created_at"] = when.isoformat()
    return station


_BY_ID = select(stations).where(stations.c.id == bindparam("id"))


def get_station(conn: Connection, station_id: str | int) -> dict[str, Any] | None:
    """The station's row including password_hash, or None (runs on every upload)."""
    row = conn.execute(_BY_ID, {"id": str(station_id)}).first()
    return None if row is None else dict(row._mapping)


def add_station(conn: Connection, station_id: str | int, password_hash: str | None = None, cluster: str | None = None,
                name: str | None = None) -> dict[str, Any]:
    mark_changed(conn)
    station_id = check_id(station_id)
    if get_station(conn, station_id):
        raise StationExists(f"station {station_id} already exists")
    conn.execute(stations.insert().values(
        id=station_id, cluster=cluster, name=name, password_hash=password_hash,
        created_at=datetime.datetime.now(datetime.timezone.utc),
    ))
    return describe_station(conn, station_id)


def put_station(conn: Connection, station_id: str, password_hash: str | None,
                cluster: str | None) -> Literal["added", "updated"] | None:
    """Add or update a station from a station list; returns "added", "updated" or None."""
    mark_changed(conn)
    existing = get_station(conn, station_id)
    if existing is None:
        add_station(conn, station_id, password_hash, cluster)
        return "added"
    if (existing["password_hash"], existing["cluster"]) == (password_hash, cluster):
        return None
    conn.execute(stations.update().where(stations.c.id == station_id)
                 .values(password_hash=password_hash, cluster=cluster))
    return "updated"


def describe_station(conn: Connection, station_id: str | int) -> dict[str, Any]:
    row = conn.execute(select(stations).where(stations.c.id == str(station_id))).first()
    if row is None:
        raise NoSuchStation(f"no station {station_id}")
    return _row(row)


def list_stations(conn: Connection) -> list[dict[str, Any]]:
    return [_row(r) for r in conn.execute(select(stations).order_by(stations.c.id))]


def remove_station(conn: Connection, station_id: str | int) -> None:
    mark_changed(conn)
    if conn.execute(stations.delete().where(stations.c.id == str(station_id))).rowcount == 0:
        raise NoSuchStation(f"no station {station_id}")


def read_station_list(path: str | os.PathLike[str]) -> list[tuple[str, str | None, str]]:
    """Rows (id, cluster, password) of a HiSPARC CSV "number,cluster,password", no header."""
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for number, fields in enumerate(csv.reader(f), 1):
            if not fields or not "".join(fields).strip() or fields[0].lstrip().startswith("#"):
                continue
            if len(fields) != 3:
                raise StationError(f"{path}:{number}: expected number,cluster,password")
            station_id, cluster, password = (x.strip() for x in fields)
            try:
                rows.append((check_id(station_id), cluster or None, password))
            except StationError as e:
                raise StationError(f"{path}:{number}: {e}") from None
    return rows


def password_hashes(conn: Connection) -> dict[str, str | None]:
    return dict(conn.execute(select(stations.c.id, stations.c.password_hash)).all())


def hashed_rows(stored_hashes: Mapping[str, str | None], rows: Iterable[tuple[str, str | None, str]]
                ) -> list[tuple[str, str | None, str | None]]:
    """Rows with passwords hashed, reusing the stored hash when the password is unchanged.

    CPU-heavy (scrypt): run it off the reactor and off the store's thread.
    """
    out = []
    for station_id, cluster, password in rows:
        stored = stored_hashes.get(station_id)
        keep = stored if stored and verify_password(stored, password) else None
        out.append((station_id, keep or (hash_password(password) if password else None), cluster))
    return out


def put_stations(conn: Connection, hashed: Iterable[tuple[str, str | None, str | None]]) -> dict[str, int]:
    """Apply hashed station-list rows; returns {"added": n, "updated": m}."""
    mark_changed(conn)
    counts = {"added": 0, "updated": 0}
    for station_id, password_hash, cluster in hashed:
        change = put_station(conn, station_id, password_hash, cluster)
        if change:
            counts[change] += 1
    return counts


def _number(value: object, what: str, low: float | None = None, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise StationError(f"{what} must be a number")
    if (low is not None and value < low) or (high is not None and value > high):
        raise StationError(f"{what} must be between {low} and {high}")
    return float(value)


def add_status(conn: Connection, station_id: str | int, valid_from_ns: int, now_ns: int, instrument: object = None,
               location: object = None, orientation: object = None) -> list[dict[str, Any]]:
    """A new entry in the station's status history; the history afterwards.

    It holds until the next entry's valid_from, and closes the one before:
    nothing is edited or deleted.  ``location``: {"lat", "lon", "alt"}.
    """
    describe_station(conn, station_id)
    location = {} if location is None else location
    if not isinstance(location, dict) or set(location) - {"lat", "lon", "alt"}:
        raise StationError("location must be an object with lat, lon and alt")
    if instrument is not None and (not isinstance(instrument, str) or len(instrument) > 255):
        raise StationError("instrument must be a string of at most 255 characters")
    if orientation is not None and not isinstance(orientation, dict):
        raise StationError("orientation must be an object (e.g. {\"azimuth\": 90, \"altitude\": 45})")
    values = {
        "latitude": _number(location["lat"], "location.lat", -90, 90) if "lat" in location else None,
        "longitude": _number(location["lon"], "location.lon", -180, 180) if "lon" in location else None,
        "altitude": _number(location["alt"], "location.alt") if "alt" in location else None,
    }
    station_id = str(station_id)
    clash = select(station_status.c.station).where(
        station_status.c.station == station_id, station_status.c.valid_from_ns == valid_from_ns)
    if conn.execute(clash).first():
        raise StationExists(f"station {station_id} already has a status from that time")
    conn.execute(station_status.insert().values(
        station=station_id, valid_from_ns=valid_from_ns, instrument=instrument,
        orientation=orientation, created_ns=now_ns, **values))
    return status_history(conn, station_id)


def status_rows(conn: Connection, station_id: str | int) -> list[AnyRow]:
    """The station's status history as rows of station_status, oldest first."""
    return list(conn.execute(select(station_status).where(station_status.c.station == str(station_id))
                             .order_by(station_status.c.valid_from_ns)))


def _history(rows: list[AnyRow]) -> list[dict[str, Any]]:
    return [{
        "valid_from": format_ns(row.valid_from_ns),
        "valid_to": None if following is None else format_ns(following.valid_from_ns),
        "instrument": row.instrument,
        "location": {"lat": row.latitude, "lon": row.longitude, "alt": row.altitude},
        "orientation": row.orientation,
    } for row, following in zip(rows, rows[1:] + [None])]


def status_history(conn: Connection, station_id: str | int) -> list[dict[str, Any]]:
    """Oldest first; each entry valid until the next one's valid_from (None: still valid)."""
    return _history(status_rows(conn, station_id))


def _public(row: Mapping[str, Any] | RowMapping, status_rows: list[AnyRow], now_ns: int
            ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A station as the query API shows it (no password information), with its
    current status; and its status history."""
    history = _history(status_rows)
    current = [entry for status, entry in zip(status_rows, history) if status.valid_from_ns <= now_ns]
    return {"id": row["id"], "cluster": row["cluster"], "name": row["name"],
            "status": current[-1] if current else None}, history


def public_station(conn: Connection, row: Mapping[str, Any], now_ns: int
                   ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return _public(row, status_rows(conn, row["id"]), now_ns)


def public_stations(conn: Connection, now_ns: int) -> list[dict[str, Any]]:
    """Every station with its current status, in two queries whatever their number."""
    statuses = status_rows_by_station(conn)
    return [_public(row._mapping, statuses.get(row.id, []), now_ns)[0]
            for row in conn.execute(select(stations).order_by(stations.c.id))]


def status_rows_by_station(conn: Connection) -> dict[str, list[AnyRow]]:
    """Every station's status history (rows, oldest first), in one query."""
    found: dict[str, list[AnyRow]] = {}
    for status in conn.execute(select(station_status).order_by(station_status.c.station,
                                                                station_status.c.valid_from_ns)):
        found.setdefault(status.station, []).append(status)
    return found

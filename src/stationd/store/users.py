"""Users, roles and API keys.

Keys are 256 random bits, shown once and stored as their SHA-256: a stolen
database holds no usable key.  A user may also have a password, for the
routes whose clients speak HTTP Basic auth (MeteorPi's): it is stored with
scrypt, as stations' upload passwords are.
"""

import datetime
import hashlib
import hmac
import re
import secrets
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection

from stationd.store.changes import mark_changed
from stationd.store.schema import AnyRow, users
from stationd.store.stations import hash_password

ROLES = ("admin", "station", "importer", "editor", "reader")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
PUBLIC_COLUMNS = (
    users.c.name, users.c.role, users.c.email, users.c.first_name,
    users.c.last_name, users.c.created_at, users.c.key_rotated_at, users.c.station,
)


class UserError(ValueError):
    """A user operation the caller got wrong (bad name, bad role, ...)."""


class NoSuchUser(UserError):
    pass


class UserExists(UserError):
    pass


def new_key() -> str:
    # Never "-" first (1 key in 64 would): on a command line, "--api-key -x..."
    # reads as a missing value and another option.
    while (key := secrets.token_urlsafe(32)).startswith("-"):
        pass
    return key


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _row(row: AnyRow) -> dict[str, Any]:
    user = dict(row._mapping)
    for field in ("created_at", "key_rotated_at"):
        when = user.get(field)
        if when is not None:
            # SQLite gives back naive datetimes; they were stored as UTC.
            if when.tzinfo is None:
                when = when.replace(tzinfo=datetime.timezone.utc)
            user[field] = when.astimezone(datetime.timezone.utc).isoformat()
    return user


def add_user(conn: Connection, name: str, role: str, email: str | None = None, first_name: str | None = None,
             last_name: str | None = None, station: str | int | None = None) -> tuple[dict[str, Any], str]:
    """Create a user; returns (user, api_key). The key is not kept anywhere."""
    mark_changed(conn)
    if (role == "station") != (station is not None):
        raise UserError("a user of role station needs --station ID (and only it has one)")
    if not _NAME.match(name or ""):
        raise UserError(f"bad user name {name!r}: use letters, digits and _.@- (max 64)")
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    if conn.execute(select(users.c.id).where(users.c.name == name)).first():
        raise UserExists(f"user {name!r} already exists")
    key, now = new_key(), _now()
    conn.execute(
        users.insert().values(
            name=name, role=role, email=email, first_name=first_name,
            last_name=last_name, key_hash=hash_key(key), created_at=now, key_rotated_at=now,
            station=None if station is None else str(station),
        )
    )
    return get_user(conn, name), key


def get_user(conn: Connection, name: str) -> dict[str, Any]:
    row = conn.execute(select(*PUBLIC_COLUMNS).where(users.c.name == name)).first()
    if row is None:
        raise NoSuchUser(f"no user {name!r}")
    return _row(row)


def list_users(conn: Connection) -> list[dict[str, Any]]:
    """Every user, with ``has_password`` (whether it may log in with HTTP Basic auth)."""
    return [_row(r) for r in conn.execute(select(*PUBLIC_COLUMNS, users.c.password_hash.is_not(None)
                                                 .label("has_password")).order_by(users.c.name))]


def rotate_key(conn: Connection, name: str) -> str:
    """Replace a user's key; the old one stops working at once. Returns the new key."""
    mark_changed(conn)
    key = new_key()
    updated = conn.execute(
        users.update().where(users.c.name == name).values(key_hash=hash_key(key), key_rotated_at=_now())
    )
    if updated.rowcount == 0:
        raise NoSuchUser(f"no user {name!r}")
    return key


MIN_PASSWORD = 8


def set_password(conn: Connection, name: str, password: str | None) -> None:
    """Give a user a password for HTTP Basic auth (None: take it away); it counts from the next request."""
    mark_changed(conn)
    if password is not None and (len(password) < MIN_PASSWORD or len(password) > 1024):
        raise UserError(f"a password needs {MIN_PASSWORD} to 1024 characters")
    stored = None if password is None else hash_password(password)
    if conn.execute(users.update().where(users.c.name == name).values(password_hash=stored)).rowcount == 0:
        raise NoSuchUser(f"no user {name!r}")


_BY_NAME = select(users.c.password_hash, *PUBLIC_COLUMNS).where(users.c.name == bindparam("name"))


def login(conn: Connection, name: str) -> dict[str, Any] | None:
    """The user named ``name`` with its ``password_hash`` (None: it has no password), or None."""
    row = conn.execute(_BY_NAME, {"name": name}).first()
    return None if row is None else _row(row)


def remove_user(conn: Connection, name: str) -> None:
    mark_changed(conn)
    if conn.execute(users.delete().where(users.c.name == name)).rowcount == 0:
        raise NoSuchUser(f"no user {name!r}")


# Built once: every request runs it, and SQLAlchemy then reuses its compiled form.
_BY_KEY_HASH = select(users.c.key_hash, *PUBLIC_COLUMNS).where(users.c.key_hash == bindparam("digest"))


def authenticate(conn: Connection, key: str) -> dict[str, Any] | None:
    """The user holding ``key``, or None."""
    digest = hash_key(key)
    row = conn.execute(_BY_KEY_HASH, {"digest": digest}).first()
    if row is None or not hmac.compare_digest(row.key_hash, digest):
        return None
    user = _row(row)
    del user["key_hash"]
    return user

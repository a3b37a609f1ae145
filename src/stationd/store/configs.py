"""Versions of named instrument configurations.

A version holds from its valid_from until the next version's; adding one
closes the one before (a version dated in the past slots in between, for
corrections).  Versions are numbered in the order they were stored and are
never edited or deleted.
"""

from typing import Any, cast

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from stationd.store.schema import AnyRow
from stationd.store.schema import config_versions as versions
from stationd.times import format_ns

_COLUMNS = (versions.c.name, versions.c.version, versions.c.valid_from_ns, versions.c.author,
            versions.c.created_ns)


class VersionExists(ValueError):
    pass


def _describe(row: AnyRow, content: bool = True) -> dict[str, Any]:
    described = {"name": row.name, "version": row.version, "valid_from": format_ns(row.valid_from_ns),
                 "valid_from_ns": row.valid_from_ns, "author": row.author, "created_at": format_ns(row.created_ns)}
    if content:
        described["content"] = row.content
    return described


def add_version(conn: Connection, name: str, content: Any, valid_from_ns: int, author: str,
                now_ns: int) -> dict[str, Any]:
    """Store a new version; its description (with its number)."""
    clash = select(versions.c.version).where(versions.c.name == name, versions.c.valid_from_ns == valid_from_ns)
    existing = conn.execute(clash).scalar()
    if existing is not None:
        raise VersionExists(f"version {existing} of {name} is already valid from {format_ns(valid_from_ns)}")
    number = (conn.execute(select(func.max(versions.c.version)).where(versions.c.name == name)).scalar() or 0) + 1
    conn.execute(versions.insert().values(name=name, version=number, valid_from_ns=valid_from_ns,
                                          content=content, author=author, created_ns=now_ns))
    return cast(dict[str, Any], get_version(conn, name, number))  # (just stored: never None)


def get_version(conn: Connection, name: str, number: int) -> dict[str, Any] | None:
    row = conn.execute(select(versions).where(versions.c.name == name, versions.c.version == number)).first()
    return None if row is None else _describe(row)


def version_at(conn: Connection, name: str, at_ns: int) -> dict[str, Any] | None:
    """The version valid at ``at_ns`` (None before the first)."""
    row = conn.execute(select(versions).where(versions.c.name == name, versions.c.valid_from_ns <= at_ns)
                       .order_by(versions.c.valid_from_ns.desc()).limit(1)).first()
    return None if row is None else _describe(row)


def latest_version(conn: Connection, name: str) -> dict[str, Any] | None:
    """The version with the latest valid_from (it may not hold yet)."""
    row = conn.execute(select(versions).where(versions.c.name == name)
                       .order_by(versions.c.valid_from_ns.desc()).limit(1)).first()
    return None if row is None else _describe(row)


def list_versions(conn: Connection, name: str) -> list[dict[str, Any]]:
    """Every version, by valid_from, each with its valid_to (None: open)."""
    rows = list(conn.execute(select(*_COLUMNS).where(versions.c.name == name).order_by(versions.c.valid_from_ns)))
    listed = []
    for row, following in zip(rows, rows[1:] + [None]):
        version = _describe(row, content=False)
        version["valid_to"] = None if following is None else format_ns(following.valid_from_ns)
        listed.append(version)
    return listed


def list_configs(conn: Connection) -> list[dict[str, Any]]:
    """Each configuration's name, number of versions and newest valid_from."""
    rows = conn.execute(select(versions.c.name, func.count(), func.max(versions.c.valid_from_ns))
                        .group_by(versions.c.name).order_by(versions.c.name))
    return [{"name": name, "versions": count, "latest_valid_from": format_ns(latest)}
            for name, count, latest in rows]

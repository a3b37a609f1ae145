"""Users and stations as every request needs them, kept in memory while the store says they are unchanged.

A transaction that changes users or stations marks itself (``mark_changed``,
stationd.store.changes): on SQLite, once it has committed, the store replaces
a stamp file beside the database, whoever made the change (the node, or
``stationd-admin`` in another process on the same file); on PostgreSQL it
sends a NOTIFY with its commit, which every node's store hears (its admin
commands may run on another host).  An entry here is good while the stamp is
the one seen when it was read, so a request costs a look at it instead of a
thread hop and a query, and a key removed or rotated is refused from the
next request on (one that comes within a millisecond of the change may still
pass: the stamp is looked at once a millisecond).  While PostgreSQL's notices
cannot be heard (the server away or restarting), every lookup reads the
store, and while it cannot be read the last answer read for that key or
station stands in, so stations keep uploading into the spool; a key removed
meanwhile is refused once the database is back.
"""

import hashlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from stationd.store import TRANSIENT, stations, users
from stationd.store.changes import Notices, Stamp

if TYPE_CHECKING:
    from stationd.store import Store

_K = TypeVar("_K")

class Cache:
    _users: dict[bytes, dict[str, Any]]
    _stations: dict[str, dict[str, Any]]
    _logins: dict[str, dict[str, Any]]

    def __init__(self, store: "Store") -> None:
        self.store = store
        self.stamp = store.stamp
        self._seen = object()  # no version yet: the first lookup reads
        self._checked = float("-inf")
        self._users, self._stations, self._logins = {}, {}, {}
        self._last: dict[object, dict[str, Any]] = {}  # without a stamp: the last answer found, by name

    def _current(self) -> object:
        """The stamp's version now (looked at once a millisecond: a request asks for its user and
        its station, and a stat() cost a twentieth of a 1-event ingest); entries read under
        another version are dropped."""
        now = time.monotonic()
        if now - self._checked < 0.001:
            return self._seen
        self._checked = now
        version = cast("Stamp | Notices", self.stamp).version()  # (only with a stamp: _lookup)
        if version != self._seen:
            self._users.clear()
            self._stations.clear()
            self._logins.clear()
            self._seen = version
        return version

    async def user(self, key: str) -> dict[str, Any] | None:
        """The user holding ``key``, or None."""
        digest = hashlib.sha256(key.encode("utf-8")).digest()
        return await self._lookup(self._users, digest, users.authenticate, key)

    async def login(self, name: str) -> dict[str, Any] | None:
        """The user named ``name``, with its password_hash (HTTP Basic auth), or None."""
        return await self._lookup(self._logins, name, users.login, name)

    async def station(self, station_id: str) -> dict[str, Any] | None:
        """The station's row (with password_hash), or None."""
        return await self._lookup(self._stations, station_id, stations.get_station, station_id)

    async def _lookup(self, entries: dict[_K, dict[str, Any]], name: _K,
                      read: Callable[..., dict[str, Any] | None], *args: Any) -> dict[str, Any] | None:
        version = self._current() if self.stamp is not None else None
        if name in entries:
            return entries[name]
        try:
            found = await self.store.read(read, *args)
        except TRANSIENT:
            if (read, name) in self._last:  # the database away: the last answer stands in
                return self._last[read, name]
            raise
        if found is None:
            self._last.pop((read, name), None)
        else:
            self._last[read, name] = found
        # Kept only if nothing changed since the version above was seen, and
        # never a miss: unknown keys and stations are read each time.
        if self.stamp is not None and found is not None and self._current() == version:
            entries[name] = found
        return found

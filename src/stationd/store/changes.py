"""Changes to users and stations, made known to every node on the same database (stationd.store.cache):
on SQLite by a stamp file replaced after each change, on PostgreSQL by a NOTIFY each change
sends and every node LISTENs for (its admin commands may run on another host)."""

import itertools
import os
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Connection
from twisted.logger import Logger

CHANGED = "stationd_changed"  # (also the PostgreSQL channel)
log = Logger()


def mark_changed(conn: Connection) -> None:
    """Say that this transaction changes users or stations: the stamp is replaced after its
    commit; on PostgreSQL the notice goes out with the commit."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"NOTIFY {CHANGED}")
    else:
        conn.info[CHANGED] = True


class Stamp:
    """A file replaced after each change: its inode tells one version from the next."""

    def __init__(self, path: str) -> None:
        self.path = path

    def touch(self) -> None:
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write("users or stations changed; stationd nodes on this database re-read them\n")
        os.replace(tmp, self.path)

    def version(self) -> tuple[int, int, int] | None:
        """(inode, mtime, device) now; None before the first change."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return None
        return info.st_ino, info.st_mtime_ns, info.st_dev


class Notices:
    """PostgreSQL's stamp: a version that moves on at every change any node or admin command
    commits, told by a thread LISTENing on its own connection (``connect()``, autocommit).
    While that connection is not up, every call is a version of its own: nothing is kept."""

    RETRY_SECONDS = 5.0

    def __init__(self, connect: Callable[[], Any]) -> None:
        self.connect = connect
        self.listening = threading.Event()
        self._generation = itertools.count()
        self._version: object = next(self._generation)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def version(self) -> object:
        return self._version if self.listening.is_set() else object()

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._listen, name="stationd-store-notices", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _listen(self) -> None:
        down = False
        while not self._stopping.is_set():
            try:
                with self.connect() as conn:
                    conn.execute(f"LISTEN {CHANGED}")
                    self._version = next(self._generation)  # (anything may have changed while not listening)
                    self.listening.set()
                    if down:
                        log.info("Users and stations: listening for changes again; cached until one comes")
                    down = False
                    while not self._stopping.is_set():
                        for _ in conn.notifies(timeout=1.0):
                            self._version = next(self._generation)
            except Exception as e:  # (the server away or restarting: read every time meanwhile)
                if not down and not self._stopping.is_set():
                    log.warn("Users and stations: not listening for changes ({reason}); each request reads "
                             "them until the database is back", reason=" ".join(str(e).split())[:300])
                down = True
            finally:
                self.listening.clear()
            self._stopping.wait(self.RETRY_SECONDS)

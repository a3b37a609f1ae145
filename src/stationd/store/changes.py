"""Changes to users and stations, made known to every node on the same SQLite file (stationd.store.cache)."""

import os

from sqlalchemy.engine import Connection

CHANGED = "stationd_changed"


def mark_changed(conn: Connection) -> None:
    """Say that this transaction changes users or stations: the stamp is replaced after its commit."""
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

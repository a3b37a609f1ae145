"""Database access: one SQLAlchemy engine, used from a dedicated thread pool.

Store operations are plain functions ``op(conn, ...)`` run in one transaction,
either off the reactor (``store.run(op, ...)`` -> Deferred, in the node) or
directly (``store.call(op, ...)``, in the admin commands).
"""

import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from stationd.jsoncodec import dumps_text
from stationd.store.changes import CHANGED, Notices, Stamp
from stationd.store.migrations import SchemaError, migrate

if TYPE_CHECKING:
    import sqlite3

    from sqlalchemy.pool import ConnectionPoolEntry
    from twisted.internet.interfaces import IReactorFromThreads


T = TypeVar("T")
CONNECT_TIMEOUT = 10  # seconds: connecting to PostgreSQL, or waiting for a pooled connection
# What the database raises while it is away, locked or restarting: worth another try later.
TRANSIENT = (OperationalError, InterfaceError, PoolTimeout)


def one_line(error: BaseException) -> str:
    """The driver's own words for a database error, on one line (SQLAlchemy's add the SQL and a URL)."""
    return " ".join(str(getattr(error, "orig", None) or error).split())[:300]


class StoreError(Exception):
    """The database cannot be opened or used: a one-line reason for the operator."""


def _sqlite_engine(url: URL) -> Engine:
    path = url.database
    if path and path != ":memory:":
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                           json_serializer=dumps_text)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: "sqlite3.Connection", record: "ConnectionPoolEntry") -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN, so it can be IMMEDIATE:
        # a write never fails half-way on a lock another process holds.
        dbapi_conn.isolation_level = None
        for pragma in (
            "journal_mode=WAL",
            "synchronous=FULL",
            "busy_timeout=30000",
            "foreign_keys=ON",
            # A 500-event import writes ~940 pages to the WAL: at SQLite's
            # default (1000) nearly every commit also checkpointed, doubling
            # its time (docs/performance.rst, Export).
            "wal_autocheckpoint=10000",
            "cache_size=-32768",  # KiB: the indexes' upper levels stay in memory
        ):
            dbapi_conn.execute(f"PRAGMA {pragma}")

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Reads take no lock (WAL readers see the last commit, never wait).
        read_only = conn.get_execution_options().get("stationd_read_only")
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


class Store(Service):
    """The database, as a service: its thread pool runs while the node runs."""

    def __init__(self, url: str | URL, reactor: "IReactorFromThreads | None" = None) -> None:
        self.setName("store")  # (as an instance attribute: twisted's Service types the class one None)
        try:
            parsed = make_url(url)
            if parsed.get_backend_name() == "sqlite":
                self.engine = _sqlite_engine(parsed)
                # One writer thread keeps writes ordered (SQLite has one writer
                # anyway); reads get their own threads, so a request's lookups
                # never queue behind the writer's transactions.
                threads, read_threads = 1, 2
            else:
                threads, read_threads = 4, 0
                # A connection a thread, no more (a worker's share of the server's
                # max_connections); a dead one (the server restarted) is found by
                # the ping at checkout and replaced; connecting gives up after
                # CONNECT_TIMEOUT, so a request waits that long at most.
                self.engine = create_engine(
                    parsed, pool_pre_ping=True, json_serializer=dumps_text, pool_size=threads, max_overflow=0,
                    pool_timeout=CONNECT_TIMEOUT, connect_args={"connect_timeout": CONNECT_TIMEOUT})
        except ImportError as e:  # station nodes are installed without the PostgreSQL driver
            raise StoreError(f"cannot open database {url!r}: {e}; for PostgreSQL install "
                             "stationd with its extra: pip install '.[postgresql]'") from None
        except (SQLAlchemyError, ValueError, OSError) as e:
            raise StoreError(f"cannot open database {url!r}: {e}") from None
        self.url = parsed
        self.dialect = self.engine.dialect.name
        # Users and stations changed are re-read by stationd.store.cache once
        # this file is replaced (SQLite), or a notice has come (PostgreSQL).
        self.stamp: Stamp | Notices | None = None
        if self.dialect == "sqlite" and parsed.database and parsed.database != ":memory:":
            self.stamp = Stamp(os.path.abspath(parsed.database) + ".changes")
        elif self.dialect == "postgresql":
            self.stamp = Notices(self._connect_autocommit)
        self.pool = ThreadPool(minthreads=1, maxthreads=threads, name="stationd-store")
        self.read_pool = (ThreadPool(minthreads=1, maxthreads=read_threads, name="stationd-store-read")
                          if read_threads else self.pool)
        self._reactor = reactor

    def _connect_autocommit(self) -> Any:
        """A connection of the driver's own beside the pool (Notices listens on it)."""
        cargs, cparams = self.engine.dialect.create_connect_args(self.engine.url)
        return self.engine.dialect.loaded_dbapi.connect(*cargs, **cparams, autocommit=True,
                                                         connect_timeout=CONNECT_TIMEOUT)

    def call(self, operation: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``operation(conn, *args, **kwargs)`` in one transaction, here and now."""
        with self.engine.begin() as conn:
            try:
                result = operation(conn, *args, **kwargs)
            finally:
                # (A connection the server dropped cannot be asked: that would hide why it failed.)
                changed = not conn.invalidated and conn.info.pop(CHANGED, False)
        if changed and isinstance(self.stamp, Stamp):  # after the commit: who sees the new stamp sees the change
            self.stamp.touch()
        return result

    def call_read(self, operation: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Like call(), for an operation that only reads."""
        with self.engine.connect().execution_options(stationd_read_only=True) as conn:
            with conn.begin():
                return operation(conn, *args, **kwargs)

    def run(self, operation: Callable[..., T], *args: Any, **kwargs: Any) -> "defer.Deferred[T]":
        """Like call(), on the store's thread pool; returns a Deferred."""
        return self._defer(self.pool, self.call, operation, *args, **kwargs)

    def read(self, operation: Callable[..., T], *args: Any, **kwargs: Any) -> "defer.Deferred[T]":
        """Like run(), for an operation that only reads (it may run beside writes)."""
        return self._defer(self.read_pool, self.call_read, operation, *args, **kwargs)

    def _defer(self, pool: ThreadPool, function: Callable[..., T], *args: Any, **kwargs: Any) -> "defer.Deferred[T]":
        reactor: Any = self._reactor  # (twisted types the global reactor without IReactorFromThreads)
        if reactor is None:
            from twisted.internet import reactor
        return deferToThreadPool(reactor, pool, function, *args, **kwargs)

    def migrate(self, own_names: Iterable[str] = ()) -> tuple[int | None, int]:
        """Create or upgrade the schema (blocking: at start, before the reactor runs).
        ``own_names``: the origins this node's records had before node ids (migrations)."""
        try:
            return self.call(migrate, own_names)
        except SchemaError as e:
            raise StoreError(str(e)) from None
        except SQLAlchemyError as e:
            reason = " ".join(str(getattr(e, "orig", None) or e).split())
            raise StoreError(
                f"cannot use database {self.url.render_as_string()}: {reason}"
            ) from None

    def startService(self) -> None:
        super().startService()
        for pool in {self.pool, self.read_pool}:
            pool.start()
        if isinstance(self.stamp, Notices):
            self.stamp.start()

    def stopService(self) -> None:
        super().stopService()
        if isinstance(self.stamp, Notices):
            self.stamp.stop()
        for pool in {self.pool, self.read_pool}:
            pool.stop()
        self.engine.dispose()

    def close(self) -> None:
        self.engine.dispose()

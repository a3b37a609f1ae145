"""A consistent copy of a node's data (``stationd-admin backup DIR``), and putting it back (``restore``).

What a backup holds, and in which order it is taken (the order is what makes it consistent):

1. the spool's segments (uploads acknowledged but not yet in the database), copied first: a
   segment that disappears meanwhile has been stored, so it is in the database copied next;
2. the database, as of one instant: SQLite through its online-backup API from inside one read
   transaction (a WAL snapshot: the node goes on writing, the copy does not restart);
   PostgreSQL with ``pg_dump --snapshot`` of a transaction this module holds open;
3. the contents of the files the database copy names: a content is written, fsynced and in
   place before any record names it (stationd.filestore), so every one the copy names exists
   (except those an upstream import has announced and not yet sent: listed as missing);
4. the configuration file and the node's TLS pair in ``{data_dir}/tls``;
5. ``manifest.json`` last, with the size and SHA-256 of every file above: a directory without
   it is an interrupted backup, which restore refuses.

Restore checks every checksum first, refuses while a node uses the store, and refuses a store
that holds data unless forced; it leaves the configuration in the backup for the operator.
"""

import contextlib
import datetime
import hashlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

from sqlalchemy import func, select, text
from sqlalchemy.engine import URL, Connection, make_url

from stationd import __version__
from stationd.config import Config
from stationd.filestore import CHUNK, FileStore, replace_file
from stationd.store import Store, StoreError, identity, migrations, schema
from stationd.store.changes import Stamp

FORMAT = 1
MANIFEST = "manifest.json"
SQLITE_COPY = "stationd.sqlite"
PG_DUMP = "database.pgdump"
SQLITE_STEP_PAGES = 1024  # pages a backup step: a progress update about every 4 MiB
# Tables whose rows make a store worth keeping (restore refuses to overwrite one without --force).
DATA_TABLES = (schema.events, schema.files, schema.users, schema.stations, schema.config_versions,
               schema.export_targets)


class BackupError(Exception):
    """Backup or restore cannot go on: a one-line reason for the operator (nothing was overwritten)."""


class Meter(Protocol):
    """What shows progress (stationd.progress.Progress is one)."""

    def update(self, n: int) -> None: ...

    def close(self) -> None: ...


# Makes a Meter for (total or None, unit, label).
Meters = Callable[[int | None, str, str], Meter]


class _Silent:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def silent(total: int | None, unit: str, label: str) -> Meter:
    return _Silent()


def _copy_sqlite(source: sqlite3.Connection, target: sqlite3.Connection, meters: Meters) -> None:
    """SQLite's online backup of ``source`` into ``target``, a step of pages at a time, metered in bytes."""
    page_size = source.execute("PRAGMA page_size").fetchone()[0]
    pages = source.execute("PRAGMA page_count").fetchone()[0]
    with _metered(meters, pages * page_size, "B", "database") as meter:
        done = [0]

        def step(status: int, remaining: int, total: int) -> None:
            meter.update((total - remaining - done[0]) * page_size)
            done[0] = total - remaining

        source.backup(target, pages=SQLITE_STEP_PAGES, progress=step)


@contextlib.contextmanager
def _metered(meters: Meters, total: int | None, unit: str, label: str) -> Iterator[Meter]:
    meter = meters(total, unit, label)
    try:
        yield meter
    finally:
        meter.close()


@dataclass(frozen=True)
class Node:
    """Where a node keeps what a backup copies, as its configuration says."""

    database_url: URL
    data_dir: str
    files_dir: str
    spool_dir: str
    config_path: str | None
    listeners: tuple[str, ...] = ()  # its http and https endpoint strings (to tell whether it runs)
    own_names: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: Config) -> "Node":
        data_dir = config["node"]["data_dir"]
        return cls(database_url=make_url(config["database"]["url"]), data_dir=data_dir,
                   files_dir=config["files"]["dir"] or os.path.join(data_dir, "files"),
                   spool_dir=config["writer"]["spool_dir"] or os.path.join(data_dir, "spool"),
                   config_path=config.path,
                   listeners=tuple(config["web"]["http"]) + tuple(config["web"]["https"]),
                   own_names=tuple(config.own_origin_names()))

    @property
    def sqlite_path(self) -> str | None:
        if self.database_url.get_backend_name() != "sqlite":
            return None
        path = self.database_url.database
        if not path or path == ":memory:":
            raise BackupError(f"database {self.database_url} is in memory: there is nothing to back up")
        return os.path.abspath(path)

    @property
    def tls_dir(self) -> str:
        return os.path.join(self.data_dir, "tls")


# -- helpers ---------------------------------------------------------------------------------


def _now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _copy_stream(source: BinaryIO, out: BinaryIO, meter: Meter) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    while chunk := source.read(CHUNK):
        digest.update(chunk)
        out.write(chunk)
        size += len(chunk)
        meter.update(len(chunk))
    return digest.hexdigest(), size


def _copy_file(source_path: str, target_path: str, meter: Meter) -> tuple[str, int]:
    """Copy one file (fsynced), hashing as it goes; (sha256, size).  FileNotFoundError if it is gone."""
    with open(source_path, "rb") as source:
        os.makedirs(os.path.dirname(target_path), exist_ok=True)
        with open(target_path, "xb") as out:
            result = _copy_stream(source, out, meter)
            out.flush()
            os.fsync(out.fileno())
    return result


def _hash_file(path: str, meter: Meter) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            meter.update(len(chunk))
    return digest.hexdigest(), size


def _fsync_tree(root: str) -> None:
    for directory, _, _ in os.walk(root):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def content_path(sha256: str) -> str:
    """Where stationd.filestore keeps a content, relative to its root (FileStore.path; a FileStore is
    not made here: its constructor empties the running node's tmp/)."""
    return os.path.join(sha256[:2], sha256[2:4], sha256)


def _entry(path: str, sha256: str, size: int) -> dict[str, Any]:
    return {"path": path, "size": size, "sha256": sha256}


def _spool_segments(spool_dir: str) -> list[str]:
    """Paths (relative to the spool) of its segments, those set aside in rejected/ and damaged/ and
    each worker's too; temp files were never acknowledged and are left out."""
    found = []
    for directory, subdirs, names in os.walk(spool_dir):
        subdirs.sort()
        for name in sorted(names):
            if not name.startswith(".tmp-"):
                found.append(os.path.relpath(os.path.join(directory, name), spool_dir))
    return found


def _counts(conn: Connection) -> dict[str, int]:
    return {table.name: conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in DATA_TABLES}


def _contents(conn: Connection) -> list[tuple[str, int]]:
    """(sha256, size) of every content the store's file records name."""
    rows = conn.execute(select(schema.files.c.sha256, schema.files.c.size).distinct()
                        .order_by(schema.files.c.sha256))
    return [(row.sha256, row.size) for row in rows]


def _describe(conn: Connection) -> dict[str, Any]:
    return {"node_id": identity.get_node_id(conn), "schema_version": migrations.current_version(conn),
            "counts": _counts(conn)}


# -- backup ----------------------------------------------------------------------------------


def backup(node: Node, target: str, meters: Meters = silent) -> dict[str, Any]:
    """Take a consistent copy of ``node`` into the new or empty directory ``target``; the manifest.

    Safe while the node runs and writes (see the module's docstring for the order and why).
    """
    target = os.path.abspath(target)
    if os.path.exists(target) and (not os.path.isdir(target) or os.listdir(target)):
        raise BackupError(f"{target} exists and is not an empty directory: give a new one")
    sqlite_path = node.sqlite_path
    if sqlite_path is not None and not os.path.exists(sqlite_path):
        raise BackupError(f"no database at {sqlite_path}: nothing to back up (is the configuration the node's?)")
    pg_dump = None
    if sqlite_path is None:
        pg_dump = shutil.which("pg_dump")
        if pg_dump is None:
            raise BackupError("pg_dump is not on PATH, and a PostgreSQL store is backed up with it: install the "
                              "PostgreSQL client (Debian: apt install postgresql-client, of the server's major "
                              "version or newer) and run backup again; nothing was copied")
    created = not os.path.exists(target)
    os.makedirs(target, mode=0o700, exist_ok=True)
    os.chmod(target, 0o700)  # it holds password hashes and perhaps the TLS key
    try:
        manifest: dict[str, Any] = {"format": FORMAT, "stationd": __version__, "started": _now_iso()}
        manifest["spool"] = _backup_spool(node.spool_dir, target, meters)
        if sqlite_path is not None:
            database, contents = _backup_sqlite(sqlite_path, target, meters)
        else:
            database, contents = _backup_postgresql(node.database_url, target, meters, pg_dump or "pg_dump")
        manifest["database"] = database
        manifest["node_id"], manifest["counts"] = database.pop("node_id"), database.pop("counts")
        manifest["files"], manifest["missing_files"] = _backup_contents(node.files_dir, contents, target, meters)
        manifest["config"], manifest["tls"] = _backup_config(node, target)
        manifest["finished"] = _now_iso()
        _fsync_tree(target)
        replace_file(os.path.join(target, MANIFEST), json.dumps(manifest, indent=1).encode("utf-8") + b"\n")
    except BaseException:
        # What this backup copied goes (the directory was new or empty), so that a second try can use it.
        if created:
            shutil.rmtree(target, ignore_errors=True)
        else:
            for name in os.listdir(target):
                path = os.path.join(target, name)
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.remove(path)
        raise
    return manifest


def _backup_spool(spool_dir: str, target: str, meters: Meters) -> list[dict[str, Any]]:
    if not os.path.isdir(spool_dir):
        return []
    copied = []
    with _metered(meters, None, "B", "spool") as meter:
        for relative in _spool_segments(spool_dir):
            try:
                sha256, size = _copy_file(os.path.join(spool_dir, relative), os.path.join(target, "spool", relative),
                                          meter)
            except FileNotFoundError:  # stored meanwhile (and so in the database copied after this)
                continue
            copied.append(_entry(f"spool/{relative}", sha256, size))
    return copied


def _backup_sqlite(path: str, target: str, meters: Meters) -> tuple[dict[str, Any], list[tuple[str, int]]]:
    copy_path = os.path.join(target, SQLITE_COPY)
    source = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        source.execute("PRAGMA busy_timeout=30000")
        # One read transaction for the whole copy: every step reads the same WAL snapshot, so
        # the node's commits meanwhile neither show in the copy nor make it start over.
        source.execute("BEGIN")
        copy = sqlite3.connect(copy_path)
        try:
            _copy_sqlite(source, copy, meters)
            if (problem := copy.execute("PRAGMA quick_check").fetchone()[0]) != "ok":
                raise BackupError(f"the copy of {path} fails SQLite's quick_check: {problem}")
        finally:
            copy.close()
        source.execute("COMMIT")
    except sqlite3.Error as e:
        raise BackupError(f"cannot copy {path}: {e}") from None
    finally:
        source.close()
    copy_store = Store(f"sqlite:///{copy_path}")
    try:
        described = copy_store.call_read(_describe)
        contents = copy_store.call_read(_contents)
    finally:
        copy_store.close()
    for suffix in ("-wal", "-shm", ".changes"):  # (opening it in WAL mode may leave them: not part of the copy)
        with contextlib.suppress(FileNotFoundError):
            os.remove(copy_path + suffix)
    sha256, size = _hash_file(copy_path, _Silent())
    return {"dialect": "sqlite", **_entry(SQLITE_COPY, sha256, size), **described}, contents


def _libpq(url: URL) -> tuple[str, dict[str, str]]:
    """A URL for libpq's tools, and the environment that carries its password (not the command line)."""
    environ = dict(os.environ)
    if url.password is not None:
        environ["PGPASSWORD"] = str(url.password)
    plain = url.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), environ


def _backup_postgresql(url: URL, target: str, meters: Meters, pg_dump: str
                       ) -> tuple[dict[str, Any], list[tuple[str, int]]]:
    dump_path = os.path.join(target, PG_DUMP)
    store = Store(url)
    try:
        with store.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                # pg_dump reads the snapshot this transaction exports: the counts and the
                # contents listed here are those of the dump.
                snapshot = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
                schema_name = conn.execute(text("SELECT current_schema()")).scalar_one()
                described = _describe(conn)
                contents = _contents(conn)
                libpq_url, environ = _libpq(url)
                command = [pg_dump, "--format=custom", f"--snapshot={snapshot}", f"--schema={schema_name}",
                           f"--file={dump_path}", f"--dbname={libpq_url}"]
                with _metered(meters, None, "B", "database") as meter:
                    process = subprocess.Popen(command, env=environ, stdin=subprocess.DEVNULL,
                                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                    shown = 0
                    while process.poll() is None:
                        time.sleep(0.2)
                        with contextlib.suppress(FileNotFoundError):
                            size = os.path.getsize(dump_path)
                            meter.update(size - shown)
                            shown = size
                    errors = process.stderr.read().decode("utf-8", "replace") if process.stderr else ""
                if process.returncode != 0:
                    raise BackupError(f"pg_dump failed (exit {process.returncode}): "
                                      f"{' '.join(errors.split())[:500]}")
    except StoreError as e:
        raise BackupError(str(e)) from None
    finally:
        store.close()
    sha256, size = _hash_file(dump_path, _Silent())
    return {"dialect": "postgresql", "schema": schema_name, **_entry(PG_DUMP, sha256, size), **described}, contents


def _backup_contents(files_dir: str, contents: list[tuple[str, int]], target: str, meters: Meters
                     ) -> tuple[list[dict[str, Any]], list[str]]:
    copied, missing = [], []
    with _metered(meters, sum(size for _, size in contents), "B", "files") as meter:
        for sha256, size in contents:
            relative = content_path(sha256)
            path = os.path.join(files_dir, relative)
            try:
                got, got_size = _copy_file(path, os.path.join(target, "files", relative), meter)
            except FileNotFoundError:  # announced by an upstream import, its content not yet sent
                missing.append(sha256)
                continue
            if got != sha256:
                raise BackupError(f"{path} is damaged: its content has SHA-256 {got}, "
                                  f"{got_size} bytes (restore the node's files from an earlier backup)")
            copied.append(_entry(f"files/{relative}", got, got_size))
    return copied, missing


def _backup_config(node: Node, target: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    config = None
    if node.config_path is not None:
        name = f"config/{os.path.basename(node.config_path)}"
        config = _entry(name, *_copy_file(node.config_path, os.path.join(target, name), _Silent()))
    tls = []
    for name in ("cert.pem", "key.pem"):  # (the pair made at first start: clients may have pinned it)
        path = os.path.join(node.tls_dir, name)
        if os.path.exists(path):
            tls.append(_entry(f"tls/{name}", *_copy_file(path, os.path.join(target, "tls", name), _Silent())))
    return config, tls


# -- restore ---------------------------------------------------------------------------------


def read_manifest(backup_dir: str) -> dict[str, Any]:
    path = os.path.join(backup_dir, MANIFEST)
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise BackupError(f"{backup_dir} has no {MANIFEST}: not a backup, or one that was interrupted") from None
    except ValueError as e:
        raise BackupError(f"{path} is not JSON: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{path}: not a stationd backup manifest of format {FORMAT}")
    return manifest


def _entries(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    entries = [manifest["database"], *manifest["spool"], *manifest["files"], *manifest["tls"]]
    return entries + ([manifest["config"]] if manifest.get("config") else [])


def verify(backup_dir: str, meters: Meters = silent) -> dict[str, Any]:
    """The manifest, once every file it lists has the size and SHA-256 it records."""
    manifest = read_manifest(backup_dir)
    entries = _entries(manifest)
    bad = []
    with _metered(meters, sum(entry["size"] for entry in entries), "B", "verifying") as meter:
        for entry in entries:
            path = os.path.join(backup_dir, entry["path"])
            if os.path.normpath(entry["path"]).startswith((os.pardir, os.sep)):
                raise BackupError(f"{MANIFEST} names {entry['path']!r}, outside the backup")
            try:
                sha256, size = _hash_file(path, meter)
            except FileNotFoundError:
                bad.append(f"{entry['path']} is missing")
                continue
            if (sha256, size) != (entry["sha256"], entry["size"]):
                bad.append(f"{entry['path']} has changed ({size} bytes, SHA-256 {sha256[:12]}...)")
    if bad:
        raise BackupError(f"{backup_dir} is damaged, nothing was restored: {'; '.join(bad[:5])}"
                          + (f"; and {len(bad) - 5} more" if len(bad) > 5 else ""))
    return manifest


def _probe(description: str) -> str | None:
    """The address a listener endpoint string names, if something accepts connections there."""
    kind, _, rest = description.partition(":")
    positional = [p for p in rest.split(":") if "=" not in p]
    options = dict(p.split("=", 1) for p in rest.split(":") if "=" in p)
    try:
        if kind in ("tcp", "tcp6", "ssl"):
            port = int(options.get("port") or positional[0])
            host = options.get("interface") or ("::1" if kind == "tcp6" else "127.0.0.1")
            host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
            with socket.create_connection((host, port), timeout=1):
                return f"{host}:{port}"
        elif kind == "unix":
            path = options.get("address") or positional[0]
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(1)
                s.connect(path)
                return path
    except (OSError, ValueError, IndexError):
        return None
    return None  # (systemd: the sockets systemd holds say nothing of whether the node runs)


def _holders(paths: set[str]) -> list[int]:
    """Processes (other than this one) with any of ``paths`` open, as far as /proc shows them."""
    holders = []
    with contextlib.suppress(OSError):
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            fd_dir = f"/proc/{pid}/fd"
            try:
                if any(os.readlink(os.path.join(fd_dir, fd)) in paths for fd in os.listdir(fd_dir)):
                    holders.append(int(pid))
            except OSError:  # gone, or not ours to look at
                continue
    return holders


def running(node: Node) -> str | None:
    """Why ``node`` seems to be running (a reason for the operator), or None."""
    sqlite_path = node.sqlite_path
    if sqlite_path is not None:
        real = os.path.realpath(sqlite_path)
        pids = _holders({real, real + "-wal", real + "-shm"})
        if pids:
            return f"process {', '.join(map(str, pids))} has {sqlite_path} open"
    for description in node.listeners:
        if (address := _probe(description)) is not None:
            return f"something answers on {address}, the node's listener {description!r}"
    return None


def _store_holds(node: Node) -> list[str]:
    """What ``node`` holds already, in words (empty: nothing a restore would overwrite)."""
    held = []
    sqlite_path = node.sqlite_path
    if sqlite_path is None or os.path.exists(sqlite_path):
        store = Store(node.database_url)
        try:
            if store.call_read(migrations.current_version) is not None:
                counts = store.call_read(_counts)
                held += [f"{n} {table}" for table, n in counts.items() if n]
        finally:
            store.close()
    if os.path.isdir(node.files_dir):
        contents = sum(len(names) for directory, _, names in os.walk(node.files_dir)
                       if os.path.relpath(directory, node.files_dir).split(os.sep)[0] != "tmp")
        if contents:
            held.append(f"{contents} file contents in {node.files_dir}")
    if os.path.isdir(node.spool_dir) and (segments := _spool_segments(node.spool_dir)):
        held.append(f"{len(segments)} spool segments in {node.spool_dir}")
    return held


def restore(backup_dir: str, node: Node, *, force: bool = False, meters: Meters = silent) -> dict[str, Any]:
    """Put the backup in ``backup_dir`` back into the stopped ``node``; what was restored.

    Refuses (BackupError, nothing changed) a damaged backup, a running node, a backup of a newer
    schema, and a store that holds data already unless ``force``.
    """
    backup_dir = os.path.abspath(backup_dir)
    manifest = verify(backup_dir, meters)
    database = manifest["database"]
    if database["schema_version"] > migrations.LATEST:
        raise BackupError(f"the backup's schema is version {database['schema_version']}, newer than this "
                          f"stationd understands ({migrations.LATEST}); upgrade stationd first")
    sqlite_path = node.sqlite_path
    if (database["dialect"] == "sqlite") != (sqlite_path is not None):
        raise BackupError(f"the backup is of a {database['dialect']} store, and the configuration's "
                          f"database is {node.database_url.get_backend_name()}")
    if (reason := running(node)) is not None:
        raise BackupError(f"the node seems to be running ({reason}): stop it first")
    if not force and (held := _store_holds(node)):
        raise BackupError(f"the node's store is not empty ({', '.join(held)}): restore into a fresh data "
                          "directory and database, or give --force to replace the database and add to the files")
    if sqlite_path is not None:
        _restore_sqlite(os.path.join(backup_dir, database["path"]), sqlite_path, meters)
    else:
        _restore_postgresql(os.path.join(backup_dir, database["path"]), node.database_url, database["schema"],
                            meters)
    files = _restore_contents(backup_dir, manifest["files"], node.files_dir, meters)
    spool = _restore_plain(backup_dir, manifest["spool"], "spool/", node.spool_dir, prefix=".tmp-")
    tls = _restore_plain(backup_dir, manifest["tls"], "tls/", node.tls_dir, prefix=".tmp-", mode=0o600)
    store = Store(node.database_url)
    try:
        store.migrate(node.own_names)  # (a backup of an older schema is brought up to date here)
        node_id = store.call_read(identity.get_node_id)
    except StoreError as e:
        raise BackupError(f"the restored database cannot be opened: {e}") from None
    finally:
        store.close()
    config = manifest.get("config")
    return {"backup": backup_dir, "node_id": node_id, "counts": manifest["counts"], "files": files,
            "missing_files": len(manifest["missing_files"]), "spool_segments": spool, "tls": tls,
            "config": os.path.join(backup_dir, config["path"]) if config else None}


def _restore_sqlite(copy_path: str, path: str, meters: Meters) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        # Through SQLite's backup API into the database itself, not a file copy over it: a WAL
        # left beside an old file is then SQLite's to settle, never replayed onto the new one.
        source = sqlite3.connect(f"file:{copy_path}?mode=ro", uri=True)
        target = sqlite3.connect(path, isolation_level=None, timeout=30)
        try:
            _copy_sqlite(source, target, meters)
            target.execute("PRAGMA journal_mode=WAL")
        finally:
            source.close()
            target.close()
    except sqlite3.Error as e:
        raise BackupError(f"cannot restore the database into {path}: {e}") from None
    Stamp(path + ".changes").touch()  # (users and stations changed: whoever cached them reads them again)


def _restore_postgresql(dump_path: str, url: URL, schema_name: str, meters: Meters) -> None:
    pg_restore = shutil.which("pg_restore")
    if pg_restore is None:
        raise BackupError("pg_restore is not on PATH: install the PostgreSQL client (Debian: apt install "
                          "postgresql-client) and run restore again; nothing was changed")
    store = Store(url)
    try:
        with store.engine.connect() as conn:
            current = conn.execute(text("SELECT current_schema()")).scalar_one_or_none()
    except Exception as e:
        raise BackupError(f"cannot connect to {url.render_as_string()}: {' '.join(str(e).split())}") from None
    finally:
        store.close()
    if current != schema_name:
        raise BackupError(f"the dump is of schema {schema_name!r}, and the configuration's database puts new "
                          f"tables in {current!r}: restore into a database whose search_path starts with "
                          f"{schema_name!r}")
    libpq_url, environ = _libpq(url)
    # (--clean: the schema's tables, made empty by an init or a start, give way to the dump's; a store
    # with data in it got here only with --force.)
    command = [pg_restore, "--no-owner", "--exit-on-error", "--single-transaction", "--clean", "--if-exists",
               f"--dbname={libpq_url}"]
    with _metered(meters, None, "B", "database"):
        result = subprocess.run([*command, dump_path], env=environ, stdin=subprocess.DEVNULL,
                                capture_output=True, text=True)
    if result.returncode != 0:
        raise BackupError(f"pg_restore failed (exit {result.returncode}), nothing was changed in the database: "
                          f"{' '.join(result.stderr.split())[:500]}")


def _restore_contents(backup_dir: str, entries: list[dict[str, Any]], files_dir: str, meters: Meters) -> int:
    """Each content into the node's file store (checked against its name), unless there already."""
    store = FileStore(files_dir)
    restored = 0
    with _metered(meters, sum(entry["size"] for entry in entries), "B", "files") as meter:
        for entry in entries:
            sha256 = os.path.basename(entry["path"])
            if store.has(sha256):
                meter.update(entry["size"])
                continue
            with open(os.path.join(backup_dir, entry["path"]), "rb") as source:
                store.put(_Counting(source, meter), expect_sha256=sha256, expect_size=entry["size"])
            restored += 1
    return restored


class _Counting:
    """A file object that tells a meter how much was read from it."""

    def __init__(self, source: BinaryIO, meter: Meter) -> None:
        self.source, self.meter = source, meter

    def read(self, n: int = -1) -> bytes:
        chunk = self.source.read(n)
        self.meter.update(len(chunk))
        return chunk


def _restore_plain(backup_dir: str, entries: list[dict[str, Any]], strip: str, target_dir: str, *,
                   prefix: str, mode: int = 0o644) -> int:
    """Files of the backup put back under ``target_dir`` whole (a temp file renamed), unless there already."""
    restored = 0
    for entry in entries:
        final = os.path.join(target_dir, entry["path"][len(strip):])
        if os.path.exists(final):
            continue
        os.makedirs(os.path.dirname(final), exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=os.path.dirname(final), prefix=prefix)
        try:
            with os.fdopen(fd, "wb") as out, open(os.path.join(backup_dir, entry["path"]), "rb") as source:
                _copy_stream(source, out, _Silent())
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temp, mode)
            os.replace(temp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.remove(temp)
            raise
        restored += 1
    if restored:
        _fsync_tree(target_dir)
    return restored

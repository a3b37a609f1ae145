"""stationd-admin backup and restore (stationd.backup): unit tests on each backend, the progress
display, and the acceptance test: a backup of a real node under upload load, restored into a fresh one."""

import contextlib
import hashlib
import io
import json
import os
import pty
import select
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid

import pytest
from sqlalchemy import select as sql_select
from sqlalchemy import text

from stationd import admin_cli, backup
from stationd import config as configuration
from stationd.filestore import FileStore
from stationd.store import Store, files, identity, schema, stations, users
from stationd.store.events import digest, store_batches
from stationd.writer import decode_segment, encode_segment

from conftest import PG_URL, pg_schema, write_config

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
TABLES = (schema.meta, schema.events, schema.files, schema.event_files, schema.users, schema.stations,
          schema.station_event_counts)


def make_node(tmp_path, database_url, name="node"):
    root = tmp_path / name
    root.mkdir()
    path = write_config(root, f"[database]\nurl = {database_url}\n")
    return path, backup.Node.from_config(configuration.load(str(path)))


def batch(station, first, n, received_ns=2 * 10**18):
    events = []
    for i in range(first, first + n):
        data = {"i": i, "ph": [i, i * 2]}
        events.append({"id": str(uuid.uuid4()), "type": "CIC", "time_ns": 17 * 10**17 + i, "data": data,
                       "digest": digest(data), "quarantine": None})
    return {"protocol": "native", "station": station, "received_ns": received_ns, "idempotency_key": None,
            "events": events, "duplicates": 0}


def populate(node, events=50, contents=(b"image one", b"trace two" * 10000)):
    """A store with events, a user, a station, files and their contents, two spool segments and a TLS pair."""
    store = Store(node.database_url)
    store.migrate()
    store.call(store_batches, [batch("501", 0, events)], "n")
    store.call(users.add_user, "root", "admin")
    store.call(stations.add_station, "501", stations.hash_password("pw"))
    content_store = FileStore(node.files_dir)
    event_ids = [row[0] for row in store.call(lambda c: c.execute(sql_select(schema.events.c.id)).all())]
    for n, content in enumerate(contents):
        sha256, size = content_store.put(io.BytesIO(content))
        store.call(files.attach_file, event_ids[n], name=f"f{n}", mime_type="image/png", sha256=sha256, size=size,
                   now_ns=10**18, origin="n")
    store.close()
    os.makedirs(os.path.join(node.spool_dir, "worker-1"))
    for relative in ("00000000000000000001-1-00000001.seg", "worker-1/00000000000000000002-1-00000001.seg"):
        with open(os.path.join(node.spool_dir, relative), "wb") as f:
            f.write(encode_segment([batch("502", 1000, 3)]))
    os.makedirs(node.tls_dir)
    for name in ("cert.pem", "key.pem"):
        with open(os.path.join(node.tls_dir, name), "w") as f:
            f.write(f"{name} of the node\n")


def rows_of(node):
    store = Store(node.database_url)
    try:
        return {table.name: sorted(map(tuple, store.call_read(lambda c, t=table: c.execute(t.select()).all())),
                                   key=repr) for table in TABLES}
    finally:
        store.close()


def tree(root):
    """{relative path: content} of every file under root but the file store's tmp/."""
    found = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            if os.path.relpath(path, root).split(os.sep)[0] != "tmp":
                with open(path, "rb") as f:
                    found[os.path.relpath(path, root)] = f.read()
    return found


@pytest.fixture
def second_url(database_url, tmp_path):
    """Where a restore goes: a new SQLite file, or (PostgreSQL) the first schema, emptied (a dump
    names its schema)."""
    if database_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path}/restored.sqlite"
    return database_url


def empty_pg_schema(url):
    from sqlalchemy import create_engine

    engine = create_engine(url)
    with engine.begin() as conn:
        current = conn.execute(text("SELECT current_schema()")).scalar_one()
        conn.execute(text(f'DROP SCHEMA "{current}" CASCADE'))
        conn.execute(text(f'CREATE SCHEMA "{current}"'))
    engine.dispose()


def test_a_backup_restored_into_a_fresh_node_holds_all_it_held(tmp_path, database_url, second_url):
    _, node = make_node(tmp_path, database_url)
    populate(node)
    before = rows_of(node)
    manifest = backup.backup(node, str(tmp_path / "bk"))
    assert manifest["counts"]["events"] == 50 and manifest["counts"]["files"] == 2
    assert len(manifest["files"]) == 2 and manifest["missing_files"] == []
    assert sorted(e["path"] for e in manifest["spool"]) == [
        "spool/00000000000000000001-1-00000001.seg", "spool/worker-1/00000000000000000002-1-00000001.seg"]
    assert manifest["node_id"] == before["stationd_meta"][[k for k, _ in before["stationd_meta"]].index("node_id")][1]
    assert oct(os.stat(tmp_path / "bk").st_mode & 0o777) == "0o700"
    if database_url.startswith("postgresql"):
        empty_pg_schema(database_url)
    _, fresh = make_node(tmp_path, second_url, "fresh")
    result = backup.restore(str(tmp_path / "bk"), fresh)
    assert result["node_id"] == manifest["node_id"] and result["files"] == 2 and result["spool_segments"] == 2
    assert rows_of(fresh) == before
    assert tree(fresh.files_dir) == tree(node.files_dir)
    assert tree(fresh.spool_dir) == tree(node.spool_dir)
    assert decode_segment(tree(fresh.spool_dir)["worker-1/00000000000000000002-1-00000001.seg"])[0]["station"] == "502"
    assert tree(fresh.tls_dir) == tree(node.tls_dir)
    assert result["config"] == str(tmp_path / "bk" / "config" / "stationd.ini")
    assert open(result["config"]).read() == open(node.config_path).read()


def test_the_sqlite_copy_is_one_instant_while_another_process_writes(tmp_path):
    """Each step of the online backup reads the same snapshot: the node's commits meanwhile neither
    show in the copy (its counts are those of one instant) nor make it start over."""
    _, node = make_node(tmp_path, f"sqlite:///{tmp_path}/live.sqlite")
    populate(node, events=20000, contents=())
    writer = subprocess.Popen([sys.executable, "-c", """
import sys, uuid
from stationd.store import Store
from stationd.store.events import store_batches
sys.path.insert(0, sys.argv[2])
from test_backup import batch
store = Store(sys.argv[1])
n = 100000
print("go", flush=True)
while True:
    store.call(store_batches, [batch("503", n, 50)], "n")
    n += 50
""", str(node.database_url), os.path.dirname(__file__)], env=dict(os.environ, PYTHONPATH=SRC),
        stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "go\n"
        time.sleep(0.3)
        steps = []
        manifest = backup.backup(node, str(tmp_path / "bk"),
                                 lambda total, unit, label: type("M", (), {
                                     "update": lambda self, n: steps.append((label, n)), "close": lambda self: 0})())
    finally:
        writer.kill()
        writer.wait()
    copy = sqlite3.connect(tmp_path / "bk" / backup.SQLITE_COPY)
    copied = copy.execute("SELECT count(*), sum(events) FROM events, (SELECT sum(events) AS events FROM "
                          "station_event_counts)").fetchone()
    assert copied[0] == manifest["counts"]["events"] > 20000  # some of the writer's, and as many as counted
    assert copy.execute("SELECT sum(events) FROM station_event_counts").fetchone()[0] == copied[0]
    assert len([s for s in steps if s[0] == "database"]) > 1  # stepwise, and it still finished
    live = sqlite3.connect(node.sqlite_path)
    ids = {row[0] for row in copy.execute("SELECT id FROM events")}
    assert ids <= {row[0] for row in live.execute("SELECT id FROM events")}
    assert live.execute("SELECT count(*) FROM events").fetchone()[0] > len(ids)


def test_backup_refuses_a_directory_in_use_and_a_missing_database(tmp_path):
    _, node = make_node(tmp_path, f"sqlite:///{tmp_path}/none.sqlite")
    with pytest.raises(backup.BackupError, match="no database at"):
        backup.backup(node, str(tmp_path / "bk"))
    populate(node, events=1, contents=())
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("mine")
    with pytest.raises(backup.BackupError, match="is not an empty directory"):
        backup.backup(node, str(tmp_path / "used"))
    assert (tmp_path / "used" / "x").read_text() == "mine"


def test_a_damaged_content_fails_the_backup_and_leaves_no_partial_copy(tmp_path):
    _, node = make_node(tmp_path, f"sqlite:///{tmp_path}/n.sqlite")
    populate(node, events=3, contents=(b"intact",))
    sha256 = hashlib.sha256(b"intact").hexdigest()
    with open(os.path.join(node.files_dir, sha256[:2], sha256[2:4], sha256), "wb") as f:
        f.write(b"rotten")
    with pytest.raises(backup.BackupError, match=rf"{sha256} is damaged: its content has SHA-256 "):
        backup.backup(node, str(tmp_path / "bk"))
    assert not (tmp_path / "bk").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(backup.BackupError, match="is damaged"):
        backup.backup(node, str(tmp_path / "empty"))
    assert os.listdir(tmp_path / "empty") == []


def test_a_content_the_node_has_not_received_is_listed_as_missing(tmp_path):
    _, node = make_node(tmp_path, f"sqlite:///{tmp_path}/n.sqlite")
    populate(node, events=3, contents=(b"here",))
    store = Store(node.database_url)
    event_id = store.call(lambda c: c.execute(sql_select(schema.events.c.id)).first()[0])
    store.call(files.attach_file, event_id, name="later", mime_type="image/png", sha256="ab" * 32, size=5,
               now_ns=1, origin="upstream")  # (as an import announces a file before its content comes)
    store.close()
    manifest = backup.backup(node, str(tmp_path / "bk"))
    assert manifest["missing_files"] == ["ab" * 32] and len(manifest["files"]) == 1


def test_restore_refuses_a_damaged_or_unfinished_backup_and_changes_nothing(tmp_path):
    _, node = make_node(tmp_path, f"sqlite:///{tmp_path}/n.sqlite")
    populate(node)
    manifest = backup.backup(node, str(tmp_path / "bk"))
    _, fresh = make_node(tmp_path, f"sqlite:///{tmp_path}/fresh.sqlite", "fresh")
    content = tmp_path / "bk" / manifest["files"][0]["path"]
    original = content.read_bytes()
    content.write_bytes(b"bit rot")
    with pytest.raises(backup.BackupError, match=r"is damaged, nothing was restored: files/.* has changed"):
        backup.restore(str(tmp_path / "bk"), fresh)
    content.write_bytes(original)
    os.remove(tmp_path / "bk" / "spool" / "worker-1" / "00000000000000000002-1-00000001.seg")
    with pytest.raises(backup.BackupError, match="is missing"):
        backup.restore(str(tmp_path / "bk"), fresh)
    os.remove(tmp_path / "bk" / backup.MANIFEST)
    with pytest.raises(backup.BackupError, match="has no manifest.json: not a backup, or one that was interrupted"):
        backup.restore(str(tmp_path / "bk"), fresh)
    assert not os.path.exists(fresh.sqlite_path) and not os.path.exists(fresh.spool_dir)


def test_restore_refuses_a_store_with_data_unless_forced(tmp_path):
    _, node = make_node(tmp_path, f"sqlite:///{tmp_path}/n.sqlite")
    populate(node)
    before = rows_of(node)
    backup.backup(node, str(tmp_path / "bk"))
    _, other = make_node(tmp_path, f"sqlite:///{tmp_path}/other.sqlite", "other")
    store = Store(other.database_url)
    store.migrate()
    assert backup._store_holds(other) == []  # an initialised store, nothing in it: restored into
    store.call(users.add_user, "someone", "reader")
    store.close()
    with pytest.raises(backup.BackupError, match=r"not empty \(1 users\).*--force"):
        backup.restore(str(tmp_path / "bk"), other)
    backup.restore(str(tmp_path / "bk"), other, force=True)
    assert rows_of(other) == before


def test_restore_refuses_while_the_node_runs(tmp_path):
    path, node = make_node(tmp_path, f"sqlite:///{tmp_path}/n.sqlite")
    populate(node, events=1, contents=())
    backup.backup(node, str(tmp_path / "bk"))
    holder = subprocess.Popen([sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
                               "c.execute('SELECT 1 FROM events').fetchall(); print('open', flush=True); "
                               "sys.stdin.read()", node.sqlite_path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline() == "open\n"
        with pytest.raises(backup.BackupError, match=rf"running \(process {holder.pid} has .*n.sqlite open\)"):
            backup.restore(str(tmp_path / "bk"), node, force=True)
    finally:
        holder.stdin.close()
        holder.wait()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        listening = backup.Node.from_config(configuration.load(str(write_config(
            tmp_path, f"[database]\nurl = {node.database_url}\n", http=f"tcp:{port}:interface=127.0.0.1"))))
        with pytest.raises(backup.BackupError, match=rf"something answers on 127.0.0.1:{port}"):
            backup.restore(str(tmp_path / "bk"), listening, force=True)


def test_restore_refuses_a_backup_of_another_backend(tmp_path):
    _, node = make_node(tmp_path, f"sqlite:///{tmp_path}/n.sqlite")
    populate(node, events=1, contents=())
    backup.backup(node, str(tmp_path / "bk"))
    pg = backup.Node.from_config(configuration.load(str(write_config(
        tmp_path, "[database]\nurl = postgresql+psycopg://nobody@127.0.0.1:1/none\n"))))
    with pytest.raises(backup.BackupError, match="a sqlite store, and the configuration's database is postgresql"):
        backup.restore(str(tmp_path / "bk"), pg)


@pytest.mark.skipif(not PG_URL, reason="PostgreSQL tests need STATIOND_TEST_DATABASE_URL (set by .ci/run)")
def test_postgresql_without_pg_dump_is_refused_with_guidance(tmp_path, monkeypatch):
    with pg_schema() as (url, _, _):
        _, node = make_node(tmp_path, url)
        monkeypatch.setattr(shutil, "which", lambda name: None)
        with pytest.raises(backup.BackupError, match="pg_dump is not on PATH.*postgresql-client.*nothing was copied"):
            backup.backup(node, str(tmp_path / "bk"))
        assert not (tmp_path / "bk").exists()


# -- the command -----------------------------------------------------------------------------


def admin(*argv, stderr=subprocess.PIPE, config):
    return subprocess.run([sys.executable, "-m", "stationd.admin_cli", *argv, "--config", str(config)],
                          env=dict(os.environ, PYTHONPATH=SRC), stdout=subprocess.PIPE, stderr=stderr,
                          text=True, timeout=120)


def on_a_terminal(*argv, config):
    """Run stationd-admin with its stderr on a pseudo-terminal; (exit code, stdout, what the terminal got)."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "stationd.admin_cli", *argv, "--config", str(config)],
                               env=dict(os.environ, PYTHONPATH=SRC), stdout=subprocess.PIPE, stderr=terminal,
                               text=True)
    os.close(terminal)
    shown = b""
    while True:
        ready, _, _ = select.select([controller], [], [], 60)
        try:
            chunk = os.read(controller, 65536) if ready else b""
        except OSError:  # EIO: the process closed its end
            chunk = b""
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    out = process.stdout.read()
    return process.wait(), out, shown.decode("utf-8", "replace")


def test_the_command_prints_only_the_result_off_a_terminal_and_progress_on_one(tmp_path):
    config, node = make_node(tmp_path, f"sqlite:///{tmp_path}/n.sqlite")
    populate(node, contents=(os.urandom(3 * 1024 * 1024),))
    out = admin("backup", str(tmp_path / "bk"), config=config)
    assert out.returncode == 0 and out.stderr == ""
    assert out.stdout.startswith(f"backup of node {node_id(node)} in {tmp_path / 'bk'}: 50 events, 1 file contents")
    assert len(out.stdout.splitlines()) == 1
    code, stdout, shown = on_a_terminal("backup", str(tmp_path / "bk2"), config=config)
    assert code == 0 and stdout.startswith("backup of node")
    assert "database" in shown and "files" in shown  # a progress line each
    code, stdout, shown = on_a_terminal("backup", str(tmp_path / "bk3"), "--quiet", config=config)
    assert code == 0 and stdout.startswith("backup of node") and shown == ""

    fresh_config, fresh = make_node(tmp_path, f"sqlite:///{tmp_path}/fresh.sqlite", "fresh")
    code, stdout, shown = on_a_terminal("restore", str(tmp_path / "bk"), "--json", config=fresh_config)
    result = json.loads(stdout)
    assert code == 0 and result["node_id"] == node_id(node) and result["files"] == 1
    assert "verifying" in shown and "files" in shown
    again = admin("restore", str(tmp_path / "bk"), config=fresh_config)
    assert again.returncode == 1 and again.stdout == ""
    assert again.stderr.startswith("stationd-admin: the node's store is not empty (50 events, 1 files, 1 users, "
                                   "1 stations") and len(again.stderr.splitlines()) == 1
    forced = admin("restore", str(tmp_path / "bk"), "--force", "--quiet", config=fresh_config)
    assert forced.returncode == 0 and forced.stderr == ""
    assert forced.stdout.startswith(f"node {node_id(node)} restored from {tmp_path / 'bk'}: 50 events, 0 file "
                                    "contents written, 0 spool segments")


def node_id(node):
    store = Store(node.database_url)
    try:
        return store.call_read(identity.get_node_id)
    finally:
        store.close()


def test_import_stations_shows_progress_on_a_terminal_only(tmp_path):
    config, _ = make_node(tmp_path, f"sqlite:///{tmp_path}/n.sqlite")
    (tmp_path / "stations.csv").write_text("".join(f"{n},amsterdam,pw{n}\n" for n in range(501, 505)))
    out = admin("import-stations", str(tmp_path / "stations.csv"), config=config)
    assert (out.returncode, out.stdout, out.stderr) == (0, "4 stations read: 4 added, 0 updated\n", "")
    code, stdout, shown = on_a_terminal("import-stations", str(tmp_path / "stations.csv"), config=config)
    assert (code, stdout) == (0, "4 stations read: 0 added, 0 updated\n") and "stations" in shown
    code, _, shown = on_a_terminal("import-stations", str(tmp_path / "stations.csv"), "--quiet", config=config)
    assert code == 0 and shown == ""


def test_in_process_errors_are_one_line(tmp_path, capsys):
    config, _ = make_node(tmp_path, f"sqlite:///{tmp_path}/n.sqlite")
    assert admin_cli.main(["restore", str(tmp_path / "nowhere"), "--config", str(config)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err == f"stationd-admin: {tmp_path / 'nowhere'} has no manifest.json: not a backup, " \
                                "or one that was interrupted\n"


# -- the acceptance test: a real node under upload load --------------------------------------


EVENT_COLUMNS = "id, station, type, time_ns, received_ns, CAST(data AS TEXT), digest, origin, quarantined, seq"


def rows(url, statement):
    from sqlalchemy import create_engine

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(statement))]
    finally:
        engine.dispose()


@pytest.mark.e2e
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_backup_under_upload_load_restores_into_a_fresh_node_event_for_event(tmp_path, backend):
    if backend == "postgresql" and not PG_URL:
        pytest.skip("PostgreSQL tests need STATIOND_TEST_DATABASE_URL (set by .ci/run)")
    with contextlib.ExitStack() as stack:
        url = (stack.enter_context(pg_schema())[0] if backend == "postgresql"
               else f"sqlite:///{tmp_path}/original/var/stationd.sqlite")
        under_load_then_restored(tmp_path, url, backend)


def under_load_then_restored(tmp_path, url, backend):
    from test_e2e import BIN, Node, admin_cli as run_admin

    (tmp_path / "original").mkdir()
    body = f"[database]\nurl = {url}\n"
    node = Node(tmp_path / "original", body)
    run_admin(node.config, "add-station", "501")
    key = run_admin(node.config, "add-user", "box", "--role", "station", "--station", "501").strip().splitlines()[-1]
    root_key = run_admin(node.config, "add-user", "root", "--role", "admin").strip().splitlines()[-1]
    node.start()
    base = f"http://127.0.0.1:{node.http}"
    stop, sent, failures = threading.Event(), [], []

    def post(path, body, secret, content_type="application/json"):
        import urllib.request

        request = urllib.request.Request(base + path, data=body, method="POST", headers={
            "Authorization": f"Bearer {secret}", "Content-Type": content_type})
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())

    def upload(n):
        while not stop.is_set():
            events = [{"type": "CIC", "time": f"2024-05-01T22:00:00.{n + i:09d}Z", "data": {"n": n + i, "ph": [n, i]}}
                      for i in range(50)]
            try:
                assert post("/api/v1/stations/501/events", json.dumps({"events": events}).encode(), key)[
                    "accepted"] == 50
                sent.append(n)
            except Exception as e:  # (seen by the test below)
                failures.append(e)
                return
            n += 50

    def attach():
        import urllib.parse
        import urllib.request

        while not stop.is_set():
            with urllib.request.urlopen(f"{base}/api/v1/events?limit=1", timeout=30) as answer:
                latest = json.loads(answer.read())["events"]
            if latest:
                content = os.urandom(200_000)
                query = urllib.parse.urlencode({"name": "frame.bin", "mime_type": "application/octet-stream"})
                try:
                    post(f"/api/v1/admin/events/{latest[0]['id']}/files?{query}", content, root_key,
                         "application/octet-stream")
                except Exception as e:
                    failures.append(e)
                    return
            time.sleep(0.02)

    loaders = [threading.Thread(target=upload, args=(0,)), threading.Thread(target=upload, args=(500_000_000,)),
               threading.Thread(target=attach)]
    try:
        for thread in loaders:
            thread.start()
        time.sleep(1.5)  # the load is going
        out = subprocess.run([os.path.join(BIN, "stationd-admin"), "--config", str(node.config), "backup",
                              str(tmp_path / "bk"), "--json"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stderr == ""  # (not a terminal: the result alone)
        summary = json.loads(out.stdout)
        time.sleep(0.5)  # the load goes on after the backup
    finally:
        stop.set()
        for thread in loaders:
            thread.join()
    assert not failures, failures
    node.stop()

    in_original = {row[0]: row for row in rows(url, f"SELECT {EVENT_COLUMNS} FROM events")}
    original_files = rows(url, "SELECT id, sha256, size FROM files ORDER BY id")
    fresh_root = tmp_path / "fresh"
    fresh_root.mkdir()
    if backend == "sqlite":
        fresh = Node(fresh_root)
        backup_url = f"sqlite:///{tmp_path}/bk/{backup.SQLITE_COPY}"
    else:  # (a dump names its schema: the fresh node gets the original's, emptied)
        empty_pg_schema(url)
        fresh = Node(fresh_root, body)
    restored = subprocess.run([os.path.join(BIN, "stationd-admin"), "--config", str(fresh.config), "restore",
                               str(tmp_path / "bk"), "--json"], capture_output=True, text=True, timeout=120)
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["node_id"] == summary["node_id"]
    if backend == "postgresql":
        backup_url = url  # (what the dump held: the restored database, before the node starts)
    backed_up = rows(backup_url, f"SELECT {EVENT_COLUMNS} FROM events ORDER BY id")
    backed_files = rows(backup_url, "SELECT id, sha256, size FROM files ORDER BY id")
    assert len(backed_up) == summary["counts"]["events"] > 0 and summary["files"] > 0
    assert len(in_original) > len(backed_up)  # uploads went on during and after the backup
    assert set(backed_files) < set(original_files) and len(backed_files) == summary["counts"]["files"]
    # Every event, with identical data; seq is the export order, renumbered when an event gains a file.
    differing = [(row, in_original.get(row[0])) for row in backed_up if in_original.get(row[0], ())[:-1] != row[:-1]
                 or in_original[row[0]][-1] < row[-1]]
    assert not differing, differing[:3]
    fresh.start()
    try:
        import urllib.request

        def get(path):
            with urllib.request.urlopen(f"http://127.0.0.1:{fresh.http}{path}", timeout=30) as answer:
                return answer.read()

        answered, cursor = [], ""
        while True:  # the restored node answers with exactly the backup's events
            page = json.loads(get("/api/v1/events?order=asc&limit=1000" + (f"&cursor={cursor}" if cursor else "")))
            answered += page["events"]
            if not (cursor := page["next"]):
                break
        assert sorted(e["id"] for e in answered) == [row[0] for row in backed_up]
        by_id = {row[0]: row for row in backed_up}
        assert all(json.loads(by_id[e["id"]][5]) == e["data"] for e in answered)
        for file_id, sha256, size in backed_files:  # every file, its content equal to the original's
            content = get(f"/api/v1/files/{file_id}/content")
            assert len(content) == size and hashlib.sha256(content).hexdigest() == sha256
            with open(tmp_path / "original" / "var" / "files" / sha256[:2] / sha256[2:4] / sha256, "rb") as f:
                assert f.read() == content
    finally:
        fresh.stop()

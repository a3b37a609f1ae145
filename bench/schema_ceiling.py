"""durable_ceiling.py with stationd's events table: its columns, text id, unique natural key and
indexes; UUIDv7 ids, sorted-key JSON and its SHA-256, the ISO time parsed.  The least the store's
own schema costs on this stack (docs/performance.rst, Ingest).  DROP=name,... leaves those indexes out.

    python schema_ceiling.py PORT DBFILE
"""

import hashlib
import os
import sqlite3
import sys
import threading
import time

import orjson
from sqlalchemy import create_engine
from twisted.internet import reactor
from twisted.web import resource, server

from stationd.store.events import event_ids
from stationd.store.schema import metadata
from stationd.times import parse_time

COLUMNS = "id, station, type, time_ns, received_ns, data, digest, origin, quarantined, quarantine_reason, seq"
pending, cond = [], threading.Condition()


def create(path):
    engine = create_engine(f"sqlite:///{path}")
    metadata.create_all(engine)
    with engine.begin() as conn:
        for name in filter(None, os.environ.get("DROP", "").split(",")):
            conn.exec_driver_sql(f"DROP INDEX {name}")
    engine.dispose()


def writer(path):
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in ("journal_mode=WAL", "synchronous=FULL", "wal_autocheckpoint=10000", "cache_size=-32768"):
        db.execute(f"PRAGMA {pragma}")
    seq = 0
    while True:
        with cond:
            while not pending:
                cond.wait()
            batch = pending[:]
            del pending[:]
        db.execute("BEGIN IMMEDIATE")
        for rows, _ in batch:
            numbered = [row + (seq + i,) for i, row in enumerate(rows)]
            seq += len(rows)
            db.executemany(f"INSERT OR IGNORE INTO events ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)", numbered)
        db.execute("COMMIT")
        reactor.callFromThread(answer, [(request, len(rows)) for rows, request in batch])


def answer(done):
    for request, n in done:
        if not request._disconnected:
            request.write(b'{"accepted": %d, "duplicates": 0, "quarantined": 0}' % n)
            request.finish()


class Events(resource.Resource):
    isLeaf = True

    def render_POST(self, request):
        events = orjson.loads(request.content.read())["events"]
        now, rows = time.time_ns(), []
        for event, event_id in zip(events, event_ids(now, len(events))):
            text = orjson.dumps(event["data"], option=orjson.OPT_SORT_KEYS)
            rows.append((event_id, "501", event["type"], parse_time(event["time"]), now, text.decode(),
                         hashlib.sha256(text).hexdigest(), "x", False, None))
        with cond:
            pending.append((rows, request))
            cond.notify()
        return server.NOT_DONE_YET

    def render_GET(self, request):
        return b"{}"


class Site(server.Site):
    def log(self, request):
        pass


if __name__ == "__main__":
    create(sys.argv[2])
    threading.Thread(target=writer, args=(sys.argv[2],), daemon=True).start()
    reactor.listenTCP(int(sys.argv[1]), Site(Events()), interface="127.0.0.1")
    reactor.run()

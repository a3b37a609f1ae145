"""durable_ceiling.py with stationd's events table (its columns, unique natural key and 5 indexes),
digest and UUID per event: what the store's own schema costs at the least."""
import hashlib, os, sqlite3, sys, threading, time
import orjson
from twisted.internet import reactor
from twisted.web import resource, server
from stationd.store.events import event_ids
from stationd.store.schema import metadata
from stationd.times import parse_time
from sqlalchemy import create_engine
pending, cond = [], threading.Condition()
eng = create_engine(f"sqlite:///{sys.argv[2]}"); metadata.create_all(eng)
with eng.begin() as c:  # DROP=name,...: the same without these indexes, to see what each costs
    for name in filter(None, os.environ.get("DROP", "").split(",")):
        c.exec_driver_sql(f"DROP INDEX {name}")
eng.dispose()
COLS = "id, station, type, time_ns, received_ns, data, digest, origin, quarantined, quarantine_reason, seq"
def writer(path):
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL"); db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA wal_autocheckpoint=10000"); db.execute("PRAGMA cache_size=-32768")
    seq = 0
    while True:
        with cond:
            while not pending: cond.wait()
            batch = pending[:]; del pending[:]
        db.execute("BEGIN IMMEDIATE")
        for rows, _ in batch:
            numbered = [r + (seq + i,) for i, r in enumerate(rows)]; seq += len(rows)
            db.executemany(f"INSERT OR IGNORE INTO events ({COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)", numbered)
        db.execute("COMMIT")
        reactor.callFromThread(answer, [(request, len(rows)) for rows, request in batch])
def answer(done):
    for request, n in done:
        if not request._disconnected:
            request.write(b'{"accepted": %d, "duplicates": 0, "quarantined": 0}' % n); request.finish()
class Events(resource.Resource):
    isLeaf = True
    def render_POST(self, request):
        events = orjson.loads(request.content.read())["events"]
        now = time.time_ns(); rows = []
        for e, event_id in zip(events, event_ids(now, len(events))):
            text = orjson.dumps(e["data"], option=orjson.OPT_SORT_KEYS)
            rows.append((event_id, "501", e["type"], parse_time(e["time"]), now, text.decode(),
                         hashlib.sha256(text).hexdigest(), "x", False, None))
        with cond:
            pending.append((rows, request)); cond.notify()
        return server.NOT_DONE_YET
    def render_GET(self, request): return b"{}"
class Site(server.Site):
    def log(self, request): pass
threading.Thread(target=writer, args=(sys.argv[2],), daemon=True).start()
reactor.listenTCP(int(sys.argv[1]), Site(Events()), interface="127.0.0.1")
reactor.run()

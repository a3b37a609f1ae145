# From ../shared/bench/ (the project's ceilings), unchanged; run by bench/ingest.py.
"""The ceiling of durable ingest on this stack: a raw twisted.web resource parses the JSON body
with orjson and hands its rows to one writer thread that inserts them into SQLite (WAL,
synchronous=FULL) in group-commit transactions (everything that arrived while the last commit
ran goes in the next one); each request is answered only after the commit that holds its rows.
No auth, no validation, no dedupe: what any durable Twisted ingest costs at the least.
    python durable_ceiling.py PORT DBFILE"""
import sqlite3, sys, threading
import orjson
from twisted.internet import reactor
from twisted.web import resource, server

pending, cond = [], threading.Condition()
stats = {"commits": 0, "requests": 0}

def writer(path):
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL"); db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, station INTEGER,"
               " type TEXT, time TEXT, data BLOB)")
    while True:
        with cond:
            while not pending:
                cond.wait()
            batch = pending[:]
            del pending[:]
        db.execute("BEGIN")
        for rows, _ in batch:
            db.executemany("INSERT INTO events (station, type, time, data) VALUES (?, ?, ?, ?)", rows)
        db.execute("COMMIT")
        stats["commits"] += 1; stats["requests"] += len(batch)
        reactor.callFromThread(answer, [(request, len(rows)) for rows, request in batch])

def answer(done):
    for request, n in done:
        if not request._disconnected:
            request.write(b'{"accepted": %d, "duplicates": 0, "quarantined": 0}' % n)
            request.finish()

class Events(resource.Resource):
    isLeaf = True
    def render_POST(self, request):
        station = int(request.postpath[-2])      # /api/v1/stations/{id}/events
        events = orjson.loads(request.content.read())["events"]
        rows = [(station, e["type"], e["time"], orjson.dumps(e["data"])) for e in events]
        request.setHeader(b"content-type", b"application/json")
        with cond:
            pending.append((rows, request))
            cond.notify()
        return server.NOT_DONE_YET
    def render_GET(self, request):                # /stats: commits and requests so far
        return orjson.dumps(stats)

class Site(server.Site):
    def log(self, request): pass

threading.Thread(target=writer, args=(sys.argv[2],), daemon=True).start()
reactor.listenTCP(int(sys.argv[1]), Site(Events()), interface="127.0.0.1")
reactor.run()

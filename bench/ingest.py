"""Ingest throughput of a node, next to the ceilings of the work it has to do.

Runs `twistd -n stationd` on plain HTTP (no TLS) with a temp data_dir, one
station (501, password "secret") and one admin user, then loads it for
--seconds per case with --clients keep-alive connections:

- HiSPARC `POST /upload`, 100-event batches (protocol-2 pickles of ~1.9 kB
  events with numpy scalars, form-encoded exactly as `requests.post(data=...)`
  sends them); every answer must be `100`;
- native `POST /api/v1/stations/501/events`, 1-event and 100-event JSON
  batches (~1 kB of data an event); every answer must be 200.

Every event is new (its time and one trace carry a per-request token), so no
dedupe shortcut is measured.  The load generator is a separate process with
raw asyncio streams sending pre-encoded HTTP/1.1 requests.  In the same run it
measures, without a node, the ceilings: form + pickle decoding of the same
HiSPARC bodies, JSON decoding (json.loads + the node's parse_event) of the
native bodies, and batched inserts into a WAL, synchronous=FULL SQLite file;
and, with the same load as the native 1-event case, a bare twisted.web
resource that reads the body and answers (the ceiling of any Twisted node).

    venv/bin/python bench/ingest.py [--seconds 10] [--clients 10] [--procs 1]
"""

import argparse
import asyncio
import base64
import collections
import datetime
import hashlib
import json
import multiprocessing
import os
import pickle
import pickletools
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import numpy as np

from stationd.hisparc import decode_upload
from stationd.web.http import parse_form
from stationd.web.ingest import parse_event

from nodes import HOST, admin, cpu_seconds, free_port, start_node, stop_node, write_config

STATION, PASSWORD = "501", "secret"
BATCH, TEMPLATES = 100, 8
RAW = "ceiling: raw twisted.web, 1-event"
NS_HOLE = 0x7E7E7E7E  # pickles as BININT b"~~~~": a placeholder patched per request
TOKEN_HOLE = "~" * 16  # start of one trace an event: patched per request
ALNUM = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def fill(hole_length, phase, uid):
    """The bytes for one hole of event number `uid`; all safe in a URL and in JSON."""
    if hole_length == 4:  # nanoseconds: 4 alphanumeric bytes, last a digit, so 808e6..965e6
        return bytes((ALNUM[uid % 62], ALNUM[uid // 62 % 62], ALNUM[uid // 3844 % 62],
                      ALNUM[uid // 238328 % 10]))
    if hole_length == 9:  # nanosecond digits of an ISO time
        return b"%09d" % (uid % 10**9)
    return b"%d%015d" % (phase, uid)  # trace token


def interleave(segments, tokens):
    out = [segments[0]]
    for token, segment in zip(tokens, segments[1:]):
        out += (token, segment)
    return out


class Template:
    """A request with fixed-width holes, so each request is new without re-encoding."""

    def __init__(self, path, headers, payload, holes, phase, form=False):
        cuts = [0] + [c for pos, n in holes for c in (pos, pos + n)] + [len(payload)]
        self.raw = [payload[a:b] for a, b in zip(cuts[::2], cuts[1::2])]
        self.holes, self.phase, self.form = [n for _, n in holes], phase, form
        self.wire = [urllib.parse.quote_plus(s.decode("latin-1")).encode() for s in self.raw] if form else self.raw
        self.prefix = f"station_id={STATION}&password={PASSWORD}&checksum=".encode()
        length = sum(map(len, self.wire)) + sum(self.holes) + (len(self.prefix) + 32 + 6 if form else 0)
        self.head = (f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\n{headers}"
                     f"Content-Length: {length}\r\n\r\n").encode()

    def make(self, seq):
        # two holes an event, in order: its time, then its first trace
        tokens = [fill(n, self.phase, seq * BATCH + i // 2) for i, n in enumerate(self.holes)]
        parts = [self.head]
        if self.form:
            checksum = hashlib.md5(b"".join(interleave(self.raw, tokens))).hexdigest().encode()
            parts += (self.prefix, checksum, b"&data=")
        return b"".join(parts + interleave(self.wire, tokens))


def traces(n):
    """Four base64 traces of n random bytes; the first starts with the token hole."""
    first, *rest = (base64.b64encode(os.urandom(n)).decode() for _ in range(4))
    return [TOKEN_HOLE + first[16:]] + rest


def hisparc_template(t):
    """100 events as a station's pickle, ~1.9 kB an event, with numpy scalars like the DAQ's."""
    events = []
    for i in range(BATCH):
        when = datetime.datetime(2024, 5, 1, 12) + datetime.timedelta(seconds=t * BATCH + i)
        items = [("N1", np.int64(3)), ("RATE", np.float32(np.random.random() * 2))]
        items += [(f"PH{k}", int(np.random.randint(5000))) for k in range(1, 5)]
        items += [(f"IN{k}", int(np.random.randint(50000))) for k in range(1, 5)]
        items += [(f"BL{k}", float(np.random.random() * 200)) for k in range(1, 3)]
        items += [(f"TR{k}", trace) for k, trace in enumerate(traces(225), 1)]
        events.append({"header": {"eventtype_uploadcode": "CIC", "datetime": when, "nanoseconds": NS_HOLE,
                                  "date": when.date(), "time": when.time()},
                       "datalist": [{"data_uploadcode": c, "data": v} for c, v in items]})
    data = pickle.dumps(events, protocol=2)
    holes = [(pos + 1, 4) if op.name == "BININT" else (pos + 5, 16)  # after opcode (and length)
             for op, arg, pos in pickletools.genops(data)
             if (op.name == "BININT" and arg == NS_HOLE)
             or (op.name == "BINUNICODE" and arg.startswith(TOKEN_HOLE))]
    assert len(holes) == 2 * BATCH
    return Template("/upload", "Content-Type: application/x-www-form-urlencoded\r\n", data, holes, 1, form=True)


def native_template(t, n, key, phase):
    """n native events of ~1 kB of data each, as one JSON body."""
    events = []
    for i in range(n):
        when = datetime.datetime(2024, 5, 2) + datetime.timedelta(seconds=t * n + i)
        events.append({"type": "CIC", "time": f"{when:%Y-%m-%dT%H:%M:%S}.{'~' * 9}Z", "data": {
            "n1": 3, "rate": round(float(np.random.random() * 2), 4),
            "pulseheights": np.random.randint(5000, size=4).tolist(),
            "integrals": np.random.randint(50000, size=4).tolist(),
            "baselines": np.round(np.random.random(2) * 200, 3).tolist(), "traces": traces(150)}})
    body = json.dumps({"events": events}).encode()
    holes = [(m.start(), len(m.group())) for m in re.finditer(rb"~+", body)]
    return Template(f"/api/v1/stations/{STATION}/events",
                    f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n", body, holes, phase)


# ---- load generator (runs in a child process)

async def response(reader):
    head = (await reader.readuntil(b"\r\n\r\n")).lower()
    status = int(head[9:12])
    length = re.search(rb"\r\ncontent-length: *(\d+)", head)
    if length:
        return status, await reader.readexactly(int(length.group(1)))
    body = b""
    while True:  # chunked
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            return status, body
        body += chunk[:-2]


async def client(port, templates, seq, stride, deadline, out):
    reader = writer = None
    while time.perf_counter() < deadline and len(out["latency"]) < 10**6 and out["answers"]["error"] < 100:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(HOST, port)
            request = templates[seq % len(templates)].make(seq)
            seq += stride
            start = time.perf_counter()
            writer.write(request)
            status, body = await asyncio.wait_for(response(reader), 30)
            out["latency"].append(time.perf_counter() - start)
            if status == 200 and body == b"100":
                out["acked"] += BATCH
            elif status == 200 and body.startswith(b"{"):
                out["acked"] += json.loads(body)["accepted"]
                body = b""
            out["answers"][f"{status} {body[:60].decode('latin-1')}".strip()] += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError, KeyError) as e:
            out["answers"]["error"] += 1
            out["answers"][f"error: {e!r:.60}"] += 1
            if writer is not None:
                writer.close()
            writer = None
    if writer is not None:
        writer.close()


def generate(conn, port, templates, first, stride, clients, seconds):
    """One load generator process: `clients` connections until `seconds` have passed."""
    async def run():
        out = {"latency": [], "answers": collections.Counter(), "acked": 0}
        start = time.perf_counter()
        await asyncio.gather(*(client(port, templates, first + k, stride, start + seconds, out)
                               for k in range(clients)))
        return dict(out, elapsed=time.perf_counter() - start)
    conn.send(asyncio.run(run()))
    conn.close()


def load(port, templates, args):
    """Run the load in --procs child processes; their merged results."""
    context, running, results = multiprocessing.get_context("fork"), [], []
    shares = [args.clients // args.procs + (p < args.clients % args.procs) for p in range(args.procs)]
    for p, share in enumerate(shares):
        pipe, child = context.Pipe(duplex=False)
        proc = context.Process(target=generate, args=(child, port, templates, sum(shares[:p]),
                                                      args.clients, share, args.seconds))
        proc.start()
        running.append((proc, pipe))
    for proc, pipe in running:
        if pipe.poll(args.seconds + 90):
            results.append(pipe.recv())
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    if len(results) != len(running):
        raise RuntimeError("a load generator process did not report")
    return {"latency": np.array([x for r in results for x in r["latency"]]),
            "answers": sum((r["answers"] for r in results), collections.Counter()),
            "acked": sum(r["acked"] for r in results), "elapsed": max(r["elapsed"] for r in results)}


# ---- ceilings (in this process, no node)

def timed(items, seconds, work):
    """Run work(item) over items in a cycle for ~seconds; per-call latencies."""
    latency, deadline, i = [], time.perf_counter() + seconds, 0
    while time.perf_counter() < deadline and i < 10_000_000:
        start = time.perf_counter()
        work(items[i % len(items)])
        latency.append(time.perf_counter() - start)
        i += 1
    return np.array(latency)


def decode_hisparc(body):
    args = parse_form(body)
    data = args[b"data"][0].decode("utf-8").encode("latin-1")
    assert hashlib.md5(data).hexdigest() == args[b"checksum"][0].decode()
    assert len(decode_upload(data, "pickle")) == BATCH


def decode_native(body):
    events = json.loads(body)["events"]
    assert len([parse_event(e) for e in events]) == BATCH


def sqlite_inserts(path, seconds):
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE events (id TEXT PRIMARY KEY, station TEXT, type TEXT, time_ns INTEGER,"
               " received_ns INTEGER, data TEXT, digest TEXT, origin TEXT, quarantined INTEGER,"
               " quarantine_reason TEXT, UNIQUE (station, type, time_ns, digest))")
    data = [json.dumps({"traces": traces(150), "n": k}) for k in range(BATCH)]
    batches = iter(range(10**7))

    def insert(_):
        b = next(batches)
        rows = [(f"{b:016x}{k:016x}", STATION, "CIC", b * BATCH + k, time.time_ns(), data[k],
                 hashlib.sha256(f"{b}.{k}".encode()).hexdigest(), "bench", 0, None) for k in range(BATCH)]
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
        db.execute("COMMIT")

    try:
        return timed([None], seconds, insert)
    finally:
        db.close()


# ---- the node

RAW_WEB = """
import sys
from twisted.internet import reactor
from twisted.web import resource, server

class Accept(resource.Resource):
    isLeaf = True

    def render_POST(self, request):
        request.content.read()
        request.setHeader(b"content-type", b"application/json")
        return b'{"accepted": 1, "duplicates": 0, "quarantined": 0}'

reactor.listenTCP(int(sys.argv[1]), server.Site(Accept()), interface="127.0.0.1")
reactor.run()
"""


def raw_web_ceiling(templates, args):
    """The same load against a bare twisted.web resource that reads the body and answers."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", RAW_WEB, str(port)])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("raw twisted.web server did not start") from None
                time.sleep(0.05)
        cpu_before = cpu_seconds(server.pid)
        result = load(port, templates, args)
        result["cpu"] = cpu_seconds(server.pid) - cpu_before
        return result
    finally:
        server.kill()
        server.wait()


def get(port, path, key=None, timeout=5):
    request = urllib.request.Request(f"http://{HOST}:{port}{path}",
                                     headers={"Authorization": f"Bearer {key}"} if key else {})
    with urllib.request.urlopen(request, timeout=timeout) as r:
        return r.status, r.read()


def wait_drained(port, key, limit=60.0):
    """Seconds until the spool is empty (bounded); the last status."""
    start = time.monotonic()
    while True:
        status = json.loads(get(port, "/api/v1/status", key)[1])
        if status["ingest"]["spool_batches"] == 0 or time.monotonic() - start > limit:
            return time.monotonic() - start, status
        time.sleep(0.2)


def start_node_with_station(workdir, port, log):
    """Register station and user with the admin CLI, start twistd; (process, API key)."""
    config = write_config(workdir, port)
    admin(config, "add-station", STATION, "--password", PASSWORD)
    key = admin(config, "add-user", "bench", "--role", "admin")
    return start_node(workdir, config, port, log, limit=30), key


def row(name, rate, events_per_request, latency, ratios=""):
    p50, p99 = np.percentile(latency, [50, 99]) * 1000 if len(latency) else (float("nan"),) * 2
    return f"{name:38} {rate:9.0f} {rate * events_per_request:11.0f} {p50:8.2f} {p99:8.2f}  {ratios}".rstrip()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--procs", type=int, default=1, help="load generator processes")
    parser.add_argument("--only", choices=("hisparc", "native"), help="run only these load cases")
    args = parser.parse_args()
    args.procs = max(1, min(args.procs, args.clients))
    workdir, port = tempfile.mkdtemp(prefix="stationd-bench-"), free_port()
    log_path, node = os.path.join(workdir, "node.log"), None
    try:
        with open(log_path, "wb") as log:
            node, key = start_node_with_station(workdir, port, log)

        hisparc = [hisparc_template(t) for t in range(TEMPLATES)]
        native1 = [native_template(t, 1, key, 2) for t in range(TEMPLATES)]
        native100 = [native_template(t, BATCH, key, 3) for t in range(TEMPLATES)]
        bodies = [t.make(i).split(b"\r\n\r\n", 1)[1] for i, t in enumerate(hisparc)]
        json_bodies = [t.make(i).split(b"\r\n\r\n", 1)[1] for i, t in enumerate(native100)]
        data = urllib.parse.parse_qs(bodies[0].decode())["data"][0]  # byte for byte what requests sends:
        assert bodies[0] == urllib.parse.urlencode({"station_id": STATION, "password": PASSWORD, "checksum":
                                                    hashlib.md5(data.encode("latin-1")).hexdigest(), "data": data}).encode()
        print(f"payloads: hisparc {len(data) / BATCH:.0f} B/event pickled, {len(bodies[0]) / 1024:.0f} KiB a form body;"
              f" native {len(json_bodies[0]) / BATCH:.0f} B/event JSON")

        cases = [("hisparc /upload, 100-event batches", hisparc, BATCH),
                 ("native, 1-event batches", native1, 1), ("native, 100-event batches", native100, BATCH)]
        all_names = [name for name, _, _ in cases]
        if args.only:
            cases = [case for case in cases if case[0].startswith(args.only)]
        results, acked = {}, 0
        for name, templates, n in cases:
            cpu_before = cpu_seconds(node.pid)
            results[name] = r = load(port, templates, args)
            drained, status = wait_drained(port, key)
            r["cpu"] = cpu_seconds(node.pid) - cpu_before  # includes the writer's drain
            acked += r["acked"]
            print(f"{name}: answers {dict(r['answers'])}; spool empty {drained:.1f} s after the load")
        print(f"status ingest: {json.dumps(status['ingest'])}")
        print(f"events acknowledged {acked}, stored {status['ingest']['stored']}"
              f"{'' if status['ingest']['spool_batches'] == 0 else ' (spool not yet empty)'}")

        if "native, 1-event batches" in results:
            results[RAW] = raw_web_ceiling(native1, args)
            cases.append((RAW, None, 1))
        ceilings = [("ceiling: decode only, hisparc bodies", timed(bodies, 2, decode_hisparc)),
                    ("ceiling: decode only, native bodies", timed(json_bodies, 2, decode_native)),
                    ("ceiling: raw SQLite batched inserts", sqlite_inserts(os.path.join(workdir, "c.sqlite"), 2))]
        decode_h, decode_n, sqlite_rate = (BATCH * len(t) / t.sum() for _, t in ceilings)

        print(f"\ncores: {os.cpu_count()}; command: {sys.executable} {' '.join(sys.argv)}")
        print(f"{'case':38} {'req/s':>9} {'events/s':>11} {'p50 ms':>8} {'p99 ms':>8}  measured / ceiling (events/s)")
        decodes = dict(zip(all_names, (decode_h, None, decode_n)))
        rates = {name: len(results[name]["latency"]) / results[name]["elapsed"] for name, _, _ in cases}
        for name, _, n in cases:
            decode, rate = decodes.get(name), rates[name]
            ratios = f"{rate * n / decode:6.1%} of decode, " if decode else " " * 18
            if name == RAW:
                ratios = ""
            elif n == 1 and RAW in rates:
                ratios = f"{rate / rates[RAW]:6.1%} of raw twisted.web, "
            print(row(name, rate, n, results[name]["latency"],
                      ratios + ("" if name == RAW else f"{rate * n / sqlite_rate:6.1%} of SQLite")))
        for name, latency in ceilings:
            print(row(name, len(latency) / latency.sum(), BATCH, latency))
        print("CPU per request (all threads, drain included; steadier than req/s on a noisy machine): "
              + "; ".join(f"{name} {results[name]['cpu'] / len(results[name]['latency']) * 1000:.2f} ms"
                          for name, _, _ in cases))
        print("targets per core: hisparc >= 300 req/s of 100-event batches; "
              "native >= 7000 1-event req/s, >= 250000 events/s in 100-event batches")
    finally:
        stop_node(node, log_path)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Replication throughput: a station node drains a backlog of a million events upstream over mutual TLS.

Loads --events events (default 1,000,000) into the SQLite store of a station
node (name "station-7") with the node's own insert (``store_batches``, which
numbers them by ``seq``): the HiSPARC-like events of ``bench/query.py`` (50
stations over 10 days, five types, 235-370 bytes of JSON each, 0.05%
quarantined), and attaches --files contents (default 200) of 100 KiB to 1 MiB
of random bytes to events spread over the backlog (``FileStore.put`` +
``attach_file``, right after the batch of the event: attaching renumbers an
event, so it stays where it was in the backlog).  Certificates come from ``stationd-admin make-cert``: a CA,
a server certificate for "localhost" and a client certificate for the
station.

Then, for each --batch-size (default 5000, the node's default, then 500), it starts a fresh
upstream node (name "central"; a new SQLite file, or with --database-url
postgresql+...:// a fresh schema there; https with the CA-signed certificate
and ``client_ca`` = mutual TLS; one user of role importer) and the station
node with an ``[export:up]`` section pointing at it (``https://localhost``,
the CA, the client certificate and key, ``batch_size``, ``batch_bytes`` from
--batch-bytes, default the node's 1MiB), its export cursor
reset to 0, and samples the station's ``/api/v1/status`` (plain HTTP, from
this process) once a second until ``exports.up.cursor`` reaches the newest
``seq`` -- the cursor moves only after the upstream has acknowledged a batch
and received the files it asked for, and the backlog is numbered 1..N plus
one number an attached file (the event's old number is left unused), so it
is the count of events delivered, to within --files.  It prints the catch-up time (from
launching the station node), events/s overall, per second (median, min, max)
and by tenth of the backlog (the upstream's database grows meanwhile), and
the CPU seconds of each node (user + system, all threads).  Then it stops both nodes (SIGTERM) and checks
the upstream's database: exactly --events events, each id once, and the same
(id, station, type, time_ns, received_ns, digest, origin, quarantine) rows as
the station's (an order-independent fingerprint; the upstream recomputes the
digest from the data it received); every file record there, and every
content byte-identical (SHA-256 of the upstream's copy against the original).

--profile DIR records both nodes with py-spy (``record -f raw --nolineno
--threads``, --profile-seconds, default 10, from when the first case's
cursor passes half the backlog; that case's figures are then flagged as
profiled), writes the raw stacks to DIR and prints, as shares of the wall
time, how busy each thread was and the functions with the most samples, own
and (stationd's) inclusive.  Target: 20,000 events/s.

    venv/bin/python bench/export.py [--events 1000000] [--files 200] [--batch-size 5000 --batch-size 500]
                                    [--batch-bytes 1MiB] [--database-url postgresql+psycopg://...] [--profile DIR]
"""

import argparse
import collections
import hashlib
import http.client
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from stationd.filestore import FileStore
from stationd.store import Store
from stationd.store.events import store_batches
from stationd.store.files import attach_file

from nodes import BIN, HOST, admin, cpu_seconds, free_port, fresh_database, start_node, stop_node
from query import records  # the query benchmark's backlog

DOWN, UP, TARGET = "station-7", "central", "up"
TARGET_RATE = 20_000
KIB = 1024


# ---- the backlog

def load(store, count, file_count, files_dir, seed=5):
    """Store `count` events and attach `file_count` contents; (seconds, mean bytes of JSON data an event,
    {file id: (sha256, size)})."""
    start, sizes, stored, rng = time.monotonic(), [], 0, random.Random(seed)
    wanted = set(rng.sample(range(count), file_count))  # positions of the events that get a file
    content_store, attached = FileStore(files_dir), {}
    for batch in records(count):
        store.call(store_batches, batch, DOWN)
        chosen = []
        for record in batch:
            for event in record["events"]:
                if stored in wanted:
                    chosen.append((event["id"], record["received_ns"]))
                if stored % 50 == 0:
                    sizes.append(len(json.dumps(event["data"], separators=(",", ":"))))
                stored += 1
        for event_id, received_ns in chosen:  # now: attaching renumbers the event (the next seq)
            content = rng.randbytes(rng.randrange(100 * KIB, 1024 * KIB + 1))
            sha256, size = content_store.put(io.BytesIO(content))
            record = store.call(attach_file, event_id, name=f"frame-{event_id[:8]}.fits", mime_type="image/fits",
                                semantic_type="camera-frame", sha256=sha256, size=size,
                                now_ns=received_ns + 10**9, origin=DOWN, meta={"exposure_s": 2.5})
            attached[record["id"]] = (sha256, size)
        print(f"\rloaded {stored:,} events in {time.monotonic() - start:.0f} s", end="", file=sys.stderr)
    print(file=sys.stderr)
    return time.monotonic() - start, sum(sizes) / len(sizes), attached


def fingerprint(conn):
    """(events, distinct ids, newest seq, order-independent SHA-256 sum of the event rows)."""
    total, distinct, newest = conn.exec_driver_sql(
        "SELECT count(*), count(DISTINCT id), max(seq) FROM events").one()
    mask, acc = (1 << 128) - 1, 0
    rows = conn.exec_driver_sql("SELECT id, station, type, time_ns, received_ns, digest, origin, quarantined,"
                                " quarantine_reason FROM events")
    for row in rows:
        line = "|".join(map(str, (*row[:7], bool(row[7]), row[8]))).encode()
        acc = (acc + int.from_bytes(hashlib.sha256(line).digest()[:16], "big")) & mask
    return total, distinct, newest, f"{acc:032x}"


def file_rows(conn):
    return {row[0]: (row[1], row[2], row[3]) for row in conn.exec_driver_sql(
        "SELECT f.id, f.sha256, f.size, (SELECT count(*) FROM event_files l WHERE l.file_id = f.id) FROM files f")}


# ---- the nodes

def get(port, path):
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def make_certs(directory):
    """A CA, a server certificate for localhost and a client certificate for the station, in
    {directory}/ca, central and station (cert.pem, key.pem)."""
    for name, argv in (("ca", ["--ca", "--host", "bench-ca"]),
                       ("central", ["--issuer", f"{directory}/ca", "--host", "localhost"]),
                       ("station", ["--issuer", f"{directory}/ca", "--host", DOWN])):
        subprocess.run([os.path.join(BIN, "stationd-admin"), "make-cert", *argv, "--out", f"{directory}/{name}"],
                       check=True, capture_output=True, timeout=60)


def write_config(path, text_):
    with open(path, "w") as f:
        f.write(text_)
    return path


# ---- py-spy

def start_profiles(nodes, seconds, directory, label):
    """py-spy record of each (name, pid); the processes and their output files."""
    os.makedirs(directory, exist_ok=True)
    out = []
    for name, pid in nodes:
        path = os.path.join(directory, f"export-{label}-{name}.raw")
        out.append((name, path, subprocess.Popen(
            [os.path.join(BIN, "py-spy"), "record", "-p", str(pid), "-d", str(seconds), "-f", "raw",
             "--nolineno", "--threads", "-o", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
    return out


IDLE = ("Condition.wait (threading.py)", "EPollReactor.doPoll (twisted/internet/epollreactor.py)")
RATE = 100  # py-spy's default samples a second


def summarize_profile(name, path, seconds, top=14):
    """Busy share of wall time by thread, the busiest leaf functions and stationd's functions (inclusive)."""
    stacks = collections.Counter()
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if stack:
                stacks[tuple(stack.split(";"))] += int(count)
    wall = seconds * RATE
    threads, own, inclusive = collections.Counter(), collections.Counter(), collections.Counter()
    for frames, count in stacks.items():
        code = [f for f in frames if not f.startswith(("thread ", "process "))]
        if not code or code[-1] in IDLE:
            continue  # waiting for work
        thread = next((f.partition("): ")[2] for f in frames if f.startswith("thread ")), "?")
        threads[thread] += count
        own[code[-1]] += count
        for frame in set(code):
            if "stationd/" in frame:
                inclusive[frame] += count
    print(f"\npy-spy {name} ({path}), % of {seconds} s wall time a thread was busy:\n  "
          + ", ".join(f"{t} {n / wall:.0%}" for t, n in threads.most_common()))
    print(f"  {'own':>5}  {'function':64} {'incl.':>5}  stationd function")
    for (a, n), (b, m) in zip(own.most_common(top) + [("", 0)] * top, inclusive.most_common(top)):
        print(f"  {n / wall:5.1%}  {a[:64]:64} {m / wall:5.1%}  {b[:80]}")


# ---- one case

def run_case(args, workdir, down_url, attached, down_print, batch_size, profile_dir):
    """Drain the backlog to a fresh upstream with this batch size; a dict of figures."""
    case = os.path.join(workdir, f"up-{batch_size}")
    os.makedirs(os.path.join(case, "var"))
    up_http, up_https, down_http = free_port(), free_port(), free_port()
    up_url, drop = fresh_database(args.database_url, os.path.join(case, "var"))
    certs = os.path.join(workdir, "certs")
    up_config = write_config(os.path.join(case, "up.ini"), f"""[node]
name = {UP}
data_dir = {case}/var
[web]
http = tcp:{up_http}:interface={HOST}
https = tcp:{up_https}:interface={HOST}
tls_cert = {certs}/central/cert.pem
tls_key = {certs}/central/key.pem
client_ca = {certs}/ca/cert.pem
[database]
url = {up_url}
[log]
level = warn
""")
    key = admin(up_config, "add-user", DOWN, "--role", "importer")
    down_config = write_config(os.path.join(workdir, "down", f"down-{batch_size}.ini"), f"""[node]
name = {DOWN}
data_dir = {workdir}/down/var
[web]
http = tcp:{down_http}:interface={HOST}
https =
[database]
url = {down_url}
[log]
level = warn
[export:{TARGET}]
target_url = https://localhost:{up_https}
api_key = {key}
ca = {certs}/ca/cert.pem
client_cert = {certs}/station/cert.pem
client_key = {certs}/station/key.pem
batch_size = {batch_size}
batch_bytes = {args.batch_bytes}
interval = 1s
max_backoff = 5s
timeout = 120s
""")
    store = Store(down_url)
    store.call(lambda conn: conn.exec_driver_sql("DELETE FROM export_state"))
    store.close()

    up = down = None
    logs = {name: os.path.join(case, f"{name}.log") for name in ("up", "down")}
    figures = {"batch_size": batch_size, "profiled": False}
    try:
        with open(logs["up"], "wb") as log:
            up = start_node(case, up_config, up_http, log)
        time.sleep(1)  # the upstream's start-up work is over before its CPU time is counted
        up_cpu0 = cpu_seconds(up.pid)
        started = time.monotonic()
        with open(logs["down"], "wb") as log:
            down = start_node(os.path.join(workdir, "down"), down_config, down_http, log)
        figures["down_start"] = time.monotonic() - started
        samples, newest, profiles, state = [], down_print[2], None, {}
        next_sample = time.monotonic()
        while True:
            status, body = get(down_http, "/api/v1/status")
            now = time.monotonic()
            if status != 200:
                raise RuntimeError(f"/api/v1/status: {status} {body[:200]!r}")
            state = json.loads(body)["exports"][TARGET]
            samples.append((now - started, state["cursor"] or 0, cpu_seconds(up.pid) - up_cpu0,
                            cpu_seconds(down.pid)))
            if state["cursor"] == newest:
                break
            if state["failures"] >= 5:
                raise RuntimeError(f"export failing: {state}")
            if now - started > args.max_seconds:
                raise RuntimeError(f"not caught up after {args.max_seconds} s: {state}")
            if profile_dir and profiles is None and (state["cursor"] or 0) >= newest // 2:
                profiles = start_profiles([("upstream", up.pid), ("station", down.pid)], args.profile_seconds,
                                          profile_dir, f"{batch_size}")
                figures["profiled"] = True
            next_sample += 1.0
            time.sleep(max(0.0, next_sample - time.monotonic()))
        figures["catch_up"] = samples[-1][0]
        figures["up_cpu"], figures["down_cpu"] = samples[-1][2], samples[-1][3]
        figures["samples"] = samples
        figures["lag"] = state["lag_seconds"]
        if profiles:
            for _, _, spy in profiles:
                spy.wait()
            figures["profiles"] = [(name, path) for name, path, _ in profiles]
        stop_node(down, logs["down"])
        stop_node(up, logs["up"])
        down = up = None

        check = Store(up_url)
        try:
            up_print = check.call_read(fingerprint)
            up_files = check.call_read(file_rows)
        finally:
            check.close()
        up_content = FileStore(os.path.join(case, "var", "files"))
        identical = 0
        for file_id, (sha256, size) in attached.items():
            row = up_files.get(file_id)
            if row is None or row[:2] != (sha256, size) or row[2] != 1 or not up_content.has(sha256):
                continue
            digest = hashlib.sha256()
            with open(up_content.path(sha256), "rb") as f:
                while chunk := f.read(1024 * KIB):
                    digest.update(chunk)
            identical += digest.hexdigest() == sha256
        figures["check"] = {
            "events": up_print[0], "distinct": up_print[1], "rows_match": up_print[3] == down_print[3],
            "file_records": len(up_files), "files_identical": identical,
            "ok": (up_print[0] == up_print[1] == args.events and up_print[3] == down_print[3]
                   and len(up_files) == identical == len(attached)),
        }
        return figures
    finally:
        if down is not None:
            stop_node(down, logs["down"])
        if up is not None:
            stop_node(up, logs["up"])
        drop()


def rates(samples):
    """Per-second events/s between samples, the first and last second (start-up, tail) left out."""
    t, cursor = np.array([s[0] for s in samples]), np.array([s[1] for s in samples], dtype=float)
    moving = np.flatnonzero(cursor > 0)
    if len(moving) < 3:
        return np.diff(cursor) / np.diff(t) if len(t) > 1 else np.array([0.0])
    first = max(moving[0], 1)
    per = np.diff(cursor[first - 1:]) / np.diff(t[first - 1:])
    return per[1:-1] if len(per) > 2 else per


def tenths(samples, count):
    """Events/s over each tenth of the backlog (times interpolated between the samples)."""
    t, cursor = np.array([s[0] for s in samples]), np.array([s[1] for s in samples], dtype=float)
    start = np.flatnonzero(cursor == 0)[-1] if (cursor == 0).any() else 0  # from the last sample at 0
    t, cursor = t[start:], cursor[start:]
    marks = np.interp(np.linspace(0, count, 11), cursor, t)
    return count / 10 / np.diff(marks)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--batch-size", type=int, action="append",
                        help="the export target's batch_size (repeatable; default: 5000, then 500)")
    parser.add_argument("--batch-bytes", default="1MiB", help="the export target's batch_bytes (default 1MiB)")
    parser.add_argument("--database-url", help="postgresql+psycopg://...: the upstream in a fresh schema there")
    parser.add_argument("--max-seconds", type=float, default=1800, help="give up a case after this long")
    parser.add_argument("--profile", metavar="DIR", help="py-spy both nodes in the first case; raw stacks to DIR")
    parser.add_argument("--profile-seconds", type=int, default=10)
    parser.add_argument("--keep", action="store_true", help="keep the temp directory (logs, databases)")
    args = parser.parse_args()
    batch_sizes = args.batch_size or [5000, 500]
    workdir = tempfile.mkdtemp(prefix="stationd-bench-export-")
    results = []
    try:
        make_certs(os.path.join(workdir, "certs"))

        down_url = f"sqlite:///{workdir}/down/var/stationd.sqlite"
        down_files = os.path.join(workdir, "down", "var", "files")
        store = Store(down_url)
        store.migrate()
        seconds, size, attached = load(store, args.events, args.files, down_files)
        down_print = store.call_read(fingerprint)
        store.close()
        mib = sum(s for _, s in attached.values()) / KIB / KIB
        print(f"loaded {args.events:,} events in {seconds:.0f} s ({args.events / seconds:,.0f} events/s);"
              f" data {size:.0f} B of JSON an event on average; {len(attached)} files, {mib:.0f} MiB;"
              f" station database {os.path.getsize(down_url[10:]) / KIB / KIB:.0f} MiB")
        assert down_print[0] == down_print[1] == args.events == down_print[2] - len(attached), down_print

        for number, batch_size in enumerate(batch_sizes):
            figures = run_case(args, workdir, down_url, attached, down_print, batch_size,
                               args.profile if number == 0 else None)
            results.append(figures)
            per = rates(figures["samples"])
            print(f"batch_size {batch_size}: caught up in {figures['catch_up']:.1f} s,"
                  f" {args.events / figures['catch_up']:,.0f} events/s; per second median {np.median(per):,.0f}"
                  f"; check {'ok' if figures['check']['ok'] else 'FAILED'}", file=sys.stderr)

        print(f"\ncores: {os.cpu_count()}; upstream database: {'postgresql' if args.database_url else 'sqlite'};"
              f" batch_bytes {args.batch_bytes}; command: {sys.executable} {' '.join(sys.argv)}")
        print(f"{'batch':>6} {'catch-up s':>10} {'events/s':>9} {'per s p50':>9} {'min':>7} {'max':>7}"
              f" {'CPU s up':>8} {'station':>8} {'us/event up':>11} {'station':>7}  check")
        for f in results:
            per, check = rates(f["samples"]), f["check"]
            print(f"{f['batch_size']:6} {f['catch_up']:10.1f} {args.events / f['catch_up']:9,.0f}"
                  f" {np.median(per):9,.0f} {per.min():7,.0f} {per.max():7,.0f} {f['up_cpu']:8.1f}"
                  f" {f['down_cpu']:8.1f} {f['up_cpu'] / args.events * 1e6:11.1f}"
                  f" {f['down_cpu'] / args.events * 1e6:7.1f}  "
                  f"{check['events']:,} events ({check['distinct']:,} ids),"
                  f" rows {'match' if check['rows_match'] else 'DIFFER'},"
                  f" {check['files_identical']}/{len(attached)} files identical"
                  f"{' (profiled: py-spy slows both nodes)' if f['profiled'] else ''}")
        print("catch-up: from launching the station node to its export cursor at the newest event (start-up"
              f" {np.mean([f['down_start'] for f in results]):.1f} s included); CPU s: user + system of each node"
              " over that time (the station's start included)")
        print("events/s by tenth of the backlog (the upstream's database grows from empty to full):")
        for f in results:
            print(f"  batch_size {f['batch_size']:5}: " + " ".join(f"{r:7,.0f}" for r in tenths(f["samples"],
                                                                                          down_print[2])))
        best = max(args.events / f["catch_up"] for f in results)
        print(f"target: {TARGET_RATE:,} events/s: " + ("met" if best >= TARGET_RATE else
                                                         f"missed ({best:,.0f} at best)"))
        for f in results:
            for name, path in f.get("profiles", []):
                summarize_profile(f"{name}, batch_size {f['batch_size']}", path, args.profile_seconds)
        if not all(f["check"]["ok"] for f in results):
            sys.exit("verification FAILED")
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

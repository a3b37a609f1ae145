"""Crash test: every acknowledged upload (HiSPARC and native) survives SIGKILL, stored exactly once.

Uploading clients (threads, like stations) send distinct batches, half of
them HiSPARC ``/upload`` and half native ingest (an Idempotency-Key per
batch), each batch again and again until the node acknowledges it (``100``,
or 200 with every event counted), as stations do; meanwhile the node is
killed with SIGKILL at random moments and restarted.  At the end the node
drains its spool and the store must hold every acknowledged event exactly
once, and nothing else (a client stops only between batches, so every batch
it sent was acknowledged in the end).  On SQLite (the default) or on
PostgreSQL (``--postgresql``: a schema of its own on
STATIOND_TEST_DATABASE_URL, dropped afterwards).

A SIGKILL kills the process, not the machine: the kernel's page cache
survives it, so this test proves the spool/writer/restart logic, not the
fsyncs (tests/test_writer.py checks those by failing fsync itself).

    venv/bin/python tests/crash_ingest.py --kills 200      # the long form, SQLite
    STATIOND_TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \
        venv/bin/python tests/crash_ingest.py --kills 200 --postgresql
    (tests/test_crash.py runs the short form, 20 kills a backend, in CI;
    STATIOND_CRASH_KILLS=60 makes it longer)
"""

import argparse
import datetime
import hashlib
import http.client
import json
import os
import pickle
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

BIN = os.path.dirname(sys.executable)
EPOCH_2024 = datetime.datetime(2024, 1, 1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    def __init__(self, workdir, database_url):
        self.workdir = workdir
        self.port = free_port()
        self.config = os.path.join(workdir, "crash.ini")
        with open(self.config, "w") as f:
            f.write(f"[node]\ndata_dir = {workdir}/var\n[database]\nurl = {database_url}\n"
                    f"[web]\nhttp = tcp:{self.port}:interface=127.0.0.1\nhttps =\n[log]\nlevel = warn\n")
        subprocess.run([os.path.join(BIN, "stationd-admin"), "add-station", "501", "--password", "pw",
                        "--config", self.config], check=True, capture_output=True)
        out = subprocess.run([os.path.join(BIN, "stationd-admin"), "add-user", "box", "--role", "station",
                              "--station", "501", "--config", self.config], check=True, capture_output=True, text=True)
        self.key = out.stdout.strip().splitlines()[-1]
        self.proc = None
        self.log = open(os.path.join(workdir, "node.log"), "ab")

    def start(self):
        self.proc = subprocess.Popen(
            [os.path.join(BIN, "twistd"), "--pidfile=", "-n", "stationd", "--config", self.config],
            cwd=self.workdir, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited {self.proc.returncode}; see {self.workdir}/node.log")
            try:
                if self.get("/heartbeat") == b"OK":
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("node did not start")

    def get(self, path):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", path)
            return conn.getresponse().read()
        finally:
            conn.close()

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


class Station(threading.Thread):
    """Uploads batches of distinct events, HiSPARC /upload or native JSON ingest, each until it is
    acknowledged (100, or 200 counting every event; native: the same Idempotency-Key on every try),
    and stops only between batches: ``acknowledged`` holds the time_ns of every event it sent."""

    def __init__(self, node, number, stop, batch_size=10, native=False):
        super().__init__(daemon=True)
        self.node, self.number, self.stop_flag, self.batch_size = node, number, stop, batch_size
        self.native = native
        self.acknowledged = []  # time_ns of every acknowledged event
        self.sequence = 0
        self.batches = self.retries = self.replayed = 0

    def batch(self):
        events, times = [], []
        for _ in range(self.batch_size):
            self.sequence += 1
            offset = self.number * 10**9 + self.sequence  # seconds: distinct per station and event
            when = EPOCH_2024 + datetime.timedelta(seconds=offset % 10**8)
            ns = (self.number * 7919 + self.sequence) % 10**9
            events.append({"header": {"eventtype_uploadcode": "CIC", "datetime": when, "nanoseconds": ns},
                           "datalist": [{"data_uploadcode": "N", "data": self.sequence}]})
            times.append(int((when - datetime.datetime(1970, 1, 1)).total_seconds()) * 10**9 + ns)
        if self.native:
            body = json.dumps({"events": [{"type": "CIC", "time_ns": t, "data": {"N": e["datalist"][0]["data"]}}
                                          for t, e in zip(times, events)]}).encode()
            return body, times
        text = pickle.dumps(events, protocol=2).decode("latin-1")
        body = urllib.parse.urlencode({
            "station_id": "501", "password": "pw", "data": text,
            "checksum": hashlib.md5(text.encode("latin-1")).hexdigest()}).encode()
        return body, times

    def send(self, body, count, key):
        """True once the node has acknowledged the batch."""
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.node.port, timeout=10)
            if self.native:
                conn.request("POST", "/api/v1/stations/501/events", body, {
                    "Content-Type": "application/json", "Authorization": f"Bearer {self.node.key}",
                    "Idempotency-Key": key})
            else:
                conn.request("POST", "/upload", body, {"Content-Type": "application/x-www-form-urlencoded"})
            response = conn.getresponse()
            answer, status = response.read(), response.status
            replayed = response.getheader("Idempotent-Replayed") == "true"
            conn.close()
        except OSError:
            return False  # the node is down: not acknowledged (it may have been stored)
        if not self.native:
            return answer == b"100"
        if status != 200:
            return False
        counts = json.loads(answer)
        self.replayed += replayed
        assert counts["accepted"] + counts["duplicates"] + counts["quarantined"] == count, counts
        return True

    def run(self):
        while not self.stop_flag.is_set():
            body, times = self.batch()
            self.batches += 1
            key = f"crash-{self.number}-{self.batches}"
            while not self.send(body, len(times), key):  # sent again, stop or not
                self.retries += 1
                time.sleep(0.01)
            self.acknowledged.extend(times)


def run(kills, stations=4, workdir=None, seed=None, database_url=None):
    """Returns {"events", "kills", "retries", "replayed"}: the acknowledged events, the SIGKILLs,
    the batches sent again, the native ones answered from their Idempotency-Key; raises
    AssertionError on any loss or duplicate.  ``database_url``: SQLite in the workdir by default."""
    import tempfile

    from sqlalchemy import create_engine, text

    workdir = workdir or tempfile.mkdtemp(prefix="stationd-crash-")
    database_url = database_url or f"sqlite:///{workdir}/var/stationd.sqlite"
    rng = random.Random(seed)
    node = Node(workdir, database_url)
    node.start()
    stop = threading.Event()
    clients = [Station(node, n + 1, stop, native=n % 2 == 1) for n in range(stations)]  # half native
    try:
        for client in clients:
            client.start()
        for _ in range(kills):
            time.sleep(rng.uniform(0.05, 0.4))
            node.kill()
            node.start()
        stop.set()
        for client in clients:
            client.join(timeout=60)
            assert not client.is_alive(), "a client's batch was not acknowledged after the last start"
        deadline = time.monotonic() + 60
        while b'"spool_batches":0' not in node.get("/api/v1/status"):
            assert time.monotonic() < deadline, "spool did not drain"
            time.sleep(0.05)
        assert node.stop() == 0
    finally:
        stop.set()
        if node.proc.poll() is None:
            node.kill()

    acknowledged = [t for client in clients for t in client.acknowledged]
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = dict(conn.execute(text("SELECT time_ns, count(*) FROM events WHERE station = '501' "
                                          "GROUP BY time_ns")).all())
    finally:
        engine.dispose()
    missing = [t for t in acknowledged if t not in rows]
    doubled = [t for t, n in rows.items() if n != 1]
    unsent = set(rows) - set(acknowledged)
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {missing[:3]}"
    assert not doubled, f"{len(doubled)} events stored more than once"
    assert not unsent, f"{len(unsent)} events stored that no client sent"
    assert len(set(acknowledged)) == len(acknowledged)
    return {"events": len(acknowledged), "kills": kills, "retries": sum(c.retries for c in clients),
            "replayed": sum(c.replayed for c in clients)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--stations", type=int, default=4)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--postgresql", action="store_true",
                        help="store on PostgreSQL: a schema of its own on STATIOND_TEST_DATABASE_URL")
    args = parser.parse_args()
    started = time.monotonic()
    if args.postgresql:
        import conftest  # (tests/, beside this file)

        if not conftest.PG_URL:
            parser.error("--postgresql needs STATIOND_TEST_DATABASE_URL")
        with conftest.pg_schema() as (url, _, _):
            result = run(args.kills, args.stations, seed=args.seed, database_url=url)
    else:
        result = run(args.kills, args.stations, seed=args.seed)
    print(f"{'PostgreSQL' if args.postgresql else 'SQLite'}: {result['kills']} SIGKILLs, {result['events']} "
          f"acknowledged events, all stored exactly once; {result['retries']} batches sent again, "
          f"{result['replayed']} native ones answered from their Idempotency-Key "
          f"({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()

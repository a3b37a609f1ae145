"""Crash test: every acknowledged upload (HiSPARC and native) survives SIGKILL, stored exactly once.

Uploading clients (threads, like stations) send distinct batches and record
each one the node acknowledges with 100; meanwhile the node is killed with
SIGKILL at random moments and restarted.  At the end the node drains its
spool and the store must hold every acknowledged event exactly once.

A SIGKILL kills the process, not the machine: the kernel's page cache
survives it, so this test proves the spool/writer/restart logic, not the
fsyncs (tests/test_writer.py checks those by failing fsync itself).

    venv/bin/python tests/crash_ingest.py --kills 200      # the long form
    (tests/test_crash.py runs the short form, 20 kills, in CI)
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
import sqlite3
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
    def __init__(self, workdir):
        self.workdir = workdir
        self.port = free_port()
        self.config = os.path.join(workdir, "crash.ini")
        with open(self.config, "w") as f:
            f.write(f"[node]\ndata_dir = {workdir}/var\n[web]\nhttp = tcp:{self.port}:interface=127.0.0.1\n"
                    "https =\n[log]\nlevel = warn\n")
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
    """Uploads batches of distinct events, HiSPARC /upload or native JSON ingest; records the ones
    acknowledged (100, or 200)."""

    def __init__(self, node, number, stop, batch_size=10, native=False):
        super().__init__(daemon=True)
        self.node, self.number, self.stop_flag, self.batch_size = node, number, stop, batch_size
        self.native = native
        self.acknowledged = []  # time_ns of every acknowledged event
        self.sequence = 0

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

    def run(self):
        while not self.stop_flag.is_set():
            body, times = self.batch()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.node.port, timeout=10)
                if self.native:
                    conn.request("POST", "/api/v1/stations/501/events", body, {
                        "Content-Type": "application/json", "Authorization": f"Bearer {self.node.key}"})
                else:
                    conn.request("POST", "/upload", body, {"Content-Type": "application/x-www-form-urlencoded"})
                response = conn.getresponse()
                answer, status = response.read(), response.status
                conn.close()
            except OSError:
                time.sleep(0.01)  # the node is down: this batch was never acknowledged
                continue
            if answer == b"100" or (self.native and status == 200 and
                                    json.loads(answer)["accepted"] == len(times)):
                self.acknowledged.extend(times)


def run(kills, stations=4, workdir=None, seed=None):
    """Returns (acknowledged events, kills); raises AssertionError on any loss or duplicate."""
    import tempfile

    workdir = workdir or tempfile.mkdtemp(prefix="stationd-crash-")
    rng = random.Random(seed)
    node = Node(workdir)
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
            client.join(timeout=30)
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
    db = sqlite3.connect(os.path.join(workdir, "var", "stationd.sqlite"))
    rows = dict(db.execute("SELECT time_ns, count(*) FROM events WHERE station = '501' GROUP BY time_ns"))
    db.close()
    missing = [t for t in acknowledged if t not in rows]
    doubled = [t for t, n in rows.items() if n != 1]
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {missing[:3]}"
    assert not doubled, f"{len(doubled)} events stored more than once"
    assert len(set(acknowledged)) == len(acknowledged)
    return len(acknowledged), kills


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--stations", type=int, default=4)
    parser.add_argument("--seed", type=int)
    args = parser.parse_args()
    started = time.monotonic()
    events, kills = run(args.kills, args.stations, seed=args.seed)
    print(f"{kills} SIGKILLs, {events} acknowledged events, all stored exactly once "
          f"({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()

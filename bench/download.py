"""Download of a large file from a node: throughput, and the node's memory meanwhile.

Makes a --size MiB file (default 1024: 1 GiB of random bytes, a fresh random
MiB at a time), stores it in a temp data_dir's content store
(``FileStore.put``) and attaches it to an event with ``attach_file``, as the
admin route does; then starts `twistd -n stationd` on that data_dir (SQLite,
plain HTTP, no TLS) and, from one http.client connection in this process:

- downloads ``GET /api/v1/files/{id}/content`` whole, reading 1 MiB chunks,
  hashing them with SHA-256 and discarding them;
- downloads it whole again without hashing (the client's SHA-256 shares the
  machine's two cores with the node);
- downloads the last 100 MiB with ``Range: bytes=-104857600`` (206, hashed
  and checked against the same bytes of the file), then again as a slow
  client that sleeps 20 ms after each MiB (the node must not read ahead of
  what the client takes).

While each runs, a thread samples the node's RSS (VmRSS of /proc/PID/status)
every 100 ms.  Prints the RSS before, the largest seen during and the RSS
after each download, its throughput (MB/s, 10^6 bytes), the node's CPU time
and whether the SHA-256 of what was received matches.  The file is read by
the node from the page cache (it was just written; nothing drops the cache).

    venv/bin/python bench/download.py [--size 1024]
"""

import argparse
import hashlib
import http.client
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid

import numpy as np

from stationd.filestore import FileStore
from stationd.store import Store
from stationd.store.events import digest, store_batches
from stationd.store.files import attach_file

from nodes import HOST, cpu_seconds, free_port, rss_mib, start_node, stop_node, write_config

ORIGIN, MIB = "stationd", 1024 * 1024
TAIL = 100 * MIB


class RandomContent:
    """A file-like object: `size` random bytes, a fresh random MiB at a time."""

    def __init__(self, size, seed=1):
        self.left, self.rng, self.buffer = size, np.random.default_rng(seed), b""

    def read(self, n):
        while len(self.buffer) < n and self.left > 0:
            block = self.rng.bytes(min(MIB, self.left))
            self.left -= len(block)
            self.buffer += block
        chunk, self.buffer = self.buffer[:n], self.buffer[n:]
        return chunk


def store_file(workdir, size):
    """An event with a `size`-byte file in a fresh data_dir; (file id, sha256, path, seconds)."""
    start = time.monotonic()
    store = Store(f"sqlite:///{workdir}/var/stationd.sqlite")
    store.migrate()
    data = {"CAMERA": "allsky-1", "EXPOSURE_S": 30, "GAIN": 8}
    event_id = str(uuid.uuid4())
    store.call(store_batches, [{"station": "501", "received_ns": time.time_ns(), "events": [
        {"id": event_id, "type": "IMG", "time_ns": 1714564800 * 10**9, "data": data,
         "digest": digest(data), "quarantine": None}]}], ORIGIN)
    files = FileStore(os.path.join(workdir, "var", "files"))
    sha256, stored = files.put(RandomContent(size))
    record = store.call(attach_file, event_id, name="allsky-2024-05-01T12-00-00.raw",
                        mime_type="application/octet-stream", sha256=sha256, size=stored,
                        now_ns=time.time_ns(), origin=ORIGIN)
    store.close()
    return record["id"], sha256, files.path(sha256), time.monotonic() - start


class RSSSampler(threading.Thread):
    """The node's RSS every `interval` seconds until stopped."""

    def __init__(self, pid, interval=0.1):
        super().__init__(daemon=True)
        self.pid, self.interval, self.samples, self.done = pid, interval, [], threading.Event()

    def run(self):
        while not self.done.is_set():
            self.samples.append(rss_mib(self.pid))
            self.done.wait(self.interval)

    def stop(self):
        self.done.set()
        self.join()
        return self.samples


def download(conn, path, node_pid, headers=None, hash_it=True, pause=0.0):
    """GET path, reading 1 MiB at a time (sleeping `pause` s after each); a dict of what was measured."""
    before, cpu = rss_mib(node_pid), cpu_seconds(node_pid)
    sampler = RSSSampler(node_pid)
    sampler.start()
    buffer = bytearray(MIB)
    view, sha256, received = memoryview(buffer), hashlib.sha256(), 0
    start = time.perf_counter()
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    first_byte = time.perf_counter() - start
    while n := response.readinto(buffer):
        if hash_it:
            sha256.update(view[:n])
        received += n
        if pause:
            time.sleep(pause)
    elapsed = time.perf_counter() - start
    samples = sampler.stop()
    time.sleep(1)
    return {"status": response.status, "headers": dict(response.getheaders()), "bytes": received,
            "seconds": elapsed, "first_byte": first_byte, "sha256": sha256.hexdigest() if hash_it else None,
            "rss_before": before, "rss_max": max(samples + [before]), "rss_after": rss_mib(node_pid),
            "samples": len(samples), "cpu": cpu_seconds(node_pid) - cpu}


def tail_sha256(path, length):
    sha256 = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(-length, os.SEEK_END)
        while chunk := f.read(MIB):
            sha256.update(chunk)
    return sha256.hexdigest()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="MiB")
    args = parser.parse_args()
    size = args.size * MIB
    workdir = tempfile.mkdtemp(prefix="stationd-bench-")
    os.makedirs(os.path.join(workdir, "var"))
    log_path, node = os.path.join(workdir, "node.log"), None
    try:
        file_id, sha256, path, seconds = store_file(workdir, size)
        print(f"stored a {size / MIB:,.0f} MiB file in {seconds:.1f} s: file {file_id}, sha256 {sha256}")
        tail = min(TAIL, size)
        expected_tail = tail_sha256(path, tail)
        with open(log_path, "wb") as log:
            port = free_port()
            node = start_node(workdir, write_config(workdir, port), port, log)
        conn = http.client.HTTPConnection(HOST, port, timeout=60)
        conn.request("GET", f"/api/v1/files/{file_id}")  # the record: a first request, then RSS settles
        conn.getresponse().read()
        time.sleep(1)
        content = f"/api/v1/files/{file_id}/content"
        runs = [("whole file, hashed", download(conn, content, node.pid), size, sha256, 200),
                ("whole file, not hashed", download(conn, content, node.pid, hash_it=False), size, None, 200),
                (f"last {tail / MIB:.0f} MiB (Range: bytes=-{tail}), hashed",
                 download(conn, content, node.pid, headers={"Range": f"bytes=-{tail}"}), tail, expected_tail, 206),
                ("the same, a slow client (1 MiB every 20 ms)",
                 download(conn, content, node.pid, headers={"Range": f"bytes=-{tail}"}, pause=0.02), tail,
                 expected_tail, 206)]

        print(f"\ncores: {os.cpu_count()}; command: {sys.executable} {' '.join(sys.argv)}")
        print(f"{'download':48} {'status':>6} {'MiB':>6} {'s':>6} {'MB/s':>7} {'RSS before':>11} {'max during':>11}"
              f" {'after':>8} {'samples':>7} {'node CPU s':>10}  sha256")
        ok = True
        for name, r, length, expected, status in runs:
            good = r["status"] == status and r["bytes"] == length == int(r["headers"]["Content-Length"])
            if expected is not None:
                good = good and r["sha256"] == expected
            ok = ok and good
            check = ("matches" if r["sha256"] == expected else "DIFFERS") if expected else "-"
            print(f"{name:48} {r['status']:>6} {r['bytes'] / MIB:6.0f} {r['seconds']:6.2f}"
                  f" {r['bytes'] / r['seconds'] / 1e6:7.0f} {r['rss_before']:7.1f} MiB {r['rss_max']:7.1f} MiB"
                  f" {r['rss_after']:4.1f} MiB {r['samples']:7} {r['cpu']:10.2f}  {check}"
                  f"{'' if good else '  ** WRONG ANSWER'}")
        ranged = runs[2][1]["headers"]
        print(f"range answer: Content-Range {ranged.get('Content-Range')}, ETag {ranged.get('ETag')};"
              f" RSS sampled every 100 ms during each download, 1 s after it for \"after\"")
        print("every answer complete and as expected" if ok else "** some answer was not as expected")
    finally:
        stop_node(node, log_path)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

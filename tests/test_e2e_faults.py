"""Storage faults under a real daemon: a full disk, a read-only spool, a damaged spool segment.

The node's data_dir (or its database file, or its spool) is put on a small
tmpfs the test mounts, so these need root (CI runs as root); elsewhere they
skip, saying why.  Each uploads through both protocols, records what the
node acknowledged (HiSPARC ``100``, native 200) and checks at the end that
every acknowledged event is stored exactly once.
"""

import contextlib
import datetime
import hashlib
import http.client
import json
import os
import pickle
import sqlite3
import subprocess
import time
import urllib.parse

import pytest

from stationd.writer import decode_segment
from test_e2e import Node, admin_cli, no_node_left_running  # noqa: F401 (an autouse fixture)

pytestmark = pytest.mark.e2e  # real twistd processes: pytest -m 'not e2e' leaves them out

START = datetime.datetime(2024, 5, 1)


@contextlib.contextmanager
def tmpfs(directory, size):
    """``directory`` on a tmpfs of ``size`` (mount's size=), unmounted afterwards; skips the test
    where it may not mount."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    directory.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(directory)],
                         capture_output=True, text=True)
    if out.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {out.stderr.strip()}")
    try:
        yield directory
    finally:
        if subprocess.run(["umount", str(directory)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(directory)], capture_output=True)


def remount(directory, mode):
    """``mount -o remount,<mode>``; a drain reading a segment at that moment makes it busy: again."""
    for _ in range(50):
        out = subprocess.run(["mount", "-o", f"remount,{mode}", str(directory)], capture_output=True, text=True)
        if out.returncode == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"remount,{mode} {directory}: {out.stderr}")


def fill(directory):
    """Fill the file system of ``directory`` to the last byte; the filler's path."""
    path = directory / "filler"
    with open(path, "wb", buffering=0) as f:
        for chunk in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError:
                pass
    return path


def ns(n):
    """time_ns of event ``n`` (both protocols): 2024-05-01 plus n seconds."""
    return int((START - datetime.datetime(1970, 1, 1)).total_seconds() + n) * 10**9


class Uploads:
    """Batches of 10 events to one node, native (with an Idempotency-Key) and HiSPARC; ``acked``
    holds the time_ns of every event the node acknowledged."""

    def __init__(self, node, key, pad=0):
        self.node, self.key, self.pad = node, key, pad
        self.acked, self.next = [], 0

    def batch(self):
        self.next += 10
        return list(range(self.next - 10, self.next))

    def native(self, numbers):
        """(status, Retry-After) of one try; acknowledged events are recorded."""
        body = json.dumps({"events": [{"type": "WTR", "time": ns(n) // 10**9, "data": {"n": n, "pad": "x" * self.pad}}
                                      for n in numbers]}).encode()
        status, headers, answer = self._post("/api/v1/stations/501/events", body, {
            "Content-Type": "application/json", "Authorization": f"Bearer {self.key}",
            "Idempotency-Key": f"batch-{numbers[0]}"})
        if status == 200:
            counts = json.loads(answer)
            assert counts["accepted"] + counts["duplicates"] == len(numbers), counts
            self.acked += [ns(n) for n in numbers]
        else:
            assert status == 503, (status, answer)  # refused, to be sent again: never a 500
        return status, headers.get("retry-after")

    def hisparc(self, numbers):
        """(answer, Retry-After) of one try; acknowledged events are recorded."""
        events = [{"header": {"eventtype_uploadcode": "CIC", "datetime": START + datetime.timedelta(seconds=n),
                              "nanoseconds": 0},
                   "datalist": [{"data_uploadcode": "N", "data": n},
                                {"data_uploadcode": "PAD", "data": "x" * self.pad}]}
                  for n in numbers]
        text = pickle.dumps(events, protocol=2).decode("latin-1")
        body = urllib.parse.urlencode({"station_id": "501", "password": "pw", "data": text,
                                       "checksum": hashlib.md5(text.encode("latin-1")).hexdigest()}).encode()
        status, headers, answer = self._post("/upload", body, {"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 200, status
        if answer == b"100":
            self.acked += [ns(n) for n in numbers]
        else:
            assert answer == b"400", answer  # the code stations retry on
        return answer.decode(), headers.get("retry-after")

    def _post(self, path, body, headers):
        conn = http.client.HTTPConnection("127.0.0.1", self.node.http, timeout=30)
        try:
            conn.request("POST", path, body, headers)
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def until_acknowledged(self, send, numbers, timeout=60):
        """Send ``numbers`` again until the node acknowledges them, as a station does."""
        deadline = time.monotonic() + timeout
        while send(numbers)[0] not in (200, "100"):
            assert time.monotonic() < deadline, f"batch {numbers[0]} not acknowledged within {timeout} s"
            time.sleep(0.2)

    def until_refused(self, send, limit=400):
        """Send new batches until the node refuses one: (that batch, the answer)."""
        for _ in range(limit):
            numbers = self.batch()
            answer = send(numbers)
            if answer[0] not in (200, "100"):
                return numbers, answer
        raise AssertionError(f"{limit} batches acknowledged and none refused")


def status(node):
    conn = http.client.HTTPConnection("127.0.0.1", node.http, timeout=30)
    try:
        conn.request("GET", "/api/v1/status")
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def heartbeat(node):
    conn = http.client.HTTPConnection("127.0.0.1", node.http, timeout=30)
    try:
        conn.request("GET", "/heartbeat")
        return conn.getresponse().read()
    finally:
        conn.close()


def stored(database):
    """{time_ns: how many rows} of station 501's events."""
    db = sqlite3.connect(database)
    try:
        return dict(db.execute("SELECT time_ns, count(*) FROM events WHERE station = '501' GROUP BY time_ns"))
    finally:
        db.close()


def make_node(tmp_path, body=""):
    node = Node(tmp_path, "[log]\nlevel = info\n" + body)
    admin_cli(node.config, "add-station", "501", "--password", "pw")
    key = admin_cli(node.config, "add-user", "box501", "--role", "station", "--station", "501").split()[-1]
    return node, key


def until(predicate, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_a_full_disk_refuses_uploads_with_a_retry_code_and_recovers_by_itself(tmp_path):
    """data_dir (database, spool and all) on an 8 MiB tmpfs, filled to the last byte."""
    with tmpfs(tmp_path / "var", "8m") as var:
        node, key = make_node(tmp_path)
        node.start()
        try:
            uploads = Uploads(node, key, pad=2000)
            for _ in range(3):
                uploads.until_acknowledged(uploads.native, uploads.batch(), timeout=10)
                uploads.until_acknowledged(uploads.hisparc, uploads.batch(), timeout=10)
            filler = fill(var)
            # What SQLite's WAL has room for still commits; then the database and the spool are full.
            refused_native, (code, retry_after) = uploads.until_refused(uploads.native)
            assert (code, retry_after) == (503, "5")
            refused_hisparc, (answer, retry_after) = uploads.until_refused(uploads.hisparc)
            assert (answer, retry_after) == ("400", "30")
            for _ in range(3):  # refused again and again, the node serving on
                assert uploads.native(refused_native)[0] == 503 and uploads.hisparc(refused_hisparc)[0] == "400"
                assert heartbeat(node) == b"OK"
            filler.unlink()  # space again: the same batches are taken, no restart
            uploads.until_acknowledged(uploads.native, refused_native)
            uploads.until_acknowledged(uploads.hisparc, refused_hisparc)
            uploads.until_acknowledged(uploads.native, uploads.batch(), timeout=10)
            uploads.until_acknowledged(uploads.hisparc, uploads.batch(), timeout=10)
            until(lambda: status(node)["ingest"]["spool_batches"] == 0, "spool did not drain")
        finally:
            assert node.stop() == 0
        rows = stored(var / "stationd.sqlite")
        assert sorted(rows) == sorted(uploads.acked) and set(rows.values()) == {1}  # each acknowledged event, once


def test_a_read_only_spool_refuses_while_the_database_is_full_and_recovers_after_remount_rw(tmp_path):
    """The database file on one tmpfs (filled: the spool takes the batches), the spool on another,
    remounted read-only under the running node and then read-write again.  (The database's own
    file system cannot be remounted read-only under a node: SQLite holds the file open for writing,
    and the kernel answers "busy".)"""
    with tmpfs(tmp_path / "db", "8m") as db, tmpfs(tmp_path / "spool", "8m") as spool:
        node, key = make_node(tmp_path, f"[database]\nurl = sqlite:///{db}/stationd.sqlite\n"
                                        f"[writer]\nspool_dir = {spool}\n")
        node.start()
        try:
            uploads = Uploads(node, key, pad=2000)
            uploads.until_acknowledged(uploads.native, uploads.batch(), timeout=10)
            filler = fill(db)
            for _ in range(400):  # until the database refuses and the spool takes them
                uploads.until_acknowledged(uploads.native, uploads.batch(), timeout=10)
                if status(node)["ingest"]["spool_batches"]:
                    break
            else:
                raise AssertionError("the database was filled and never refused a batch")
            uploads.until_acknowledged(uploads.hisparc, uploads.batch(), timeout=10)  # spooled too
            remount(spool, "ro")
            try:
                numbers = uploads.batch()
                assert uploads.native(numbers) == (503, "5")
                hisparc_numbers = uploads.batch()
                assert uploads.hisparc(hisparc_numbers) == ("400", "30")
                assert heartbeat(node) == b"OK" and node.proc.poll() is None
            finally:
                remount(spool, "rw")
            uploads.until_acknowledged(uploads.native, numbers)  # into the spool again
            uploads.until_acknowledged(uploads.hisparc, hisparc_numbers)
            filler.unlink()  # and the writer moves the spool into the database
            until(lambda: status(node)["ingest"]["spool_batches"] == 0, "spool did not drain")
        finally:
            assert node.stop() == 0
        rows = stored(db / "stationd.sqlite")
        assert sorted(rows) == sorted(uploads.acked) and set(rows.values()) == {1}
        assert not (spool / "damaged").exists() and not (spool / "rejected").exists()


def test_a_damaged_spool_segment_is_set_aside_and_the_rest_stored(tmp_path):
    """Segments a killed node left in its spool (written while its database was full), one of them
    damaged before the next start: that one is moved to spool/damaged/ as it was, byte for byte,
    every other acknowledged event stored once."""
    with tmpfs(tmp_path / "db", "8m") as db:
        spool = tmp_path / "spool"
        node, key = make_node(tmp_path, f"[database]\nurl = sqlite:///{db}/stationd.sqlite\n"
                                        f"[writer]\nspool_dir = {spool}\n")
        node.start()
        try:
            uploads = Uploads(node, key, pad=200)
            uploads.until_acknowledged(uploads.native, uploads.batch(), timeout=10)
            filler = fill(db)
            for _ in range(400):
                uploads.until_acknowledged(uploads.native, uploads.batch(), timeout=10)
                uploads.until_acknowledged(uploads.hisparc, uploads.batch(), timeout=10)
                if status(node)["ingest"]["spool_batches"] >= 4:
                    break
            else:
                raise AssertionError("the database was filled and never refused a batch")
        finally:
            node.proc.kill()  # the segments stay
            node.proc.wait()
        segments = sorted(p for p in spool.iterdir() if p.suffix == ".seg")
        assert len(segments) >= 2
        victim = segments[len(segments) // 2]
        lost = [event["time_ns"] for record in decode_segment(victim.read_bytes()) for event in record["events"]]
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0xFF  # a flipped byte: its frame's CRC no longer matches
        victim.write_bytes(bytes(data))
        filler.unlink()
        node.start()
        try:
            until(lambda: status(node)["ingest"]["spool_batches"] == 0, "spool did not drain")
            uploads.until_acknowledged(uploads.native, uploads.batch(), timeout=10)  # and it takes uploads on
            uploads.until_acknowledged(uploads.hisparc, uploads.batch(), timeout=10)
        finally:
            assert node.stop() == 0
        assert [p.name for p in (spool / "damaged").iterdir()] == [victim.name]
        assert (spool / "damaged" / victim.name).read_bytes() == bytes(data)  # kept for an operator, as it was
        assert f"Spool segment {victim} set aside in damaged/" in node.log.read_text()
        rows = stored(db / "stationd.sqlite")
        assert lost and not set(lost) & set(rows)
        assert sorted(rows) == sorted(set(uploads.acked) - set(lost)) and set(rows.values()) == {1}


def test_a_read_only_data_dir_stops_the_start_with_one_line_and_the_node_starts_after_remount_rw(tmp_path):
    """A station whose card went read-only and whose node then restarted: it does not half-start."""
    with tmpfs(tmp_path / "var", "8m") as var:
        node, key = make_node(tmp_path)
        node.start()
        uploads = Uploads(node, key)
        uploads.until_acknowledged(uploads.native, uploads.batch(), timeout=10)
        assert node.stop() == 0
        remount(var, "ro")
        try:
            with pytest.raises(AssertionError, match="node exited 1"):
                node.start()
            log = node.log.read_text()
            assert "stationd: cannot start: cannot use database sqlite:///" in log and "Traceback" not in log
        finally:
            remount(var, "rw")
        node.start()
        try:
            uploads.until_acknowledged(uploads.hisparc, uploads.batch(), timeout=10)
        finally:
            assert node.stop() == 0
        rows = stored(var / "stationd.sqlite")
        assert sorted(rows) == sorted(uploads.acked) and set(rows.values()) == {1}

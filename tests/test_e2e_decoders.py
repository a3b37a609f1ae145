"""Hostile HiSPARC pickles against the real daemon (issue 20, items 1-2): a 9-byte memo-index
bomb and 14 MB of nested lists, uploaded with the station's right password, cost the
node's own process nothing and never stall it; the figures are bench/hostile_pickles.py's."""

import hashlib
import socket
import struct
import threading
import time
import urllib.parse
import urllib.request

import pytest

from test_e2e import Node, admin_cli
from test_e2e import no_node_left_running  # noqa: F401 (the autouse fixture that kills what a test leaves)

pytestmark = pytest.mark.e2e

MEMO_BOMB = b"\x80\x02Nr" + struct.pack("<I", 2**27) + b"."
NESTED = b"\x80\x02" + b"]" * 7_000_000 + b"a" * 6_999_999 + b"."  # 14 MB, under the 16 MiB limit


def form(data):
    """The upload, ``data`` unencoded (brackets need none; a crafted body need not be percent-encoded)."""
    return (urllib.parse.urlencode({"station_id": "501", "password": "s3cret",
                                    "checksum": hashlib.md5(data).hexdigest()}).encode() + b"&data=" + data)


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def upload_raw(port, body):
    """A socket with the whole upload sent; its answer is read by answer_of()."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=60)
    conn.sendall(b"POST /upload HTTP/1.0\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body) + body)
    return conn


def answer_of(conn):
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    conn.close()
    return data.split(b"\r\n\r\n", 1)[1]


def test_hostile_pickles_cost_a_decoder_never_the_node(tmp_path):
    node = Node(tmp_path)
    admin_cli(node.config, "add-station", "501", "--password", "s3cret")
    node.start()
    try:
        conn = upload_raw(node.http, form(MEMO_BOMB))
        assert answer_of(conn) == b"208"
        assert peak_rss_mib(node.proc.pid) < 300  # (decoded in the node's process: 2,125 MiB)
        (decoder,) = children(node.proc.pid)
        assert peak_rss_mib(decoder) < 512 + 100  # its limit: [ingest] decode_memory = 512MiB

        # 14 MB of nested lists take the decoder seconds: the node answers heartbeats meanwhile.
        answered, stop = [], threading.Event()

        def probe():
            while not stop.is_set():
                with urllib.request.urlopen(f"http://127.0.0.1:{node.http}/heartbeat", timeout=30) as r:
                    answered.append(r.read())
                time.sleep(0.01)

        conn = upload_raw(node.http, form(NESTED))
        prober = threading.Thread(target=probe)
        prober.start()
        try:
            assert answer_of(conn) == b"208"
        finally:
            stop.set()
            prober.join()
        # Decoded on the reactor, the upload held every heartbeat until its answer (0-2 came
        # through while the body arrived); in a decoder, they go on.
        assert len(answered) >= 20, answered
        assert peak_rss_mib(node.proc.pid) < 300
        assert children(node.proc.pid) == [decoder]  # (no time limit reached: the same process)
    finally:
        assert node.stop() == 0
    assert "Traceback" not in node.log.read_text()

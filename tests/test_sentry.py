"""[metrics] sentry_dsn: the real daemon's errors reach a Sentry server (here one on loopback
that keeps what it is sent) with the node's name, id and version."""

import http.server
import json
import threading
import time
import zlib

import pytest

from test_e2e import Node, admin_cli

pytest.importorskip("sentry_sdk", reason="the stationd[sentry] extra (in the test extra) is not installed")


class Sentry(http.server.BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = zlib.decompress(body, 16 + zlib.MAX_WBITS)
        Sentry.received.append((self.path, [json.loads(line) for line in body.splitlines() if line.strip()]))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def sentry_server():
    Sentry.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sentry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def test_a_logged_error_is_reported_with_the_node_it_came_from(tmp_path, sentry_server):
    node = Node(tmp_path, f"[metrics]\nsentry_dsn = http://public@127.0.0.1:{sentry_server}/7\n")
    node_id = admin_cli(node.config, "status").split("node id")[1].split()[0]
    spool = tmp_path / "var" / "spool"
    spool.mkdir(parents=True, exist_ok=True)
    (spool / "00000000000000000001-1-00000001.seg").write_bytes(b"not a segment")  # set aside, logged critical
    node.start()
    deadline = time.monotonic() + 30
    while not any(path == "/api/7/envelope/" for path, _ in Sentry.received):
        assert time.monotonic() < deadline, "nothing reported"
        time.sleep(0.1)
    assert node.stop() == 0
    events = [item for _, items in Sentry.received for item in items if "tags" in item]
    [event] = [e for e in events if "set aside" in json.dumps(e)]
    assert event["level"] == "fatal" and event["release"] == "stationd@0.1.0"
    assert event["tags"]["node_id"] == node_id and event["tags"]["node_name"] == event["server_name"]


def test_a_bad_dsn_stops_the_start_with_its_reason(tmp_path):
    import subprocess

    from test_e2e import launch

    node = Node(tmp_path, "[metrics]\nsentry_dsn = not-a-dsn\n")
    proc = launch(tmp_path, node.config, stdout=subprocess.PIPE)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0 and b":metrics:sentry_dsn: bad DSN" in out, out

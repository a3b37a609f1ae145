"""A central node in MeteorPi's place (issue 21), against the real daemon over TLS: a camera's exporter pushes
100 observations with 20 image files over /api/importv2 (sending again after a reply it lost), the node is
killed and started again, and a MeteorPi client lists the observatory, searches by time and type, pages,
downloads a file with a Range request and reads the status dict at a past time.  Requests are built as
MeteorPi's client and exporter build theirs (tests/meteorpi_client.py, from ../shared/METEORPI.md)."""

import hashlib
import http.client
import json
import os
import signal
import ssl
import subprocess
import time

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.web.client import Agent

from conftest import PG_URL, pg_schema
from meteorpi_client import Client, Exporter, basic, file_record, metadata, multipart, observation
from test_e2e import BIN, ExpectName, Node, admin_cli, no_node_left_running  # noqa: F401 (a fixture)

pytestmark = pytest.mark.e2e  # real twistd processes: pytest -m 'not e2e' leaves them out

CAMERA = "obs0"
T0 = 1483225200.0  # 2016-12-31T23:00:00Z


def image(i):
    return hashlib.sha256(b"frame %d" % i).digest() * 512 + bytes([i])  # 16 KiB, a different one each


def lose_reply(port, cafile, path, body, headers):
    """Send a request and hang up before the answer: the exporter never learns it got through."""
    context = ssl.create_default_context(cafile=cafile)
    conn = http.client.HTTPSConnection("localhost", port, context=context, timeout=30)
    conn.request("POST", path, body, headers)
    conn.sock.shutdown(2)
    conn.close()


def https_client(node):
    return treq.client.HTTPClient(Agent(reactor, contextFactory=ExpectName("localhost", node.cert)))


def kill(node):
    """SIGKILL the node and its worker processes at once, as a power cut would."""
    children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(node.proc.pid)], capture_output=True,
                              text=True).stdout.split()
    for pid in [node.proc.pid, *map(int, children)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    node.proc.wait(timeout=30)
    for pid in map(int, children):
        while os.path.exists(f"/proc/{pid}") and "zombie" not in open(f"/proc/{pid}/status").read():
            time.sleep(0.05)


@pytest.fixture(params=["sqlite", "postgresql-2-workers"])
def central(request):
    """The central node's [database] and [node] settings: SQLite, or PostgreSQL with two workers."""
    if request.param == "sqlite":
        yield ""
        return
    if not PG_URL:
        pytest.skip("PostgreSQL tests need STATIOND_TEST_DATABASE_URL (set by .ci/run)")
    with pg_schema() as (url, _, _):
        yield f"[database]\nurl = {url}\n[node]\nworkers = 2\n"


@pytest_twisted.ensureDeferred
async def test_a_camera_exports_to_stationd_and_a_meteorpi_client_reads_it_back(tmp_path, central):
    node = Node(tmp_path, "[web]\ncomponents = all meteorpi\n[ingest]\nmin_event_time = 2010-01-01T00:00:00Z\n"
                + central)
    admin_cli(node.config, "add-user", "camera0", "--role", "importer")
    out = subprocess.run([os.path.join(BIN, "stationd-admin"), "set-password", "camera0", "--config",
                          str(node.config)], input="a camera's secret\n", capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    node.start()
    base = f"https://127.0.0.1:{node.https}/api"
    http = https_client(node)
    exporter = Exporter(http, base + "/importv2", "camera0", "a camera's secret")

    # The camera's queue: all metadata first, then observations, then files (METEORPI.md 5.2).
    for n, (key, value, when) in enumerate((("lens", "Fujinon 4mm", T0 - 86400), ("sensor", "WAT-902H2", T0 - 86400),
                                             ("lens", "Sigma 8mm", T0 + 5000))):
        assert await exporter.export("metadata", metadata(CAMERA, f"meta{n}", key, value, when)) == "complete"
    observations = [observation(CAMERA, f"20161231_23{i // 60:02d}{i % 60:02d}_obs{i:03d}", T0 + i * 60.5,
                                "planeTrail" if i % 5 == 0 else "movingObject",
                                meta=[{"type": "number", "key": "meteorpi:duration", "value": 0.5 + i},
                                      {"type": "string", "key": "meteorpi:note", "value": f"object {i}"}])
                    for i in range(100)]
    lost = observations[7]
    auth = {**basic("camera0", "a camera's secret"), "Content-Type": "application/json"}
    lose_reply(node.https, node.cert, "/api/importv2", json.dumps({"type": "observation", "observation": lost}), auth)
    for o in observations:
        assert await exporter.export("observation", o) == "complete"
    files = {}
    for i in range(0, 100, 5):
        content = image(i)
        record = file_record(CAMERA, f"20161231_23{i // 60:02d}{i % 60:02d}_file{i:03d}", observations[i]["obs_id"],
                             observations[i]["obs_time"] + 2, content,
                             semantic_type="meteorpi:triggers/event/maxBrightness",
                             meta=[{"type": "number", "key": "meteorpi:width", "value": 720}])
        files[record["repository_fname"]] = (record, content)
        if i == 10:  # the upload's reply lost: the camera sends the record again, is asked again, uploads again
            body, content_type = multipart(content, "image/png")
            lose_reply(node.https, node.cert, f"/api/importv2/data/{record['repository_fname']}/{record['file_md5']}",
                       body, {**basic("camera0", "a camera's secret"), "Content-Type": content_type})
        assert await exporter.export("file", record, content) == "complete"
    assert await exporter.export("observation", lost) == "complete"  # and once more, after the lost reply

    # Every answer was given once it was durable: killed now, the node has it all when it comes back.
    kill(node)
    node.start()
    http = https_client(node)
    client = Client(http, base)

    observatories = await client.list_observatories()
    assert observatories == {CAMERA: {"uid": 1, "publicId": CAMERA, "name": "Camera", "latitude": 52.2,
                                      "longitude": 0.12, "firstSeen": T0 - 86400, "lastSeen": T0 + 5000}}

    everything = await client.search_observations({"obstory_ids": [CAMERA], "limit": 0})
    assert everything["count"] == 100 and len(everything["events"]) == 100
    assert len({o["obs_id"] for o in everything["events"]}) == 100  # the lost ones landed once
    assert sum(len(o["files"]) for o in everything["events"]) == 20

    # By time (strict bounds) and type, newest first.
    window = await client.search_observations({"time_min": T0 + 60.5 * 10, "time_max": T0 + 60.5 * 20,
                                               "observation_type": "movingObject"})
    assert [o["obs_id"] for o in window["events"]] == [observations[i]["obs_id"] for i in range(19, 10, -1)
                                                       if i % 5]
    assert window["count"] == 8
    assert window["events"][0] == {**observations[19], "obstory_name": "Camera", "files": []}

    # Paging through the 80 of one type, 25 at a time.
    seen = []
    for skip in range(0, 100, 25):
        page = await client.search_observations({"observation_type": "movingObject", "limit": 25, "skip": skip})
        seen += [o["obs_id"] for o in page["events"]]
        assert page["count"] == (80 if len(page["events"]) == 25 or not page["events"] else skip + len(page["events"]))
    assert seen == [o["obs_id"] for o in reversed(observations) if o["obs_type"] == "movingObject"]

    # A file: its record as the camera sent it, its content by byte range.
    fname = "20161231_230010_file010"
    record, content = files[fname]
    found = await client.search_files({"repository_fname": fname})
    assert found["count"] == 1
    assert found["files"][0] == {**record, "obstory_name": "Camera"}
    response, body = await client.get_content(fname, record["file_name"], (100, 4195))
    assert response.code == 206 and body == content[100:4196]
    assert response.headers.getRawHeaders(b"content-range") == [f"bytes 100-4195/{len(content)}".encode()]
    assert response.headers.getRawHeaders(b"accept-ranges") == [b"bytes"]
    response, body = await client.get_content(fname, record["file_name"])
    assert hashlib.md5(body).hexdigest() == record["file_md5"]

    # The status dict now and at a past time.
    assert (await client.get_observatory_status(CAMERA))["lens"] == "Sigma 8mm"
    assert await client.get_observatory_status(CAMERA, T0) == {"latitude": 52.2, "longitude": 0.12,
                                                               "lens": "Fujinon 4mm", "sensor": "WAT-902H2"}

    # What the web pages call: activity bins, JSONP, CORS.
    response, body = await client.get(f"/activity/{CAMERA}/planeTrail/{T0}/{T0 + 60.5 * 100}/{60.5 * 50}")
    assert json.loads(body) == {"activity": [10, 10]}
    response, body = await client.get("/obstories?callback=jQuery1_2", {"Origin": "https://meteors.example"})
    assert body == b"jQuery1_2(" + json.dumps(observatories, separators=(",", ":")).encode() + b");"
    assert response.headers.getRawHeaders(b"access-control-allow-origin") == [b"https://meteors.example"]

    # The same data through stationd's own API.
    response = await http.get(f"https://127.0.0.1:{node.https}/api/v1/events?station={CAMERA}&limit=1000")
    stored = json.loads(await response.content())["events"]
    assert len(stored) == 100 and {e["origin"] for e in stored} == {"meteorpi:obs0"}
    assert sorted(e["type"] for e in stored).count("planeTrail") == 20
    assert node.stop() == 0
    assert "Traceback" not in node.log.read_text()

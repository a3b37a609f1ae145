"""A central node on PostgreSQL under faults: the real daemon, the real server."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from sqlalchemy import text

import conftest
from conftest import PG_URL
from test_e2e import Node, admin_cli

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not PG_URL, reason="PostgreSQL tests need STATIOND_TEST_DATABASE_URL (set by .ci/run)"),
]


def _cluster():
    """(version, name) of the local PostgreSQL cluster this test may restart, or None."""
    if os.geteuid() != 0 or not shutil.which("pg_lsclusters") or "127.0.0.1" not in (PG_URL or ""):
        return None
    listed = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True).stdout.split()
    return (listed[0], listed[1]) if len(listed) >= 2 else None


@pytest.fixture
def pg_schema():
    with conftest.pg_schema() as made:
        yield made


class Uploader(threading.Thread):
    """Sends native batches of 10 events one after the other, each until it is acknowledged
    (the same Idempotency-Key on every retry), and stops only between batches: ``acked`` holds
    the numbers of the events, and nothing else was sent."""

    def __init__(self, port, key):
        super().__init__(daemon=True)
        self.port, self.key = port, key
        self.acked, self.refused, self.stop = [], 0, threading.Event()

    def run(self):
        batch = 0
        while not self.stop.is_set():
            numbers = list(range(batch * 10, batch * 10 + 10))
            body = json.dumps({"events": [{"type": "WTR", "time": 1714564800 + n, "data": {"n": n}}
                                          for n in numbers]}).encode()
            request = urllib.request.Request(
                f"http://127.0.0.1:{self.port}/api/v1/stations/501/events", data=body,
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.key}",
                         "Idempotency-Key": f"batch-{batch}"})
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    if response.status == 200:
                        self.acked += numbers
                        batch += 1
                        continue
            except (urllib.error.URLError, OSError):
                pass
            self.refused += 1  # (the batch may have been stored: it is sent again, stop or not)
            time.sleep(0.05)


def stored_numbers(engine, schema):
    with engine.connect() as conn:
        return [row[0] for row in conn.execute(text(f"SELECT (data->>'n')::int FROM \"{schema}\".events"))]


def test_a_postgresql_restart_under_upload_load_loses_and_doubles_nothing(tmp_path, pg_schema):
    cluster = _cluster()
    if cluster is None:
        pytest.skip("needs root and pg_ctlcluster for the local PostgreSQL server, to restart it")
    url, schema, engine = pg_schema
    node = Node(tmp_path, f"[database]\nurl = {url}\n")
    admin_cli(node.config, "add-station", "501")
    key = admin_cli(node.config, "add-user", "box501", "--role", "station", "--station", "501").split()[-1]
    node.start()
    uploader = Uploader(node.http, key)
    uploader.start()
    try:
        deadline = time.monotonic() + 30
        while len(uploader.acked) < 200:
            assert time.monotonic() < deadline, "no uploads acknowledged"
            time.sleep(0.05)
        restarted = subprocess.run(["pg_ctlcluster", *cluster, "restart"], capture_output=True, text=True,
                                   timeout=120)
        assert restarted.returncode == 0, restarted.stderr
        before = len(uploader.acked)
        deadline = time.monotonic() + 60
        while len(uploader.acked) < before + 200:  # acknowledged again once the server is back
            assert time.monotonic() < deadline, "uploads did not resume after the restart"
            time.sleep(0.05)
    finally:
        uploader.stop.set()
        uploader.join(timeout=60)
    acked = sorted(uploader.acked)
    deadline = time.monotonic() + 60
    while len(stored := stored_numbers(engine, schema)) < len(acked):  # what was spooled drains
        assert time.monotonic() < deadline, f"{len(acked) - len(stored)} acknowledged events not stored"
        time.sleep(0.2)
    assert node.stop() == 0
    assert sorted(stored_numbers(engine, schema)) == acked  # every acknowledged event, once
    assert "they are spooled until it can" in node.log.read_text()  # acknowledged while the server was away


def _get(port, path, key=None):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                     headers={"Authorization": f"Bearer {key}"} if key else {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _post_events(port, key, numbers):
    body = json.dumps({"events": [{"type": "WTR", "time": 1714564800 + n, "data": {"n": n}} for n in numbers]})
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/stations/501/events", data=body.encode(),
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert json.loads(response.read())["accepted"] == len(numbers)


def _until(predicate, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        assert time.monotonic() < deadline, what
        time.sleep(0.1)
    return found


def test_two_nodes_on_one_postgresql_export_a_target_once_and_hand_it_over(tmp_path, pg_schema):
    url, schema, engine = pg_schema
    (tmp_path / "up").mkdir()
    upstream = Node(tmp_path / "up")
    importer = admin_cli(upstream.config, "add-user", "central-feed", "--role", "importer").split()[-1]
    upstream.start()
    shared_files = tmp_path / "files"
    body = (f"[database]\nurl = {url}\n[files]\ndir = {shared_files}\n"
            f"[export:central]\ntarget_url = http://127.0.0.1:{upstream.http}\napi_key = {importer}\n"
            "interval = 1s\n")
    nodes = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        nodes.append(Node(tmp_path / name, body))
    admin_cli(nodes[0].config, "add-station", "501")
    key = admin_cli(nodes[0].config, "add-user", "box501", "--role", "station", "--station", "501").split()[-1]
    for node in nodes:
        node.start()

    def states():
        return [_get(node.http, "/api/v1/status")["exports"]["central"]["state"] for node in nodes]

    _until(lambda: sorted(states()) == ["ok", "standby"], "one node exports, the other stands by")
    holder = nodes[states().index("ok")]
    other = nodes[1 - nodes.index(holder)]
    _post_events(other.http, key, range(0, 50))  # stored once, in the one database, whichever node took it

    def upstream_numbers():
        found = _get(upstream.http, "/api/v1/events?station=501&limit=1000&order=asc")["events"]
        return sorted(e["data"]["n"] for e in found)

    _until(lambda: upstream_numbers() == list(range(50)), "the first events did not reach the upstream")
    first = _get(holder.http, "/api/v1/status")["exports"]["central"]["events"]
    assert holder.stop() == 0  # it gives the lease up as it stops
    _post_events(other.http, key, range(50, 100))
    _until(lambda: _get(other.http, "/api/v1/status")["exports"]["central"]["state"] == "ok",
           "the other node did not take the target over")
    _until(lambda: upstream_numbers() == list(range(100)), "events after the hand-over did not reach the upstream")
    second = _get(other.http, "/api/v1/status")["exports"]["central"]["events"]
    # Each event was sent once, by one node or the other, and the upstream found none twice.
    assert (first["sent"], second["sent"], first["duplicate"] + second["duplicate"]) == (50, 50, 0)
    assert other.stop() == 0 and upstream.stop() == 0


def _gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return open(f"/proc/{pid}/stat").read().split()[2] == "Z"


def test_two_workers_lose_nothing_when_a_worker_and_then_the_twistd_process_are_killed(tmp_path, pg_schema):
    url, schema, engine = pg_schema
    node = Node(tmp_path, f"[node]\nworkers = 2\n[database]\nurl = {url}\n")
    admin_cli(node.config, "add-station", "501")
    key = admin_cli(node.config, "add-user", "box501", "--role", "station", "--station", "501").split()[-1]
    node.start()

    def workers():
        return _get(node.http, "/api/v1/status")["workers"]

    _until(lambda: [w["state"] for w in workers()] == ["running", "running"], "two workers running")
    answered = set()  # both accept on the one socket (worker 1 once it has started)
    _until(lambda: answered.add(_get(node.http, "/api/v1/status")["worker"]) or answered == {0, 1},
           "both workers answer")

    def host_metrics():
        with urllib.request.urlopen(f"http://127.0.0.1:{node.http}/metrics", timeout=30) as response:
            return response.read().decode()

    # Whichever worker answers, /metrics is the host's: both processes' series.
    _until(lambda: all('process_cpu_seconds_total{worker="1"}' in host_metrics() for _ in range(6)),
           "/metrics does not cover both workers")
    uploader = Uploader(node.http, key)
    uploader.start()
    try:
        _until(lambda: len(uploader.acked) >= 200, "no uploads acknowledged")
        child = workers()[1]["pid"]
        os.kill(child, 9)  # a worker, under load
        _until(lambda: workers()[1]["restarts"] == 1 and workers()[1]["state"] == "running",
               "the killed worker was not started again")
        mark = len(uploader.acked)
        _until(lambda: len(uploader.acked) >= mark + 200, "uploads did not go on")
        child = workers()[1]["pid"]
        node.proc.kill()  # and then the twistd process
        node.proc.wait(timeout=30)
        _until(lambda: _gone(child), "the orphaned worker did not stop by itself")
        log = node.log.read_text()  # (the start below begins a new one)
        assert "[worker 1 stationd.access#info]" in log and "ended (signal 9)" in log
        node.start()  # the spools drain; the batch in flight is sent again and answered
        mark = len(uploader.acked)
        _until(lambda: len(uploader.acked) > mark, "uploads did not resume after the restart")
    finally:
        uploader.stop.set()
        uploader.join(timeout=60)
    acked = sorted(uploader.acked)
    _until(lambda: len(stored_numbers(engine, schema)) >= len(acked), "acknowledged events not stored")
    assert node.stop() == 0
    assert sorted(stored_numbers(engine, schema)) == acked  # every acknowledged event, once


def test_every_worker_answers_the_sensor_and_display_routes_of_worker_0(tmp_path, pg_schema):
    url, schema, engine = pg_schema
    node = Node(tmp_path, f"[node]\nworkers = 2\n[database]\nurl = {url}\n[display]\ndriver = file\n")
    key = admin_cli(node.config, "add-user", "tech", "--role", "editor").split()[-1]
    node.start()
    try:
        _until(lambda: [w["state"] for w in _get(node.http, "/api/v1/status")["workers"]] == ["running"] * 2,
               "two workers running")
        answered = set()  # (worker 1 once it has started)
        _until(lambda: answered.add(_get(node.http, "/api/v1/status")["worker"]) or answered == {0, 1},
               "both workers answer")
        _until(lambda: _get(node.http, "/api/v1/sensors/system")["state"] == "ok", "no system reading")

        def served_by_worker_1(request):
            return any("[worker 1 stationd.access" in line and f'"{request}"' in line
                       for line in node.log.read_text().splitlines())

        n, statuses_of = 0, set()  # whichever worker takes the connection: worker 0's sensor, and its display
        while n < 10 or not (served_by_worker_1("GET /api/v1/sensors") and served_by_worker_1("POST /api/lcd")
                             and statuses_of == {0, 1}):
            assert n < 300, "worker 1 answered none of these routes"
            status = _get(node.http, "/api/v1/status")
            assert status["sensors"] == {"system": {"state": "ok", "last_error": None}}, status
            statuses_of.add(status["worker"])
            listed = _get(node.http, "/api/v1/sensors")["sensors"]
            assert [(s["name"], s["state"]) for s in listed] == [("system", "ok")]
            assert _get(node.http, "/api/v1/sensors/system/readings")["readings"]
            assert json.loads(_send(node.http, "/api/sensors/nothing", key))["error"]["code"] == "no_such_sensor"
            body = json.dumps({"message": f"message {n}"}).encode()
            answer = json.loads(_send(node.http, "/api/lcd", key, body))
            assert answer == {"result": {"message posted": f"message {n}"}}
            assert (tmp_path / "var" / "display.txt").read_text().strip() == f"message {n}"
            n += 1
    finally:
        assert node.stop() == 0


def _send(port, path, key, body=None):
    """The body of the answer to a GET (or a POST of ``body``), whatever its status."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body,
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read()
    except urllib.error.HTTPError as e:
        return e.read()


def test_a_reload_reaches_every_worker(tmp_path, pg_schema):
    url, _, _ = pg_schema
    base = f"[node]\nworkers = 2\n[database]\nurl = {url}\n"
    node = Node(tmp_path, base)
    node.start()
    try:
        _until(lambda: "Worker 1 takes signals" in node.log.read_text(), "worker 1 started")
        conftest.write_config(tmp_path, base + "[export:central]\ntarget_url = http://127.0.0.1:9\nwindow = 03-04\n",
                              http=f"tcp:{node.http}:interface=127.0.0.1",
                              https=f"tcp:{node.https}:interface=127.0.0.1")
        out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "stationd-admin"), "reload",
                              "--config", str(node.config)], capture_output=True, text=True, timeout=90)
        assert out.returncode == 0, out.stderr
        assert "export targets: added central\n" in out.stdout

        def reloaded(worker):
            return any(f"[worker {worker} " in line and "Reload done: sensors unchanged, export targets added "
                       "central" in line for line in node.log.read_text().splitlines())

        _until(lambda: reloaded(0) and reloaded(1), "both workers reloaded")
    finally:
        assert node.stop() == 0

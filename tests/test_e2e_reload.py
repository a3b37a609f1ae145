"""Reload without restart against the real daemon: `stationd-admin reload` (SIGHUP through the
node's pid file) adds a sensor and repoints an export target, names what waits for a restart,
refuses a broken file while the node serves on, and 50 reloads under upload load lose and
double nothing.  (The certificate swapped under a live TLS connection: tests/test_e2e.py.)"""

import json
import os
import signal
import subprocess
import threading
import time
import urllib.request

import pytest

from stationd import reload as reloading

from conftest import write_config
from test_e2e import BIN, Node, admin_cli, free_port, status_of
from test_e2e import no_node_left_running  # noqa: F401 (the autouse fixture that kills what a test leaves)

pytestmark = pytest.mark.e2e


def rewrite(node, body):
    """The node's file, replaced (its listeners kept)."""
    write_config(node.tmp_path, body, http=f"tcp:{node.http}:interface=127.0.0.1",
                 https=f"tcp:{node.https}:interface=127.0.0.1")


def reload_cli(node, *argv):
    return subprocess.run([os.path.join(BIN, "stationd-admin"), "reload", "--config", str(node.config), *argv],
                          capture_output=True, text=True, timeout=90)


def get(node, path, key=None):
    request = urllib.request.Request(f"http://127.0.0.1:{node.http}{path}",
                                     headers={"Authorization": f"Bearer {key}"} if key else {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def ingest(node, key, first, n):
    body = {"events": [{"type": "CIC", "time_ns": 1714564800 * 10**9 + i, "data": {"n": i}}
                       for i in range(first, first + n)]}
    request = urllib.request.Request(f"http://127.0.0.1:{node.http}/api/v1/stations/501/events",
                                     data=json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert json.loads(response.read())["accepted"] == n


def all_events(node):
    events, cursor = [], ""
    while True:
        page = get(node, "/api/v1/events?limit=10000&order=asc" + (f"&cursor={cursor}" if cursor else ""))
        events += page["events"]
        cursor = page["next"]
        if not cursor:
            return events


def until(what, check, limit=60):
    deadline = time.monotonic() + limit
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_a_reload_adds_a_sensor_repoints_an_export_target_and_refuses_a_broken_file(tmp_path):
    (tmp_path / "up").mkdir()
    (tmp_path / "down").mkdir()
    central = Node(tmp_path / "up")
    importer_key = admin_cli(central.config, "add-user", "station-7", "--role", "importer").strip().splitlines()[-1]
    target = ("[export:central]\ntarget_url = http://127.0.0.1:{port}\napi_key = " + importer_key +
              "\ninterval = 200ms\nmax_backoff = 1s\ntimeout = 5s\n")
    station = Node(tmp_path / "down", target.format(port=free_port()))  # (nobody listens there)
    admin_cli(station.config, "add-station", "501")
    key = admin_cli(station.config, "add-user", "root", "--role", "admin").strip().splitlines()[-1]
    central.start()
    station.start()
    ingest(station, key, 0, 100)
    until("the export did not fail", lambda: status_of(station)["exports"]["central"]["state"] == "backing_off")
    assert all_events(central) == []
    assert "Starting factory" not in station.log.read_text()  # (not two lines an attempt)

    sensor = "[sensor:outdoor]\ndriver = simulated\ninterval = 1s\nfield = temperature\nunit = C\n"
    rewrite(station, target.format(port=central.http) + sensor + "[web]\nmax_body_size = 1MiB\n")
    out = reload_cli(station)
    assert out.returncode == 0, out.stderr
    assert "sensors: added outdoor\n" in out.stdout
    assert "export targets: changed central\n" in out.stdout
    assert f"{station.config}:web:max_body_size: changed; takes effect at the next restart\n" in out.stdout
    until("the repointed target did not deliver", lambda: len(all_events(central)) == 100)
    until("the added sensor did not read", lambda: get(station, "/api/v1/sensors/outdoor")["state"] == "ok")
    assert "temperature" in get(station, "/api/v1/sensors/outdoor")["fields"]
    log = station.log.read_text()
    assert f"Reload: {station.config}:web:max_body_size changed; it takes effect at the next restart" in log

    # A file that does not parse: stationd-admin says so and asks nothing of the node...
    rewrite(station, target.format(port=central.http) + sensor.replace("interval = 1s", "interval = soon"))
    out = reload_cli(station)
    assert out.returncode == 2 and f"{station.config}:sensor:outdoor:interval: " in out.stderr
    # ...and a SIGHUP with it is refused by the node, which serves on as it was.
    station.proc.send_signal(signal.SIGHUP)
    until("the broken file was not refused", lambda: "Reload refused" in station.log.read_text())
    assert f"Reload refused, the running configuration stays: {station.config}:sensor:outdoor:interval:" \
        in station.log.read_text()
    # A driver option only the driver checks: the node refuses, and stationd-admin tells.
    rewrite(station, target.format(port=central.http) + sensor + "[sensor:more]\ndriver = simulated\n"
            "waveform = wobbly\n")
    out = reload_cli(station)
    assert out.returncode == 1
    assert f"{station.config}:sensor:more:waveform: " in out.stderr
    assert "reload refused; the node runs on with its configuration as it was" in out.stderr
    assert [s["name"] for s in get(station, "/api/v1/sensors")["sensors"]] == ["outdoor", "system"]
    read_at = get(station, "/api/v1/sensors/outdoor")["time"]
    until("the sensor stopped", lambda: get(station, "/api/v1/sensors/outdoor")["time"] > read_at)
    ingest(station, key, 100, 10)  # still serving, still exporting
    until("export stopped after the refused reload", lambda: len(all_events(central)) == 110)
    assert station.stop() == 0
    assert not (station.tmp_path / "var" / reloading.PID_FILE).exists()
    out = reload_cli(station)
    assert out.returncode == 1 and "no node is running on" in out.stderr
    assert central.stop() == 0


def test_fifty_reloads_under_upload_load_lose_and_double_nothing(tmp_path):
    sensor = "[sensor:box]\ndriver = simulated\ninterval = {interval}\n"
    node = Node(tmp_path, sensor.format(interval="1s"))
    admin_cli(node.config, "add-station", "501")
    key = admin_cli(node.config, "add-user", "root", "--role", "admin").strip().splitlines()[-1]
    node.start()
    acknowledged, failures, stop = [0], [], threading.Event()

    def upload():
        while not stop.is_set():
            try:
                ingest(node, key, acknowledged[0], 50)
                acknowledged[0] += 50
            except (OSError, AssertionError) as e:
                failures.append(repr(e))
                return

    uploader = threading.Thread(target=upload)
    uploader.start()
    try:
        data_dir = str(tmp_path / "var")
        for i in range(50):
            rewrite(node, sensor.format(interval=f"{2 - i % 2}s"))
            result = reloading.request(data_dir, timeout=30)
            assert result["result"] == "applied", result
            assert result["changes"]["sensors"]["changed"] == ["box"]
    finally:
        stop.set()
        uploader.join(60)
    assert failures == [] and acknowledged[0] >= 500
    until("the spool did not drain", lambda: status_of(node)["ingest"]["spool_bytes"] == 0)
    events = all_events(node)
    numbers = sorted(event["data"]["n"] for event in events if event["type"] == "CIC")
    assert numbers == list(range(acknowledged[0]))  # every acknowledged event, once
    assert "set aside" not in node.log.read_text()  # no spool segment damaged
    assert node.log.read_text().count("Reload done: sensors changed box") == 50
    assert "Traceback" not in node.log.read_text()
    assert node.stop() == 0

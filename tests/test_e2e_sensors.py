"""The real daemon's sensors: polled with nobody asking, exposed to Prometheus and HTTP."""

import calendar
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from test_e2e import Node, admin_cli, no_node_left_running  # noqa: F401 - the fixture stops strays

pytestmark = pytest.mark.e2e  # real twistd processes: pytest -m 'not e2e' leaves them out

SENSORS = """
[sensor:system]
interval = 1s
[sensor:wave]
driver = simulated
interval = 1s
waveform = sawtooth
period = 7s
amplitude = 10
unit = celsius
field = temperature
alarm_above = temperature=5
hysteresis = 2
[display]
driver = file
"""


def scrape(node):
    with urllib.request.urlopen(f"http://127.0.0.1:{node.http}/metrics", timeout=30) as response:
        return response.read().decode()


def sensor_values(text):
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.labels["sensor"], s.labels["field"]): s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == "stationd_sensor_value"}


def test_metrics_are_fresh_without_anyone_asking_and_pass_promtool(tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    node = Node(tmp_path, SENSORS)
    key = admin_cli(node.config, "add-user", "ed", "--role", "editor").strip().splitlines()[-1]
    node.start()
    time.sleep(1.5)
    first = scrape(node)
    time.sleep(2.2)
    second = scrape(node)
    before, after = sensor_values(first), sensor_values(second)
    # the system sensor is on by default; both change between scrapes with no sensor route called
    assert {("wave", "temperature"), ("system", "uptime"), ("system", "load1")} <= set(before)
    assert before[("wave", "temperature")] != after[("wave", "temperature")]
    assert after[("system", "uptime")] > before[("system", "uptime")]
    for name in ("stationd_ingest_events_total", "stationd_spool_bytes", "stationd_sensor_errors_total",
                 "process_resident_memory_bytes", "stationd_sensor_poll_lateness_seconds_bucket"):
        assert name in second or name.replace("_total", "") in second, name
    for path in ("/api/sensors/wave", "/api/v1/sensors/nothing", "/api/v1/sensors/nothing", "/no/such/route"):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{node.http}{path}", timeout=30).close()
        except urllib.error.HTTPError:
            pass
    second = scrape(node)
    assert "stationd_build_info{" in second and "_created" not in second
    http = {(s.labels["route"], s.labels["method"], s.labels["status"]): s.value
            for family in text_string_to_metric_families(second) for s in family.samples
            if s.name == "stationd_http_requests_total"}
    # route templates, not paths: one series a route, whatever its arguments
    assert http["/api/sensors/{name}", "GET", "200"] >= 1
    assert http["/api/v1/sensors/{name}", "GET", "404"] == 2
    assert http["unmatched", "GET", "404"] == 1
    assert "/metrics" in {route for route, _, _ in http}  # (the scrapes before)
    assert 'stationd_http_request_seconds_count{route="/api/v1/sensors/{name}"} 2.0' in second
    promtool = shutil.which("promtool")
    if promtool:
        check = subprocess.run([promtool, "check", "metrics"], input=second, capture_output=True, text=True,
                               timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr

    with urllib.request.urlopen(f"http://127.0.0.1:{node.http}/api/sensors/wave", timeout=30) as response:
        result = json.loads(response.read())["result"]
    assert set(result) == {"instant", "temperature"}
    read_at = calendar.timegm(time.strptime(result["instant"], "%Y-%m-%d %H:%M:%S%Z"))  # as QIoT clients parse it
    assert abs(read_at - time.time()) < 600
    request = urllib.request.Request(f"http://127.0.0.1:{node.http}/api/lcd", data=b'{"message": "clear skies"}',
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert json.loads(response.read()) == {"result": {"message posted": "clear skies"}}
    assert (tmp_path / "var" / "display.txt").read_text() == "clear skies"
    # the sawtooth passes 5 each period: an alarm event is in the store
    deadline = time.monotonic() + 15
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{node.http}/api/v1/events?type=sensor_alarm",
                                    timeout=30) as response:
            alarms = json.loads(response.read())["events"]
        if alarms:
            break
        assert time.monotonic() < deadline, "no alarm event"
        time.sleep(0.5)
    assert alarms[-1]["data"]["sensor"] == "wave" and alarms[-1]["data"]["state"] == "raised"
    assert node.stop() == 0


@pytest.mark.skipif(not (shutil.which("dbus-daemon") and shutil.which("gdbus")),
                    reason="needs dbus-daemon and gdbus (Debian: dbus, libglib2.0-bin)")
def test_the_node_on_a_private_bus_answers_gdbus(tmp_path):
    bus = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--nopidfile", "--print-address=1",
                            f"--address=unix:path={tmp_path}/bus"], stdout=subprocess.PIPE, text=True)
    try:
        address = bus.stdout.readline().strip()
        node = Node(tmp_path, SENSORS + f"[dbus]\nbus = {address}\n")
        node.start()

        def gdbus(*args):
            out = subprocess.run(["gdbus", *args, "--address", address, "--dest", "org.stationd.Node1",
                                  "--object-path", "/org/stationd/Node"], capture_output=True, text=True, timeout=30)
            assert out.returncode == 0, out.stderr
            return out.stdout

        deadline = time.monotonic() + 15
        while "org.stationd.Node1" not in subprocess.run(
                ["gdbus", "call", "--address", address, "--dest", "org.freedesktop.DBus", "--object-path",
                 "/org/freedesktop/DBus", "--method", "org.freedesktop.DBus.ListNames"],
                capture_output=True, text=True, timeout=30).stdout:
            assert time.monotonic() < deadline, "the node did not take its name on the bus"
            time.sleep(0.2)
        introspection = gdbus("introspect")
        for member in ("ShowMessage", "ReadSensor", "ListSensors", "SensorAlarm", "SpoolDepth", "ExportLag"):
            assert member in introspection
        assert gdbus("call", "--method", "org.stationd.Node1.ListSensors") == "(['system', 'wave'],)\n"
        assert "'temperature':" in gdbus("call", "--method", "org.stationd.Node1.ReadSensor", "wave")
        assert gdbus("call", "--method", "org.stationd.Node1.ShowMessage", "dew warning") == "('dew warning',)\n"
        assert (tmp_path / "var" / "display.txt").read_text() == "dew warning"
        assert node.stop() == 0
    finally:
        bus.terminate()
        bus.wait(10)
        bus.stdout.close()

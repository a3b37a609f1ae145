"""[metrics] statsd_host: the real daemon's request timers and counters, read from a UDP socket
as a statsd server would."""

import json
import socket
import urllib.request

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from stationd.metrics import Metrics
from stationd.statsd import Statsd, statsd_name
from test_e2e import Node, admin_cli


@pytest.fixture
def statsd_server():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(30)
    yield sock
    sock.close()


def lines_until(sock, wanted):
    """Every statsd line received up to the first datagram holding a line that starts with ``wanted``."""
    lines = []
    while not any(line.startswith(wanted) for line in lines):
        lines += sock.recv(65536).decode().split("\n")
    return lines


def test_requests_are_timed_and_ingest_counted_over_udp(tmp_path, statsd_server):
    port = statsd_server.getsockname()[1]
    node = Node(tmp_path, f"[metrics]\nstatsd_host = 127.0.0.1\nstatsd_port = {port}\nstatsd_prefix = lab\n")
    admin_cli(node.config, "add-station", "501")
    key = admin_cli(node.config, "add-user", "box", "--role", "station", "--station", "501").split()[-1]
    node.start()
    lines = lines_until(statsd_server, "lab.request.heartbeat.GET:")  # (the start-up probe's)
    assert [line for line in lines if line.startswith("lab.request.heartbeat.GET:")][0].endswith("|ms")
    body = json.dumps({"events": [{"type": "WTR", "time": 1714564800 + n, "data": {"n": n}} for n in range(3)]})
    request = urllib.request.Request(f"http://127.0.0.1:{node.http}/api/v1/stations/501/events", data=body.encode(),
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    urllib.request.urlopen(request, timeout=30).close()
    lines = lines_until(statsd_server, "lab.request.api_v1_stations_station_id_events.POST:")
    assert node.stop() == 0  # (the counters' last increase goes out as the node stops)
    lines = lines_until(statsd_server, "lab.ingest.native.accepted:")
    assert "lab.ingest.native.accepted:3|c" in lines and "lab.store:3|c" in lines


@pytest_twisted.ensureDeferred
async def test_an_unresolvable_host_loses_the_figures_and_nothing_else():
    statsd = Statsd("no-such-host.invalid", 8125, "lab", Metrics(), reactor, interval=0.05)
    statsd.startService()
    try:
        for _ in range(200):  # (resolving fails meanwhile, however long it takes; rounds go on)
            statsd.timing("request.heartbeat.GET", 1.5)
            if statsd._failed:
                break
            await task.deferLater(reactor, 0.05, lambda: None)
        assert statsd.address is None and statsd._failed
    finally:
        await statsd.stopService()


def test_names_are_one_part_each():
    assert statsd_name("/api/v1/events/{event_id}") == "api_v1_events_event_id"
    assert statsd_name("/") == "root" and statsd_name("unmatched") == "unmatched"

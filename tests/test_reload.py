"""Reload without restart (stationd.reload, NodeService.reload), in process: what a changed
file adds, changes and removes, what it refuses whole, and what it leaves for a restart.
The daemon's SIGHUP and `stationd-admin reload` are in tests/test_e2e_reload.py."""

import json
import os

import pytest
import pytest_twisted
from twisted.logger import Logger

from stationd import reload as reloading

from conftest import make_node, write_config

SENSOR = "[sensor:{name}]\ndriver = simulated\ninterval = {interval}\n"
TARGET = "[export:{name}]\ntarget_url = {url}\nwindow = 03-04\n"  # (a closed window: no round reaches it)


def body(sensors=(), targets=(), extra=""):
    return extra + "".join(SENSOR.format(name=n, interval=i) for n, i in sensors) + \
        "".join(TARGET.format(name=n, url=u) for n, u in targets)


def rewrite(tmp_path, database_url, text):
    write_config(tmp_path, f"[database]\nurl = {database_url}\n{text}")


@pytest.fixture
def node(tmp_path, database_url):
    node = make_node(tmp_path, database_url, body([("a", "1s"), ("b", "1s")], [("up", "http://127.0.0.1:9/")]))
    node.service.startService()
    yield node
    pytest_twisted.blockon(node.service.stopService())


@pytest_twisted.ensureDeferred
async def test_sensors_and_export_targets_start_restart_and_stop(node, tmp_path, database_url):
    a_poller, b_poller = node.sensors.pollers["a"], node.sensors.pollers["b"]
    first_exporter = node.exports.exporters["up"]
    rewrite(tmp_path, database_url, body([("a", "2s"), ("c", "1s")],
                                         [("up", "http://127.0.0.1:19/"), ("more", "http://127.0.0.1:29/")]))
    result = await node.service.reload()
    assert result["result"] == "applied", result
    assert result["changes"]["sensors"] == {"added": ["c"], "changed": ["a"], "removed": ["b"]}
    assert result["changes"]["exports"] == {"added": ["more"], "changed": ["up"], "removed": []}
    assert node.sensors.names() == ["a", "c", "system"]
    assert node.sensors.pollers["a"] is not a_poller and node.sensors.sensors["a"]["interval"] == 2.0
    assert b_poller._call is None  # stopped
    assert node.sensors.pollers["c"]._call is not None  # polling
    assert node.exports.exporters["up"] is not first_exporter
    assert node.exports.targets["up"][0]["target_url"] == "http://127.0.0.1:19"
    assert first_exporter.parent is None  # its service stopped and gone
    assert sorted(node.exports.exporters) == ["more", "up"]

    rewrite(tmp_path, database_url, body([("a", "2s"), ("c", "1s")], [("up", "http://127.0.0.1:19/")]))
    result = await node.service.reload()
    assert result["changes"]["exports"] == {"added": [], "changed": [], "removed": ["more"]}
    assert result["changes"]["sensors"] == {"added": [], "changed": [], "removed": []}
    assert sorted(node.exports.exporters) == ["up"] and "more" not in node.exports.targets


@pytest_twisted.ensureDeferred
async def test_a_broken_file_is_refused_whole_and_the_running_config_stays(node, tmp_path, database_url):
    path = str(tmp_path / "stationd.ini")
    rewrite(tmp_path, database_url, body([("a", "1s"), ("b", "1s"), ("new", "1s")],
                                         [("up", "http://127.0.0.1:9/"), ("more", "http://127.0.0.1:29/")],
                                         extra="[log]\nlevel = loud\n"))
    before = node.service.config
    result = await node.service.reload()
    assert result["result"] == "refused"
    assert len(result["errors"]) == 1 and result["errors"][0].startswith(f"{path}:log:level: ")
    assert node.service.config is before
    assert node.sensors.names() == ["a", "b", "system"] and sorted(node.exports.targets) == ["up"]

    # A driver's own option is checked too, before anything changes.
    rewrite(tmp_path, database_url, body([("a", "1s"), ("b", "1s")], [("more", "http://127.0.0.1:29/")]) +
            "[sensor:new]\ndriver = simulated\nwaveform = wobbly\n")
    result = await node.service.reload()
    assert result["result"] == "refused"
    assert len(result["errors"]) == 1 and result["errors"][0].startswith(f"{path}:sensor:new:waveform: ")
    assert node.sensors.names() == ["a", "b", "system"] and sorted(node.exports.targets) == ["up"]


@pytest_twisted.ensureDeferred
async def test_what_needs_a_restart_is_named_and_keeps_running_as_it_was(node, tmp_path, database_url):
    path = str(tmp_path / "stationd.ini")
    rewrite(tmp_path, database_url, body([("a", "1s"), ("b", "1s")], [("up", "http://127.0.0.1:9/")],
                                         extra="[web]\nhttp = tcp:8999\nmax_body_size = 1MiB\n"
                                               "[log]\nlevel = debug\n"))
    result = await node.service.reload()
    assert result["result"] == "applied"
    assert result["restart_needed"] == [f"{path}:web:http", f"{path}:web:max_body_size"]
    assert result["changes"]["log"] is True
    config = node.service.config
    assert config["web"]["http"] == [] and config["web"]["max_body_size"] == 16 * 2**20  # still the running ones
    assert config["log"]["level"] == "debug"  # taken up
    again = await node.service.reload()  # said again until the restart
    assert again["restart_needed"] == result["restart_needed"] and again["changes"]["log"] is False


def test_the_log_changes_level_format_and_file_in_place(tmp_path):
    from twisted.logger import LogPublisher

    from stationd.logs import NodeLog

    base = {"level": "info", "path": str(tmp_path / "a.log"), "format": "text", "rotate_size": 2**20,
            "rotate_keep": 2}
    node_log = NodeLog(base)
    log = Logger(namespace="t", observer=LogPublisher(node_log))
    log.debug("hidden")
    log.info("first")
    node_log.configure(dict(base, level="debug", format="json", path=str(tmp_path / "b.log")))
    log.debug("second {n}", n=2)
    node_log.configure(base)
    log.info("third")
    node_log.configure(dict(base, path=None))  # (closes a.log)
    first = (tmp_path / "a.log").read_text()
    assert "hidden" not in first and "first" in first and "third" in first
    (line,) = (tmp_path / "b.log").read_text().splitlines()
    assert json.loads(line)["message"] == "second 2" and json.loads(line)["n"] == 2


def test_stationd_admin_reload_says_when_no_node_runs(tmp_path):
    with pytest.raises(reloading.NotRunning, match="no pid"):
        reloading.node_pid(str(tmp_path))
    (tmp_path / reloading.PID_FILE).write_text(f"{os.getpid()}\n")  # pytest's pid: not a node
    with pytest.raises(reloading.NotRunning, match="another program"):
        reloading.node_pid(str(tmp_path))

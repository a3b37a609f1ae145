"""The example configurations in etc/ load, pass check-config, and fit the systemd unit, so they cannot rot."""

import os

import pytest
from twisted.internet import task

from stationd import admin_cli, config
from stationd.sensors import drivers
from stationd.sensors.options import DriverContext

ETC = os.path.join(os.path.dirname(__file__), os.pardir, "etc")
EXAMPLES = ["stationd-station.ini", "stationd-central.ini"]


def example(name):
    return os.path.abspath(os.path.join(ETC, name))


def installed(tmp_path, name):
    """The example as it would be installed, its /etc/stationd/ files (TLS pair, CA, station list)
    under tmp_path, each made; the paths under /var stay as they are (check-config writes nothing)."""
    etc = tmp_path / "etc-stationd"
    with open(example(name), encoding="utf-8") as f:
        text = f.read().replace("/etc/stationd/", f"{etc}/")
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    loaded = config.load(str(path))
    web = loaded["web"]
    if web["tls_cert"]:
        assert os.path.dirname(web["tls_cert"]) == os.path.dirname(web["tls_key"])
        assert admin_cli.main(["make-cert", "--host", "central.example.org",
                               "--out", os.path.dirname(web["tls_cert"])]) == 0
        os.rename(os.path.join(os.path.dirname(web["tls_cert"]), "cert.pem"), web["tls_cert"])
        os.rename(os.path.join(os.path.dirname(web["tls_key"]), "key.pem"), web["tls_key"])
    for file in [loaded["ingest"]["station_list"], *(t["ca"] for t in loaded["exports"].values())]:
        if file:
            os.makedirs(os.path.dirname(file), exist_ok=True)
            open(file, "w").close()
    return path


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_loads_as_it_is(name):
    loaded = config.load(example(name), environ={})
    # The systemd unit's StateDirectory and LogsDirectory, which its hardening leaves writable.
    assert loaded["node"]["data_dir"] == "/var/lib/stationd"
    assert loaded["log"]["path"].startswith("/var/log/stationd/")
    with open(os.path.join(ETC, "systemd", "stationd.service"), encoding="utf-8") as f:
        unit = f.read()
    assert "\nStateDirectory=stationd\n" in unit and "\nLogsDirectory=stationd\n" in unit
    assert "ReadWritePaths=/var/lib/stationd /var/log/stationd\n" in unit
    assert "Environment=STATIOND_CONFIG=/etc/stationd/stationd.ini\n" in unit


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_passes_check_config(name, tmp_path, capsys):
    path = installed(tmp_path, name)
    assert admin_cli.main(["--config", str(path), "check-config"]) == 0
    out, err = capsys.readouterr()
    assert out.endswith(f"{path}: OK\n") and err == ""


def test_station_example():
    loaded = config.load(example("stationd-station.ini"), environ={})
    assert loaded["database"]["url"] == "sqlite:////var/lib/stationd/stationd.sqlite"
    assert loaded["node"]["workers"] == 1
    assert loaded["web"]["https"] and loaded["web"]["tls_cert"] is None  # the self-signed pair in data_dir/tls
    [target] = loaded["exports"].values()
    assert target["name"] == "central" and target["target_url"] == "https://central.example.org:8443"
    assert target["api_key"] and target["ca"] == "/etc/stationd/ca.pem"
    assert "system" in loaded["sensors"] and loaded["sensors"]["weather"]["driver"] == "enviroplus"
    assert loaded["display"]["driver"] == "st7735"
    assert loaded["log"]["format"] == "text"


def test_central_example():
    loaded = config.load(example("stationd-central.ini"), environ={})
    assert loaded["database"]["url"] == "postgresql+psycopg://stationd@127.0.0.1:5432/stationd"
    assert loaded.origin["node", "workers"].endswith("stationd-central.ini")
    assert loaded["node"]["workers"] == len(os.sched_getaffinity(0))  # auto
    assert not any(e.endswith("interface=127.0.0.1") for e in loaded["web"]["https"])  # public
    assert loaded["web"]["tls_cert"] and loaded["ingest"]["station_list"]
    assert loaded["log"]["format"] == "json"
    assert loaded["metrics"]["statsd_host"] == "127.0.0.1"


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_sensor_options_fit_their_drivers(name, tmp_path, monkeypatch):
    """Driver options are checked when the node starts, not by load(): make each driver here
    (the Enviro+ libraries, absent off a Pi, stood in for by placeholders)."""
    monkeypatch.setattr(drivers, "_import_part", lambda part: {module: object() for module in drivers._PARTS[part]})
    monkeypatch.setattr(drivers, "cpu_temperature", lambda root="/": 45.0)
    sensors = config.load(example(name), environ={})["sensors"]
    assert sensors
    for sensor in sensors.values():
        context = DriverContext(name=sensor["name"], data_dir=str(tmp_path), reactor=task.Clock(),
                                timeout=sensor["timeout"])
        assert drivers.make(sensor["driver"], sensor["options"], context) is not None

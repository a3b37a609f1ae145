"""Sensor drivers against fakes: a fake /proc and /sys tree, little scripts,
a task.Clock, and fake Pimoroni modules in sys.modules."""

import configparser
import os
import pathlib
import re
import statistics
import sys
import textwrap
import time
import types

import pytest
from twisted.internet import task

from stationd import config as configuration
from stationd.sensors import drivers
from stationd.sensors.drivers import DriverContext, DriverError, ReadError


def context(tmp_path, name="test", **extra):
    return DriverContext(name=name, data_dir=str(tmp_path), reactor=task.Clock(), **extra)


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# -- make and options -----------------------------------------------------------

def test_unknown_driver(tmp_path):
    with pytest.raises(DriverError) as e:
        drivers.make("nope", {}, context(tmp_path))
    assert e.value.key is None


@pytest.mark.parametrize("kind", ["system", "sysfs", "command", "simulated"])
def test_unknown_key_is_refused_with_its_name(tmp_path, kind):
    options = {"sysfs": {"path": "/sys/x"}, "command": {"command": "true"}}.get(kind, {})
    with pytest.raises(DriverError) as e:
        drivers.make(kind, dict(options, colour="blue"), context(tmp_path))
    assert e.value.key == "colour"
    assert "unknown key" in str(e.value)


def test_dbus_is_made_by_its_own_module_with_the_options_as_given(tmp_path, monkeypatch):
    made = []
    monkeypatch.setattr(drivers, "DBusDriver", lambda options, context: made.append((options, context)) or "driver")
    ctx = context(tmp_path)
    assert drivers.make("dbus", {"service": "org.x"}, ctx) == "driver"
    assert made == [({"service": "org.x"}, ctx)]


# -- system -------------------------------------------------------------------

MEMINFO = """MemTotal:        1000000 kB
MemFree:          200000 kB
MemAvailable:     750000 kB
Buffers:           10000 kB
Cached:           300000 kB
"""


@pytest.fixture
def fake_root(tmp_path):
    root = tmp_path / "root"
    write(root / "proc/loadavg", "0.52 0.34 0.25 2/345 6789\n")
    write(root / "proc/meminfo", MEMINFO)
    write(root / "proc/uptime", "12345.67 45678.90\n")
    return root


def test_system_reads_a_fake_proc_and_sys(tmp_path, fake_root):
    write(fake_root / "sys/class/thermal/thermal_zone0/type", "acpitz\n")
    write(fake_root / "sys/class/thermal/thermal_zone0/temp", "27800\n")
    write(fake_root / "sys/class/thermal/thermal_zone1/type", "x86_pkg_temp\n")
    write(fake_root / "sys/class/thermal/thermal_zone1/temp", "45500\n")
    fields = drivers.make("system", {"root": str(fake_root)}, context(tmp_path)).read()

    assert fields["load1"] == (0.52, "")
    assert fields["load5"] == (0.34, "")
    assert fields["load15"] == (0.25, "")
    assert fields["memory_total"] == (1000000 * 1024.0, "bytes")
    assert fields["memory_available"] == (750000 * 1024.0, "bytes")
    assert fields["memory_used_percent"] == (25.0, "percent")
    assert fields["cpu_temperature"] == (45.5, "celsius")  # the CPU zone, not acpitz
    assert fields["uptime"] == (12345.67, "seconds")

    disk = os.statvfs(tmp_path)
    assert fields["disk_total"] == (float(disk.f_blocks * disk.f_frsize), "bytes")
    assert fields["disk_free"][1] == "bytes" and 0 < fields["disk_free"][0] <= fields["disk_total"][0]
    assert fields["disk_used_percent"][1] == "percent" and 0 <= fields["disk_used_percent"][0] <= 100
    assert all(isinstance(value, float) for value, _ in fields.values())


def test_system_leaves_out_a_cpu_temperature_the_kernel_does_not_show(tmp_path, fake_root):
    write(fake_root / "sys/class/thermal/thermal_zone0/type", "acpitz\n")
    write(fake_root / "sys/class/thermal/thermal_zone0/temp", "27800\n")
    fields = drivers.make("system", {"root": str(fake_root)}, context(tmp_path)).read()
    assert "cpu_temperature" not in fields
    assert "load1" in fields and "uptime" in fields


def test_cpu_temperature_skips_unreadable_zones_and_falls_back_to_hwmon(tmp_path):
    (tmp_path / "sys/class/thermal/thermal_zone0/temp").mkdir(parents=True)  # reading it fails
    write(tmp_path / "sys/class/thermal/thermal_zone0/type", "cpu-thermal\n")
    write(tmp_path / "sys/class/hwmon/hwmon2/name", "coretemp\n")
    write(tmp_path / "sys/class/hwmon/hwmon2/temp1_input", "51000\n")
    assert drivers.cpu_temperature(str(tmp_path)) == 51.0
    assert drivers.cpu_temperature(str(tmp_path / "nothing")) is None


def test_cpu_temperature_takes_zones_in_numeric_order(tmp_path):
    for number, millidegrees in ((10, "70000"), (2, "40000")):
        write(tmp_path / f"sys/class/thermal/thermal_zone{number}/type", "cpu-thermal\n")
        write(tmp_path / f"sys/class/thermal/thermal_zone{number}/temp", millidegrees)
    assert drivers.cpu_temperature(str(tmp_path)) == 40.0


def test_system_without_memavailable(tmp_path, fake_root):
    write(fake_root / "proc/meminfo", "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 250 kB\n")
    fields = drivers.make("system", {"root": str(fake_root)}, context(tmp_path)).read()
    assert fields["memory_available"] == (400 * 1024.0, "bytes")
    assert fields["memory_used_percent"] == (60.0, "percent")


def test_system_on_this_machine(tmp_path):
    fields = drivers.make("system", {}, context(tmp_path)).read()
    for name in ("load1", "load5", "load15", "memory_total", "memory_available", "memory_used_percent",
                 "disk_total", "disk_free", "disk_used_percent", "uptime"):
        assert name in fields
    assert ("cpu_temperature" in fields) == (drivers.cpu_temperature("/") is not None)
    assert fields["uptime"][0] > 0 and fields["memory_total"][0] > 0


def test_system_root_must_be_a_directory(tmp_path):
    with pytest.raises(DriverError) as e:
        drivers.make("system", {"root": str(tmp_path / "missing")}, context(tmp_path))
    assert e.value.key == "root"


# -- sysfs --------------------------------------------------------------------

def test_sysfs_one_file_with_scale_and_offset(tmp_path):
    write(tmp_path / "hwmon0/temp1_input", "42500\n")
    driver = drivers.make("sysfs", {"path": str(tmp_path / "hwmon0/temp1_input"), "scale": "0.001",
                                    "offset": "-2.5", "field": "board", "unit": "celsius"}, context(tmp_path))
    assert driver.blocking
    assert driver.read() == {"board": (40.0, "celsius")}


def test_sysfs_several_files_and_a_glob(tmp_path):
    write(tmp_path / "iio:device3/in_voltage0_raw", "1000")
    write(tmp_path / "iio:device3/in_voltage1_raw", "2000\n")
    files = f"a={tmp_path}/iio:device*/in_voltage0_raw, b={tmp_path}/iio:device3/in_voltage1_raw"
    driver = drivers.make("sysfs", {"files": files, "scale": "2"}, context(tmp_path))
    assert driver.read() == {"a": (2000.0, ""), "b": (4000.0, "")}


def test_sysfs_default_field_is_value(tmp_path):
    write(tmp_path / "capacity", "87")
    assert drivers.make("sysfs", {"path": str(tmp_path / "capacity")}, context(tmp_path)).read() == {
        "value": (87.0, "")}


def test_sysfs_read_errors(tmp_path):
    driver = drivers.make("sysfs", {"path": str(tmp_path / "later")}, context(tmp_path))  # may appear later
    with pytest.raises(FileNotFoundError):
        driver.read()
    write(tmp_path / "later", "N/A\n")
    with pytest.raises(ReadError, match="not a number"):
        driver.read()
    write(tmp_path / "later", "7\n")
    assert driver.read() == {"value": (7.0, "")}

    write(tmp_path / "hwmon1/temp", "1")
    write(tmp_path / "hwmon2/temp", "2")
    for pattern, count in ((f"{tmp_path}/hwmon*/temp", 2), (f"{tmp_path}/nothing*/temp", 0)):
        with pytest.raises(ReadError, match=f"matches {count} files"):
            drivers.make("sysfs", {"path": pattern}, context(tmp_path)).read()


@pytest.mark.parametrize("options,key", [
    ({}, "path"),
    ({"path": "/sys/a", "files": "x=/sys/b"}, "path"),
    ({"path": "relative/temp"}, "path"),
    ({"files": "x=relative"}, "files"),
    ({"files": "x"}, "files"),
    ({"files": "x=/sys/b", "field": "y"}, "field"),
    ({"path": "/sys/a", "scale": "big"}, "scale"),
    ({"path": "/sys/a", "offset": "nan"}, "offset"),
    ({"path": "/sys/a", "field": "no spaces"}, "field"),
])
def test_sysfs_option_errors(tmp_path, options, key):
    with pytest.raises(DriverError) as e:
        drivers.make("sysfs", options, context(tmp_path))
    assert e.value.key == key


# -- command ------------------------------------------------------------------

def script(tmp_path, body, name="probe"):
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_command_key_value_lines(tmp_path):
    probe = script(tmp_path, 'echo "# a comment"\necho temperature=21.5\necho "humidity = 40"\n'
                             'echo state=open\necho not a field\necho "bad key=1"\n')
    driver = drivers.make("command", {"command": probe, "units": "temperature=celsius,humidity=percent"},
                          context(tmp_path))
    assert driver.blocking
    assert driver.read() == {"temperature": (21.5, "celsius"), "humidity": (40.0, "percent")}


def test_command_json_and_arguments(tmp_path):
    probe = script(tmp_path, 'echo "{\\"$1\\": 3, \\"b\\": \\"4.5\\", \\"c\\": true, \\"d\\": [1], \\"e\\": null}"\n')
    driver = drivers.make("command", {"command": f"{probe} 'a'"}, context(tmp_path))
    assert driver.read() == {"a": (3.0, ""), "b": (4.5, "")}
    driver = drivers.make("command", {"command": f"{probe} a", "format": "keyvalue"}, context(tmp_path))
    with pytest.raises(ReadError, match="no numeric field"):
        driver.read()


def test_command_json_format_refuses_other_output(tmp_path):
    driver = drivers.make("command", {"command": script(tmp_path, "echo a=1\n"), "format": "json"},
                          context(tmp_path))
    with pytest.raises(ReadError, match="not JSON"):
        driver.read()
    driver = drivers.make("command", {"command": script(tmp_path, "echo '[1, 2]'\n"), "format": "json"},
                          context(tmp_path))
    with pytest.raises(ReadError, match="not an object"):
        driver.read()


def test_command_non_zero_exit_says_the_first_line_of_stderr(tmp_path):
    probe = script(tmp_path, "echo a=1\necho 'sensor not found' >&2\necho 'more' >&2\nexit 3\n")
    with pytest.raises(ReadError) as e:
        drivers.make("command", {"command": probe}, context(tmp_path)).read()
    assert str(e.value) == "probe exited with status 3: sensor not found"


def test_command_without_numbers(tmp_path):
    with pytest.raises(ReadError, match="no numeric field.*no output"):
        drivers.make("command", {"command": script(tmp_path, "")}, context(tmp_path)).read()


def test_command_timeout_kills_the_program_and_its_children(tmp_path):
    pid_file = tmp_path / "child.pid"
    probe = script(tmp_path, f"echo a=1\nsleep 60 &\necho $! > {pid_file}\nwait\n")
    driver = drivers.make("command", {"command": probe}, context(tmp_path, timeout=0.5))
    with pytest.raises(ReadError, match="did not finish within 0.5 s"):
        driver.read()
    # The sleeping grandchild held stdout: read() returned once the kill closed it, so it is dead or
    # dying: gone, or a zombie awaiting its reaper, within moments (its files close before it is a
    # zombie, so for an instant it may still show R; seen once in CI).
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while True:
        try:
            with open(f"/proc/{child}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            break
        if state == "Z":
            break
        assert time.monotonic() < deadline, f"the killed program's child is still {state}"
        time.sleep(0.01)


@pytest.mark.parametrize("options,key", [
    ({}, "command"),
    ({"command": "   "}, "command"),
    ({"command": "no-such-program-here --x"}, "command"),
    ({"command": "echo 'unclosed"}, "command"),
    ({"command": "echo", "format": "xml"}, "format"),
    ({"command": "echo", "units": "celsius"}, "units"),
])
def test_command_option_errors(tmp_path, options, key):
    with pytest.raises(DriverError) as e:
        drivers.make("command", options, context(tmp_path))
    assert e.value.key == key


# -- simulated ----------------------------------------------------------------

def simulated(tmp_path, **options):
    ctx = context(tmp_path)
    return drivers.make("simulated", options, ctx), ctx.reactor


@pytest.mark.parametrize("waveform,expected", [
    ("sine", [20, 25, 20, 15]),
    ("square", [25, 25, 15, 15]),
    ("sawtooth", [15, 17.5, 20, 22.5]),
    ("triangle", [15, 20, 25, 20]),
    ("constant", [20, 20, 20, 20]),
])
def test_simulated_waveforms_follow_the_clock(tmp_path, waveform, expected):
    driver, clock = simulated(tmp_path, waveform=waveform, period="1m", amplitude="5", offset="20",
                              field="temperature", unit="celsius")
    assert driver.blocking
    values = []
    for _ in range(4):
        reading = driver.read()
        assert list(reading) == ["temperature"] and reading["temperature"][1] == "celsius"
        values.append(reading["temperature"][0])
        clock.advance(15)
    assert values == pytest.approx(expected, abs=1e-12)
    clock.advance(60)  # one period later: the same values
    assert driver.read()["temperature"][0] == pytest.approx(expected[0], abs=1e-12)


def test_simulated_defaults(tmp_path):
    driver, clock = simulated(tmp_path)
    clock.advance(15)
    assert driver.read() == {"value": (1.0, "")}  # sin(pi/2), period 60 s, amplitude 1


def test_simulated_noise_is_a_function_of_seed_and_time(tmp_path):
    a, clock_a = simulated(tmp_path, waveform="constant", offset="10", noise="2", seed="7")
    b, clock_b = simulated(tmp_path, waveform="constant", offset="10", noise="2", seed="7")
    c, clock_c = simulated(tmp_path, waveform="constant", offset="10", noise="2", seed="8")
    series = {driver: [] for driver in (a, b, c)}
    for _ in range(2000):
        for driver, clock in ((a, clock_a), (b, clock_b), (c, clock_c)):
            series[driver].append(driver.read()["value"][0])
            clock.advance(1)
    assert series[a] == series[b]
    assert series[a] != series[c]
    assert len(set(series[a])) == 2000
    assert statistics.mean(series[a]) == pytest.approx(10, abs=0.2)
    assert statistics.stdev(series[a]) == pytest.approx(2, rel=0.1)
    assert a.value(1234.5) == b.value(1234.5)  # any time, in any order


def test_simulated_default_seed_is_the_sensor_name(tmp_path):
    one = drivers.make("simulated", {"noise": "1"}, context(tmp_path))
    other = drivers.make("simulated", {"noise": "1"}, context(tmp_path, name="other"))
    assert one.value(5.0) == drivers.make("simulated", {"noise": "1"}, context(tmp_path)).value(5.0)
    assert one.value(5.0) != other.value(5.0)


@pytest.mark.parametrize("options,key", [
    ({"waveform": "wobble"}, "waveform"),
    ({"period": "0"}, "period"),
    ({"period": "soon"}, "period"),
    ({"amplitude": "x"}, "amplitude"),
    ({"noise": "-1"}, "noise"),
    ({"field": "a b"}, "field"),
])
def test_simulated_option_errors(tmp_path, options, key):
    with pytest.raises(DriverError) as e:
        drivers.make("simulated", options, context(tmp_path))
    assert e.value.key == key


# -- enviroplus ---------------------------------------------------------------
# Fakes of the Pimoroni libraries' interfaces: bme280.BME280(i2c_dev=...),
# smbus2.SMBus(1), ltr559.LTR559(), enviroplus.gas.read_all() (resistances in
# ohms), pms5003.PMS5003().read() -> data with pm_ug_per_m3(size,
# atmospheric_environment) and pm_per_1l_air(size), raising ValueError for a
# size it does not have (as pms5003 1.0.1 does, PM10 in atmospheric units
# being asked for with size None).

class FakeBME280:
    def __init__(self, i2c_dev=None):
        assert i2c_dev is not None

    def get_temperature(self):
        return 30.0

    def get_pressure(self):
        return 1013.25

    def get_humidity(self):
        return 45.5


class FakeLTR559:
    def get_lux(self):
        return 123.4

    def get_proximity(self):
        return 7


class FakeGasReading:
    def __init__(self):
        self.oxidising, self.reducing, self.nh3, self.adc = 20000.0, 300000.0, 75000.0, None


class FakePMSData:
    # PM1, PM2.5, PM10 (standard), PM1, PM2.5, PM10 (atmospheric), counts > 0.3, 0.5, 1, 2.5, 5, 10 um.
    values = (3, 5, 8, 4, 6, 9, 900, 300, 60, 12, 3, 1)

    def pm_ug_per_m3(self, size, atmospheric_environment=False):
        sizes = (1.0, 2.5, None) if atmospheric_environment else (1.0, 2.5, 10)
        if size not in sizes:
            raise ValueError(f"Particle size {size} measurement not available.")
        return self.values[sizes.index(size) + (3 if atmospheric_environment else 0)]

    def pm_per_1l_air(self, size):
        sizes = (0.3, 0.5, 1.0, 2.5, 5, 10)
        if size not in sizes:
            raise ValueError(f"Particle size {size} measurement not available.")
        return self.values[6 + sizes.index(size)]


class FakePMS5003:
    reads = 0

    def read(self):
        FakePMS5003.reads += 1
        return FakePMSData()


def fake_pimoroni(monkeypatch, missing=()):
    modules = {
        "bme280": types.SimpleNamespace(BME280=FakeBME280),
        "smbus2": types.SimpleNamespace(SMBus=lambda bus: ("bus", bus)),
        "ltr559": types.SimpleNamespace(LTR559=FakeLTR559),
        "enviroplus": types.SimpleNamespace(),
        "enviroplus.gas": types.SimpleNamespace(read_all=FakeGasReading),
        "pms5003": types.SimpleNamespace(PMS5003=FakePMS5003),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, None if name in missing else module)


@pytest.fixture
def pi_root(tmp_path):
    root = tmp_path / "pi"
    write(root / "sys/class/thermal/thermal_zone0/type", "cpu-thermal\n")
    write(root / "sys/class/thermal/thermal_zone0/temp", "60000\n")
    return root


def test_enviroplus_reads_every_part(tmp_path, monkeypatch, pi_root):
    fake_pimoroni(monkeypatch)
    driver = drivers.make("enviroplus", {"root": str(pi_root)}, context(tmp_path))
    assert driver.blocking
    fields = driver.read()
    assert fields.pop("temperature") == (pytest.approx(30 - (60 - 30) / 2.25), "celsius")
    assert fields == {
        "temperature_raw": (30.0, "celsius"), "pressure": (1013.25, "hPa"), "humidity": (45.5, "percent"),
        "light": (123.4, "lux"), "proximity": (7.0, ""),
        "oxidising": (20000.0, "ohms"), "reducing": (300000.0, "ohms"), "nh3": (75000.0, "ohms"),
        "PM1_0": (3.0, "ug/m3"), "PM2_5": (5.0, "ug/m3"), "PM10": (8.0, "ug/m3"),
        "PM1_0_atm": (4.0, "ug/m3"), "PM2_5_atm": (6.0, "ug/m3"), "PM10_atm": (9.0, "ug/m3"),
        "gt0_3um": (900.0, "count/0.1L"), "gt0_5um": (300.0, "count/0.1L"), "gt1_0um": (60.0, "count/0.1L"),
        "gt2_5um": (12.0, "count/0.1L"), "gt5_0um": (3.0, "count/0.1L"), "gt10um": (1.0, "count/0.1L"),
    }
    reads = FakePMS5003.reads
    driver.read()
    assert FakePMS5003.reads == reads + 1  # a fresh frame each poll


def test_enviroplus_compensation_factor_and_parts(tmp_path, monkeypatch, pi_root):
    fake_pimoroni(monkeypatch)
    driver = drivers.make("enviroplus", {"root": str(pi_root), "parts": "weather", "compensation_factor": "0.8"},
                          context(tmp_path))
    fields = driver.read()
    assert sorted(fields) == ["humidity", "pressure", "temperature", "temperature_raw"]
    assert fields["temperature"][0] == pytest.approx(30 - 30 / 0.8)

    write(pi_root / "sys/class/thermal/thermal_zone0/temp", "35000\n")  # the CPU cools: less to take off
    assert driver.read()["temperature"][0] == pytest.approx(30 - 5 / 0.8)


def test_enviroplus_without_compensation(tmp_path, monkeypatch):
    fake_pimoroni(monkeypatch)
    with pytest.raises(DriverError) as e:  # no thermal zone under this root
        drivers.make("enviroplus", {"root": str(tmp_path), "parts": "weather"}, context(tmp_path))
    assert e.value.key == "compensate"
    driver = drivers.make("enviroplus", {"root": str(tmp_path), "parts": "weather", "compensate": "no"},
                          context(tmp_path))
    assert driver.read() == {"temperature": (30.0, "celsius"), "pressure": (1013.25, "hPa"),
                             "humidity": (45.5, "percent")}


def test_enviroplus_leaves_out_what_the_sensor_does_not_give(tmp_path, monkeypatch, pi_root):
    fake_pimoroni(monkeypatch)

    class Fewer(FakePMSData):
        def pm_per_1l_air(self, size):
            if size in (5, 10):
                raise ValueError("not available")
            return super().pm_per_1l_air(size)

    monkeypatch.setattr(FakePMS5003, "read", lambda self: Fewer())
    fields = drivers.make("enviroplus", {"parts": "particulates"}, context(tmp_path)).read()
    assert sorted(fields) == sorted(["PM1_0", "PM2_5", "PM10", "PM1_0_atm", "PM2_5_atm", "PM10_atm",
                                     "gt0_3um", "gt0_5um", "gt1_0um", "gt2_5um"])
    assert all(value > 0 for value, _ in fields.values())


def test_enviroplus_auto_reads_the_parts_whose_libraries_import(tmp_path, monkeypatch, pi_root):
    fake_pimoroni(monkeypatch, missing=("pms5003", "ltr559"))
    driver = drivers.make("enviroplus", {"root": str(pi_root), "parts": "auto"}, context(tmp_path))
    assert driver.parts == ["weather", "gas"]
    assert sorted(driver.read()) == ["humidity", "nh3", "oxidising", "pressure", "reducing", "temperature",
                                     "temperature_raw"]


def test_enviroplus_without_the_libraries(tmp_path, monkeypatch, pi_root):
    fake_pimoroni(monkeypatch, missing=("bme280", "smbus2", "ltr559", "enviroplus", "enviroplus.gas", "pms5003"))
    with pytest.raises(DriverError) as e:
        drivers.make("enviroplus", {"root": str(pi_root)}, context(tmp_path))
    assert e.value.key is None
    assert str(e.value).startswith("the Pimoroni libraries are not installed: pip install enviroplus")


def test_enviroplus_a_library_that_fails_to_import_otherwise(tmp_path, monkeypatch, pi_root):
    fake_pimoroni(monkeypatch, missing=("pms5003",))
    monkeypatch.delitem(sys.modules, "pms5003")
    monkeypatch.setattr(sys, "path", [str(tmp_path / "lib")] + sys.path)
    write(tmp_path / "lib/pms5003.py", "raise RuntimeError('no gpiochip found')\n")
    with pytest.raises(DriverError) as e:
        drivers.make("enviroplus", {"root": str(pi_root), "parts": "weather particulates"}, context(tmp_path))
    assert e.value.key == "parts"
    assert "RuntimeError: no gpiochip found" in str(e.value)


@pytest.mark.parametrize("options,key", [
    ({"parts": "weather smell"}, "parts"),
    ({"compensation_factor": "0"}, "compensation_factor"),
    ({"compensate": "maybe"}, "compensate"),
    ({"root": "/no/such/dir"}, "root"),
    ({"device": "/dev/ttyS0"}, "device"),
])
def test_enviroplus_option_errors(tmp_path, monkeypatch, pi_root, options, key):
    fake_pimoroni(monkeypatch)
    with pytest.raises(DriverError) as e:
        drivers.make("enviroplus", dict({"root": str(pi_root)}, **options), context(tmp_path))
    assert e.value.key == key


# -- the documentation --------------------------------------------------------

def test_the_examples_in_the_docs_make_drivers(tmp_path, monkeypatch):
    text = (pathlib.Path(__file__).parent.parent / "docs/sensors.rst").read_text()
    parser = configparser.ConfigParser(interpolation=None)
    for block in re.findall(r"::\n\n((?:    .*\n|\n)+)", text):
        if block.lstrip().startswith("[sensor:"):
            parser.read_string(textwrap.dedent(block))
    fake_pimoroni(monkeypatch)
    monkeypatch.setattr(drivers, "cpu_temperature", lambda root="/": 50.0)
    monkeypatch.setattr(drivers, "shutil", types.SimpleNamespace(which=lambda name: name))
    kinds = set()
    for section in parser.sections():
        values = dict(parser[section])
        options = {key: value for key, value in values.items() if key not in configuration.SENSOR}
        assert drivers.make(values["driver"], options, context(tmp_path)) is not None, section
        kinds.add(values["driver"])
    assert kinds == {"system", "sysfs", "command", "simulated", "enviroplus", "dbus"}

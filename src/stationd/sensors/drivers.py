"""Sensor drivers: each reads one device (or the host) and returns its fields.

A driver is made once, at start, from its [sensor:NAME] options (the keys
the section has beyond the generic ones), so a bad option stops the start
with one line.  ``read()`` returns ``{field: (value, unit)}`` with float
values.  Blocking drivers (``blocking = True``) are called in a thread (the
poller's, one a sensor, one read at a time); the others return a Deferred
and must not block.

A read that fails raises (OSError for a file that cannot be read, ReadError
for the rest); the poller counts it and polls again next time.  Units are
plain ASCII words: ``celsius``, ``percent``, ``bytes``, ``seconds``, ``hPa``,
``ohms``, ``lux``, ``ug/m3``, ``count/0.1L``; ``""`` for a pure number (load
averages, proximity).  docs/sensors.rst lists every driver's fields.
"""

import glob
import importlib
import json
import math
import os
import random
import re
import shlex
import shutil
import signal
import subprocess

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from stationd import config
from stationd.sensors.dbus_driver import DBusDriver
from stationd.sensors.options import (  # noqa: F401 (DriverError, ReadError, Options: the drivers' API)
    FIELD_NAME,
    DriverContext,
    DriverError,
    Options,
    ReadError,
    directory,
    field_name,
    number,
    numbered,
    pairs,
    positive,
    positive_duration,
    read_text,
)

log = Logger()


class Driver:
    blocking = True

    def read(self):
        raise NotImplementedError


def make(kind: str, options: dict[str, str], context: DriverContext) -> "Driver | DBusDriver":
    """The driver ``kind`` for ``options`` ({key: text}); DriverError if they do not fit."""
    if kind == "dbus":  # (it reads its options itself)
        return DBusDriver(options, context)
    if kind not in DRIVERS:
        raise DriverError(None, f"no driver {kind!r}")
    opts = Options(options)
    driver = DRIVERS[kind](opts, context)
    opts.done()
    return driver


def for_section(sensor: "config.SensorSection", data_dir: str, reactor: "IReactorTime") -> "Driver | DBusDriver":
    """The driver of a [sensor:NAME] section; a ConfigError naming the file, section and key
    if its options do not fit (at start, and for a reload to refuse)."""
    context = DriverContext(name=sensor["name"], data_dir=data_dir, reactor=reactor, timeout=sensor["timeout"])
    try:
        return make(sensor["driver"], sensor["options"], context)
    except DriverError as e:
        key = e.key or "driver"
        origin = sensor["origin"].get(key, sensor["origin"].get("driver"))
        raise config.ConfigError([f"{origin}:sensor:{sensor['name']}:{key}: {e}"]) from None


# -- system -------------------------------------------------------------------

# Thermal zone types that are the CPU or the SoC (Raspberry Pi: cpu-thermal;
# Intel: x86_pkg_temp; many ARM boards: soc-thermal, cpu0-thermal).  acpitz is
# left out on purpose: it is often a fixed value, or the motherboard.
_CPU_ZONE = re.compile(r"cpu|x86_pkg_temp|soc", re.IGNORECASE)
# hwmon drivers whose temp1_input is the CPU package.
_CPU_HWMON = ("coretemp", "k10temp", "zenpower", "cpu_thermal", "cpu-thermal", "soc_thermal")


def cpu_temperature(root="/"):
    """The CPU temperature in degrees Celsius from /sys, or None where the kernel shows none."""
    candidates = []
    for zone in numbered(os.path.join(root, "sys/class/thermal/thermal_zone*")):
        try:
            if _CPU_ZONE.search(read_text(os.path.join(zone, "type"))):
                candidates.append(os.path.join(zone, "temp"))
        except OSError:
            continue
    for hwmon in numbered(os.path.join(root, "sys/class/hwmon/hwmon*")):
        try:
            if read_text(os.path.join(hwmon, "name")) in _CPU_HWMON:
                candidates.append(os.path.join(hwmon, "temp1_input"))
        except OSError:
            continue
    for path in candidates:
        try:
            return int(read_text(path)) / 1000  # millidegrees
        except (OSError, ValueError):  # a zone that is there but cannot be read (EINVAL, ENODATA)
            continue
    return None


class System(Driver):
    """The host: load, memory, disk free of data_dir, CPU temperature, uptime."""

    def __init__(self, options, context):
        self.root = options.get("root", directory, "/")
        self.data_dir = context.data_dir

    def _proc(self, name):
        return read_text(os.path.join(self.root, "proc", name))

    def read(self):
        fields = {}
        load = self._proc("loadavg").split()
        for i, name in enumerate(("load1", "load5", "load15")):
            fields[name] = (float(load[i]), "")

        meminfo = {}
        for line in self._proc("meminfo").splitlines():
            key, _, rest = line.partition(":")
            if rest.split():
                meminfo[key] = int(rest.split()[0]) * 1024  # kB
        total = meminfo["MemTotal"]
        available = meminfo.get("MemAvailable")
        if available is None:  # kernels before 3.14
            available = meminfo["MemFree"] + meminfo.get("Buffers", 0) + meminfo.get("Cached", 0)
        fields["memory_total"] = (float(total), "bytes")
        fields["memory_available"] = (float(available), "bytes")
        fields["memory_used_percent"] = (100.0 * (total - available) / total, "percent")

        disk = os.statvfs(self.data_dir)
        used = (disk.f_blocks - disk.f_bfree) * disk.f_frsize
        free = disk.f_bavail * disk.f_frsize  # what the node may still write (not root's reserve)
        fields["disk_total"] = (float(disk.f_blocks * disk.f_frsize), "bytes")
        fields["disk_free"] = (float(free), "bytes")
        fields["disk_used_percent"] = (100.0 * used / (used + free) if used + free else 0.0, "percent")  # as df

        temperature = cpu_temperature(self.root)
        if temperature is not None:
            fields["cpu_temperature"] = (temperature, "celsius")

        fields["uptime"] = (float(self._proc("uptime").split()[0]), "seconds")
        return fields


# -- sysfs --------------------------------------------------------------------

def absolute_path(text):
    if not text.startswith("/"):
        raise ValueError(f"expected an absolute path, not {text!r}")
    return text


class Sysfs(Driver):
    """Numbers from sysfs files (hwmon, thermal, iio, power_supply): raw * scale + offset.

    Files are only read at poll time (a device may appear after the node
    starts); a path may be a glob pattern that must match exactly one file,
    for directories whose number changes between boots (hwmon3, iio:device0).
    """

    def __init__(self, options, context):
        path = options.get("path", absolute_path)
        files = options.get("files", pairs)
        field = options.get("field", field_name)
        if (path is None) == (files is None):
            raise DriverError("path", "give either path (one file) or files (name=path ...), not both")
        if files is not None and field is not None:
            raise DriverError("field", "goes with path; with files, each file is named there")
        if files is not None:
            try:
                files = {name: absolute_path(file) for name, file in files.items()}
            except ValueError as e:
                raise DriverError("files", str(e)) from None
        self.files = files if files is not None else {field or "value": path}
        self.unit = options.get("unit", default="")
        self.scale = options.get("scale", number, 1.0)
        self.offset = options.get("offset", number, 0.0)

    def read(self):
        fields = {}
        for name, pattern in self.files.items():
            path = pattern
            if glob.has_magic(pattern):
                matches = glob.glob(pattern)
                if len(matches) != 1:
                    raise ReadError(f"{pattern} matches {len(matches)} files, not one")
                path = matches[0]
            text = read_text(path)
            try:
                raw = float(text)
            except ValueError:
                raise ReadError(f"{path} holds {text[:40]!r}, not a number") from None
            fields[name] = (raw * self.scale + self.offset, self.unit)
        return fields


# -- command ------------------------------------------------------------------

def command_line(text):
    argv = shlex.split(text)
    if not argv:
        raise ValueError("required")
    if shutil.which(argv[0]) is None:
        raise ValueError(f"{argv[0]!r} is not an executable file, nor found in PATH")
    return argv


def parse_output(text, form):
    """{field: value} from a program's output: ``key=value`` lines or a JSON object.

    Values that are not numbers (or numeric strings) are left out, as are
    lines that are not ``key=value`` and keys that are not field names.
    """
    if form == "json" or (form == "auto" and text.lstrip().startswith("{")):
        try:
            items = json.loads(text)
        except ValueError as e:
            raise ReadError(f"the output is not JSON: {e}") from None
        if not isinstance(items, dict):
            raise ReadError("the output is JSON, but not an object")
        items = items.items()
    else:
        lines = (line.strip() for line in text.splitlines())
        items = (line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    values = {}
    for key, value in items:
        key = key.strip()
        if isinstance(value, bool) or not isinstance(value, (int, float, str)) or not FIELD_NAME.match(key):
            continue
        try:
            value = float(value)
        except ValueError:
            continue
        if math.isfinite(value):
            values[key] = value
    return values


class Command(Driver):
    """A program's output: ``key=value`` lines or a JSON object.

    The program runs without a shell, stdin from /dev/null, in a session of
    its own; when it outlives the sensor's timeout the whole session is
    killed (SIGKILL), so a stuck child cannot hold the thread.
    """

    def __init__(self, options, context):
        self.argv = options.required("command", command_line)
        self.form = options.get("format", config.choice("auto", "keyvalue", "json"), "auto")
        self.units = options.get("units", pairs, {})
        self.timeout = context.timeout or 10.0

    def read(self):
        program = os.path.basename(self.argv[0])
        process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, start_new_session=True)
        try:
            out, err = process.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.communicate()
            raise ReadError(f"{program} did not finish within {self.timeout:g} s (killed)") from None
        if process.returncode:
            lines = err.decode("utf-8", "replace").strip().splitlines()
            why = lines[0].strip() if lines else "nothing on stderr"
            if process.returncode < 0:
                raise ReadError(f"{program} was killed by signal {-process.returncode}: {why}")
            raise ReadError(f"{program} exited with status {process.returncode}: {why}")
        text = out.decode("utf-8", "replace")
        values = parse_output(text, self.form)
        if not values:
            first = text.strip().splitlines()[0][:80] if text.strip() else ""
            raise ReadError(f"{program} printed no numeric field (expected key=value lines or a JSON object)"
                            + (f": {first!r}" if first else ": no output"))
        return {name: (value, self.units.get(name, "")) for name, value in values.items()}


# -- simulated ----------------------------------------------------------------

_WAVEFORMS = {
    "sine": lambda x: math.sin(2 * math.pi * x),
    "square": lambda x: 1.0 if x < 0.5 else -1.0,
    "sawtooth": lambda x: 2 * x - 1,
    "triangle": lambda x: 1 - 4 * abs(x - 0.5),
    "constant": lambda x: 0.0,
}


class Simulated(Driver):
    """A waveform of the reactor's time plus seeded Gaussian noise, for demos and tests.

    value(t) = offset + amplitude * wave((t mod period) / period) + noise,
    where the noise is drawn from a generator seeded with (seed, t): the same
    seed and time always give the same value.  Read in its sensor's thread
    like a device, so that its polls start as punctually as a device's do.
    """

    def __init__(self, options, context):
        self.reactor = context.reactor
        self.field = options.get("field", field_name, "value")
        self.unit = options.get("unit", default="")
        self.wave = _WAVEFORMS[options.get("waveform", config.choice(*_WAVEFORMS), "sine")]
        self.period = options.get("period", positive_duration, 60.0)
        self.amplitude = options.get("amplitude", number, 1.0)
        self.offset = options.get("offset", number, 0.0)
        self.noise = options.get("noise", number, 0.0)
        if self.noise < 0:
            raise DriverError("noise", "must be 0 or more")
        self.seed = options.get("seed", default=context.name)

    def value(self, t):
        value = self.offset + self.amplitude * self.wave((t % self.period) / self.period)
        if self.noise:
            value += random.Random(f"{self.seed}:{t!r}").gauss(0.0, self.noise)
        return value

    def read(self):
        return {self.field: (self.value(self.reactor.seconds()), self.unit)}


# -- enviroplus ---------------------------------------------------------------

# Each part of the Enviro+ board, and the modules it needs.
_PARTS = {
    "weather": ("bme280", "smbus2"),
    "light": ("ltr559",),
    "gas": ("enviroplus.gas",),
    "particulates": ("pms5003",),
}
_PM_SIZES = (("PM1_0", 1.0), ("PM2_5", 2.5), ("PM10", 10))
_COUNT_SIZES = (("gt0_3um", 0.3), ("gt0_5um", 0.5), ("gt1_0um", 1.0), ("gt2_5um", 2.5), ("gt5_0um", 5),
                ("gt10um", 10))


def _import_part(part):
    """{module name: module} for ``part``; ImportError (with the reason) when one will not import."""
    modules = {}
    for name in _PARTS[part]:
        try:
            modules[name] = importlib.import_module(name)
        except Exception as e:  # the libraries raise more than ImportError off a Pi (gpiod, RPi.GPIO)
            raise ImportError(f"{name}: {type(e).__name__}: {e}") from None
    return modules


def _parts(text):
    names = config.words(text)
    unknown = [name for name in names if name not in _PARTS]
    if unknown or not names:
        raise ValueError(f"expected auto, or some of {', '.join(_PARTS)}; not {text!r}")
    return names


class Enviroplus(Driver):
    """The Pimoroni Enviro+ board: weather (BME280), light (LTR559), gas (MICS6814), particulates (PMS5003).

    The devices are opened at the first read (in the thread), not at start.
    Every part listed is read at each poll and any failure fails the read:
    put parts that fail independently (the PMS5003 on its serial line) in
    sensors of their own.
    """

    def __init__(self, options, context):
        parts = options.get("parts", lambda text: None if text == "auto" else _parts(text))
        self.compensate = options.get("compensate", config.boolean, True)
        self.factor = options.get("compensation_factor", positive, 2.25)
        self.root = options.get("root", directory, "/")
        self.modules = {}
        if parts is None:  # auto: every part whose library imports
            missing = []
            for part in _PARTS:
                try:
                    self.modules.update(_import_part(part))
                except ImportError as e:
                    missing.append(f"{part} ({e})")
            parts = [part for part in _PARTS if all(name in self.modules for name in _PARTS[part])]
            if not parts:
                raise DriverError(None, "the Pimoroni libraries are not installed: pip install enviroplus "
                                        f"({'; '.join(missing)})")
            if missing:
                log.info("sensor {name}: enviroplus reads {parts}; left out: {missing}", name=context.name,
                         parts=", ".join(parts), missing="; ".join(missing))
        else:
            for part in parts:
                try:
                    self.modules.update(_import_part(part))
                except ImportError as e:
                    raise DriverError("parts", f"{part} needs a Pimoroni library that will not import "
                                               f"(pip install enviroplus): {e}") from None
        if "weather" in parts and self.compensate and cpu_temperature(self.root) is None:
            raise DriverError("compensate", "this machine shows no CPU temperature to compensate the BME280 "
                                            "with; set compensate = no")
        self.parts = parts
        self.devices = {}

    def _device(self, part):
        if part not in self.devices:
            if part == "weather":
                self.devices[part] = self.modules["bme280"].BME280(i2c_dev=self.modules["smbus2"].SMBus(1))
            elif part == "light":
                ltr559 = self.modules["ltr559"]
                # ltr559 >= 0.1.0 has a class; older versions work at module level.
                self.devices[part] = ltr559.LTR559() if hasattr(ltr559, "LTR559") else ltr559
            elif part == "gas":
                self.devices[part] = self.modules["enviroplus.gas"]
            else:
                self.devices[part] = self.modules["pms5003"].PMS5003()
        return self.devices[part]

    def read(self):
        fields = {}
        for part in self.parts:
            fields.update(getattr(self, "_read_" + part)(self._device(part)))
        return fields

    def _read_weather(self, bme280):
        raw = float(bme280.get_temperature())
        fields = {"pressure": (float(bme280.get_pressure()), "hPa"),
                  "humidity": (float(bme280.get_humidity()), "percent")}
        if not self.compensate:
            fields["temperature"] = (raw, "celsius")
            return fields
        cpu = cpu_temperature(self.root)
        if cpu is None:
            raise ReadError("no CPU temperature to compensate the BME280 with")
        # Pimoroni's compensation for the heat of the Pi under the board.
        fields["temperature"] = (raw - (cpu - raw) / self.factor, "celsius")
        fields["temperature_raw"] = (raw, "celsius")
        return fields

    def _read_light(self, ltr559):
        return {"light": (float(ltr559.get_lux()), "lux"), "proximity": (float(ltr559.get_proximity()), "")}

    def _read_gas(self, gas):
        reading = gas.read_all()
        return {name: (float(getattr(reading, name)), "ohms") for name in ("oxidising", "reducing", "nh3")}

    def _read_particulates(self, pms5003):
        data = pms5003.read()
        fields = {}
        for name, size in _PM_SIZES:
            for suffix, atmospheric in (("", False), ("_atm", True)):
                try:
                    value = data.pm_ug_per_m3(size, atmospheric)
                except ValueError:
                    if not (atmospheric and size == 10):
                        continue
                    try:  # pms5003 up to 1.0.1 asks for size None for PM10 in atmospheric units
                        value = data.pm_ug_per_m3(None, True)
                    except ValueError:
                        continue
                fields[name + suffix] = (float(value), "ug/m3")
        for name, size in _COUNT_SIZES:
            try:
                fields[name] = (float(data.pm_per_1l_air(size)), "count/0.1L")  # per 0.1 L, despite the name
            except ValueError:  # a size this sensor does not count
                continue
        return fields


DRIVERS = {
    "system": System,
    "sysfs": Sysfs,
    "command": Command,
    "simulated": Simulated,
    "enviroplus": Enviroplus,
}

"""D-Bus: the node's object on a private dbus-daemon, seen through gdbus and a txdbus client;
the `dbus` sensor driver against an object the test exports; a bus missing at start or
going away; the system-bus policy file on a system-like daemon.

The connection runs on the real reactor; property announcements and reconnection
backoff run on a task.Clock, so every wait is explicit.
"""

import ast
import getpass
import os
import re
import shutil
import subprocess
import time

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor, task, threads, utils
from twisted.logger import formatEvent, globalLogPublisher
from txdbus import client, interface, objects
from txdbus.error import RemoteError

from stationd import __version__
from stationd.buses import open_connection
from stationd.dbus import INTERFACE, OBJECT_PATH, NodeBus
from stationd.sensors.dbus_driver import DBusDriver
from stationd.sensors.drivers import DriverContext, DriverError, ReadError

pytestmark = pytest.mark.skipif(not shutil.which("dbus-daemon"), reason="needs dbus-daemon (Debian: dbus)")
GDBUS = shutil.which("gdbus")
needs_gdbus = pytest.mark.skipif(not GDBUS, reason="needs gdbus (Debian: libglib2.0-bin)")
NAME = "org.stationd.Node1"
POLICY = os.path.join(os.path.dirname(__file__), "..", "etc", "dbus", "org.stationd.Node1.conf")


# ---- buses


class Daemon:
    """A private dbus-daemon (a session bus on ``socket``, or as ``config`` says); its address."""

    def __init__(self, socket=None, config=None):
        args = ["dbus-daemon", "--nofork", "--nopidfile", "--print-address=1"]
        args += [f"--config-file={config}"] if config else ["--session", f"--address=unix:path={socket}"]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.address = self.process.stdout.readline().strip()
        assert self.address, "dbus-daemon did not start"

    def stop(self, sig="terminate"):
        if self.process.poll() is None:
            getattr(self.process, sig)()
        self.process.wait(5)
        self.process.stdout.close()


@pytest.fixture
def start_daemon():
    """Starts Daemons for one test, off the reactor (each waits for its address line);
    any still running are stopped after the test, failed or not."""
    started = []

    async def start(socket=None, config=None):
        started.append(await threads.deferToThread(Daemon, socket, config))
        return started[-1]

    yield start
    for daemon in started:
        daemon.stop()


async def stop_daemon(daemon, sig="terminate"):
    await threads.deferToThread(daemon.stop, sig)


SYSTEM_LIKE = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <!-- the stock system.conf's default policy -->
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
  </policy>
  <include>{policy}</include>
</busconfig>
"""


async def start_system_like(start_daemon, tmp_path, as_user=None):
    """A daemon with the system bus's default policy and etc/dbus/org.stationd.Node1.conf;
    ``as_user``: that user stands in for stationd (and root's and the group's rights are gone)."""
    policy = open(POLICY).read()
    if as_user is not None:
        policy = (policy.replace('user="root"', 'user="nosuchuser-stationd-test"')
                  .replace('group="stationd"', 'group="nosuchgroup-stationd-test"')
                  .replace('user="stationd"', f'user="{as_user}"'))
    (tmp_path / "policy.conf").write_text(policy)
    (tmp_path / "system.conf").write_text(SYSTEM_LIKE.format(socket=tmp_path / "system_bus",
                                                             policy=tmp_path / "policy.conf"))
    return await start_daemon(config=tmp_path / "system.conf")


@pytest.fixture(scope="session")
def bus_address(tmp_path_factory):
    """The private session bus most tests share, started once."""
    daemon = Daemon(tmp_path_factory.mktemp("dbus") / "bus")
    yield daemon.address
    daemon.stop()


async def gdbus(*args):
    """(exit code, stdout, stderr) of gdbus, run without blocking the reactor."""
    out, err, code = await utils.getProcessOutputAndValue(GDBUS, args, env=dict(os.environ))
    return code, out.decode(), err.decode()


async def gdbus_call(address, method, *args, dest=NAME, path=OBJECT_PATH):
    return await gdbus("call", "--address", address, "--dest", dest, "--object-path", path, "--timeout", "5",
                       "--method", method, *args)


async def until(predicate, timeout=5.0):
    """Let the reactor run until ``predicate()``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await task.deferLater(reactor, 0.005, lambda: None)


async def round_trip(connection):
    """Everything the bus sent this connection before now has arrived (messages are ordered)."""
    await connection.callRemote("/org/freedesktop/DBus", "GetId", interface="org.freedesktop.DBus",
                                destination="org.freedesktop.DBus", timeout=5)


# ---- what NodeBus reads, faked


class FakeDisplay:
    """A coroutine like stationd.display.Display's: shows the first 16 characters (a small
    LCD), refuses empty messages with a ValueError."""

    def __init__(self):
        self.shown = []

    async def show(self, text):
        if not text:
            raise ValueError("the message is empty")
        self.shown.append(text)
        return text[:16]


class FakeSensors:
    def __init__(self):
        self.readings = {"bme280": {"temperature": 21.5, "humidity": 40.0}, "system": {"load1": 0.25}}

    def latest_values(self, name):
        return dict(self.readings[name])

    def names(self):
        return sorted(self.readings)


class FakeSpool:
    bytes = 1234


class FakeExports:
    def __init__(self):
        self.targets = {"central": {"state": "ok", "lag_seconds": 0.5}, "old": {"state": "paused"}}

    def status(self):
        return self.targets


NODE_ID = "5e1f0000-0000-4000-8000-000000000501"


@pytest.fixture
def logged():
    """stationd.dbus's log lines at info and above, formatted."""
    lines = []

    def observe(event):
        # the module and its factory: a "Starting factory" line each attempt would count
        if event.get("log_namespace", "").startswith("stationd.dbus") and event["log_level"].name != "debug":
            lines.append(f"{event['log_level'].name}: {formatEvent(event)}")

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


def make_bus(address, clock=None, **kwargs):
    return NodeBus({"bus": address, "name": NAME}, "station-501", NODE_ID, FakeSpool(), FakeExports(), FakeSensors(),
                   FakeDisplay(), reactor, clock=clock or task.Clock(), **kwargs)


@pytest_twisted.async_yield_fixture()
async def node_bus(bus_address):
    bus = make_bus(bus_address)
    bus.startService()
    await until(lambda: bus.state == "connected")
    yield bus
    await bus.stopService()


@pytest_twisted.async_yield_fixture()
async def listener(bus_address):
    """A txdbus client connection of the test's own on the shared bus."""
    connection = await client.connect(reactor, bus_address)
    yield connection
    connection.disconnect()


# ---- the node's object, through gdbus


@needs_gdbus
@pytest_twisted.ensureDeferred
async def test_introspection_shows_the_interface(node_bus, bus_address):
    code, out, err = await gdbus("introspect", "--address", bus_address, "--dest", NAME, "--object-path",
                                 OBJECT_PATH)
    assert code == 0, err
    out = re.sub(r"\s+", " ", out)
    assert "interface org.stationd.Node1 {" in out
    for method in ("ShowMessage(in s message, out s shown);", "ReadSensor(in s sensor, out a{sd} fields);",
                   "ListSensors(out as sensors);"):
        assert method in out
    assert "SensorAlarm(s sensor, s field, d value);" in out
    assert "MessageShown(s message);" in out
    for emits, declaration in [("const", f"readonly s Version = '{__version__}';"),
                               ("const", "readonly s Name = 'station-501';"),
                               ("const", "readonly s NodeId = '5e1f0000-0000-4000-8000-000000000501';"),
                               ("false", "readonly d Uptime = 0.0;"),
                               ("true", "readonly t SpoolDepth = 1234;"),
                               ("true", "readonly d ExportLag = 0.5;")]:
        assert f'@org.freedesktop.DBus.Property.EmitsChangedSignal("{emits}") {declaration}' in out


@needs_gdbus
@pytest_twisted.ensureDeferred
async def test_show_message_reaches_the_display_and_answers_what_it_shows(node_bus, bus_address):
    code, out, err = await gdbus_call(bus_address, f"{INTERFACE}.ShowMessage", "hello from the shell")
    assert (code, out.strip()) == (0, "('hello from the s',)"), err
    assert node_bus.display.shown == ["hello from the shell"]

    code, out, err = await gdbus_call(bus_address, f"{INTERFACE}.ShowMessage", "")
    assert code != 0
    assert "org.stationd.Node1.Error.InvalidMessage: the message is empty" in err


@needs_gdbus
@pytest_twisted.ensureDeferred
async def test_read_and_list_sensors(node_bus, bus_address):
    code, out, err = await gdbus_call(bus_address, f"{INTERFACE}.ReadSensor", "bme280")
    assert code == 0, err
    assert ast.literal_eval(out) == ({"temperature": 21.5, "humidity": 40.0},)
    node_bus.sensors.readings["bme280"]["temperature"] = 22  # read now, not cached: an int becomes a double
    code, out, err = await gdbus_call(bus_address, f"{INTERFACE}.ReadSensor", "bme280")
    assert ast.literal_eval(out) == ({"temperature": 22.0, "humidity": 40.0},)

    code, out, err = await gdbus_call(bus_address, f"{INTERFACE}.ListSensors")
    assert ast.literal_eval(out) == (["bme280", "system"],)

    code, out, err = await gdbus_call(bus_address, f"{INTERFACE}.ReadSensor", "nope")
    assert code != 0
    assert "org.stationd.Node1.Error.UnknownSensor: no sensor 'nope'" in err


@needs_gdbus
@pytest_twisted.ensureDeferred
async def test_properties_are_read_when_asked(node_bus, bus_address):
    node_bus.clock.advance(12.5)
    node_bus.spool.bytes = 5 * 2**40  # beyond 32 bits
    node_bus.exports.targets["second"] = {"state": "backing_off", "lag_seconds": 3.25}

    async def get(name):
        code, out, err = await gdbus_call(bus_address, "org.freedesktop.DBus.Properties.Get", INTERFACE, name)
        assert code == 0, err
        return out.strip()

    assert await get("Version") == f"(<'{__version__}'>,)"
    assert await get("Name") == "(<'station-501'>,)"
    assert await get("NodeId") == "(<'5e1f0000-0000-4000-8000-000000000501'>,)"
    assert await get("Uptime") == "(<12.5>,)"
    assert await get("SpoolDepth") == f"(<uint64 {5 * 2**40}>,)"
    assert await get("ExportLag") == "(<3.25>,)"
    code, out, err = await gdbus_call(bus_address, "org.freedesktop.DBus.Properties.GetAll", INTERFACE)
    assert "'SpoolDepth': <uint64 5497558138880>" in out and "'ExportLag': <3.25>" in out


@pytest_twisted.ensureDeferred
async def test_the_real_sensors_and_display_services(node_bus, listener):
    """stationd.sensors.Sensors and stationd.display.Display as NodeObject calls them; the
    display's dbus driver answers with MessageShown through NodeBus.message_shown."""
    from stationd.display import Display
    from stationd.sensors import Sensors

    sensors = node_bus.sensors = Sensors(None, None, "station-501", NODE_ID, reactor)  # (no store: nothing polls)
    sensors.sensors["bme280"] = {"name": "bme280"}
    sensors.latest["bme280"] = (0, {"temperature": (21.5, "celsius"), "pressure": (1013.2, "hPa")})
    node_bus.display = Display({"driver": "dbus", "path": None, "max_length": 20})
    node_bus.display.shown_listeners.append(node_bus.message_shown)
    remote = await listener.getRemoteObject(NAME, OBJECT_PATH)
    shown = []
    await remote.notifyOnSignal("MessageShown", shown.append)

    assert await remote.callRemote("ListSensors", timeout=5) == ["bme280"]
    assert await remote.callRemote("ReadSensor", "bme280", timeout=5) == {"temperature": 21.5, "pressure": 1013.2}
    with pytest.raises(RemoteError) as raised:
        await remote.callRemote("ReadSensor", "nope", timeout=5)
    assert raised.value.errName == "org.stationd.Node1.Error.UnknownSensor"

    assert await remote.callRemote("ShowMessage", "tab\there", timeout=5) == "tab here"
    await until(lambda: shown)
    assert shown == ["tab here"]
    with pytest.raises(RemoteError) as raised:
        await remote.callRemote("ShowMessage", "x" * 21, timeout=5)
    assert raised.value.errName == "org.stationd.Node1.Error.InvalidMessage"
    assert "the display takes 20" in raised.value.message


# ---- signals, through a txdbus client


@pytest_twisted.ensureDeferred
async def test_alarms_and_messages_arrive_as_signals(node_bus, listener):
    remote = await listener.getRemoteObject(NAME, OBJECT_PATH)  # introspected: our XML parses
    alarms, messages = [], []
    await remote.notifyOnSignal("SensorAlarm", lambda *args: alarms.append(args))
    await remote.notifyOnSignal("MessageShown", messages.append)

    node_bus.alarm("bme280", "temperature", 41)
    node_bus.message_shown("Rain expected")
    await until(lambda: alarms and messages)
    assert alarms == [("bme280", "temperature", 41.0)]
    assert messages == ["Rain expected"]


@pytest_twisted.ensureDeferred
async def test_properties_changed_only_for_what_changed(node_bus, listener):
    changes, alarms = [], []
    await listener.addMatch(lambda m: changes.append(m.body), mtype="signal", path=OBJECT_PATH,
                            interface="org.freedesktop.DBus.Properties", member="PropertiesChanged")
    await listener.addMatch(lambda m: alarms.append(m.body), mtype="signal", path=OBJECT_PATH,
                            interface=INTERFACE, member="SensorAlarm")
    clock = node_bus.clock

    node_bus.spool.bytes = 2048
    clock.advance(node_bus.interval)
    await until(lambda: changes)
    assert changes == [[INTERFACE, {"SpoolDepth": 2048}, []]]

    # Nothing changed but the uptime (not announced): no signal.  The alarm sent
    # afterwards arrives first, so nothing was sent before it.
    clock.advance(60)
    node_bus.alarm("system", "load1", 9.0)
    await until(lambda: alarms)
    assert changes == [[INTERFACE, {"SpoolDepth": 2048}, []]]

    node_bus.exports.targets["central"]["lag_seconds"] = 30.0
    node_bus.spool.bytes = 0
    clock.advance(node_bus.interval)
    await until(lambda: len(changes) == 2)
    assert changes[1] == [INTERFACE, {"SpoolDepth": 0, "ExportLag": 30.0}, []]


@pytest_twisted.ensureDeferred
async def test_alarm_without_a_bus_is_a_no_op(logged):
    bus = make_bus("none")
    bus.startService()
    bus.alarm("bme280", "temperature", 41.0)
    bus.message_shown("hello")
    assert bus.state == "off" and bus.connection is None
    assert logged == ["info: D-Bus: off ([dbus] bus = none)"]
    assert not bus.clock.getDelayedCalls()
    await bus.stopService()


# ---- the dbus sensor driver


UPOWER_DEVICE = "org.freedesktop.UPower.Device"
BATTERY = "/org/freedesktop/UPower/devices/battery_BAT0"


class FakeBattery(objects.DBusObject):
    """Enough of a UPower battery: a property and two methods without arguments."""

    dbusInterfaces = [interface.DBusInterface(
        UPOWER_DEVICE,
        interface.Property("Percentage", "d"),
        interface.Property("Model", "s"),
        interface.Method("Temperature", "", "u"),
        interface.Method("Readings", "", "a{sv}"),
        noRegister=True)]
    Percentage = objects.DBusProperty("Percentage")
    Model = objects.DBusProperty("Model")

    def __init__(self):
        super().__init__(BATTERY)
        self.Percentage, self.Model = 87.5, "BAT-42"

    def dbus_Temperature(self):
        return 2981  # deci-kelvin

    def dbus_Readings(self):
        return {"voltage": 12.6, "energy": 41.2, "state": "charging", "present": True}


async def export_battery(address):
    connection = await client.connect(reactor, address)
    connection.exportObject(FakeBattery())
    await connection.requestBusName("org.freedesktop.UPower")
    return connection


@pytest_twisted.async_yield_fixture()
async def upower(bus_address):
    connection = await export_battery(bus_address)
    yield connection
    await connection.releaseBusName("org.freedesktop.UPower")
    connection.disconnect()


def driver(address, **options):
    options = dict({"bus": address, "service": "org.freedesktop.UPower", "object": BATTERY,
                    "interface": UPOWER_DEVICE}, **options)
    context = DriverContext(name="battery", data_dir="/nonexistent", reactor=reactor, timeout=5.0)
    return DBusDriver(options, context)


@pytest_twisted.ensureDeferred
async def test_driver_reads_a_property_and_methods(upower, bus_address):
    battery = driver(bus_address, property="Percentage", unit="percent")
    assert battery.blocking is False
    assert await battery.read() == {"percentage": (87.5, "percent")}
    assert await battery.read() == {"percentage": (87.5, "percent")}  # the same connection
    battery.close()

    temperature = driver(bus_address, method="Temperature", field="temperature", unit="celsius", scale="0.1",
                         offset="-273.15")
    (value, unit), = (await temperature.read()).values()
    assert (round(value, 6), unit) == (24.95, "celsius")
    temperature.close()

    readings = driver(bus_address, method="Readings", unit="")  # a dict: its numeric entries are the fields
    assert await readings.read() == {"voltage": (12.6, ""), "energy": (41.2, ""), "present": (1.0, "")}
    readings.close()


@pytest_twisted.ensureDeferred
async def test_driver_read_errors(upower, bus_address):
    model = driver(bus_address, property="Model")
    with pytest.raises(ReadError, match="'BAT-42', not a number"):
        await model.read()
    model.close()
    gone = driver(bus_address, property="Percentage", service="org.freedesktop.NoSuchService")
    with pytest.raises(ReadError, match="org.freedesktop.DBus.Error.ServiceUnknown"):
        await gone.read()
    gone.close()
    nowhere = driver("unix:path=/nonexistent/bus", property="Percentage")
    with pytest.raises(ReadError, match="cannot connect to the unix:path=/nonexistent/bus bus: .*No such file"):
        await nowhere.read()


@pytest.mark.parametrize("options, key", [
    ({"property": "Percentage", "colour": "red"}, "colour"),
    ({"property": "Percentage", "service": ""}, "service"),
    ({}, "property"),
    ({"property": "Percentage", "method": "Refresh"}, "property"),
    ({"property": "Percentage", "object": "no/slash"}, "object"),
    ({"method": "Bad-Name"}, "method"),
    ({"property": "Percentage", "scale": "x"}, "scale"),
    ({"property": "Percentage", "offset": "nan"}, "offset"),
    ({"property": "Percentage", "bus": "nonsense"}, "bus"),
])
def test_driver_options_are_checked_at_construction(options, key):
    with pytest.raises(DriverError) as raised:
        driver("session", **options)
    assert raised.value.key == key


@pytest_twisted.ensureDeferred
async def test_driver_reconnects_at_the_read_after_the_bus_went_away(tmp_path, start_daemon):
    daemon = await start_daemon(tmp_path / "bus")
    await export_battery(daemon.address)
    battery = driver(daemon.address, property="Percentage", unit="percent")
    assert await battery.read() == {"percentage": (87.5, "percent")}

    await stop_daemon(daemon, "kill")
    await until(lambda: battery.connection is None)
    with pytest.raises(ReadError, match="No such file|refused"):
        await battery.read()

    daemon = await start_daemon(tmp_path / "bus")
    provider = await export_battery(daemon.address)
    assert await battery.read() == {"percentage": (87.5, "percent")}
    battery.close()
    provider.disconnect()
    await stop_daemon(daemon)


# ---- no bus, a bus that goes away


def upper_bound(bus):
    """The delay of the next attempt, with rng() == 1: the backoff's upper bound."""
    return round(bus._retry.getTime() - bus.clock.seconds(), 6)


@pytest_twisted.ensureDeferred
async def test_no_bus_at_start_then_one_appears(tmp_path, logged, start_daemon):
    socket = tmp_path / "bus"
    bus = make_bus(f"unix:path={socket}", rng=lambda: 1.0)
    bus.startService()
    await until(lambda: bus.state == "unavailable")
    assert len(logged) == 1 and logged[0].startswith("warn: D-Bus: no bus for org.stationd.Node1 (bus unix:path=")
    assert "the node runs without it" in logged[0]
    bus.alarm("bme280", "temperature", 41.0)  # no-op

    bounds = []
    for attempt in range(1, 9):
        assert bus.failures == attempt
        bounds.append(upper_bound(bus))
        bus.clock.advance(bounds[-1])
        await until(lambda n=attempt: bus.failures > n)
    assert bounds == [1, 2, 4, 8, 16, 32, 60, 60]
    assert len(logged) == 1  # once, not once an attempt

    daemon = await start_daemon(socket)
    bus.clock.advance(upper_bound(bus))
    await until(lambda: bus.state == "connected")
    assert logged[1] == f"info: D-Bus: org.stationd.Node1 exported on the bus unix:path={socket} again"
    listener = await client.connect(reactor, daemon.address)
    remote = await listener.getRemoteObject(NAME, OBJECT_PATH)
    assert await remote.callRemote("ListSensors", timeout=5) == ["bme280", "system"]

    listener.disconnect()
    await bus.stopService()
    await stop_daemon(daemon)
    assert len(logged) == 2


@pytest_twisted.ensureDeferred
async def test_a_bus_that_goes_away_is_reconnected_with_backoff(tmp_path, logged, start_daemon):
    socket = tmp_path / "bus"
    daemon = await start_daemon(socket)
    bus = make_bus(daemon.address, rng=lambda: 1.0)
    bus.startService()
    await until(lambda: bus.state == "connected")

    await stop_daemon(daemon, "kill")
    await until(lambda: bus.state == "unavailable")
    assert bus.connection is None
    assert logged[-1].startswith("warn: D-Bus: lost the bus (")
    bus.alarm("bme280", "temperature", 41.0)  # no-op

    bus.clock.advance(upper_bound(bus))  # 1 s, then 2 s: still gone
    await until(lambda: bus.failures == 2)
    assert upper_bound(bus) == 2
    assert len(logged) == 2

    daemon = await start_daemon(socket)
    bus.clock.advance(upper_bound(bus))
    await until(lambda: bus.state == "connected")
    assert logged[-1].endswith(f"exported on the bus {bus.bus} again")  # the first daemon's guid: not checked
    # exported and named again: gdbus-free check through a fresh client
    listener = await client.connect(reactor, daemon.address)
    assert await listener.getNameOwner(NAME) != ""
    remote = await listener.getRemoteObject(NAME, OBJECT_PATH)
    assert await remote.callRemote("ReadSensor", "system", timeout=5) == {"load1": 0.25}

    listener.disconnect()
    await bus.stopService()
    await stop_daemon(daemon)
    assert len(logged) == 3


@pytest_twisted.ensureDeferred
async def test_a_peer_that_hangs_up_or_stalls_during_the_handshake_fails_the_attempt(tmp_path):
    class HangUp(protocol.Protocol):
        def connectionMade(self):
            self.transport.loseConnection()

    class Silent(protocol.Protocol):
        pass

    clock = task.Clock()
    ports = [reactor.listenUNIX(str(tmp_path / "hangup"), protocol.Factory.forProtocol(HangUp)),
             reactor.listenUNIX(str(tmp_path / "silent"), protocol.Factory.forProtocol(Silent))]
    try:
        # txdbus's client.connect would never fire here
        with pytest.raises(Exception, match="closed cleanly|Connection"):
            await open_connection(reactor, f"unix:path={tmp_path / 'hangup'}", 10, clock)

        attempt = open_connection(reactor, f"unix:path={tmp_path / 'silent'}", 10, clock)
        await task.deferLater(reactor, 0.05, lambda: None)
        assert not attempt.called
        clock.advance(10)
        with pytest.raises(defer.TimeoutError):
            await attempt
    finally:
        for port in ports:
            await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_bus_that_does_not_answer_is_logged_in_words(tmp_path, logged):
    silent = reactor.listenUNIX(str(tmp_path / "silent"), protocol.Factory.forProtocol(protocol.Protocol))
    bus = make_bus(f"unix:path={tmp_path / 'silent'}")
    try:
        bus.startService()
        await task.deferLater(reactor, 0.05, lambda: None)
        bus.clock.advance(bus.timeout)
        await until(lambda: bus.state == "unavailable")
        assert "no answer within 10 s" in logged[-1] and "Deferred" not in logged[-1]
    finally:
        await bus.stopService()
        await silent.stopListening()


# ---- bus = auto, and the system-bus policy


@pytest_twisted.ensureDeferred
async def test_auto_takes_the_session_bus_when_the_system_bus_will_not_give_the_name(tmp_path, bus_address,
                                                                                    monkeypatch, logged,
                                                                                    start_daemon):
    system = await start_system_like(start_daemon, tmp_path)  # the policy as shipped: this test is not user stationd
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", system.address)
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", bus_address)
    bus = make_bus("auto")
    bus.startService()
    await until(lambda: bus.state == "connected")
    assert bus.where == f"session bus ({bus_address})"
    await bus.stopService()

    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS")
    bus = make_bus("auto")
    bus.startService()
    await until(lambda: bus.state == "unavailable")
    assert "cannot own org.stationd.Node1: org.freedesktop.DBus.Error.AccessDenied" in logged[-1]
    assert "no session bus (DBUS_SESSION_BUS_ADDRESS is not set)" in logged[-1]
    await bus.stopService()
    await stop_daemon(system)


@needs_gdbus
@pytest_twisted.ensureDeferred
async def test_system_bus_policy(tmp_path, start_daemon):
    # This test's user stands in for stationd and is not in the group allowed ShowMessage.
    system = await start_system_like(start_daemon, tmp_path, as_user=getpass.getuser())
    bus = make_bus(system.address)
    bus.startService()
    await until(lambda: bus.state == "connected")

    code, out, err = await gdbus_call(system.address, f"{INTERFACE}.ListSensors")
    assert code == 0, err
    code, out, err = await gdbus_call(system.address, f"{INTERFACE}.ReadSensor", "system")
    assert code == 0, err
    code, out, err = await gdbus_call(system.address, "org.freedesktop.DBus.Properties.Get", INTERFACE, "Name")
    assert (code, out.strip()) == (0, "(<'station-501'>,)"), err
    code, out, err = await gdbus("introspect", "--address", system.address, "--dest", NAME, "--object-path",
                                 OBJECT_PATH)
    assert code == 0 and "interface org.stationd.Node1" in out, err
    code, out, err = await gdbus_call(system.address, f"{INTERFACE}.ShowMessage", "hi")
    assert code != 0 and "AccessDenied" in err
    assert bus.display.shown == []

    await bus.stopService()
    await stop_daemon(system)


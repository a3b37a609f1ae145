"""The node on D-Bus (org.stationd.Node1 at /org/stationd/Node) and the `dbus` sensor driver.

The bus is a convenience for the local machine, never a dependency: with no
bus the node runs on, says so once, and keeps trying with capped backoff.
See docs/dbus.rst for the interface, the system-bus policy and examples.

txdbus 1.1.2 is used below its ``client.connect``: that Deferred never fires
when the bus hangs up before answering Hello (a refused authentication, a
daemon going down), and its call timeouts run on the global reactor.  So
connections are opened by ``open_connection`` here, bounded by a timeout on
an injectable clock, and the interface's introspection XML is written here
too (txdbus's has no argument names and no "const" properties).
"""

import random
from collections.abc import Callable, Mapping

from twisted.application import service
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from txdbus import interface, marshal, objects

from stationd import __version__
from stationd.buses import PROPERTIES_INTERFACE, NoBus, bus_address, open_connection, reason as _reason
from stationd.display import Display
from stationd.exporter import ExportTargets
from stationd.retry import backoff_delay
from stationd.sensors import Sensors
from stationd.writer import Spool

log = Logger()

INTERFACE = "org.stationd.Node1"
OBJECT_PATH = "/org/stationd/Node"

# The interface, once: txdbus dispatches on the signatures, introspection
# also shows the argument names.  (name, D-Bus signature) pairs.
METHODS = {  # name: (in, out)
    "ShowMessage": ([("message", "s")], [("shown", "s")]),
    "ReadSensor": ([("sensor", "s")], [("fields", "a{sd}")]),
    "ListSensors": ([], [("sensors", "as")]),
}
SIGNALS = {
    "SensorAlarm": [("sensor", "s"), ("field", "s"), ("value", "d")],
    "MessageShown": [("message", "s")],
}
# name: (signature, org.freedesktop.DBus.Property.EmitsChangedSignal).  Uptime
# changes every instant: announcing it would be one signal a tick saying what
# any reader can compute, so it is "false" (read it when needed), as systemd
# does for its timestamps.  Version, Name and NodeId never change while running.
PROPERTIES = {
    "Version": ("s", "const"),
    "Name": ("s", "const"),
    "NodeId": ("s", "const"),
    "Uptime": ("d", "false"),
    "SpoolDepth": ("t", "true"),
    "ExportLag": ("d", "true"),
}
WATCHED = [name for name, (_, emits) in PROPERTIES.items() if emits == "true"]


def _export_lag(node_bus):
    lags = [status["lag_seconds"] for status in node_bus.exports.status().values()
            if status.get("lag_seconds") is not None]
    return float(max(lags, default=0.0))


VALUES = {  # name: the value now (of a NodeBus), of the property's D-Bus type
    "Version": lambda node_bus: __version__,
    "Name": lambda node_bus: node_bus.node_name,
    "NodeId": lambda node_bus: node_bus.node_id or "",
    # The bus starts in the node's first reactor turn, with the rest of the node.
    "Uptime": lambda node_bus: (0.0 if node_bus.started_at is None
                                else float(node_bus.clock.seconds() - node_bus.started_at)),
    "SpoolDepth": lambda node_bus: marshal.UInt64(node_bus.spool.bytes),
    "ExportLag": _export_lag,
}


def _signature(args):
    return "".join(sig for _, sig in args)


def _introspection_xml():
    lines = [f'  <interface name="{INTERFACE}">']
    for name, (ins, outs) in METHODS.items():
        lines.append(f'    <method name="{name}">')
        lines += [f'      <arg name="{arg}" type="{sig}" direction="in"/>' for arg, sig in ins]
        lines += [f'      <arg name="{arg}" type="{sig}" direction="out"/>' for arg, sig in outs]
        lines.append("    </method>")
    for name, args in SIGNALS.items():
        lines.append(f'    <signal name="{name}">')
        lines += [f'      <arg name="{arg}" type="{sig}"/>' for arg, sig in args]
        lines.append("    </signal>")
    for name, (sig, emits) in PROPERTIES.items():
        lines += [f'    <property name="{name}" type="{sig}" access="read">',
                  f'      <annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="{emits}"/>',
                  "    </property>"]
    lines.append("  </interface>")
    return "\n".join(lines)


class _NodeInterface(interface.DBusInterface):
    """txdbus's interface description, introspected with names and "const" (see _introspection_xml)."""

    introspectionXml = property(lambda self: self._named_xml)

    def __init__(self):
        members = [interface.Method(name, _signature(ins), _signature(outs)) for name, (ins, outs) in METHODS.items()]
        members += [interface.Signal(name, _signature(args)) for name, args in SIGNALS.items()]
        members += [interface.Property(name, sig) for name, (sig, _) in PROPERTIES.items()]
        super().__init__(INTERFACE, *members, noRegister=True)
        self._named_xml = _introspection_xml()


class _Live(objects.DBusProperty):
    """A read-only property computed when read (txdbus's DBusProperty returns a stored value)."""

    def __init__(self, name):
        super().__init__(name, INTERFACE)

    def __get__(self, instance, owner):
        return self if instance is None else VALUES[self.pname](instance.node_bus)

    def __set__(self, instance, value):
        raise AttributeError(f"{self.pname} is read-only")


class NodeError(Exception):
    """What a D-Bus caller sees as the error org.stationd.Node1.Error.<kind>."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.dbusErrorName = f"{INTERFACE}.Error.{kind}"  # the attribute txdbus looks for


class NodeObject(objects.DBusObject):
    """/org/stationd/Node: the node's state and its display and sensors, for local programs."""

    dbusInterfaces = [_NodeInterface()]
    Version, Name, NodeId, Uptime = _Live("Version"), _Live("Name"), _Live("NodeId"), _Live("Uptime")
    SpoolDepth, ExportLag = _Live("SpoolDepth"), _Live("ExportLag")

    def __init__(self, node_bus: "NodeBus"):
        super().__init__(OBJECT_PATH)
        self.node_bus = node_bus

    def dbus_ShowMessage(self, message):
        display = self.node_bus.display
        if display is None:
            raise NodeError("NoDisplay", "this node has no display")
        d = defer.maybeDeferred(display.show, message)
        d.addCallbacks(str, self._show_failed)
        return d

    def _show_failed(self, failure):
        if failure.check(ValueError):  # the display's word on a message it cannot show
            raise NodeError("InvalidMessage", failure.getErrorMessage())
        log.failure("D-Bus ShowMessage: the display failed", failure)
        raise NodeError("Failed", f"the display failed: {failure.getErrorMessage()}")

    def dbus_ReadSensor(self, name):
        try:
            fields = self.node_bus.sensors.latest_values(name)
        except KeyError:
            raise NodeError("UnknownSensor", f"no sensor {name!r}") from None
        return {str(field): float(value) for field, value in fields.items() if value is not None}

    def dbus_ListSensors(self):
        return [str(name) for name in self.node_bus.sensors.names()]


# ---- the node's side


class NodeBus(service.Service):
    """Exports NodeObject on the configured bus and owns the bus name there, come what may.

    ``config`` is the [dbus] section; the properties and methods answer from
    the other arguments.  ``reactor`` opens connections, ``clock`` times
    (tests: a task.Clock).  With no bus (or no way to own the name)
    the node runs on: one warning, then attempts with full-jitter backoff up
    to ``max_backoff`` seconds; a lost bus is the same.  Log lines are one a
    state change (connected / unavailable), not one an attempt.
    """

    def __init__(self, config: Mapping, node_name: str, node_id: str, spool: Spool, exports: ExportTargets,
                 sensors: Sensors, display: Display | None, reactor,
                 clock: IReactorTime | None = None, rng: Callable[[], float] = random.random,
                 interval: float = 5.0, timeout: float = 10.0, max_backoff: float = 60.0):
        self.node_name, self.node_id = node_name, node_id
        self.spool, self.exports, self.sensors, self.display = spool, exports, sensors, display
        self.reactor, self.clock = reactor, clock or reactor
        self.started_at: float | None = None
        self.bus, self.bus_name = config["bus"], config["name"]
        self.rng, self.interval, self.timeout, self.max_backoff = rng, interval, timeout, max_backoff
        self.object = NodeObject(self)
        self.connection = None  # a DBusClientConnection, while exported and owning the name
        self.where = None  # e.g. "session bus (unix:path=...)", while connected
        self.state = "stopped"  # "connected", "unavailable" or "off"
        self.failures = 0  # attempts failed since the last success
        self._attempt = None  # Deferred of the attempt in progress
        self._retry = None  # IDelayedCall of the next attempt
        self._announced: dict[str, object] = {}  # the WATCHED properties as last announced
        self._watch = task.LoopingCall(self._check_properties)
        self._watch.clock = self.clock

    # ---- for the rest of the node

    def alarm(self, sensor, field, value):
        """Emit SensorAlarm (nothing while disconnected): a threshold crossed."""
        self._emit("SensorAlarm", lambda: (str(sensor), str(field), float(value)))

    def sensor_alarm(self, sensor, field, value, kind, threshold, state):
        """A Sensors alarm listener: raised alarms become SensorAlarm signals."""
        if state == "raised":
            self.alarm(sensor, field, value)

    def message_shown(self, text):
        """Emit MessageShown (nothing while disconnected): the display's new message."""
        self._emit("MessageShown", lambda: (str(text),))

    def _emit(self, signal, args):
        if self.connection is None:
            return
        try:
            self.object.emitSignal(signal, *args(), interface=INTERFACE)
        except Exception:
            log.failure("D-Bus: cannot emit {signal}", signal=signal)

    # ---- service

    def startService(self):
        super().startService()
        self.started_at = self.clock.seconds()
        if self.bus == "none":
            self.state = "off"
            log.info("D-Bus: off ([dbus] bus = none)")
            return
        self._watch.start(self.interval, now=False)
        self._connect()

    def stopService(self):
        super().stopService()
        if self._watch.running:
            self._watch.stop()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        if self._attempt is not None:
            self._attempt.cancel()
        connection, self.connection, self.state = self.connection, None, "stopped"
        if connection is None:
            return defer.succeed(None)
        # Released before hanging up, so that a node started right after can own the name.
        d = connection.releaseBusName(self.bus_name).addTimeout(2, self.clock)
        d.addBoth(lambda _: connection.disconnect())
        return d

    # ---- connecting

    def _candidates(self):
        """[(description, address or NoBus)] in the order to try them."""
        buses = ["system", "session"] if self.bus == "auto" else [self.bus]
        found = []
        for bus in buses:
            try:
                address = bus_address(bus)
            except NoBus as e:
                found.append((f"{bus} bus", e))
                continue
            found.append((f"{bus} bus ({address})" if bus in ("system", "session") else f"bus {address}", address))
        return found

    def _connect(self):
        self._retry = None
        self._attempt = defer.ensureDeferred(self._open())
        self._attempt.addCallbacks(self._connected, self._failed)

    async def _open(self):
        """The first bus that takes the object and gives us the name: (connection, description)."""
        problems = []
        for where, address in self._candidates():
            if isinstance(address, NoBus):
                problems.append(str(address))
                continue
            try:
                connection = await open_connection(self.reactor, address, self.timeout, self.clock)
            except defer.CancelledError:
                raise
            except Exception as e:
                problems.append(f"{where}: {_reason(e)}")
                continue
            try:
                connection.notifyOnDisconnect(self._lost)
                connection.exportObject(self.object)
                await connection.requestBusName(self.bus_name).addTimeout(self.timeout, self.clock)
            except BaseException as e:
                connection.disconnect()
                if isinstance(e, defer.CancelledError):
                    raise
                problems.append(f"{where}: cannot own {self.bus_name}: {_reason(e)}")
                continue
            return connection, where
        raise NoBus("; ".join(problems))

    def _connected(self, result):
        self._attempt = None
        self.connection, self.where = result
        self._announced = {name: VALUES[name](self) for name in WATCHED}
        log.info("D-Bus: {name} exported on the {where}{again}", name=self.bus_name, where=self.where,
                 again=" again" if self.state == "unavailable" else "")
        self.state, self.failures = "connected", 0

    def _failed(self, failure):
        self._attempt = None
        if failure.check(defer.CancelledError) or not self.running:
            return
        self.failures += 1
        if self.state != "unavailable":
            self.state = "unavailable"
            if not failure.check(NoBus):  # a bug: in full, then carried on with like an outage
                log.failure("D-Bus: connection attempt failed", failure)
            log.warn("D-Bus: no bus for {name} ({reason}); the node runs without it and retries with backoff "
                     "up to {cap:.0f} s", name=self.bus_name, reason=failure.getErrorMessage(), cap=self.max_backoff)
        else:
            log.debug("D-Bus: attempt {n} failed: {reason}", n=self.failures, reason=failure.getErrorMessage())
        self._schedule()

    def _lost(self, connection, reason):
        if connection is not self.connection:  # an attempt's, or one we hung up on
            return
        self.connection = self.where = None
        self.state, self.failures = "unavailable", 1
        log.warn("D-Bus: lost the bus ({reason}); reconnecting with backoff up to {cap:.0f} s",
                 reason=_reason(reason.value), cap=self.max_backoff)
        self._schedule()

    def _schedule(self):
        if self.running:
            self._retry = self.clock.callLater(backoff_delay(self.failures, self.max_backoff, self.rng),
                                               self._connect)

    # ---- PropertiesChanged

    def _check_properties(self):
        """Announce the WATCHED properties that changed since last time (the LoopingCall's job)."""
        if self.connection is None:
            return
        try:
            now = {name: VALUES[name](self) for name in WATCHED}
            changed = {name: value for name, value in now.items() if self._announced.get(name) != value}
            self._announced = now
            if changed:
                self.object.emitSignal("PropertiesChanged", INTERFACE, changed, [], interface=PROPERTIES_INTERFACE)
        except Exception:  # a LoopingCall stops for good on an exception
            log.failure("D-Bus: cannot announce property changes")


# ---- the `dbus` sensor driver

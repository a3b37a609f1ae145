"""[sensor:NAME] driver = dbus: a property or a no-argument method of another D-Bus service."""

from twisted.internet import defer
from txdbus import marshal
from txdbus.error import MarshallingError

from stationd.buses import PROPERTIES_INTERFACE, bus_address, open_connection, reason
from stationd.sensors.options import DriverError, Options, ReadError, number

CALL_TIMEOUT = 10.0  # seconds, when the sensor gives none (its timeout also cancels the read)


def _valid(check):
    """An Options parser from a txdbus name check."""
    def parse(text):
        try:
            check(text)
        except MarshallingError as e:
            raise ValueError(str(e)) from None
        return text
    return parse


def _bus_option(text):
    if text in ("system", "session") or ":" in text:
        return text
    raise ValueError(f"system, session or a D-Bus address such as unix:path=/run/bus, not {text!r}")


def _is_number(value):
    return isinstance(value, (int, float))  # bool too: 1.0 / 0.0


class DBusDriver:
    """[sensor:NAME] driver = dbus: a property (Properties.Get) or a no-argument method of
    another service, e.g. UPower's battery percentage.  It keeps a connection of its own,
    opened at the first read and again at the read after it was lost.  Calls go by
    name, without introspecting the peer (txdbus would otherwise ask for its XML first)."""

    blocking = False

    def __init__(self, options, context):
        opts = Options(options)
        self.bus = opts.get("bus", _bus_option, "system")
        self.service = opts.required("service", _valid(marshal.validateBusName))
        self.object = opts.required("object", _valid(marshal.validateObjectPath))
        self.interface = opts.required("interface", _valid(marshal.validateInterfaceName))
        self.property = opts.get("property", _valid(marshal.validateMemberName))
        self.method = opts.get("method", _valid(marshal.validateMemberName))
        if (self.property is None) == (self.method is None):
            raise DriverError("property", "give one of property or method")
        self.member = self.property or self.method
        self.field = opts.get("field", default=self.member.lower())
        self.unit = opts.get("unit", default="")
        self.scale = opts.get("scale", number, 1.0)
        self.offset = opts.get("offset", number, 0.0)
        opts.done()
        self.reactor = context.reactor
        self.timeout = context.timeout or CALL_TIMEOUT
        self.connection = None

    def read(self):
        return defer.ensureDeferred(self._read())

    async def _read(self):
        try:
            connection = await self._connect()
        except Exception as e:  # a cancellation (the sensor's timeout) is a BaseException and goes through
            raise ReadError(f"cannot connect to the {self.bus} bus: {reason(e)}") from e
        try:
            if self.property:
                value = await connection.callRemote(self.object, "Get", interface=PROPERTIES_INTERFACE,
                                                    destination=self.service, signature="ss",
                                                    body=[self.interface, self.property], timeout=self.timeout)
            else:
                value = await connection.callRemote(self.object, self.method, interface=self.interface,
                                                    destination=self.service, timeout=self.timeout)
        except Exception as e:
            raise ReadError(f"{self.service} {self.object} {self.member}: {reason(e)}") from e
        return self._fields(value)

    async def _connect(self):
        if self.connection is None:
            connection = await open_connection(self.reactor, bus_address(self.bus), self.timeout)
            if self.connection is None:
                connection.notifyOnDisconnect(self._lost)
                self.connection = connection
            else:  # a read that overlapped this one connected first
                connection.disconnect()
        return self.connection

    def _lost(self, connection, reason):
        if connection is self.connection:
            self.connection = None

    def _fields(self, value):
        if isinstance(value, dict):  # a{sv}, a{sd}...: its numeric entries
            numbers = {str(key): item for key, item in value.items() if _is_number(item)}
            if not numbers:
                raise ReadError(f"{self.member}: no numeric entries in {sorted(map(str, value))}")
        elif _is_number(value):
            numbers = {self.field: value}
        else:
            raise ReadError(f"{self.member} is {value!r}, not a number")
        return {field: (float(number) * self.scale + self.offset, self.unit) for field, number in numbers.items()}

    def close(self):
        """Hang up (for the sensors service's stop; a later read would connect again)."""
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.disconnect()

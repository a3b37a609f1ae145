"""D-Bus connections, for the node's own object (stationd.dbus) and the D-Bus sensor driver
(stationd.sensors.dbus_driver): addresses, and a connect that fails within a timeout."""

import os

from twisted.internet import defer
from twisted.internet.error import ConnectError
from txdbus import client, endpoints

PROPERTIES_INTERFACE = "org.freedesktop.DBus.Properties"
SYSTEM_BUS = "unix:path=/var/run/dbus/system_bus_socket"  # where DBUS_SYSTEM_BUS_ADDRESS is unset


class NoBus(Exception):
    """No bus could be connected to (or none would give us the name): the reasons, joined."""


class _Connection(client.DBusClientConnection):
    """txdbus's connection, whose connect Deferred also fails when the bus hangs up before Hello."""

    def connectionLost(self, reason):
        if self.busName is None:  # txdbus would return here and leave its factory's Deferred unfired
            if not self.factory.d.called:
                self.factory._failed(reason)
            return
        super().connectionLost(reason)


class _Factory(client.DBusClientFactory):
    protocol = _Connection
    noisy = False  # no "Starting factory" line at every reconnection attempt
    connection = None  # the protocol, once connected: to hang up if the handshake does not finish

    def buildProtocol(self, addr):
        self.connection = super().buildProtocol(addr)
        return self.connection


def bus_address(bus):
    """``system``/``session`` as the environment says (as txdbus reads them), or ``bus`` itself."""
    if bus == "system":
        return os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or SYSTEM_BUS
    if bus == "session":
        address = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
        if not address:
            raise NoBus("no session bus (DBUS_SESSION_BUS_ADDRESS is not set)")
        return address
    return bus


def reason(e):
    """An exception in words for a log line, without Twisted's "An error occurred while connecting"."""
    if isinstance(e, ConnectError) and e.args and e.args[0]:
        return str(e.args[0]).rstrip(".")
    if isinstance(e, defer.TimeoutError) and e.args and isinstance(e.args[0], (int, float)):
        return f"no answer within {e.args[0]:g} s"  # (addTimeout's: its args are (timeout, "Deferred"))
    return str(e).rstrip(".") or type(e).__name__


def open_connection(reactor, address, timeout, clock=None):
    """A Deferred DBusClientConnection (authenticated, with its unique name) to ``address``,
    failing within ``timeout`` seconds of ``clock`` whatever the peer does."""
    d = defer.ensureDeferred(_open_connection(reactor, address))
    return d.addTimeout(timeout, clock or reactor)


async def _open_connection(reactor, address):
    problems = []
    for endpoint in endpoints.getDBusEndpoints(reactor, address):  # an address may list several
        factory = _Factory()
        try:
            await endpoint.connect(factory)
            return await factory.getConnection()
        except BaseException as e:  # also a cancellation (the timeout): hang up, then give up
            if factory.connection is not None and factory.connection.transport is not None:
                factory.connection.transport.loseConnection()
            if isinstance(e, defer.CancelledError):
                raise
            problems.append(reason(e))
    raise ConnectError(string="; ".join(problems) or f"no usable address in {address!r}")

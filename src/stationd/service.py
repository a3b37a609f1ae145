"""The node's service tree, built in one place: read build_node() to see what runs.

twistd calls makeService() before the reactor runs, so everything that can
fail on a bad configuration (parsing, endpoints, certificates, the database
schema) is done here, blocking, and turned into one line on stderr.
"""

import gc
import os
import signal
import sys
import types

from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString, wrapServerTLS
from twisted.internet.error import CannotListenError
from twisted.logger import ILogObserver, Logger
from twisted.python import usage
from twisted.python.components import Componentized

from stationd import __version__, config as configuration
from stationd.instrument_configs import InstrumentConfigs
from stationd.dbus import NodeBus
from stationd.display import Display
from stationd.exporter import ExportTargets, LocalNode
from stationd.filestore import FileStore
from stationd.ingest import Ingest, StationList
from stationd.logs import make_observer
from stationd.metrics import Metrics
from stationd.sensors import Sensors, drivers
from stationd.store import Store, StoreError, exports, identity
from stationd.store.cache import Cache
from stationd.tls import ServerTLS
from stationd.web import make_site
from stationd.web.auth import Authenticator
from stationd.writer import GroupCommit, Spool, Writer

log = Logger()


class Options(usage.Options):
    synopsis = "[--config PATH]"
    longdesc = ("Run a stationd node. Without --config, $STATIOND_CONFIG names the "
                "configuration file; without either, the embedded defaults apply "
                "(see `stationd-admin echo-config`).")
    optParameters = [["config", "c", None, "configuration file (INI)"]]


class Listener(StreamServerEndpointService):
    """One listening endpoint; if it cannot bind, the start fails: one line, exit 1."""

    # As strports.service() does: a bind failure raises from privilegedStartService.
    _raiseSynchronously = True

    def __init__(self, description, endpoint, factory):
        super().__init__(endpoint, factory)
        self.description = description

    def privilegedStartService(self):
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            reason = getattr(e.socketError, "strerror", None) or e.socketError
            # twistd has redirected sys.stderr into the log by now.
            sys.__stderr__.write(f"stationd: cannot listen on {self.description}: {reason}\n")
            raise SystemExit(1) from None


def _freeze_heap():
    # What the node loaded to start lives as long as the process: frozen, it
    # is left out of full collections, which otherwise walk ~87,000 objects
    # (20-48 ms: the p99 of 1000-event query pages; docs/performance.rst).
    gc.collect()
    gc.freeze()


class NodeService(service.MultiService):
    """The node: parent of every component, holder of what they share."""

    handle_signals = False  # twistd's node does; a node built inside tests does not

    def __init__(self, config, reactor):
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.name = config["node"]["name"]
        self.node_id = None  # the store's (stationd.store.identity): set once the store is open
        self.started_at = None
        self.tls = None
        self.store = None
        self.auth = None
        self.cache = None
        self.metrics = Metrics()
        self.spool = None
        self.writer = None
        self.ingest = None
        self.files = None
        self.configs = None
        self.exports = None
        self.sensors = None
        self.display = None
        self.bus = None
        self.station_list = None
        self.log_observer = make_observer(config["log"])

    def setServiceParent(self, parent):
        # twistd logs through the application's ILogObserver component if it
        # has one: that is how [log] replaces twistd's own log file.
        if isinstance(parent, Componentized) and parent.getComponent(ILogObserver) is None:
            parent.setComponent(ILogObserver, self.log_observer)
        super().setServiceParent(parent)

    def startService(self):
        self.started_at = self.reactor.seconds()
        if self.handle_signals:
            # After the reactor's own handlers, which this replaces for SIGTERM.
            self.reactor.callWhenRunning(self._handle_signals)
            self.reactor.callWhenRunning(_freeze_heap)
        super().startService()
        log.info("stationd {version} node {name!r} (node id {node_id}) started; components: {components}",
                 version=__version__, name=self.name, node_id=self.node_id,
                 components=", ".join(self.config["web"]["components"]))

    @defer.inlineCallbacks
    def stopService(self):
        # One by one, last started first: the listeners stop taking uploads,
        # then the writer finishes its transaction, then the store closes.
        service.Service.stopService(self)
        for child in reversed(list(self)):
            yield defer.maybeDeferred(child.stopService)

    def _handle_signals(self):
        signal.signal(signal.SIGHUP, lambda *_: self.reactor.callFromThread(self.reload))
        signal.signal(signal.SIGTERM, lambda *_: self.reactor.callFromThread(self._terminate))

    def _terminate(self):
        # The reactor's handler would make twistd kill itself with SIGTERM
        # once stopped; SIGTERM is how a node is meant to stop, so exit 0.
        log.info("Received SIGTERM, shutting down.")
        self.reactor.stop()

    def reload(self):
        """SIGHUP: pick up renewed TLS certificates without dropping connections."""
        log.info("SIGHUP: reloading")
        if self.tls is not None:
            self.tls.reload()
        if self.station_list is not None:
            self.station_list.check(force=True)

    def status(self):
        uptime = self.reactor.seconds() - self.started_at if self.started_at else 0.0
        return {
            "node": self.name,
            "node_id": self.node_id,
            "version": __version__,
            "uptime": round(uptime, 3),
            "components": {
                name: "enabled" if name in self.config["web"]["components"] else "disabled"
                for name in configuration.COMPONENTS
            },
            "ingest": {
                "spool_bytes": self.spool.bytes,
                "spool_batches": self.spool.batches,
                "events": {
                    f"{protocol}_{result}": int(value)
                    for (protocol, result), value in self.metrics.count(self.metrics.ingest_events).items()
                },
                "stored": int(self.metrics.count(self.metrics.store_events).get((), 0)),
            },
            "exports": self.exports.status(),
            "sensors": {name: {k: v for k, v in self.sensors.describe(name).items() if k in ("state", "last_error")}
                        for name in self.sensors.names()},
        }


def build_node(config, reactor):
    """The service tree of a node: store, writer, station list, then the web listeners."""
    node = NodeService(config, reactor)
    os.makedirs(config["node"]["data_dir"], exist_ok=True)

    node.store = Store(config["database"]["url"], reactor)
    node.store.migrate(config.own_origin_names())
    node.node_id = node.store.call_read(identity.get_node_id)
    node.store.setServiceParent(node)
    node.cache = Cache(node.store)
    node.auth = Authenticator(node.cache, config["web"]["public_read"])

    node.spool = Spool(config["writer"]["spool_dir"] or os.path.join(config["node"]["data_dir"], "spool"),
                       config["writer"]["max_spool_bytes"], reactor, node.metrics)
    node.writer = Writer(node.spool, node.store, node.node_id, node.metrics, reactor)
    node.writer.setServiceParent(node)
    commits = GroupCommit(node.store, node.writer, node.node_id, node.metrics)
    node.ingest = Ingest(commits, node.metrics, reactor, config["ingest"]["min_event_time"],
                         config["ingest"]["max_future_skew"])
    node.files = FileStore(config["files"]["dir"] or os.path.join(config["node"]["data_dir"], "files"))
    node.configs = InstrumentConfigs(node.store, os.path.join(node.spool.directory, "configs"),
                           config["node"]["timezone"], reactor)
    if config["ingest"]["station_list"]:
        node.station_list = StationList(config["ingest"]["station_list"], node.store, clock=reactor)
        node.station_list.setServiceParent(node)

    local = LocalNode(node.store, node.files, node.metrics, node.node_id, config["node"]["timezone"])
    node.exports = ExportTargets(local, config["exports"], reactor)
    node.exports.load(node.store.call_read(exports.list_targets))
    node.exports.setServiceParent(node)

    node.bus = NodeBus(node, config["dbus"], reactor)
    node.bus.setServiceParent(node)
    try:
        node.display = Display(config["display"], node)
    except ValueError as e:
        raise config.error("display", "driver", str(e)) from None
    node.sensors = Sensors(node, reactor)
    for sensor in config["sensors"].values():
        context = types.SimpleNamespace(name=sensor["name"], data_dir=config["node"]["data_dir"], reactor=reactor,
                                        bus=node.bus, timeout=sensor["timeout"])
        try:
            node.sensors.add(sensor, drivers.make(sensor["driver"], sensor["options"], context))
        except drivers.DriverError as e:
            key = e.key or "driver"
            origin = sensor["origin"].get(key, sensor["origin"].get("driver"))
            raise configuration.ConfigError([f"{origin}:sensor:{sensor['name']}:{key}: {e}"]) from None
    node.sensors.alarm_listeners.append(node.bus.sensor_alarm)
    node.sensors.setServiceParent(node)

    site = make_site(node, reactor)
    for description in config["web"]["http"]:
        Listener(description, serverFromString(reactor, description), site).setServiceParent(node)
    if config["web"]["https"]:
        node.tls = ServerTLS.from_config(config)
        for description in config["web"]["https"]:
            endpoint = wrapServerTLS(node.tls, serverFromString(reactor, description))
            Listener(description, endpoint, site).setServiceParent(node)
    return node


def makeService(options):
    from twisted.internet import reactor

    try:
        config = configuration.load(options["config"])
        configuration.check_endpoints(config, reactor)
        node = build_node(config, reactor)
        node.handle_signals = True
        return node
    except configuration.ConfigError as e:
        sys.stderr.write(f"{e}\n")
        raise SystemExit(2) from None
    except (StoreError, OSError) as e:
        sys.stderr.write(f"stationd: cannot start: {e}\n")
        raise SystemExit(1) from None

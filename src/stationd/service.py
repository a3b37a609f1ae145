"""The node's service tree, built in one place: read build_node() to see what runs.

twistd calls makeService() before the reactor runs, so everything that can
fail on a bad configuration (parsing, endpoints, certificates, the database
schema) is done here, blocking, and turned into one line on stderr.
"""

import gc
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import cast

from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import defer
from twisted.internet.endpoints import UNIXServerEndpoint, serverFromString, wrapServerTLS
from twisted.internet.error import CannotListenError
from twisted.logger import ILogObserver, Logger
from twisted.python import usage
from twisted.python.components import Componentized

from stationd import __version__, config as configuration, reload as reloading
from stationd.instrument_configs import InstrumentConfigs
from stationd.dbus import NodeBus
from stationd.decoders import DecoderPool
from stationd.display import Display
from stationd.exporter import ExportTargets, LocalNode
from stationd.fdlimit import raise_open_files_limit
from stationd.filestore import FileStore
from stationd.ingest import Ingest, StationList
from stationd.logs import NodeLog
from stationd.metrics import HostMetrics, Metrics
from stationd.sensors import Sensors, drivers
from stationd.store import Store, StoreError, identity
from stationd.store import exports as exports_table
from stationd.store.cache import Cache
from stationd.tls import ServerTLS
from stationd.web import make_site
from stationd.web.admin import AdminRoutes
from stationd.web.configs import ConfigRoutes
from stationd.web.core import Core
from stationd.web.dashboard import Dashboard
from stationd.web.docs import ApiDocs
from stationd.web.imports import Import
from stationd.web.ingest import NativeIngest
from stationd.web.meteorpi import MeteorPiRoutes
from stationd.web.metrics import MetricsRoutes
from stationd.web.query import QueryRoutes
from stationd.web.forward import Forward
from stationd.web.guard import FailureLimiter, PasswordChecks
from stationd.web.sensors import SensorRoutes, states_from_worker_0
from stationd.web.upload import Upload
from stationd.web.auth import Authenticator
from stationd.web.site import NodeSite
from stationd.sentry import SentryReporter, SentryUnavailable
from stationd.statsd import Statsd
from stationd.systemd import Notifier
from stationd.workers import Workers, read_status
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
        self.bound: defer.Deferred = defer.Deferred()  # fires with the port once listening

    port = None  # the listening port, once listening (stationd.workers hands it on)

    def privilegedStartService(self):
        try:
            super().privilegedStartService()
            self._waitingForPort.addCallback(self._listening)
        except CannotListenError as e:
            reason = getattr(e.socketError, "strerror", None) or e.socketError
            # twistd has redirected sys.stderr into the log by now.
            sys.__stderr__.write(f"stationd: cannot listen on {self.description}: {reason}\n")
            raise SystemExit(1) from None

    def _listening(self, port):
        self.port = port
        if not self.bound.called:  # (a tree started again, in tests)
            self.bound.callback(port)
        return port


def _freeze_heap():
    # What the node loaded to start lives as long as the process: frozen, it
    # is left out of full collections, which otherwise walk ~87,000 objects
    # (20-48 ms: the p99 of 1000-event query pages; docs/performance.rst).
    gc.collect()
    gc.freeze()


class NodeService(service.MultiService):
    """The node: parent of every component; answers status, reloads on SIGHUP."""

    handle_signals = False  # twistd's node does; a node built inside tests does not

    def __init__(self, config: configuration.Config, reactor, node_id: str, metrics: Metrics,
                 spool: Spool, exports: ExportTargets, sensors: Sensors, tls: ServerTLS | None = None,
                 station_list: StationList | None = None, worker: int = 0, workers: Workers | None = None,
                 notifier: Notifier | None = None, log_observer: NodeLog | None = None):
        super().__init__()
        self.config, self.reactor = config, reactor
        self.setName(config["node"]["name"])  # (as the other services: twisted's Service types the class one None)
        self.node_id = node_id
        self.metrics, self.spool, self.exports, self.sensors = metrics, spool, exports, sensors
        self.tls, self.station_list = tls, station_list
        self.worker, self.workers = worker, workers  # this process's number; worker 0's Workers
        self.notifier = notifier
        self.started_at: float | None = None
        self.log_observer = log_observer or NodeLog(config["log"], workers=config["node"]["workers"])

    def setServiceParent(self, parent):
        # twistd logs through the application's ILogObserver component if it
        # has one: that is how [log] replaces twistd's own log file.
        if isinstance(parent, Componentized) and parent.getComponent(ILogObserver) is None:
            parent.setComponent(ILogObserver, self.log_observer)
        super().setServiceParent(parent)

    def startService(self) -> None:
        self.started_at = self.reactor.seconds()
        if self.handle_signals:
            # After the reactor's own handlers, which this replaces for SIGTERM.
            self.reactor.callWhenRunning(self._handle_signals)
            self.reactor.callWhenRunning(_freeze_heap)
            reloading.write_pid(self.config["node"]["data_dir"])
            raise_open_files_limit()  # (before the reactor runs: no connection is accepted yet)
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
        if self.handle_signals:
            reloading.remove_pid(self.config["node"]["data_dir"])

    def _handle_signals(self) -> None:
        signal.signal(signal.SIGHUP, lambda *_: self.reactor.callFromThread(self.reload))
        signal.signal(signal.SIGTERM, lambda *_: self.reactor.callFromThread(self._terminate))

    def _terminate(self) -> None:
        # The reactor's handler would make twistd kill itself with SIGTERM
        # once stopped; SIGTERM is how a node is meant to stop, so exit 0.
        log.info("Received SIGTERM, shutting down.")
        self.reactor.stop()

    def reload(self) -> defer.Deferred[dict]:
        """SIGHUP: read the configuration file again and take up what it changes (stationd.reload);
        the outcome, also written for stationd-admin reload."""
        return defer.ensureDeferred(self._reload())

    async def _reload(self) -> dict:
        requested = time.time()
        log.info("SIGHUP: reloading {path}", path=self.config.path or "the embedded defaults")
        if self.notifier is not None:
            self.notifier.reloading()
        try:
            result = await self._apply_reload()
        except Exception:
            log.failure("Reload failed")
            result = {"result": "failed", "errors": ["the reload failed: see the log"]}
        finally:
            if self.notifier is not None:
                self.notifier.reloaded()
        if self.workers is not None:
            self.workers.reload_all()  # (each reads the file itself)
        result = {"pid": os.getpid(), "requested": requested, "worker": self.worker, **result}
        if self.handle_signals and self.worker == 0:
            reloading.write_result(self.config["node"]["data_dir"], result)
        return result

    async def _apply_reload(self) -> dict:
        parts = reloading.Reloadable(self.log_observer, self.tls, self.sensors if self.worker == 0 else None,
                                     self.exports, self.station_list, self.reactor)
        self.config, result = await reloading.reload(self.config, parts)
        return result

    def status(self) -> dict:
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
            **({"worker": self.worker, "workers": read_status(self.config["node"]["data_dir"])}
               if self.config["node"]["workers"] > 1 else {}),
        }


@dataclass
class BuiltNode:
    """What wire() made, by name: the service twistd runs, and its parts for
    tests that look inside a node (no component is handed this)."""

    service: NodeService
    config: configuration.Config
    node_id: str
    metrics: Metrics
    store: Store
    cache: Cache
    auth: Authenticator
    spool: Spool
    writer: Writer
    ingest: Ingest
    files: FileStore
    configs: InstrumentConfigs
    exports: ExportTargets
    bus: NodeBus
    display: Display
    sensors: Sensors
    routes: dict[str, object]  # component name -> route group, enabled or not
    site: NodeSite


def build_node(config: configuration.Config, reactor) -> NodeService:
    """The service tree of a node, as twistd runs it."""
    return wire(config, reactor).service


def wire(config: configuration.Config, reactor, worker: int = 0, log_observer: NodeLog | None = None) -> BuiltNode:
    """Every component, given what it uses; then the tree, in start order: Sentry, store,
    writer, station list, exporters, D-Bus, sensors, host metrics, statsd, the HiSPARC decoders, the web listeners,
    the other workers, systemd's notices.  Worker ``worker`` > 0 (stationd.workers) spools
    apart, leaves sensors, the display, the station list, D-Bus and systemd to worker 0 (and
    forwards the sensor routes there); it listens on the sockets worker 0 hands it."""
    node_name, zone = config["node"]["name"], config["node"]["timezone"]
    data_dir = config["node"]["data_dir"]
    first = worker == 0
    os.makedirs(data_dir, exist_ok=True)
    metrics = Metrics()

    store = Store(config["database"]["url"], reactor)
    store.migrate(config.own_origin_names())
    node_id = store.call_read(identity.get_node_id)
    if node_id is None:  # (migrate() makes it)
        raise StoreError("the store has no node id")
    cache = Cache(store)
    web = config["web"]
    limiter = FailureLimiter(web["auth_failures"], web["auth_window"], reactor)
    checks = PasswordChecks(web["password_queue"], web["password_queue"])
    auth = Authenticator(cache, web["public_read"], limiter, checks)

    spool_dir = config["writer"]["spool_dir"] or os.path.join(data_dir, "spool")
    spool = Spool(spool_dir if first else os.path.join(spool_dir, f"worker-{worker}"),
                  config["writer"]["max_spool_bytes"], reactor, metrics)
    writer = Writer(spool, store, node_id, metrics, reactor)
    ingest = Ingest(GroupCommit(store, writer, node_id, metrics), metrics, reactor,
                    config["ingest"]["min_event_time"], config["ingest"]["max_future_skew"])
    files = FileStore(config["files"]["dir"] or os.path.join(data_dir, "files"))
    configs = InstrumentConfigs(store, os.path.join(spool.directory, "configs"), zone, reactor)
    station_list = (StationList(config["ingest"]["station_list"], store, clock=reactor)
                    if config["ingest"]["station_list"] and first else None)

    exports = ExportTargets(LocalNode(store, files, metrics, node_id, zone), config["exports"], reactor)
    exports.load(store.call_read(exports_table.list_targets))

    try:
        display = Display(config["display"])
    except ValueError as e:
        raise config.error("display", "driver", str(e)) from None
    sensors = Sensors(store, metrics, node_name, node_id, reactor)
    for sensor in config["sensors"].values() if first else ():
        sensors.add(sensor, drivers.for_section(sensor, data_dir, reactor))
    bus = NodeBus(config["dbus"] if first else dict(config["dbus"], bus="none"), node_name, node_id, spool,
                  exports, sensors, display, reactor)
    sensors.alarm_listeners.append(bus.sensor_alarm)
    display.shown_listeners.append(bus.message_shown)

    decoders = DecoderPool(config["ingest"]["decoders"], config["ingest"]["decode_memory"],
                           config["ingest"]["decode_timeout"], reactor)
    tls = ServerTLS.from_config(config) if config["web"]["https"] else None
    host_metrics = (HostMetrics(metrics.registry, os.path.join(data_dir, "metrics"), worker, reactor)
                    if config["node"]["workers"] > 1 else None)
    workers = (Workers(config["node"]["workers"], config.path, data_dir, reactor)
               if first and config["node"]["workers"] > 1 else None)
    ready: list[defer.Deferred] = [writer.recovered()]  # (and each listener's, below)
    notifier = Notifier(ready, reactor) if first else None
    node = NodeService(config, reactor, node_id, metrics, spool, exports, sensors, tls, station_list, worker, workers,
                       notifier, log_observer)
    request_path = config["web"]["request_path"]
    sensor_routes = (SensorRoutes(auth, sensors, display, request_path, reactor) if first
                     else Forward(SensorRoutes, configuration.workers_socket(data_dir), reactor))
    sensor_states = (None if isinstance(sensor_routes, SensorRoutes)
                     else states_from_worker_0(sensor_routes, request_path, sorted(config["sensors"])))
    routes: dict[str, object] = {
        "core": Core(auth, node_name, node_id, node.status, sensor_states),
        "admin": AdminRoutes(store, auth, files, exports, node_id, reactor),
        "upload": Upload(cache, ingest, metrics, limiter, checks, decoders),
        "ingest": NativeIngest(auth, cache, ingest, metrics),
        "query": QueryRoutes(store, auth, files, reactor),
        "configs": ConfigRoutes(store, auth, configs),
        "import": Import(store, auth, files, ingest, node_name, node_id, reactor),
        "sensors": sensor_routes,
        "metrics": MetricsRoutes(metrics, host_metrics),
        "dashboard": Dashboard(request_path),
    }
    routes["docs"] = ApiDocs(routes, config["web"]["components"], request_path, node_name,
                             config["web"]["public_read"])  # (it describes the routes dict as it is when asked)
    routes["meteorpi"] = MeteorPiRoutes(store, auth, files, ingest, metrics, node_id, config["meteorpi"]["path"],
                                        reactor)
    statsd = (Statsd(config["metrics"]["statsd_host"], config["metrics"]["statsd_port"],
                     config["metrics"]["statsd_prefix"], metrics, reactor)
              if config["metrics"]["statsd_host"] else None)
    try:
        sentry = (SentryReporter(config["metrics"]["sentry_dsn"], node_name, node_id)
                  if config["metrics"]["sentry_dsn"] else None)
    except SentryUnavailable as e:
        raise config.error("metrics", "sentry_dsn", str(e)) from None
    for child in (sentry, store, writer, station_list, exports, bus, sensors, host_metrics, statsd, decoders):
        if child is not None:
            child.setServiceParent(node)
    site = make_site(routes, config["web"], reactor, metrics, statsd)
    listeners = []
    if first:  # (the other workers adopt worker 0's sockets)
        for description in config["web"]["http"]:
            listeners.append((Listener(description, serverFromString(reactor, description), site), False))
        for description in config["web"]["https"]:
            endpoint = wrapServerTLS(cast(ServerTLS, tls), serverFromString(reactor, description))  # (https: tls)
            listeners.append((Listener(description, endpoint, site), True))
    for listener, is_tls in listeners:
        listener.setServiceParent(node)
        ready.append(listener.bound)
        if workers is not None:
            workers.add_listener(listener, is_tls)
    if workers is not None and "sensors" in config["web"]["components"]:  # what the others forward
        # (not counted here: the worker that took the request counts it)
        sensor_site = make_site(routes, dict(config["web"], components=["sensors"]), reactor)
        path = configuration.workers_socket(data_dir)  # (a stale one is removed: wantPID's lock file says whose it is)
        Listener(f"unix:{path}", UNIXServerEndpoint(reactor, path, mode=0o600, wantPID=True),
                 sensor_site).setServiceParent(node)
    if workers is not None:
        workers.setServiceParent(node)  # started last, stopped first: before the store closes
    if notifier is not None:
        notifier.setServiceParent(node)  # (stopped first of all: STOPPING=1 as the stop begins)
    return BuiltNode(node, config, node_id, metrics, store, cache, auth, spool, writer, ingest, files, configs,
                     exports, bus, display, sensors, routes, site)


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

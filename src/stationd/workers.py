"""[node] workers = N: N processes serve the node's listeners, on one PostgreSQL database.

The twistd process is worker 0: it opens every listener (``systemd:`` ones
too) and starts workers 1 to N-1 as ``python -m stationd.worker_process``, each
with the listening sockets as inherited descriptors, which it adopts
(``reactor.adoptStreamPort``): the kernel hands each connection to one of
the processes accepting on the socket.  A worker's stdin is a pipe from
the twistd process (when it closes, the parent is gone and the worker
stops); its log events come back as JSON lines on its stdout and are
logged by the twistd process, naming the worker.

A worker that exits is started again (backoff up to 30 s, a line in the
log).  SIGTERM stops the workers first, each as a node stops (its batches
stored or left in its spool), then the twistd process; SIGHUP is passed on (to a worker still starting, once
it says it takes signals: before, SIGHUP would kill it).
Worker k spools into ``{spool_dir}/worker-k``, so the process that takes
its place drains what it acknowledged.  Worker 0 alone runs the sensors,
the station-list watcher and D-Bus; export targets run in every worker,
and their leases (stationd.store.exports.claim_lease) let one export each.
"""

import json
import os
import random
import sys
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, protocol
from twisted.logger import LogLevel, Logger, eventFromJSON, globalLogPublisher
from twisted.python.failure import Failure

from stationd.filestore import replace_file
from stationd.logs import WORKER
from stationd.retry import backoff_delay

log = Logger()
MAX_RESTART_DELAY = 30.0  # seconds
STOP_TIMEOUT = 30.0  # seconds a worker has to stop after SIGTERM before it is killed
STATUS_FILE = "workers.json"  # in data_dir: what /api/v1/status of any worker lists
READY = "stationd_worker_ready"  # the event key of a worker's "takes signals" line


class _Worker(protocol.ProcessProtocol):
    def __init__(self, pool: "Workers", number: int) -> None:
        self.pool, self.number = pool, number
        self._buffer = b""

    def outReceived(self, data: bytes) -> None:
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        for line in lines:
            line = line.strip(b"\x1e")  # (jsonFileLogObserver's record separator)
            if not line:
                continue
            try:
                event = eventFromJSON(line.decode("utf-8"))
                event = _unflattened(event)
            except ValueError:
                event = {"log_format": "{text}", "text": line.decode("utf-8", "replace"),
                         "log_level": LogLevel.info, "log_namespace": __name__}
            event[WORKER] = self.number
            if event.get(READY):
                self.pool._ready(self.number)
            globalLogPublisher(event)

    def errReceived(self, data: bytes) -> None:
        for line in data.decode("utf-8", "replace").splitlines():
            log.warn("{text}", text=line, **{WORKER: self.number})

    def processEnded(self, reason: Failure) -> None:
        self.pool._ended(self, reason)


def _worker_environment(environ: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """The twistd process's environment but systemd's notify and watchdog variables: worker 0
    alone speaks for the unit (stationd.systemd)."""
    return {k: v for k, v in environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}


def _unflattened(event: dict[str, Any]) -> dict[str, Any]:
    """A worker's event to be formatted from its fields, not from their str() (which loses format
    specs such as the access log's {duration_ms:.1f}); a field JSON could not carry is its str()."""
    flattened = event.pop("log_flattened", {})
    for name, value in event.items():
        if value == {"unpersistable": True} and f"{name}!s:" in flattened:
            event[name] = flattened[f"{name}!s:"]
    return event


class Workers(Service):
    """The twistd process's workers 1 to ``count`` - 1 (see the module's docstring)."""

    def __init__(self, count: int, config_path: str | None, status_dir: str, reactor: Any,
                 rng: Callable[[], float] = random.random) -> None:
        self.setName("workers")
        self.count, self.config_path, self.reactor, self.rng = count, config_path, reactor, rng
        self.status_path = os.path.join(status_dir, STATUS_FILE)
        self.listeners: list[tuple[Any, bool]] = []  # (a Listener of stationd.service, TLS or not)
        self.running_workers: dict[int, _Worker] = {}
        self.pids: dict[int, int] = {}
        self.started_at: dict[int, float] = {}
        self.restarts: dict[int, int] = {}
        self._failures: dict[int, int] = {}
        self._pending: dict[int, Any] = {}  # number -> IDelayedCall of its restart
        self._takes_signals: set[int] = set()  # workers whose SIGHUP handler is installed
        self._reload_due: set[int] = set()  # workers asked to reload before they took signals
        self._stopped: defer.Deferred[None] | None = None

    def add_listener(self, listener: Any, tls: bool) -> None:
        self.listeners.append((listener, tls))

    def startService(self) -> None:
        super().startService()
        for number in range(1, self.count):
            self._start(number)

    def _start(self, number: int) -> None:
        self._pending.pop(number, None)
        child_fds: dict[int, int | str] = {0: "w", 1: "r", 2: "r"}
        sockets: dict[bool, list[str]] = {False: [], True: []}
        for index, (listener, tls) in enumerate(self.listeners):
            child_fds[3 + index] = listener.port.fileno()
            sockets[tls].append(str(3 + index))
        argv = [sys.executable, "-m", "stationd.worker_process", "--worker", str(number),
                "--http-fds", ",".join(sockets[False]), "--https-fds", ",".join(sockets[True])]
        if self.config_path:
            argv += ["--config", self.config_path]
        worker = _Worker(self, number)
        transport = self.reactor.spawnProcess(worker, sys.executable, argv, env=_worker_environment(os.environ),
                                              childFDs=child_fds)
        self.running_workers[number], self.pids[number] = worker, transport.pid
        self.started_at[number] = self.reactor.seconds()
        log.info("Worker {number} started (pid {pid})", number=number, pid=transport.pid)
        self._write_status()

    def _ready(self, number: int) -> None:
        self._takes_signals.add(number)
        if number in self._reload_due:
            self._reload_due.discard(number)
            self._signal(number, "HUP")

    def reload_all(self) -> None:
        """SIGHUP to every worker; one still starting gets it once its handler is in place (before,
        SIGHUP would kill it), so it reads the file again even if it read it before the change."""
        for number in list(self.running_workers):
            if number in self._takes_signals:
                self._signal(number, "HUP")
            else:
                self._reload_due.add(number)

    def _ended(self, worker: _Worker, reason: Failure) -> None:
        number = worker.number
        self._takes_signals.discard(number)
        self._reload_due.discard(number)  # (its successor reads the file at its start)
        self.running_workers.pop(number, None)
        pid = self.pids.pop(number, None)
        how = (f"signal {reason.value.signal}" if getattr(reason.value, "signal", None)
               else f"exit status {getattr(reason.value, 'exitCode', '?')}")
        if not self.running:
            if not self.running_workers and self._stopped is not None and not self._stopped.called:
                self._stopped.callback(None)
            return
        lived = self.reactor.seconds() - self.started_at.get(number, 0)
        self._failures[number] = 1 if lived > 60 else self._failures.get(number, 0) + 1
        self.restarts[number] = self.restarts.get(number, 0) + 1
        delay = backoff_delay(self._failures[number], MAX_RESTART_DELAY, self.rng)
        log.warn("Worker {number} (pid {pid}) ended ({how}); starting it again in {delay:.1f} s", number=number,
                 pid=pid, how=how, delay=delay)
        self._pending[number] = self.reactor.callLater(delay, self._start, number)
        self._write_status()

    def signal_all(self, name: str) -> None:
        for number in list(self.running_workers):
            self._signal(number, name)

    def _signal(self, number: int, name: str) -> None:
        worker = self.running_workers[number]
        try:
            if worker.transport is not None:
                worker.transport.signalProcess(name)
        except Exception:  # (it has just ended)
            pass

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        for call in self._pending.values():
            if call.active():
                call.cancel()
        self._pending.clear()
        if not self.running_workers:
            return defer.succeed(None)
        self._stopped = defer.Deferred()
        self.signal_all("TERM")
        killer = self.reactor.callLater(STOP_TIMEOUT, self.signal_all, "KILL")
        self._stopped.addBoth(lambda result: killer.cancel() if killer.active() else None)
        return self._stopped

    def describe(self) -> list[dict[str, Any]]:
        workers = [{"worker": 0, "pid": os.getpid(), "state": "running", "restarts": 0}]
        for number in range(1, self.count):
            workers.append({"worker": number, "pid": self.pids.get(number),
                            "state": "running" if number in self.running_workers else "restarting",
                            "restarts": self.restarts.get(number, 0)})
        return workers

    def _write_status(self) -> None:
        try:
            replace_file(self.status_path, json.dumps(self.describe()).encode())
        except OSError as e:
            log.warn("Workers: {path} not written ({e})", path=self.status_path, e=e)


def read_status(data_dir: str) -> list[dict[str, Any]] | None:
    """The workers as the twistd process last wrote them (None: not written yet)."""
    try:
        with open(os.path.join(data_dir, STATUS_FILE), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

"""[metrics] statsd_host: request timers and the node's counters over UDP, as Avalon sent them.

Nothing here may hold up or fail a request: datagrams are written without waiting, a
host that cannot be resolved or reached only loses them (one log line), and the counters
are read from the Prometheus registry every ``interval`` seconds (their increase since the
last look), so the ingest and export paths do no statsd work at all.
"""

import re
from typing import Any

from twisted.application.service import Service
from twisted.internet import task
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from stationd.metrics import Metrics

log = Logger()


def statsd_name(text: str) -> str:
    """A route template or label as one statsd name part: ``/api/v1/events/{event_id}`` ->
    ``api_v1_events_event_id``."""
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "root"


class Statsd(DatagramProtocol, Service):
    """Sends ``<prefix>.request.<route>.<method>`` timers (``timing``) and, every ``interval``
    seconds, the increase of the ingest, store and export counters of ``metrics``."""

    def __init__(self, host: str, port: int, prefix: str, metrics: Metrics, reactor: Any,
                 interval: float = 10.0) -> None:
        self.setName("statsd")
        self.host, self.port, self.prefix = host, port, prefix.rstrip(".")
        self.metrics, self.reactor = metrics, reactor
        self.address: tuple[str, int] | None = None  # once resolved
        self._seen: dict[tuple[str, tuple[str, ...]], float] = {}
        self._loop = task.LoopingCall(self.send_counters)
        self._loop.clock = reactor
        self._interval = interval
        self._failed = False
        self._listening: Any = None

    def startService(self) -> None:
        super().startService()
        self._listening = self.reactor.listenUDP(0, self, interface="::" if isIPv6Address(self.host) else "")
        if isIPAddress(self.host) or isIPv6Address(self.host):
            self.address = (self.host, self.port)
        else:
            self.reactor.resolve(self.host).addCallbacks(
                lambda ip: setattr(self, "address", (ip, self.port)),
                lambda failure: self._lost(f"cannot resolve {self.host}: {failure.getErrorMessage()}"))
        self.send_counters()  # (the counters as they start: later rounds send what they gain)
        self._loop.start(self._interval, now=False)

    def stopService(self) -> Any:
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        self.send_counters()
        return self._listening.stopListening() if self._listening is not None else None

    def timing(self, name: str, milliseconds: float) -> None:
        self._send(f"{self.prefix}.{name}:{milliseconds:.3f}|ms")

    def send_counters(self) -> None:
        lines = []
        for what, counter in (("ingest", self.metrics.ingest_events), ("store", self.metrics.store_events),
                              ("export", self.metrics.export_events), ("import", self.metrics.import_events)):
            for labels, value in self.metrics.count(counter).items():
                key = (what, labels)
                increase = value - self._seen.get(key, 0.0)
                self._seen[key] = value
                if increase > 0:
                    name = ".".join([self.prefix, what, *map(statsd_name, labels)])
                    lines.append(f"{name}:{increase:g}|c")
        for start in range(0, len(lines), 20):  # (a datagram a few hundred bytes long)
            self._send("\n".join(lines[start:start + 20]))

    def _send(self, data: str) -> None:
        if self.address is None or self.transport is None:
            return
        try:
            self.transport.write(data.encode("utf-8"), self.address)
        except OSError as e:
            self._lost(str(e))

    def connectionRefused(self) -> None:
        self._lost("refused")

    def _lost(self, why: str) -> None:
        if not self._failed:
            log.warn("statsd {host}:{port}: {why}; its figures are dropped meanwhile (Prometheus is unaffected)",
                     host=self.host, port=self.port, why=why)
        self._failed = True

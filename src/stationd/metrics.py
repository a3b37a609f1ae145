"""The node's Prometheus metrics, in a registry of its own (one per node, so tests
and several nodes in one process do not share counters)."""

import os
import platform
import re
from collections.abc import Mapping

import twisted
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, disable_created_metrics
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString
from twisted.application.service import Service
from twisted.internet import task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from stationd import __version__

log = Logger()
# No ``*_created`` series (DESIGN.md 8): they double the counters' series, and
# promtool reads them as gauges of their own.  (prometheus_client's switch is the process's.)
disable_created_metrics()


class Metrics:
    def __init__(self):
        self.registry = r = CollectorRegistry()
        ProcessCollector(registry=r)
        Gauge("stationd_build_info", "Always 1: the node's version, and those of Python and Twisted.",
              ["version", "python", "twisted"], registry=r).labels(
            __version__, platform.python_version(), twisted.__version__).set(1)
        self.http_requests = Counter(
            "stationd_http_requests", "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"], registry=r)
        self.http_seconds = Histogram(
            "stationd_http_request_seconds", "Time from a request's arrival to its answer, by route template.",
            ["route"], registry=r, buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.ingest_events = Counter(
            "stationd_ingest_events", "Events received, by protocol and result "
            "(accepted, quarantined, duplicate, rejected).", ["protocol", "result"], registry=r)
        self.ingest_requests = Counter(
            "stationd_ingest_requests", "Ingest requests, by protocol and answer code.",
            ["protocol", "code"], registry=r)
        self.spool_bytes = Gauge("stationd_spool_bytes", "Bytes waiting in the spool.", registry=r)
        self.spool_batches = Gauge("stationd_spool_batches", "Batches waiting in the spool.", registry=r)
        self.fsync_seconds = Histogram(
            "stationd_fsync_seconds", "Time to fsync a spool segment and its directory.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r)
        self.store_events = Counter(
            "stationd_store_events", "Events newly written to the store.", registry=r)
        self.export_events = Counter(
            "stationd_export_events", "Events a target has dealt with, by result: sent, duplicate (the upstream "
            "had it), skipped_filter (the target's filters pass it over), skipped_origin (it came from the "
            "upstream).", ["target", "result"], registry=r)
        self.export_lag = Gauge(
            "stationd_export_lag_seconds", "Seconds since the first event a target's upstream has yet to "
            "confirm was received (0: none waits).", ["target"], registry=r)
        self.export_state = Gauge(
            "stationd_export_state", "1 for the state each target is in (starting, ok, backing_off, "
            "waiting_window, error, paused), 0 for the others.", ["target", "state"], registry=r)
        self.export_failures = Gauge(
            "stationd_export_failures", "Consecutive failed attempts of a target (0: working).", ["target"],
            registry=r)
        self.import_events = Counter(
            "stationd_import_events", "Events imported from other nodes, by result (accepted, duplicate).",
            ["result"], registry=r)

        self.sensor_value = Gauge(
            "stationd_sensor_value", "The last reading of each sensor field.", ["sensor", "field", "unit"],
            registry=r)
        self.sensor_errors = Counter(
            "stationd_sensor_errors", "Failed sensor polls (errors, timeouts, a read still busy).", ["sensor"],
            registry=r)
        self.sensor_poll_lateness = Histogram(
            "stationd_sensor_poll_lateness_seconds", "How late polls start after they are due.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0), registry=r)

    def count(self, counter):
        """A counter's current values, {label values: value} (key () when it has no labels)."""
        values = {}
        for metric in counter.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    values[tuple(sample.labels.values())] = sample.value
        return values



def merge_expositions(by_worker: Mapping[int, str]) -> str:
    """The Prometheus text of several workers' expositions as one host's: each series summed
    across the workers (counters, histograms, and gauges such as spool bytes add up), the
    ``process_*`` ones kept apart with a ``worker`` label (what an operator needs per process)."""
    families: dict[str, tuple[str, str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]] = {}
    for worker, text in sorted(by_worker.items()):
        for family in text_string_to_metric_families(text):
            _, _, samples = families.setdefault(family.name, (family.type, family.documentation, {}))
            for sample in family.samples:
                labels = dict(sample.labels, **({"worker": str(worker)} if family.name.startswith("process_")
                                                else {}))
                key = (sample.name, tuple(sorted(labels.items())))
                samples[key] = samples.get(key, 0.0) + sample.value
    lines = []
    for name, (kind, documentation, samples) in families.items():
        # (As generate_latest writes them: a counter's family as NAME_total.)
        lines += _render(f"{name}_total" if kind == "counter" else name, kind, documentation, samples)
    return "\n".join(lines) + "\n"


def _render(name: str, kind: str, documentation: str,
            samples: Mapping[tuple[str, tuple[tuple[str, str], ...]], float]) -> list[str]:
    lines = [f"# HELP {name} {documentation.replace(chr(92), chr(92) * 2).replace(chr(10), '')}",
             f"# TYPE {name} {kind}"]
    for (sample_name, pairs), value in samples.items():
        rendered = ",".join(f'{key}="{_escape(label)}"' for key, label in pairs)
        lines.append(f"{sample_name}{{{rendered}}} {floatToGoString(value)}" if rendered
                     else f"{sample_name} {floatToGoString(value)}")
    return lines


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class HostMetrics(Service):
    """With several workers (stationd.workers): each writes its exposition to
    ``{directory}/worker-N.prom`` every ``interval`` seconds, and /metrics on any of them answers
    for the host (merge_expositions; the other workers' figures are at most that old)."""

    def __init__(self, registry: CollectorRegistry, directory: str, worker: int, clock: IReactorTime,
                 interval: float = 5.0) -> None:
        self.registry, self.directory, self.worker, self.interval = registry, directory, worker, interval
        self.path = os.path.join(directory, f"worker-{worker}.prom")
        self._loop = task.LoopingCall(self.publish)
        self._loop.clock = clock

    def startService(self) -> None:
        super().startService()
        os.makedirs(self.directory, exist_ok=True)
        self._loop.start(self.interval, now=True)

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()

    def publish(self) -> None:
        """This worker's figures, for the others to read (a temp file renamed: never half a file)."""
        try:
            with open(self.path + ".tmp", "wb") as f:
                f.write(generate_latest(self.registry))
            os.replace(self.path + ".tmp", self.path)
        except OSError as e:
            log.warn("Metrics: {path} not written ({e})", path=self.path, e=e)

    def exposition(self) -> bytes:
        """The host's figures, this worker's as of now (blocking: file I/O)."""
        self.publish()
        texts = {}
        for name in os.listdir(self.directory):
            match = re.fullmatch(r"worker-(\d+)\.prom", name)
            if match:
                try:
                    with open(os.path.join(self.directory, name), encoding="utf-8") as f:
                        texts[int(match.group(1))] = f.read()
                except OSError:  # (a worker replacing it just now: left out this once)
                    continue
        return merge_expositions(texts).encode("utf-8")

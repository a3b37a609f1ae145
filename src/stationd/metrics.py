"""The node's Prometheus metrics, in a registry of its own (one per node, so tests
and several nodes in one process do not share counters)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector


class Metrics:
    def __init__(self):
        self.registry = r = CollectorRegistry()
        ProcessCollector(registry=r)
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


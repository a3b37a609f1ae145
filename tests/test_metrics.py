"""The host's /metrics with several workers: their expositions merged."""

import shutil
import subprocess

from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import task

from stationd.metrics import HostMetrics, Metrics, merge_expositions


def samples(text):
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_a_node_has_its_build_info_and_no_created_series():
    found = samples(generate_latest(Metrics().registry).decode())
    [(_, labels)] = [key for key in found if key[0] == "stationd_build_info"]
    assert dict(labels).keys() == {"version", "python", "twisted"} and dict(labels)["version"] == "0.1.0"
    assert not [name for name, _ in found if name.endswith("_created")]


def test_workers_series_are_summed_and_process_ones_kept_apart():
    one, two = Metrics(), Metrics()
    one.ingest_events.labels("native", "accepted").inc(3)
    two.ingest_events.labels("native", "accepted").inc(4)
    two.ingest_events.labels("hisparc", "duplicate").inc()
    one.spool_bytes.set(100)
    two.spool_bytes.set(50)
    one.fsync_seconds.observe(0.002)
    two.fsync_seconds.observe(0.2)
    two.export_state.labels('odd "name"\\', "ok").set(1)
    merged = merge_expositions({0: generate_latest(one.registry).decode(), 1: generate_latest(two.registry).decode()})
    found = samples(merged)
    assert found["stationd_ingest_events_total", (("protocol", "native"), ("result", "accepted"))] == 7
    assert found["stationd_ingest_events_total", (("protocol", "hisparc"), ("result", "duplicate"))] == 1
    assert found["stationd_spool_bytes", ()] == 150
    assert found["stationd_fsync_seconds_count", ()] == 2
    assert found["stationd_fsync_seconds_bucket", (("le", "0.0025"),)] == 1
    assert found["stationd_export_state", (("state", "ok"), ("target", 'odd "name"\\'))] == 1
    assert {labels for name, labels in found if name == "process_cpu_seconds_total"} == {
        (("worker", "0"),), (("worker", "1"),)}
    assert not [name for name, _ in found if name.endswith("_created")]  # (DESIGN.md 8: none)
    if shutil.which("promtool"):
        check = subprocess.run(["promtool", "check", "metrics"], input=merged, capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr


def test_each_worker_publishes_and_any_answers_for_the_host(tmp_path):
    clock = task.Clock()
    workers = [Metrics(), Metrics()]
    shared = [HostMetrics(m.registry, str(tmp_path / "metrics"), n, clock) for n, m in enumerate(workers)]
    for host in shared:
        host.startService()
    workers[1].store_events.inc(5)
    clock.advance(5)  # worker 1 publishes on its interval
    workers[0].store_events.inc(2)  # worker 0 answers: its own figures as of now
    assert samples(shared[0].exposition().decode())["stationd_store_events_total", ()] == 7
    for host in shared:
        host.stopService()

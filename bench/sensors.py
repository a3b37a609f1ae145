"""Sensors: the idle cost of polling, and how late polls start while ingest loads the node.

Runs `twistd -n stationd` (plain HTTP, temp data_dir) three ways:

- baseline: no sensors at all (the system sensor turned off): the ceiling an
  idle node cannot beat;
- 10 sensors polled every second (system, 6 sysfs files, 3 simulated), idle:
  CPU (% of one core) and RSS over --seconds;
- the same node while bench/ingest.py's load generator sends native 100-event
  batches and HiSPARC uploads for --load-seconds with --clients connections.

Polls are aligned to whole seconds with no jitter, so each reading's time
(from /api/v1/sensors/NAME/readings) minus its whole second is exactly how
late that poll started; all ten are then due at the same instant, the worst
case.  A second run spreads them with ``jitter = 1s``; its lateness comes
from the node's own histogram (stationd_sensor_poll_lateness_seconds), as
the share of polls that started within 5 and 10 ms.  All three drivers start
their polls in their sensors' own threads, at real-time priority when
allowed (root, or LimitRTPRIO=1; the node's log says which).

    venv/bin/python bench/sensors.py [--seconds 30] [--load-seconds 20] [--clients 10]
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request

import numpy as np

from ingest import BATCH, STATION, PASSWORD, TEMPLATES, hisparc_template, load, native_template
from nodes import HOST, admin, cpu_seconds, free_port, rss_mib, start_node, stop_node, write_config

SYSFS, SIMULATED = 6, 3


def sensors_config(workdir, jitter):
    """[sensor:...] sections: system and SYSFS + SIMULATED more, all every second, aligned."""
    common = f"interval = 1s\nalign = yes\njitter = {jitter}\n"
    parts = [f"[sensor:system]\n{common}"]
    for i in range(SYSFS):
        path = os.path.join(workdir, f"temp{i}_input")
        with open(path, "w") as f:
            f.write(f"{40000 + i * 1000}\n")
        parts.append(f"[sensor:hwmon{i}]\ndriver = sysfs\npath = {path}\nscale = 0.001\nunit = celsius\n{common}")
    for i, waveform in enumerate(("sine", "square", "sawtooth", "triangle")[:SIMULATED]):
        parts.append(f"[sensor:sim{i}]\ndriver = simulated\nwaveform = {waveform}\nperiod = 60s\n{common}")
    return "".join(parts)


def idle(node, seconds):
    """(% of one core, RSS MiB) over ``seconds`` after a 5 s settle."""
    time.sleep(5)
    before, start = cpu_seconds(node.pid), time.monotonic()
    time.sleep(seconds)
    return 100 * (cpu_seconds(node.pid) - before) / (time.monotonic() - start), rss_mib(node.pid)


def lateness(port, names, since, until):
    """Seconds each poll of ``names`` between the two epoch times started after its whole second."""
    late = []
    for name in names:
        with urllib.request.urlopen(f"http://{HOST}:{port}/api/v1/sensors/{name}/readings?since={since}"
                                    f"&until={until}", timeout=60) as response:
            late += [_late(r["time"]) for r in json.loads(response.read())["readings"]]
    return np.array(late)


def late(port, since, until):
    """Lateness of every sensor's polls."""
    names = ["system"] + [f"hwmon{i}" for i in range(SYSFS)] + [f"sim{i}" for i in range(SIMULATED)]
    return describe(lateness(port, names, since, until))


def _late(iso):
    fraction = iso.split(".")[1].rstrip("Z")
    return int(fraction) / 1e9


def run(workdir, port, extra, log):
    config = write_config(workdir, port, extra)
    admin(config, "add-station", STATION, "--password", PASSWORD)
    key = admin(config, "add-user", "bench", "--role", "admin")
    return start_node(workdir, config, port, log), key


def histogram(port):
    """{upper bound: polls at most that late} of the node's lateness histogram."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=60) as response:
        text = response.read().decode()
    return {float(s.labels["le"]): s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == "stationd_sensor_poll_lateness_seconds_bucket"}


def shares(before, after):
    n = after[float("inf")] - before[float("inf")]
    within = {le: (after[le] - before[le]) / n for le in (0.005, 0.01)} if n else {}
    return f"{n:.0f} polls: " + ", ".join(f"{share:.1%} within {le * 1000:.0f} ms" for le, share in within.items())


def describe(late):
    if not len(late):
        return "no polls"
    p50, p99 = np.percentile(late, [50, 99]) * 1000
    return f"{len(late)} polls, p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {late.max() * 1000:.2f} ms"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--load-seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=10)
    args = parser.parse_args()
    args.procs = 1
    print(f"cores: {os.cpu_count()}; command: {sys.executable} {' '.join(sys.argv)}")
    results = {}
    cases = (("baseline", "[sensor:system]\nenabled = no\n"), ("sensors", "0"), ("sensors, jitter 1 s", "1s"))
    for case, extra in cases:
        workdir, port = tempfile.mkdtemp(prefix="stationd-bench-"), free_port()
        log_path, node = os.path.join(workdir, "node.log"), None
        try:
            with open(log_path, "wb") as log:
                node, key = run(workdir, port, extra if case == "baseline" else sensors_config(workdir, extra), log)
            results[case] = idle(node, args.seconds)
            print(f"{case}: idle {results[case][0]:.2f} % of a core, RSS {results[case][1]:.1f} MiB")
            if case == "baseline":
                continue
            if extra == "0":
                now = time.time()
                print(f"  idle poll lateness: {late(port, now - args.seconds, now)}")
            for label, templates in (("native 100-event", [native_template(t, BATCH, key, 3)
                                                          for t in range(TEMPLATES)]),
                                     ("hisparc", [hisparc_template(t) for t in range(TEMPLATES)])):
                args.seconds_saved, args.seconds = args.seconds, args.load_seconds
                start, cpu_before, counts = time.time(), cpu_seconds(node.pid), histogram(port)
                result = load(port, templates, args)
                end = time.time()
                args.seconds = args.seconds_saved
                busy = 100 * (cpu_seconds(node.pid) - cpu_before) / (end - start)
                exact = f"; {late(port, start, end)}" if extra == "0" else ""
                print(f"  under {label} load ({len(result['latency']) / result['elapsed']:.0f} req/s, node at "
                      f"{busy:.0f} % of a core): {shares(counts, histogram(port))}{exact}")
        finally:
            stop_node(node, log_path)
            shutil.rmtree(workdir, ignore_errors=True)
    (base_cpu, base_rss), (cpu, rss) = results["baseline"], results["sensors"]
    print(f"10 sensors at 1 s: +{cpu - base_cpu:.2f} % of a core over the idle node ({cpu:.2f} % in all), "
          f"+{rss - base_rss:.1f} MiB ({rss:.1f} MiB in all)")
    print("targets: idle < 1 % of a core and < 80 MB with 10 sensors at 1 s; p99 poll lateness under load < 10 ms")


if __name__ == "__main__":
    main()

"""Central-node scale-out on PostgreSQL: one worker against two, under wrk, in one run.

For ``[node] workers = 1`` and ``= 2`` (two nodes, a fresh PostgreSQL schema each, loaded
in turn, run by run), wrk (one thread, 10 keep-alive connections, nothing pinned: the
workers, PostgreSQL and wrk share the machine's cores, as they would on a central host) loads
HiSPARC ``POST /upload`` of 100-event pickles (bench/hisparc_upload.lua, 100 stations) and
native 100-event batches (bench/native.lua).  Measured in the same runs: requests/s, and CPU ms a request of the node
(every worker process), of PostgreSQL (every ``postgres`` process) and of wrk.

The bound two workers can reach on this machine, from the one-worker run:
``cores / (1 + (c_pg + c_wrk) / c_node) x one worker's throughput`` (the cores the node gets
once PostgreSQL and wrk have taken their share).  Target: two workers >= 0.9 of it.

    venv/bin/python bench/scaleout.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test \
        [--seconds 10] [--warmup 2] [--runs 3]
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from ingest import (HISPARC_BODIES, HISPARC_STATIONS, FIRST_HISPARC, STATION, Load, hisparc_pickle, import_stations,
                    native_body, prime_passwords, write_hisparc_bodies)
from nodes import HOST, admin, cpu_seconds, fresh_database, free_port, start_node, write_config

HERE = os.path.dirname(os.path.abspath(__file__))


def postgres_cpu():
    """CPU seconds of every postgres process (the server and its backends) so far."""
    total = 0.0
    for pid in subprocess.run(["pgrep", "-x", "postgres"], capture_output=True, text=True).stdout.split():
        try:
            total += cpu_seconds(int(pid))
        except (OSError, ValueError):
            pass  # (a backend that just ended: its time is lost either way)
    return total


class Node:
    def __init__(self, workdir, database_url, workers):
        os.makedirs(workdir)
        self.port = free_port()
        self.config = write_config(workdir, self.port, f"[database]\nurl = {database_url}\n", level="info")
        with open(self.config) as f:
            text = f.read().replace("[node]\n", f"[node]\nworkers = {workers}\n", 1)
        with open(self.config, "w") as f:
            f.write(text)
        import_stations(self.config, workdir)
        self.key = admin(self.config, "add-user", "bench", "--role", "admin")
        self.process = start_node(workdir, self.config, self.port, open(os.path.join(workdir, "node.log"), "wb"))
        deadline = time.monotonic() + 30
        while len(self.pids()) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError("the workers did not start")
            time.sleep(0.2)

    def pids(self):
        request = urllib.request.Request(f"http://{HOST}:{self.port}/api/v1/status",
                                         headers={"Authorization": f"Bearer {self.key}"})
        status = json.loads(urllib.request.urlopen(request, timeout=10).read())
        workers = status.get("workers") or [{"pid": self.process.pid, "state": "running"}]
        return [w["pid"] for w in workers if w["state"] == "running"]

    def stop(self):
        self.process.terminate()
        self.process.wait(60)


def measure(node, load, args):
    load.run(node.port, args.warmup, latency=False)
    pids = node.pids()
    node_before, pg_before = sum(cpu_seconds(p) for p in pids), postgres_cpu()
    wrk_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = load.run(node.port, args.seconds)
    wrk_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    n = max(result["requests"], 1)
    result["c_node"] = (sum(cpu_seconds(p) for p in pids) - node_before) / n * 1000
    result["c_pg"] = (postgres_cpu() - pg_before) / n * 1000
    wrk_seconds = (wrk_after.ru_utime + wrk_after.ru_stime) - (wrk_before.ru_utime + wrk_before.ru_stime)
    result["c_wrk"] = wrk_seconds / n * 1000
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("STATIOND_TEST_DATABASE_URL"))
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not args.database_url:
        sys.exit("bench/scaleout.py needs --database-url (a PostgreSQL database)")
    if shutil.which("wrk") is None:
        sys.exit("bench/scaleout.py needs wrk: apt-get install -y wrk")
    workdir = tempfile.mkdtemp(prefix="stationd-scaleout-")
    _, bodies = write_hisparc_bodies(workdir)
    with open(os.path.join(workdir, "t100.json"), "w") as f:
        f.write(native_body(100, 3))
    cores = len(os.sched_getaffinity(0))
    results = {}
    nodes, drops = {}, []
    try:
        for workers in (1, 2):  # both up at once, so the runs can alternate between them
            url, drop = fresh_database(args.database_url, os.path.join(workdir, f"db{workers}"))
            drops.append(drop)
            nodes[workers] = node = Node(os.path.join(workdir, f"w{workers}"), url, workers)
            for _ in range(2 * workers):  # each worker checks a station's password once (scrypt), then remembers
                prime_passwords(node, hisparc_pickle(HISPARC_BODIES))
        loads = {(workers, "hisparc"): Load("hisparc_upload.lua", "/upload", {
                     "BODIES": bodies, "NBODIES": str(HISPARC_BODIES), "NSTATIONS": str(HISPARC_STATIONS),
                     "FIRST": str(FIRST_HISPARC)}, step=None) for workers in nodes}
        loads.update({(workers, "native"): Load("native.lua", f"/api/v1/stations/{STATION}/events", {
                          "TEMPLATE": os.path.join(workdir, "t100.json"), "KEY": node.key})
                      for workers, node in nodes.items()})
        # One worker, then two, case by case and run by run: this machine's speed drifts by
        # tens of per cent over minutes, and a slow spell should fall on both.
        for _ in range(args.runs):
            for case in ("hisparc", "native"):
                for workers, node in nodes.items():
                    results.setdefault((case, workers), []).append(measure(node, loads[workers, case], args))
    finally:
        for node in nodes.values():
            node.stop()
        for drop in drops:
            drop()
        shutil.rmtree(workdir, ignore_errors=True)

    def med(case, workers, key):
        return statistics.median(r[key] for r in results[case, workers])

    print(f"command: {sys.executable} {' '.join(sys.argv)}; {cores} cores, nothing pinned; wrk -t1 -c10; "
          f"{args.warmup} s warm-up + {args.seconds} s, medians of {args.runs}")
    print(f"{'case (100 events a request)':30} {'workers':>7} {'req/s':>8} {'events/s':>9} {'p99 ms':>7} "
          f"{'node ms':>8} {'pg ms':>6} {'wrk ms':>6}  bad  runs (req/s)")
    for (case, workers), rs in results.items():
        rps = med(case, workers, "rps")
        print(f"{case:30} {workers:7d} {rps:8.0f} {rps * 100:9.0f} {med(case, workers, 'p99'):7.2f} "
              f"{med(case, workers, 'c_node'):8.2f} {med(case, workers, 'c_pg'):6.2f} "
              f"{med(case, workers, 'c_wrk'):6.2f}"
              f"  {sum(r['bad'] for r in rs):3d}  " + " ".join(f"{r['rps']:.0f}" for r in rs))
    print("\nthe bound for 2 workers: cores / (1 + (c_pg + c_wrk) / c_node) x one worker's req/s (target >= 0.9);\n"
          "each run's two workers against the bound of the one-worker run just before it, then the median:")
    for case in ("hisparc", "native"):
        ratios = []
        for one, two in zip(results[case, 1], results[case, 2]):
            bound = cores / (1 + (one["c_pg"] + one["c_wrk"]) / one["c_node"]) * one["rps"]
            ratios.append((two["rps"] / bound, bound, two["rps"] / one["rps"]))
        print(f"  {case}: 2 workers / bound {statistics.median(r[0] for r in ratios):.2f} (runs: "
              + ", ".join(f"{r:.2f} of {b:.0f} req/s" for r, b, _ in ratios)
              + f"); 2 workers / 1 worker {statistics.median(r[2] for r in ratios):.2f}")

if __name__ == "__main__":
    main()

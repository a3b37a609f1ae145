"""Ingest throughput of a node under wrk, beside the ceilings of this stack, in one run.

Each server is pinned to core 0 (``taskset -c 0``) and wrk to core 1, one
thread and 10 keep-alive connections, a warm-up, then a measured run; the
servers take turns, ``--runs`` times, and the medians are compared:

- native ``POST /api/v1/stations/501/events``, 1-event and 100-event JSON
  batches of ~1 kB of data an event (bench/native.lua fills each event's
  nanoseconds from a per-request counter, so every event is new), against
  ``durable_ceiling.py`` (orjson + a group-committed, fsynced SQLite insert
  before each answer: the least a durable Twisted ingest costs) and, for
  1-event batches, ``raw_web.py`` (a bare twisted.web resource);
- HiSPARC ``POST /upload`` of 100-event protocol-2 pickles with numpy scalars,
  form-encoded as ``requests.post(data=...)`` sends them, for 40 stations
  (bench/hisparc_upload.lua), against the seed datastore's own per-request
  decode done with the standard library (``parse_qs`` + MD5 + ``pickle.loads``
  of the same bodies, in one process).

The node runs on its defaults (access log at info, to a file; the system
sensor) but for plain HTTP on a free port and a temp data_dir.  Printed:
requests/s, events/s, p50/p99 latency, CPU ms a request (all the server's
threads), the ratios to the ceilings, and whether the node stored every
acknowledged event once.

    venv/bin/python bench/ingest.py [--seconds 10] [--warmup 2] [--runs 3] [--only native|hisparc]
"""

import argparse
import base64
import datetime
import hashlib
import json
import os
import pickle
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import numpy as np

from nodes import HOST, admin, cpu_seconds, free_port, start_node, write_config

HERE = os.path.dirname(os.path.abspath(__file__))
STATION, PASSWORD = "501", "secret"
HISPARC_STATIONS, FIRST_HISPARC, HISPARC_BODIES = 100, 1000, 100  # 10,000 distinct uploads
SERVER_CORE, WRK_CORE = "0", "1"
HOLE = "~" * 9


def traces(n):
    return [base64.b64encode(os.urandom(n)).decode() for _ in range(4)]


def native_body(n, day):
    """As ../shared/bench/gen_native.py: n events of ~1 kB data, nanoseconds as a 9-character hole."""
    events = []
    for i in range(n):
        when = datetime.datetime(2024, 5, day) + datetime.timedelta(seconds=i)
        events.append({"type": "CIC", "time": f"{when:%Y-%m-%dT%H:%M:%S}.{HOLE}Z", "data": {
            "n1": 3, "rate": round(random.random() * 2, 4),
            "pulseheights": [random.randrange(5000) for _ in range(4)],
            "integrals": [random.randrange(50000) for _ in range(4)],
            "baselines": [round(random.random() * 200, 3) for _ in range(2)], "traces": traces(150)}})
    return json.dumps({"events": events})


def hisparc_pickle(t):
    """100 events as a Python 3 station's pickle, ~1.9 kB an event, numpy scalars as the DAQ has them."""
    events = []
    for i in range(100):
        when = datetime.datetime(2024, 5, 1, 12) + datetime.timedelta(seconds=t * 100 + i)
        items = [("N1", np.int64(3)), ("RATE", np.float32(np.random.random() * 2))]
        items += [(f"PH{k}", int(np.random.randint(5000))) for k in range(1, 5)]
        items += [(f"IN{k}", int(np.random.randint(50000))) for k in range(1, 5)]
        items += [(f"BL{k}", float(np.random.random() * 200)) for k in range(1, 3)]
        items += [(f"TR{k}", trace) for k, trace in enumerate(traces(225), 1)]
        events.append({"header": {"eventtype_uploadcode": "CIC", "datetime": when, "nanoseconds": 1000 + i,
                                  "date": when.date(), "time": when.time()},
                       "datalist": [{"data_uploadcode": c, "data": v} for c, v in items]})
    return pickle.dumps(events, protocol=2)


def hisparc_fields(data):
    """What follows station_id in the form body, byte for byte as `requests` encodes it."""
    text = data.decode("latin-1")
    return "&" + urllib.parse.urlencode({"password": PASSWORD, "checksum": hashlib.md5(data).hexdigest(),
                                         "data": text})


def stdlib_decode(body):
    """The seed datastore's decode of one upload: form parse, MD5 check, unpickle."""
    form = urllib.parse.parse_qs(body)
    data = form["data"][0].encode("latin-1")
    assert hashlib.md5(data).hexdigest() == form["checksum"][0]
    return pickle.loads(data, encoding="bytes")


def decode_ceiling(bodies, seconds=3.0):
    """Bodies/s of stdlib_decode in this process (numpy imported by the unpickler, as there)."""
    stdlib_decode(bodies[0])
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        stdlib_decode(bodies[count % len(bodies)])
        count += 1
    return count / (time.perf_counter() - start)


def parse_wrk(out):
    units = {"us": 1e-3, "ms": 1.0, "s": 1000.0}
    latency = {p: float(v) * units[u] for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    completed = int(re.search(r"(\d+) requests in", out).group(1))
    bad = int(re.search(r"^BAD (\d+)$", out, re.M).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)$", out, re.M)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), "p50": latency.get("50"),
            "p99": latency.get("99"), "requests": completed, "bad": bad + (int(non2xx.group(1)) if non2xx else 0),
            "socket_errors": errors.group(1) if errors else ""}


class Load:
    """One wrk load: a Lua script and its environment.  Each invocation starts where the last one
    ended (``step``: by how much; None: by the requests it made), so no event is sent twice."""

    def __init__(self, script, path, env, step=10_000_000):
        self.script, self.path, self.env, self.step, self.offset = script, path, env, step, 0

    def run(self, port, seconds, latency=True):
        env = dict(os.environ, OFFSET=str(self.offset), URLPATH=self.path, **self.env)
        command = ["taskset", "-c", WRK_CORE, "wrk", "-t1", "-c10", f"-d{seconds}s", "-s",
                   os.path.join(HERE, self.script), f"http://{HOST}:{port}"]
        out = subprocess.run(command + (["--latency"] if latency else []), env=env, capture_output=True,
                             text=True, timeout=seconds + 60)
        if out.returncode:
            raise RuntimeError(f"wrk failed: {out.stderr}")
        result = parse_wrk(out.stdout)
        self.offset += self.step or result["requests"] + 20  # (+ those in flight when wrk stopped)
        return result


class Server:
    """A server process on core 0; measure() = warm-up, then a measured wrk run with its CPU time."""

    def __init__(self, name, process, port):
        self.name, self.process, self.port = name, process, port
        self.events = 0  # acknowledged, warm-ups included

    def measure(self, load, events_per_request, args):
        warm = load.run(self.port, args.warmup, latency=False)
        before = cpu_seconds(self.process.pid)
        result = load.run(self.port, args.seconds)
        result["cpu_ms"] = (cpu_seconds(self.process.pid) - before) / max(result["requests"], 1) * 1000
        self.events += (warm["requests"] + result["requests"]) * events_per_request
        result["bad"] += warm["bad"]
        return result

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_script(name, script, *argv, workdir):
    port = free_port()
    process = subprocess.Popen(["taskset", "-c", SERVER_CORE, sys.executable, os.path.join(HERE, script),
                                str(port), *argv], cwd=workdir, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://{HOST}:{port}/", timeout=1).read()
            return Server(name, process, port)
        except urllib.error.HTTPError:
            return Server(name, process, port)
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"{script} did not start") from None
            time.sleep(0.05)


def write_hisparc_bodies(workdir):
    """HISPARC_BODIES pickles, and the directory of their form bodies (b0.txt ...) for hisparc_upload.lua."""
    pickles = [hisparc_pickle(t) for t in range(HISPARC_BODIES)]
    bodies = os.path.join(workdir, "bodies")
    os.makedirs(bodies)
    for i, data in enumerate(pickles):
        with open(os.path.join(bodies, f"b{i}.txt"), "w") as f:
            f.write(hisparc_fields(data))
    return pickles, bodies


def import_stations(config, workdir):
    """The native station and the HiSPARC ones, with PASSWORD."""
    stations = os.path.join(workdir, "stations.csv")
    with open(stations, "w") as f:
        f.writelines(f"{number},0,{PASSWORD}\n" for number in
                     [STATION, *range(FIRST_HISPARC, FIRST_HISPARC + HISPARC_STATIONS)])
    admin(config, "import-stations", stations)


def start_stationd(workdir):
    """A node on its defaults but plain HTTP and a temp data_dir; (server, admin key, config)."""
    os.makedirs(workdir)
    port = free_port()
    config = write_config(workdir, port, level="info")
    import_stations(config, workdir)
    key = admin(config, "add-user", "bench", "--role", "admin")
    log = open(os.path.join(workdir, "node.log"), "wb")
    process = start_node(workdir, config, port, log, limit=30, core=SERVER_CORE)
    return Server("stationd", process, port), key


def prime_passwords(server, pickle_data):
    """One upload per HiSPARC station before any is measured: each station's first password check
    is a scrypt derivation (16 MiB, tens of ms, one at a time), remembered afterwards."""
    body = hisparc_fields(pickle_data)
    for number in range(FIRST_HISPARC, FIRST_HISPARC + HISPARC_STATIONS):
        request = urllib.request.Request(f"http://{HOST}:{server.port}/upload",
                                         data=f"station_id={number}{body}".encode(), method="POST",
                                         headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert urllib.request.urlopen(request, timeout=60).read() == b"100"


def stored_events(server, key):
    """Events in the node's store, once it has settled."""
    last, deadline = None, time.monotonic() + 60
    while time.monotonic() < deadline:
        request = urllib.request.Request(f"http://{HOST}:{server.port}/api/v1/status",
                                         headers={"Authorization": f"Bearer {key}"})
        status = json.loads(urllib.request.urlopen(request, timeout=10).read())["ingest"]
        if status["spool_batches"] == 0 and status["stored"] == last:
            return status["stored"]
        last = status["stored"]
        time.sleep(0.5)
    return last


def median(results, key):
    return statistics.median(r[key] for r in results)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", choices=("native", "hisparc"))
    args = parser.parse_args()
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"bench/ingest.py needs {tool}: apt-get install -y wrk util-linux")
    workdir = tempfile.mkdtemp(prefix="stationd-bench-")
    servers = []
    try:
        for n, day in ((1, 2), (100, 3)):
            with open(os.path.join(workdir, f"t{n}.json"), "w") as f:
                f.write(native_body(n, day))
        pickles, bodies = write_hisparc_bodies(workdir)
        forms = [f"station_id={FIRST_HISPARC}{hisparc_fields(data)}" for data in pickles]
        print(f"payloads: native {os.path.getsize(os.path.join(workdir, 't100.json')) / 100:.0f} B/event JSON; "
              f"hisparc {len(pickles[0]) / 100:.0f} B/event pickled, {len(forms[0]) / 1024:.0f} KiB a form body")

        node, key = start_stationd(os.path.join(workdir, "node"))
        servers.append(node)
        ceiling = start_script("durable ceiling", "durable_ceiling.py", os.path.join(workdir, "ceiling.sqlite"),
                               workdir=workdir)
        raw = start_script("raw twisted.web", "raw_web.py", workdir=workdir)
        servers += [ceiling, raw]
        native = {n: Load("native.lua", f"/api/v1/stations/{STATION}/events",
                          {"TEMPLATE": os.path.join(workdir, f"t{n}.json")}) for n in (1, 100)}
        node_native = {n: Load("native.lua", load.path, dict(load.env, KEY=key)) for n, load in native.items()}
        hisparc = Load("hisparc_upload.lua", "/upload", {"BODIES": bodies, "NBODIES": str(HISPARC_BODIES),
                                                         "NSTATIONS": str(HISPARC_STATIONS),
                                                         "FIRST": str(FIRST_HISPARC)}, step=None)
        cases = []  # (name, events a request, [(server, load)])
        if args.only != "hisparc":
            cases += [("native, 1-event batches", 1, [(node, node_native[1]), (ceiling, native[1]), (raw, native[1])]),
                      ("native, 100-event batches", 100, [(node, node_native[100]), (ceiling, native[100])])]
        if args.only != "native":
            cases += [("hisparc /upload, 100-event batches", 100, [(node, hisparc)])]
            prime_passwords(node, hisparc_pickle(HISPARC_BODIES))
            node.events += 100 * HISPARC_STATIONS

        results = {}
        for run in range(args.runs):
            for name, n, pairs in cases:
                for server, load in pairs:
                    results.setdefault((name, server.name), []).append(server.measure(load, n, args))
        stored = stored_events(node, key)
        ceiling_decode = decode_ceiling(forms)

        print(f"\ncommand: {sys.executable} {' '.join(sys.argv)}; cores {os.cpu_count()}; servers on core "
              f"{SERVER_CORE}, wrk -t1 -c10 on core {WRK_CORE}; {args.warmup} s warm-up + {args.seconds} s, "
              f"medians of {args.runs}")
        print(f"{'case':36} {'server':16} {'req/s':>8} {'events/s':>9} {'p50 ms':>7} {'p99 ms':>7} "
              f"{'CPU ms':>7}  bad  runs (req/s)")
        for name, n, pairs in cases:
            for server, _ in pairs:
                rs = results[(name, server.name)]
                rps = median(rs, "rps")
                print(f"{name:36} {server.name:16} {rps:8.0f} {rps * n:9.0f} {median(rs, 'p50'):7.2f} "
                      f"{median(rs, 'p99'):7.2f} {median(rs, 'cpu_ms'):7.3f} {sum(r['bad'] for r in rs):4d}  "
                      + " ".join(f"{r['rps']:.0f}" for r in rs))
        print(f"{'hisparc decode, standard library':36} {'(in process)':16} {ceiling_decode:8.0f} "
              f"{ceiling_decode * 100:9.0f}")

        print("\nratios (targets: native >= 0.6 of the durable ceiling; hisparc >= 1.3 of the stdlib decode):")
        for name, n, pairs in cases:
            mine = median(results[(name, "stationd")], "rps")
            if name.startswith("hisparc"):
                print(f"  {name}: {mine / ceiling_decode:.2f} x the standard-library decode")
            else:
                print(f"  {name}: {mine / median(results[(name, 'durable ceiling')], 'rps'):.2f} x the durable "
                      "ceiling" + (f", {mine / median(results[(name, 'raw twisted.web')], 'rps'):.2f} x raw "
                                   "twisted.web" if n == 1 else ""))
        print(f"\nnode: {node.events} events acknowledged (warm-ups included), {stored} stored; "
              "up to 10 requests a run are stored but cut off before wrk counts their answer")
    finally:
        for server in servers:
            server.stop()
        log = os.path.join(workdir, "node", "node.log")
        if os.path.exists(log):
            warnings = [line for line in open(log, encoding="utf-8", errors="replace")
                        if "[stationd.access" not in line and ("warn" in line.lower() or "error" in line.lower())]
            print(f"node log: {len(warnings)} warning/error line(s)" + "".join(warnings[-5:]))
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

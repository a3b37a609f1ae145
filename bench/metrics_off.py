"""statsd and Sentry unset cost nothing: nodes with [metrics] unset and set under wrk, in one run.

Issue 19 item 5: with ``statsd_host`` and ``sentry_dsn`` empty (the default) neither may
cost anything.  A node from before they existed cannot run on today's store, so this
compares, in the same run, nodes that differ only in ``[metrics]``:

- ``off``: the default (both unset);
- ``statsd``: ``statsd_host = 127.0.0.1`` and a UDP port this script binds and never
  reads while loading (the kernel takes the datagrams, then drops them when full; a
  port of its own for each node);
- ``statsd+sentry``: the same plus ``sentry_dsn`` pointing at a local dummy endpoint
  (bench/raw_web.py), when sentry-sdk is installed.

Each node is pinned to core 0 (``taskset -c 0``) and wrk to core 1, one thread and 10
keep-alive connections, a warm-up, then a measured run; on ``GET /heartbeat`` (the
cheapest route: any fixed cost a request is the largest share there) and on native
1-event ``POST /api/v1/stations/501/events`` (the ingest hot route).  The nodes take turns,
the order rotated each round, ``--rounds`` times; printed: each case's medians
(requests/s, p50/p99, CPU ms a request) and runs, and the ratio off/statsd of each round
(its spread is the noise).

Then what ``off`` holds: the service tree wire() builds from the same config (no
``statsd`` or ``sentry`` service, ``NodeSite.statsd`` None, sentry_sdk not imported, no
observer added to the log publisher), the UDP sockets each running node has open, and
the datagrams that reached the unread port.  Last, timeit of ``NodeSite.log`` (what every
request runs when it ends) with statsd None and set, and of the Sentry observer that a
set ``sentry_dsn`` adds to every log event (an access-log line a request).

    venv/bin/python bench/metrics_off.py [--seconds 5] [--warmup 1] [--rounds 3] [--number 200000]
"""

import argparse
import importlib.util
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import timeit

from ingest import SERVER_CORE, WRK_CORE, Load, Server, native_body, start_script
from nodes import HOST, admin, free_port, start_node, write_config

STATION = "501"


def udp_sockets(pid):
    """How many UDP sockets (IPv4 or IPv6) process ``pid`` holds."""
    inodes = set()
    for name in ("udp", "udp6"):
        with open(f"/proc/net/{name}") as f:
            inodes |= {line.split()[9] for line in list(f)[1:]}
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            count += 1
    return count


def drain(sock):
    """Datagrams waiting on ``sock`` (read now, after the load)."""
    n = 0
    while True:
        try:
            sock.recv(65536)
        except BlockingIOError:
            return n
        n += 1


def inspect(config_path):
    """(In a child process) what wire() builds from ``config_path``: is anything of statsd or Sentry there?"""
    from twisted.internet import reactor
    from twisted.logger import globalLogPublisher

    from stationd import config as configuration
    from stationd.service import wire

    observers_before = len(globalLogPublisher._observers)
    built = wire(configuration.load(config_path), reactor)
    names = sorted(service.name for service in built.service if service.name)
    print(json.dumps({"services": names, "statsd service": "statsd" in names, "sentry service": "sentry" in names,
                      "NodeSite.statsd": repr(built.site.statsd),
                      "sentry_sdk imported": "sentry_sdk" in sys.modules,
                      "log observers added": len(globalLogPublisher._observers) - observers_before}))
    built.store.close()


def microbench(number, udp_port):
    """ns a call of NodeSite.log with statsd None and set; ns the Sentry observer adds to a log event."""
    from twisted.internet import reactor
    from twisted.logger import LogLevel, globalLogBeginner, globalLogPublisher
    from twisted.web import resource

    from stationd.metrics import Metrics
    from stationd.statsd import Statsd
    from stationd.web.site import NodeSite

    # The access line goes through the global publisher, to an observer that drops it: the
    # same logging cost for every variant (the node's file writer is not what is compared).
    globalLogBeginner.beginLoggingTo([lambda event: None], discardBuffer=True, redirectStandardIO=False)

    class Request:  # what NodeSite.log reads of a finished request
        started = 0.0
        stationd_route, stationd_user = "/heartbeat", None
        method, uri, code, sentLength = b"GET", b"/heartbeat", 200, 120

        def getClientAddress(self):
            return Request.address

    Request.address = type("Address", (), {"host": "127.0.0.1"})()
    request = Request()
    metrics = Metrics()
    statsd = Statsd("127.0.0.1", udp_port, "stationd", metrics, reactor)
    statsd.startService()  # (binds its UDP socket; the reactor need not run for a write)
    sites = {f"NodeSite.log, statsd {name}": NodeSite(resource.Resource(), 1 << 20, reactor, metrics=metrics,
                                                       statsd=hook)
             for name, hook in (("None", None), ("set", statsd))}
    figures = {}
    for name, site in sites.items():
        site.log(request)  # (the route's series made once, as on a node's first request)
    for _ in range(3):  # alternating, the best of 3 each (timeit's advice: the minimum is the figure)
        for name, site in sites.items():
            t = timeit.timeit(lambda site=site: site.log(request), number=number)
            figures[name] = min(figures.get(name, float("inf")), t / number * 1e9)
    out = dict(figures)
    # What statsd unset leaves of the hook: the test in NodeSite.log, on its own.
    site = sites["NodeSite.log, statsd None"]
    out["the hook unset: `site.statsd is not None`"] = min(timeit.repeat(
        "site.statsd is not None", globals={"site": site}, number=number * 10, repeat=3)) / (number * 10) * 1e9
    out["statsd.timing alone (format, encode, sendto)"] = min(timeit.repeat(
        lambda: statsd.timing("request.heartbeat.GET", 1.234), number=number, repeat=3)) / number * 1e9
    if importlib.util.find_spec("sentry_sdk") is not None:
        from stationd.sentry import SentryReporter

        reporter = SentryReporter(f"http://public@127.0.0.1:{udp_port}/1", "bench", "0" * 32)
        info = {"log_level": LogLevel.info, "log_namespace": "stationd.access", "log_format": "x"}
        out["Sentry observer, an info event (returns at once)"] = min(timeit.repeat(
            lambda: reporter.observe(info), number=number, repeat=3)) / number * 1e9
        # (and through the publisher, as a node's access line goes, with and without it added)
        site = sites["NodeSite.log, statsd None"]
        with_observer = []
        for added in (False, True) * 3:
            if added:
                globalLogPublisher.addObserver(reporter.observe)
            with_observer.append((added, timeit.timeit(lambda: site.log(request), number=number) / number * 1e9))
            if added:
                globalLogPublisher.removeObserver(reporter.observe)
        out["NodeSite.log, statsd None, Sentry observer added"] = min(t for a, t in with_observer if a)
        out["NodeSite.log, statsd None, no Sentry observer"] = min(t for a, t in with_observer if not a)
    statsd.stopService()
    print(json.dumps(out))


def child(*argv):
    out = subprocess.run([sys.executable, os.path.abspath(__file__), *argv], capture_output=True, text=True,
                         timeout=300)
    if out.returncode:
        raise RuntimeError(f"{argv[0]} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def start(workdir, extra):
    """A node on its defaults (access log at info, the system sensor) but plain HTTP, a temp data_dir
    and ``extra``; (Server, API key, config path)."""
    os.makedirs(workdir)
    port = free_port()
    config = write_config(workdir, port, extra=extra, level="info")
    admin(config, "add-station", STATION, "--password", "secret")
    key = admin(config, "add-user", "bench", "--role", "admin")
    log = open(os.path.join(workdir, "node.log"), "wb")
    return Server(os.path.basename(workdir), start_node(workdir, config, port, log, limit=30, core=SERVER_CORE),
                  port), key, config


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--number", type=int, default=200_000, help="timeit calls a measurement")
    parser.add_argument("--inspect", help=argparse.SUPPRESS)
    parser.add_argument("--micro", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inspect:
        return inspect(args.inspect)
    if args.micro:
        return microbench(args.number, args.micro)
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"bench/metrics_off.py needs {tool}: apt-get install -y wrk util-linux")
    has_sentry = importlib.util.find_spec("sentry_sdk") is not None
    workdir = tempfile.mkdtemp(prefix="stationd-bench-")
    unread = {}  # node -> its statsd "server": bound, not read under load
    for name in ("off", "statsd", "statsd+sentry", "micro"):
        unread[name] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        unread[name].bind((HOST, 0))
        unread[name].setblocking(False)

    def statsd(name):
        return f"[metrics]\nstatsd_host = {HOST}\nstatsd_port = {unread[name].getsockname()[1]}\n"

    servers = []
    try:
        template = os.path.join(workdir, "t1.json")
        with open(template, "w") as f:
            f.write(native_body(1, 2))
        variants = [("off", ""), ("statsd", statsd("statsd"))]
        if has_sentry:
            dummy = start_script("dummy sentry", "raw_web.py", workdir=workdir)
            servers.append(dummy)
            variants.append(("statsd+sentry", statsd("statsd+sentry") + f"sentry_dsn = http://public@{HOST}:{dummy.port}/1\n"))
        nodes = []  # (Server, {route: Load}, config)
        for name, extra in variants:
            server, key, config = start(os.path.join(workdir, name), extra)
            servers.append(server)
            nodes.append((server, {"GET /heartbeat": Load("native.lua", "/heartbeat", {"METHOD": "GET"}),
                                   "native 1-event": Load("native.lua", f"/api/v1/stations/{STATION}/events",
                                                          {"TEMPLATE": template, "KEY": key})}, config))
        routes = list(nodes[0][1])
        results = {}  # (route, node) -> [result a round]
        datagrams = {}
        for r in range(args.rounds):
            order = nodes[r % len(nodes):] + nodes[:r % len(nodes)]
            for route in routes:
                for server, loads, _ in order:
                    drain(unread[server.name])
                    results.setdefault((route, server.name), []).append(server.measure(loads[route], 1, args))
                    datagrams[server.name] = datagrams.get(server.name, 0) + drain(unread[server.name])
        sockets = {server.name: udp_sockets(server.process.pid) for server, _, _ in nodes}
        inspected = {name: child("--inspect", os.path.join(workdir, name, "bench.ini")) for name, _ in variants[:2]}
        micro = child("--micro", str(unread["micro"].getsockname()[1]), "--number", str(args.number))

        print(f"command: {sys.executable} {' '.join(sys.argv)}; cores {os.cpu_count()}; nodes on core "
              f"{SERVER_CORE}, wrk -t1 -c10 on core {WRK_CORE}; {args.warmup} s warm-up + {args.seconds} s, "
              f"{args.rounds} rounds, the order rotated each round; sentry-sdk "
              + ("installed" if has_sentry else "not installed (no statsd+sentry node)"))
        print(f"\n{'route':16} {'node':14} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'CPU ms':>7}  bad  runs (req/s)")
        for route in routes:
            for server, _, _ in nodes:
                rs = results[(route, server.name)]
                print(f"{route:16} {server.name:14} {statistics.median(r['rps'] for r in rs):7.0f} "
                      f"{statistics.median(r['p50'] for r in rs):7.2f} {statistics.median(r['p99'] for r in rs):7.2f} "
                      f"{statistics.median(r['cpu_ms'] for r in rs):7.3f} {sum(r['bad'] for r in rs):4d}  "
                      + " ".join(f"{r['rps']:.0f}" for r in rs))
        print("\nratios, req/s of off over the other, each round (1.00: the same; their spread is the noise):")
        for route in routes:
            off = results[(route, "off")]
            for server, _, _ in nodes[1:]:
                other = results[(route, server.name)]
                ratios = [a["rps"] / b["rps"] for a, b in zip(off, other)]
                print(f"  {route:16} off / {server.name:14} " + " ".join(f"{x:.2f}" for x in ratios)
                      + f"   median {statistics.median(ratios):.2f}")
            spread = [r["rps"] for r in off]
            print(f"  {route:16} off's own runs: {min(spread):.0f}-{max(spread):.0f} req/s "
                  f"({(max(spread) - min(spread)) / statistics.median(spread) * 100:.0f}% of its median)")
        print("\nwhat each node holds:")
        for name, found in inspected.items():
            print(f"  {name:14} wire(): statsd service {found['statsd service']}, sentry service "
                  f"{found['sentry service']}, NodeSite.statsd {found['NodeSite.statsd'].split(' object')[0]}, "
                  f"sentry_sdk imported {found['sentry_sdk imported']}, log observers added "
                  f"{found['log observers added']}")
        for server, _, _ in nodes:
            print(f"  {server.name:14} running: {sockets[server.name]} UDP socket(s); "
                  f"{datagrams.get(server.name, 0)} datagrams reached its statsd port under load "
                  "(at least: the socket is read only after each run, and drops when full)")
        print(f"\nper request, in process (timeit, {args.number:,} calls, the best of 3):")
        for name, ns in micro.items():
            print(f"  {name:50} {ns:8.1f} ns")
        print(f"  {'NodeSite.log: statsd set minus None':50} "
              f"{micro['NodeSite.log, statsd set'] - micro['NodeSite.log, statsd None']:8.1f} ns")
    finally:
        for server in servers:
            server.stop()
        for name in ("off", "statsd", "statsd+sentry"):
            log = os.path.join(workdir, name, "node.log")
            if os.path.exists(log):
                warnings = [line for line in open(log, encoding="utf-8", errors="replace")
                            if "[stationd.access" not in line and ("warn" in line.lower() or "error" in line.lower())]
                print(f"node {name} log: {len(warnings)} warning/error line(s)\n" + "".join(warnings[-5:]))
        for sock in unread.values():
            sock.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

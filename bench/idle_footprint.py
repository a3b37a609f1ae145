"""Idle footprint of a node: time from launch to first answered heartbeat, and RSS.

Runs `twistd -n stationd` on the embedded defaults (but free ports and a temp
data_dir) several times, and in the same run a bare `twistd -n web` serving a
directory, the floor any twistd process pays.  Prints medians and ratios.

    venv/bin/python bench/idle_footprint.py [--runs 5]
"""

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

BIN = os.path.dirname(sys.executable)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])


def measure(command, url, cwd, settle=1.0):
    """(seconds to first 200 on url, RSS in MiB after settling)."""
    start = time.monotonic()
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"{command} exited {proc.returncode}")
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    r.read()
                break
            except OSError:
                time.sleep(0.01)
        ready = time.monotonic() - start
        time.sleep(settle)
        return ready, rss_kib(proc.pid) / 1024
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def stationd(workdir, fresh):
    if fresh:
        shutil.rmtree(os.path.join(workdir, "var"), ignore_errors=True)
    http, https = free_port(), free_port()
    config = os.path.join(workdir, "bench.ini")
    with open(config, "w") as f:
        f.write(f"[web]\nhttp = tcp:{http}:interface=127.0.0.1\nhttps = tcp:{https}:interface=127.0.0.1\n")
    command = [os.path.join(BIN, "twistd"), "--pidfile=", "-n", "stationd", "--config", config]
    return command, f"http://127.0.0.1:{http}/heartbeat"


def bare_web(workdir):
    port = free_port()
    command = [os.path.join(BIN, "twistd"), "--pidfile=", "-n", "web",
               "--listen", f"tcp:{port}:interface=127.0.0.1", "--path", workdir]
    return command, f"http://127.0.0.1:{port}/"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="stationd-bench-")
    try:
        results = {}
        cases = {
            "twistd web (floor)": lambda: bare_web(workdir),
            "stationd, first start (makes cert + schema)": lambda: stationd(workdir, fresh=True),
            "stationd, later start": lambda: stationd(workdir, fresh=False),
        }
        for name, make in cases.items():
            samples = [measure(*make(), cwd=workdir) for _ in range(args.runs)]
            results[name] = (statistics.median(s[0] for s in samples),
                             statistics.median(s[1] for s in samples))
        floor_t, floor_rss = results["twistd web (floor)"]
        print(f"{'case':46} {'to heartbeat':>13} {'RSS':>9} {'x floor':>14}")
        for name, (ready, rss) in results.items():
            print(f"{name:46} {ready * 1000:10.0f} ms {rss:6.1f} MiB"
                  f"   {ready / floor_t:4.1f}x {rss / floor_rss:4.1f}x")
        print(f"(medians of {args.runs} runs; targets: under 1.5 s and under 60 MiB)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

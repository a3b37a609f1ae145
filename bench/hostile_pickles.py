"""Hostile HiSPARC pickles against a real node: what each costs it, and the other requests.

Issue 20, items 1 and 2.  A node on its defaults (plain HTTP on a free port) with station
501; for each attack, uploaded with the station's right password (so it reaches the
decoder): the answer, the node's peak RSS (VmHWM of the twistd process and, when it has
them, its decoder processes) and the longest /heartbeat a prober sees while the attack is
in flight (one request every 10 ms).

- memo-put: ``b"\\x80\\x02Nr" + struct.pack("<I", 2**27) + b"."``: 9 bytes whose
  LONG_BINPUT makes the C unpickler grow its memo to twice the index (2 GiB);
- memo-put-0: the same through protocol 0's decimal ``p<n>``;
- nested: 7,000,000 nested lists (14 MB, under the 16 MiB body limit);
- wide: 5,000,000 empty lists in one list (10 MB);
- legal: a real 100-event upload, for the baseline.

    venv/bin/python bench/hostile_pickles.py [--only NAME ...]
"""

import argparse
import hashlib
import os
import pickle
import shutil
import struct
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

from nodes import HOST, admin, free_port, start_node, stop_node, write_config

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))


def attacks():
    import datetime

    start = datetime.datetime(2024, 5, 1, 22, 0, 0)
    legal = [{"header": {"eventtype_uploadcode": "CIC", "datetime": start + datetime.timedelta(seconds=i),
                         "nanoseconds": i, "date": start.date(), "time": start.time()},
              "datalist": [{"data_uploadcode": "PH1", "data": 1000 + i},
                           {"data_uploadcode": "TR1", "data": "QUJD" * 300}]} for i in range(100)]
    return {
        "memo-put": b"\x80\x02Nr" + struct.pack("<I", 2**27) + b".",
        "memo-put-0": b"Np134217728\n.",
        "nested": b"\x80\x02" + b"]" * 7_000_000 + b"a" * 6_999_999 + b".",
        "wide": b"\x80\x02](" + b"]" * 5_000_000 + b"e.",
        "legal": pickle.dumps(legal, protocol=2),
    }


def body(data):
    """The form: ``data`` as its raw bytes where no form delimiter is among them (a crafted body
    need not be percent-encoded: 14 MB of brackets stay 14 MB, under the body limit)."""
    fields = urllib.parse.urlencode({"station_id": "501", "password": "s3cret",
                                     "checksum": hashlib.md5(data).hexdigest()}).encode("ascii")
    if not any(c in data for c in b"&=%+"):
        return fields + b"&data=" + data
    return fields + b"&" + urllib.parse.urlencode({"data": data.decode("latin-1")}).encode("ascii")


def peak_rss_mib(pid):
    """VmHWM of ``pid`` and of its children (decoder processes), MiB."""
    total = 0.0
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    peaks = {}
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peaks[p] = int(line.split()[1]) / 1024
        except OSError:
            pass
    total = peaks.get(pid, float("nan"))
    return total, max((v for p, v in peaks.items() if p != pid), default=0.0)


def probe(port, stop, worst):
    while not stop.is_set():
        started = time.monotonic()
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/heartbeat", timeout=30) as r:
                r.read()
        except OSError:
            worst.append(float("inf"))
        worst.append(time.monotonic() - started)
        time.sleep(0.01)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*")
    args = parser.parse_args()
    print(f"{'attack':12} {'bytes':>10} {'answer':>6} {'seconds':>8} {'node peak RSS MiB':>18} "
          f"{'decoder peak':>12} {'longest heartbeat ms':>21}")
    for name, data in attacks().items():
        if args.only and name not in args.only:
            continue
        workdir = tempfile.mkdtemp(prefix="stationd-hostile-")
        port = free_port()
        config = write_config(workdir, port)
        admin(config, "add-station", "501", "--password", "s3cret")
        log = open(os.path.join(workdir, "node.log"), "wb")
        node = start_node(workdir, config, port, log)
        try:
            stop, worst = threading.Event(), []
            prober = threading.Thread(target=probe, args=(port, stop, worst))
            prober.start()
            time.sleep(0.3)
            started = time.monotonic()
            request = urllib.request.Request(f"http://{HOST}:{port}/upload", data=body(data),
                                             headers={"Content-Type": "application/x-www-form-urlencoded"})
            try:
                with urllib.request.urlopen(request, timeout=120) as r:
                    answer = r.read().decode()
            except OSError as e:
                answer = type(e).__name__
            took = time.monotonic() - started
            time.sleep(0.3)
            stop.set()
            prober.join()
            node_peak, decoder_peak = peak_rss_mib(node.pid)
            print(f"{name:12} {len(data):>10} {answer:>6} {took:>8.2f} {node_peak:>18.0f} {decoder_peak:>12.0f} "
                  f"{max(worst) * 1000:>21.0f}", flush=True)
        finally:
            stop_node(node, os.path.join(workdir, "node.log"))
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

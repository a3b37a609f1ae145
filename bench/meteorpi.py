"""What MeteorPi's searches cost beside stationd's own query of the same events.

Loads --events events (default 200,000) as bench/query.py does (HiSPARC-like, 50 stations, 10 days),
into SQLite or, with --database-url, a fresh PostgreSQL schema; starts `twistd -n stationd` on it with
``components = all meteorpi`` (plain HTTP), and times pairs of requests that ask for the same page,
once through ``/api/v1/events`` and once through MeteorPi's ``/api/obs/{search}`` (the search encoded
as MeteorPi's client encodes it), from one keep-alive connection, parameters drawn at random:

(a) the latest 100 events of one station;
(b) a one-hour window across all stations, the first 100;
(c) a field constraint over one day (PHn > 1000 / MeteorPi ``greater``, which is >=), the first 100;
(d) MeteorPi only: a page well into one station's events (``skip`` about a quarter of them, ``limit`` 100), as its
    clients page (stationd's own API pages by cursor).

Each MeteorPi answer is checked to hold the same events as its stationd twin.  It prints p50/p99 a
case and the ratio of MeteorPi's p50 to stationd's: the cost of the compatibility layer (the count
MeteorPi answers, and its shapes).

    venv/bin/python bench/meteorpi.py [--events 200000] [--database-url postgresql+psycopg://...]
"""

import argparse
import http.client
import json
import os
import random
import sys
import time
import urllib.parse

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import query as q  # noqa: E402 (bench/query.py: the same events)
from nodes import HOST  # noqa: E402

from stationd import meteorpi  # noqa: E402


def encode(search):
    return urllib.parse.quote_plus(urllib.parse.quote_plus(json.dumps(search, separators=(",", ":"))))


def timed(conn, path):
    start = time.perf_counter()
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    elapsed = time.perf_counter() - start
    if response.status != 200:
        raise AssertionError(f"GET {path}: {response.status} {body[:200]!r}")
    return elapsed, json.loads(body)


def cases(rng, skip):
    """(name, stationd query string or None, MeteorPi search) drawn at random."""
    station = rng.choice(q.STATIONS)
    start = q.T0 + rng.randrange(q.DAYS * 24) * q.HOUR
    day = q.T0 + rng.randrange(q.DAYS) * q.DAY
    n = rng.randrange(1, 5)
    return [
        ("(a) latest 100 of one station", f"station={station}", {"obstory_ids": [station]}),
        ("(b) one hour, all stations, first 100", f"after={start // 10**9}&before={(start + q.HOUR) // 10**9}",
         # (stationd's window is [after, before), MeteorPi's strict on both sides: a nanosecond apart)
         {"time_min": meteorpi.to_seconds(start - 1), "time_max": meteorpi.to_seconds(start + q.HOUR)}),
        ("(c) PHn > 1000 over one day, first 100",
         f"after={day // 10**9}&before={(day + q.DAY) // 10**9}&field.PH{n}.ge=1000",
         {"time_min": meteorpi.to_seconds(day - 1), "time_max": meteorpi.to_seconds(day + q.DAY),
          "meta": [{"key": f"PH{n}", "type": "greater", "value": 1000}]}),
        (f"(d) one station, skip {skip:,}, limit 100", None, {"obstory_ids": [station], "skip": skip, "limit": 100}),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--database-url", help="postgresql+psycopg://...: a fresh schema there instead of SQLite")
    parser.add_argument("--repeat", type=int, default=200, help="requests a case")
    args = parser.parse_args()
    rng = random.Random(11)
    with q.loaded_node(args.events, args.database_url, web="components = all meteorpi\n") as (port, store, _):
        conn = http.client.HTTPConnection(HOST, port, timeout=60)
        timings: dict[str, tuple[list[float], list[float]]] = {}
        skip = args.events // len(q.STATIONS) // 400 * 100  # a quarter of a station's events, about
        for round_ in range(args.repeat + 10):  # (the first 10: warm-up)
            for name, native, search in cases(rng, skip):
                ours, answer = timed(conn, "/api/obs/" + encode(search))
                ids = [o["obs_id"] for o in answer["obs"]]
                if native is not None:
                    theirs, own = timed(conn, "/api/v1/events?" + native)
                    assert ids == [e["id"] for e in own["events"]], name  # the same page
                else:
                    theirs = None
                    assert len(ids) == 100 and answer["count"] > skip, (name, len(ids), answer["count"])
                if round_ >= 10:
                    timings.setdefault(name, ([], []))
                    timings[name][0].append(ours)
                    if theirs is not None:
                        timings[name][1].append(theirs)
        print(f"\ncores: {os.cpu_count()}; database: {store.dialect}; command: {sys.executable} {' '.join(sys.argv)}")
        print(f"{'case':42} {'MeteorPi p50':>12} {'p99':>8} {'stationd p50':>12} {'p99':>8} {'ratio p50':>9}")
        for name, (ours, theirs) in timings.items():
            line = f"{name:42} {np.median(ours) * 1000:10.2f}ms {np.percentile(ours, 99) * 1000:6.2f}ms"
            if theirs:
                line += (f" {np.median(theirs) * 1000:10.2f}ms {np.percentile(theirs, 99) * 1000:6.2f}ms"
                         f" {np.median(ours) / np.median(theirs):8.2f}x")
            print(line)

if __name__ == "__main__":
    main()

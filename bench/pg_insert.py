"""PostgreSQL's CPU per stored event, for each way of inserting a group of batches and each index set.

The node's group commit stores a few 100-event batches a transaction
(stationd.store.events.commit_records).  Here the same transactions run straight
from this process, with the events of bench/ingest.py's HiSPARC uploads (~1.5 kB
of JSON each), into a fresh schema per variant: CPU of every ``postgres``
process and of this process (the node's side of the driver) per stored event,
and events/s of one connection.

    venv/bin/python bench/pg_insert.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test \
        [--transactions 300] [--batches 4] [--runs 3]

The ways to insert: ``executemany`` (what the node does: psycopg sends the
rows' statements in one pipeline), ``values`` (one multi-row INSERT a 500 rows),
``unnest`` (one INSERT ... SELECT FROM unnest() of one array a column), and
``copy`` (COPY into a temporary table, then INSERT ... SELECT ... ON CONFLICT).
The schema variants leave one secondary index of ``events`` out, or keep ``data``
as ``jsonb`` (schema 11 and before) instead of ``json`` text.
"""

import argparse
import os
import statistics
import sys
import time

from sqlalchemy import text

from ingest import hisparc_pickle
from nodes import fresh_database
from scaleout import postgres_cpu

from stationd.hisparc import decode_upload
from stationd.jsoncodec import canonical
from stationd.store import Store
from stationd.store.events import _COLUMNS, _next_seq, event_ids, insert_event_groups

COLUMNS = ", ".join(_COLUMNS)
TYPES = ("text", "text", "text", "bigint", "bigint", "text", "text", "text", "boolean", "text", "bigint")
COUNTS = ("INSERT INTO station_event_counts (station, events, quarantined) VALUES (%s, %s, 0) "
          "ON CONFLICT (station) DO UPDATE SET events = station_event_counts.events + excluded.events")


def executemany(cursor, rows):
    cursor.executemany(f"INSERT INTO events ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s::json, %s, %s, %s, %s, %s) "
                       "ON CONFLICT DO NOTHING", rows)


def values(cursor, rows):
    for start in range(0, len(rows), 500):
        chunk = rows[start:start + 500]
        marks = ", ".join(["(%s, %s, %s, %s, %s, %s::json, %s, %s, %s, %s, %s)"] * len(chunk))
        cursor.execute(f"INSERT INTO events ({COLUMNS}) VALUES {marks} ON CONFLICT DO NOTHING",
                       [v for row in chunk for v in row])


def unnest(cursor, rows):
    arrays = [list(column) for column in zip(*rows)]
    casts = ", ".join(f"%s::{t}[]" for t in TYPES)
    select = ", ".join(f"c{i}::json" if i == 5 else f"c{i}" for i in range(len(TYPES)))
    cursor.execute(f"INSERT INTO events ({COLUMNS}) SELECT {select} FROM unnest({casts}) "
                   f"AS u({', '.join(f'c{i}' for i in range(len(TYPES)))}) ON CONFLICT DO NOTHING", arrays)


def copy(cursor, rows):
    columns = ", ".join(f"{c} {t}" for c, t in zip(_COLUMNS, TYPES))
    cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS incoming ({columns}) ON COMMIT DELETE ROWS")
    with cursor.copy(f"COPY incoming ({COLUMNS}) FROM STDIN") as load:
        for row in rows:
            load.write_row(row)
    select = ", ".join(f"{c}::json" if c == "data" else c for c in _COLUMNS)
    cursor.execute(f"INSERT INTO events ({COLUMNS}) SELECT {select} FROM incoming ON CONFLICT DO NOTHING")


def node(cursor, rows):
    """What the node does (stationd.store.events.insert_event_groups), counts included."""


WAYS = {"executemany": executemany, "values": values, "unnest": unnest, "copy": copy, "node": node}
SCHEMAS = {
    "all indexes": [],
    "no ix_events_type_time_id": ["DROP INDEX ix_events_type_time_id"],
    "no ix_events_time_id": ["DROP INDEX ix_events_time_id"],
    "no ix_events_station_time_id": ["DROP INDEX ix_events_station_time_id"],
    "data as jsonb": ["ALTER TABLE events ALTER COLUMN data TYPE jsonb USING data::jsonb"],
}


def event_rows(transactions, batches):
    """The rows of each transaction: `batches` 100-event HiSPARC uploads, each of its own station."""
    template = []
    for event in decode_upload(hisparc_pickle(0)):
        data_json, digest = canonical(event["data"])
        template.append((event["type"], event["time_ns"], data_json, digest))
    groups = []
    for t in range(transactions):
        rows = []
        for b in range(batches):
            station = str(1000 + b)
            ids = event_ids(time.time_ns(), len(template))
            rows += [(i, station, kind, when + t * 10**11, time.time_ns(), data, digest, "local", False, None)
                     for i, (kind, when, data, digest) in zip(ids, template)]
        groups.append(rows)
    return groups


def measure(database_url, way, ddl, groups):
    url, drop = fresh_database(database_url, "/tmp")
    store = Store(url)
    try:
        store.migrate()
        with store.engine.begin() as conn:
            for statement in ddl:
                conn.execute(text(statement))
        with store.engine.connect() as conn:
            raw = conn.connection.driver_connection
            cursor = raw.cursor()
            cpu_pg, cpu_me, start = postgres_cpu(), time.process_time(), time.perf_counter()
            for rows in groups:
                if way == "node":
                    with conn.begin():
                        insert_event_groups(conn, [rows[i:i + 100] for i in range(0, len(rows), 100)])
                    continue
                with raw.transaction():
                    seq = _next_seq(conn)  # (the advisory lock and max(seq), as the node takes them)
                    WAYS[way](cursor, [row + (seq + i,) for i, row in enumerate(rows)])
                    cursor.executemany(COUNTS, [(s, 100) for s in {row[1] for row in rows}])
            wall = time.perf_counter() - start
            n = sum(len(rows) for rows in groups)
            stored = cursor.execute("SELECT count(*) FROM events").fetchone()[0]
            assert stored == n, (way, stored, n)
            return {"pg_us": (postgres_cpu() - cpu_pg) / n * 1e6, "me_us": (time.process_time() - cpu_me) / n * 1e6,
                    "events_s": n / wall}
    finally:
        store.engine.dispose()
        drop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("STATIOND_TEST_DATABASE_URL"))
    parser.add_argument("--transactions", type=int, default=300)
    parser.add_argument("--batches", type=int, default=4, help="100-event batches a transaction")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not args.database_url:
        sys.exit("bench/pg_insert.py needs --database-url (a PostgreSQL database)")
    groups = event_rows(args.transactions, args.batches)
    cases = [(way, "all indexes") for way in WAYS] + [("node", name) for name in SCHEMAS if name != "all indexes"]
    results = {case: [] for case in cases}
    for _ in range(args.runs):  # interleaved, so a slow minute of the machine falls on every case
        for way, schema in cases:
            results[way, schema].append(measure(args.database_url, way, SCHEMAS[schema], groups))
    print(f"command: {sys.executable} {' '.join(sys.argv)}; {args.transactions} transactions of "
          f"{args.batches} x 100 events, medians of {args.runs}")
    print(f"{'insert':12} {'schema':30} {'pg us/event':>11} {'client us/event':>15} {'events/s':>9}")
    for (way, schema), rs in results.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        print(f"{way:12} {schema:30} {med['pg_us']:11.1f} {med['me_us']:15.1f} {med['events_s']:9.0f}")


if __name__ == "__main__":
    main()

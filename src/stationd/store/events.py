"""Storing events: idempotent inserts of spooled batches.

A batch may be stored twice (the process died after the commit but before the
spool file was removed, or a station retried after a lost reply): the natural
key (station, type, time_ns, digest) and the idempotency key make the second
time a no-op.
"""

import functools
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias, cast

from sqlalchemy import Table, and_, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from stationd import jsoncodec
from stationd.records import Answer, Record
from stationd.store.schema import events, idempotency_keys

# An event row: the values of _COLUMNS but seq (id, station, type, time_ns, received_ns,
# data as JSON text, digest, origin, quarantined, quarantine_reason).
EventRow: TypeAlias = tuple[str, str, str, int, int, str, str, str, bool, str | None]


def digest(data: Any) -> str:
    """SHA-256 of the canonical JSON of ``data`` (compact, UTF-8, sorted keys)."""
    return hashlib.sha256(jsoncodec.dumps(data, sort_keys=True)).hexdigest()


def event_ids(now_ns: int, count: int) -> list[str]:
    """``count`` new event ids: version 7 UUIDs (RFC 9562), the millisecond of ``now_ns`` first.

    Ids made later sort later, so every index that holds the id (the primary
    key above all) grows at its end instead of taking each event on a random
    page: loading 600,000 events into SQLite took a quarter less time, and
    an upstream's import rate no longer falls as it fills
    (docs/performance.rst, Export).
    """
    prefix = (now_ns // 1_000_000) << 80 | 0x7 << 76 | 0b10 << 62  # time, version 7, variant
    randomness = os.urandom(10 * count)  # one system call for the batch
    ids = []
    for start in range(0, 10 * count, 10):
        bits = int.from_bytes(randomness[start:start + 10]) & _RANDOM  # rand_a (12 bits), rand_b (62)
        text = f"{prefix | (bits >> 62) << 64 | bits & _RAND_B:032x}"
        ids.append(f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}")
    return ids


_RANDOM, _RAND_B = (1 << 74) - 1, (1 << 62) - 1


def _insert(conn: Connection, table: Table) -> postgresql.Insert | sqlite.Insert:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()


_COLUMNS = ("id", "station", "type", "time_ns", "received_ns", "data", "digest", "origin",
            "quarantined", "quarantine_reason", "seq")
# PostgreSQL: the rows are COPYed into a temporary table of the connection,
# then inserted from there, ON CONFLICT DO NOTHING (COPY itself has no such
# clause).  Against the driver's executemany in pipeline mode it cost
# PostgreSQL 42 us of CPU an event instead of 54, and this process 7 us
# instead of 22 (bench/pg_insert.py, docs/performance.rst).
_INCOMING = "CREATE TEMPORARY TABLE IF NOT EXISTS incoming_events (LIKE events) ON COMMIT DELETE ROWS"
_COPY_INCOMING = f"COPY incoming_events ({', '.join(_COLUMNS)}) FROM STDIN"
# (emptied as it is read: a second group in the same transaction, an import's, starts afresh)
_FROM_INCOMING = (f"WITH incoming AS (DELETE FROM incoming_events RETURNING *) INSERT INTO events "
                  f"({', '.join(_COLUMNS)}) SELECT {', '.join(_COLUMNS)} FROM incoming ON CONFLICT DO NOTHING")


def _copy_rows(conn: Connection, numbered: list[tuple[Any, ...]]) -> int:
    driver = cast(Any, conn.connection.driver_connection)  # (psycopg's connection, in this transaction)
    with driver.cursor() as cursor:
        cursor.execute(_INCOMING)  # (once a connection; after that a no-op)
        with cursor.copy(_COPY_INCOMING) as copy:
            for row in numbered:
                copy.write_row(row)
        cursor.execute(_FROM_INCOMING)
        return int(cursor.rowcount)


# On SQLite, many rows a statement, so SQLAlchemy's and the driver's
# per-statement work is paid once a chunk, not once a batch (a group of
# 1-event batches was as many statements as batches).  For 100-event batches
# it measured within the noise (docs/performance.rst, Ingest).  500 rows of 11
# values stay far below SQLite's limit of 32766 variables.
ROWS_A_STATEMENT = 500


@functools.lru_cache(maxsize=8)
def _sqlite_insert(rows: int) -> str:
    values = "(" + ", ".join("?" * len(_COLUMNS)) + ")"
    return f"INSERT OR IGNORE INTO events ({', '.join(_COLUMNS)}) VALUES " + ", ".join([values] * rows)


def _insert_rows(conn: Connection, numbered: list[tuple[Any, ...]]) -> int:
    """Insert numbered rows, skipping those stored already; how many were new."""
    if conn.dialect.name == "postgresql":
        return _copy_rows(conn, numbered)
    inserted = 0
    for start in range(0, len(numbered), ROWS_A_STATEMENT):
        chunk = numbered[start:start + ROWS_A_STATEMENT]
        inserted += conn.exec_driver_sql(_sqlite_insert(len(chunk)), tuple(v for row in chunk for v in row)).rowcount
    return inserted


_COUNT_EVENTS = {
    dialect: f"INSERT INTO station_event_counts (station, events, quarantined) VALUES ({mark}, {mark}, {mark}) "
             "ON CONFLICT (station) DO UPDATE SET events = station_event_counts.events + excluded.events, "
             "quarantined = station_event_counts.quarantined + excluded.quarantined"
    for dialect, mark in (("sqlite", "?"), ("postgresql", "%s"))}


def insert_events(conn: Connection, rows: list[EventRow]) -> int:
    """Insert event rows (tuples of _COLUMNS but seq), skipping those stored already; how many were new."""
    return insert_event_groups(conn, [rows])[0][0]


def insert_event_groups(conn: Connection, groups: Sequence[list[EventRow]]) -> list[tuple[int, int]]:
    """Insert groups of event rows (tuples of _COLUMNS but seq), skipping those stored already;
    for each group, (how many were new, how many of those were quarantined).  Each station's
    counts of stored and of quarantined events grow by its new ones.

    All groups go in as one statement (a few, for many rows): per statement,
    the driver's and SQLAlchemy's own work cost more than a small group's
    insert.  Only when some rows were stored already does a read find out
    whose: each group's rows had seqs of their own, and the rows left out
    kept theirs from before.

    Each row gets the next ``seq``: exporters read events in seq order, so
    numbers must be handed out in commit order.  SQLite has one writer at a
    time; on PostgreSQL a transaction lock makes inserting transactions take
    turns from here to their commit.
    """
    first = seq = _next_seq(conn)
    numbered, bounds = [], []
    for rows in groups:
        numbered += [row + (seq + index,) for index, row in enumerate(rows)]
        bounds.append((seq, seq + len(rows)))
        seq += len(rows)
    inserted = _insert_rows(conn, numbered) if numbered else 0
    if inserted == len(numbered):
        results = [(len(rows), sum(1 for row in rows if row[8])) for rows in groups]
        stored = [(row[1], row[8]) for row in numbered]
    else:  # some were stored already: which rows have the seqs handed out here
        new = conn.execute(select(events.c.seq, events.c.quarantined, events.c.station)
                           .where(events.c.seq >= first)).all()
        results = [(sum(1 for s, _, _ in new if low <= s < high),
                    sum(1 for s, q, _ in new if low <= s < high and q)) for low, high in bounds]
        stored = [(station, quarantined) for _, quarantined, station in new]
    per_station: dict[str, list[int]] = {}  # station -> [new events, of them quarantined]
    for station, quarantined in stored:
        counts = per_station.setdefault(station, [0, 0])
        counts[0] += 1
        counts[1] += bool(quarantined)
    if per_station:
        conn.exec_driver_sql(_COUNT_EVENTS[conn.dialect.name],
                             [(station, n, q) for station, (n, q) in per_station.items()])
    return results


def renumber(conn: Connection, event_ids: Sequence[str]) -> None:
    """Give stored events the next ``seq``s: something was added to them (a file), and the
    exporters, which may have sent them already, must send them again."""
    if not event_ids:
        return
    first = _next_seq(conn)
    conn.execute(events.update().where(events.c.id == bindparam("event_id")).values(seq=bindparam("new_seq")),
                 [{"event_id": event_id, "new_seq": first + index} for index, event_id in enumerate(event_ids)])


def _next_seq(conn: Connection) -> int:
    if conn.dialect.name == "postgresql":  # held until commit: numbers are handed out in commit order
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(74658)")
    return (conn.exec_driver_sql("SELECT max(seq) FROM events").scalar() or 0) + 1


def _rows(record: Mapping[str, Any], origin: str) -> list[EventRow]:
    station, received_ns = record["station"], record["received_ns"]
    return [(event["id"], station, event["type"], event["time_ns"], received_ns,
             event["data_json"] if "data_json" in event else jsoncodec.dumps_text(event["data"]),
             event["digest"], origin, event["quarantine"] is not None, event["quarantine"])
            for event in record["events"]]


def store_batches(conn: Connection, records: Sequence[Mapping[str, Any]], origin: str) -> tuple[int, int]:
    """Insert the events of spooled batch records; returns (inserted, duplicates).

    An event has its data as JSON text (``data_json``, what ingest spools) or
    as the value (``data``: spools of earlier versions, alarms)."""
    rows, keys = [], []
    for record in records:
        rows += _rows(record, origin)
        if record.get("idempotency_key"):
            keys.append({"station": record["station"], "key": record["idempotency_key"],
                         "response": json.dumps(record["response"]), "created_ns": record["received_ns"]})
    inserted = insert_events(conn, rows) if rows else 0
    if keys:
        conn.execute(_insert(conn, idempotency_keys), keys)
    return inserted, len(rows) - inserted


def commit_records(conn: Connection, records: Sequence[Record], origin: str) -> list[Answer]:
    """Store ingest records straight from the requests, all in one transaction (group commit);
    each record's answer: {"accepted", "duplicates", "quarantined"} as stored (a record whose
    Idempotency-Key was seen before is not stored again: the answer given then, "replayed")."""
    answers: list[Answer | None]
    fresh: list[int]
    answers, fresh = [None] * len(records), []
    for index, record in enumerate(records):
        key = record.get("idempotency_key")
        earlier = idempotent_response(conn, record["station"], key) if key else None
        if earlier is not None:
            answers[index] = cast(Answer, dict(earlier, replayed=True))
        else:
            fresh.append(index)
    stored = insert_event_groups(conn, [_rows(records[index], origin) for index in fresh])
    keys = []
    answer: Answer
    for index, (inserted, quarantined) in zip(fresh, stored):
        record = records[index]
        answers[index] = answer = {"accepted": inserted - quarantined,
                                   "duplicates": len(record["events"]) - inserted + record.get("duplicates", 0),
                                   "quarantined": quarantined}
        if record.get("idempotency_key"):
            keys.append({"station": record["station"], "key": record["idempotency_key"],
                         "response": json.dumps(answer), "created_ns": record["received_ns"]})
    if keys:
        conn.execute(_insert(conn, idempotency_keys), keys)
    return cast(list[Answer], answers)  # (each one set above)


_IDEMPOTENT = select(idempotency_keys.c.response).where(
    and_(idempotency_keys.c.station == bindparam("station"), idempotency_keys.c.key == bindparam("key")))


def idempotent_response(conn: Connection, station: str, key: str) -> Answer | None:
    row = conn.execute(_IDEMPOTENT, {"station": station, "key": key}).first()
    return None if row is None else json.loads(row.response)

"""The store on SQLite and (with STATIOND_TEST_DATABASE_URL) PostgreSQL."""

import json
import uuid

import pytest
from sqlalchemy import inspect, select, text

from stationd.store import Store, StoreError, files, identity, migrations, schema, users
from stationd.store.events import event_ids


def test_new_database_is_created_at_the_latest_version(store):
    assert store.call(migrations.current_version) == migrations.LATEST
    tables = set(inspect(store.engine).get_table_names())
    assert {"stationd_meta", "users", "stations"} <= tables
    assert store.migrate() == (migrations.LATEST, migrations.LATEST)  # idempotent


def test_an_older_database_is_upgraded_step_by_step(store, monkeypatch):
    def add_column(conn, own_names):
        conn.execute(text("ALTER TABLE stations ADD COLUMN location_note VARCHAR(80)"))

    monkeypatch.setattr(migrations, "LATEST", migrations.LATEST + 1)
    monkeypatch.setitem(migrations.UPGRADES, migrations.LATEST, add_column)
    assert store.migrate() == (migrations.LATEST - 1, migrations.LATEST)
    columns = {c["name"] for c in inspect(store.engine).get_columns("stations")}
    assert "location_note" in columns
    assert store.call(migrations.current_version) == migrations.LATEST


def test_a_newer_database_is_refused(store, monkeypatch):
    monkeypatch.setattr(migrations, "LATEST", migrations.LATEST - 1)
    with pytest.raises(StoreError, match="newer than this stationd"):
        store.migrate()


def test_an_unreachable_database_is_a_one_line_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError, match="cannot"):
        Store(f"sqlite:///{tmp_path}/file/db.sqlite").migrate()
    with pytest.raises(StoreError, match="cannot open database"):
        Store("nosuchdb://x/y")


def test_user_lifecycle(store):
    user, key = store.call(users.add_user, "alice", "editor", email="a@example.org",
                           first_name="Alice", last_name="Smith")
    assert user["role"] == "editor" and user["email"] == "a@example.org"
    assert user["created_at"].endswith("+00:00")
    assert len(key) >= 43  # 32 random bytes, urlsafe base64
    assert store.call(users.authenticate, key)["name"] == "alice"
    assert store.call(users.authenticate, key + "x") is None

    new_key = store.call(users.rotate_key, "alice")
    assert new_key != key
    assert store.call(users.authenticate, key) is None
    assert store.call(users.authenticate, new_key)["name"] == "alice"

    assert [u["name"] for u in store.call(users.list_users)] == ["alice"]
    store.call(users.remove_user, "alice")
    assert store.call(users.authenticate, new_key) is None
    assert store.call(users.list_users) == []


def test_user_errors(store):
    store.call(users.add_user, "bob", "reader")
    with pytest.raises(users.UserExists):
        store.call(users.add_user, "bob", "reader")
    with pytest.raises(users.UserError, match="unknown role"):
        store.call(users.add_user, "carol", "emperor")
    with pytest.raises(users.UserError, match="bad user name"):
        store.call(users.add_user, "no spaces", "reader")
    with pytest.raises(users.NoSuchUser):
        store.call(users.rotate_key, "nobody")
    with pytest.raises(users.NoSuchUser):
        store.call(users.remove_user, "nobody")


def test_keys_are_random_and_never_stored(store):
    keys = [store.call(users.add_user, f"u{i}", "reader")[1] for i in range(5)]
    assert len(set(keys)) == 5
    stored = store.call(lambda conn: [tuple(r) for r in conn.execute(select(schema.users))])
    dump = repr(stored)
    for key in keys:
        assert key not in dump
        assert users.hash_key(key) in dump


def test_schema_matches_the_declared_metadata(store):
    inspector = inspect(store.engine)
    for table in schema.metadata.tables.values():
        columns = {c["name"] for c in inspector.get_columns(table.name)}
        assert columns == {c.name for c in table.columns}, table.name



def test_a_version_2_database_is_upgraded_to_the_same_schema(tmp_path):
    """Version 3 added query indexes and the files and station status tables; 4 configs;
    5 export state; 6 export targets; 7 sensor readings; 8 events counted per station; 10 the
    quarantined ones apart; 11 export leases; 13 user passwords, station metadata, MeteorPi's ids."""
    from sqlalchemy import text

    fresh = Store(f"sqlite:///{tmp_path}/fresh.sqlite")
    fresh.migrate()
    old = Store(f"sqlite:///{tmp_path}/old.sqlite")
    old.migrate()
    with old.engine.begin() as conn:  # back to version 2's shape
        for table in ("files", "event_files", "station_status", "config_versions", "export_state",
                      "export_targets", "sensor_readings", "station_event_counts", "export_leases",
                      "station_metadata", "meteorpi_ids", "meteorpi_uploads"):
            conn.execute(text(f"DROP TABLE {table}"))
        conn.execute(text("ALTER TABLE users DROP COLUMN password_hash"))
        for index in schema.events.indexes:
            conn.execute(text(f"DROP INDEX {index.name}"))
        conn.execute(text("ALTER TABLE events DROP COLUMN seq"))
        conn.execute(text("INSERT INTO events (id, station, type, time_ns, received_ns, data, digest, origin,"
                          " quarantined) VALUES ('a', '501', 'CIC', 5, 6, '{}', 'd', 'n', 0),"
                          " ('b', '501', 'CIC', 10**18, 6, '{}', 'd', 'n', 1)".replace("10**18", str(10**18))))
        conn.execute(text("CREATE INDEX ix_events_time ON events (time_ns)"))
        conn.execute(text("UPDATE stationd_meta SET value = '2' WHERE key = 'schema_version'"))
        conn.execute(text("DELETE FROM stationd_meta WHERE key = 'node_id'"))
    assert old.migrate() == (2, migrations.LATEST)
    assert uuid.UUID(old.call(identity.get_node_id)).version == 4

    def shape(store):
        inspector = inspect(store.engine)
        return {name: (sorted(c["name"] for c in inspector.get_columns(name)),
                       sorted((i["name"], tuple(i["column_names"])) for i in inspector.get_indexes(name)))
                for name in inspector.get_table_names()}

    assert shape(old) == shape(fresh)
    assert old.call(lambda conn: conn.execute(text("SELECT seq FROM events WHERE id = 'a'")).scalar()) == 1
    assert old.call(lambda conn: conn.execute(text("SELECT station, events, quarantined FROM station_event_counts")
                                              ).all()) == [("501", 2, 1)]
    fresh.close()
    old.close()


def test_each_station_s_count_grows_by_its_new_events_only(store):
    """The count a station's page shows is kept by every insert, not counted on each request."""
    from stationd.store.events import digest, store_batches
    from stationd.store.imports import import_batch
    from stationd.store.query import station_counts

    def batch(station, times):
        data = [{"n": t} for t in times]
        return {"station": station, "received_ns": 10**18, "events": [
            {"id": str(uuid.uuid4()), "type": "CIC", "time_ns": t, "data": d, "digest": digest(d), "quarantine": None}
            for t, d in zip(times, data)]}

    first = [batch("501", [1, 2, 3]), batch("502", [1])]
    assert store.call(store_batches, first, "n") == (4, 0)
    replay = [batch("501", [2, 3, 4]), batch("502", [1, 2]), batch("503", [9])]  # 2, 3 and 1 are stored
    assert store.call(store_batches, replay, "n") == (3, 3)
    imported = [dict(e, station="501", received_ns=10**18, quarantined=False, quarantine_reason=None, origin="up",
                     files=[], data_json=json.dumps(e["data"]))
                for e in batch("501", [4, 5])["events"]]
    assert store.call(import_batch, imported)[0]["accepted"] == 1  # time 4 is stored
    counts_table = schema.station_event_counts
    kept = dict(store.call(lambda conn: conn.execute(select(counts_table.c.station, counts_table.c.events)).all()))
    assert kept == {"501": 5, "502": 2, "503": 1}
    assert kept == {s: store.call(lambda conn, s=s: conn.execute(
        text("SELECT count(*) FROM events WHERE station = :s"), {"s": s}).scalar()) for s in kept}

    from sqlalchemy import event as sa_event

    statements = []

    def record(conn, cursor, sql, *_):
        statements.append(sql)

    sa_event.listen(store.engine, "before_cursor_execute", record)
    counts = {s: store.call(station_counts, s)["events"] for s in ("501", "502", "503", "504")}
    sa_event.remove(store.engine, "before_cursor_execute", record)
    assert counts == dict(kept, **{"504": 0})
    assert not any("count(" in sql.lower() for sql in statements)  # read, not counted


def test_quarantined_events_are_counted_apart_and_do_not_move_a_station_s_times(store):
    from stationd.store.events import digest, store_batches
    from stationd.store.query import station_counts

    def event(time_ns, quarantine=None):
        data = {"t": time_ns}
        return {"id": str(uuid.uuid4()), "type": "CIC", "time_ns": time_ns, "data": data, "digest": digest(data),
                "quarantine": quarantine}

    future = 4 * 10**18  # (2096) more than max_future_skew ahead
    store.call(store_batches, [{"station": "501", "received_ns": 10**18, "events": [
        event(10**9, "before min_event_time"), event(2 * 10**18), event(3 * 10**18),
        event(future, "more than max_future_skew ahead")]}], "n")
    assert store.call(station_counts, "501") == {
        "events": 2, "quarantined": 2, "first_event_time": "2033-05-18T03:33:20.000000000Z",
        "last_event_time": "2065-01-24T05:20:00.000000000Z"}
    store.call(store_batches, [{"station": "502", "received_ns": 10**18, "events": [event(future, "ahead")]}], "n")
    assert store.call(station_counts, "502") == {"events": 0, "quarantined": 1, "first_event_time": None,
                                                 "last_event_time": None}


def _plans(store, operation, *args):
    """EXPLAIN of every statement ``operation`` runs (SQLite: QUERY PLAN; PostgreSQL: no seq scans allowed)."""
    from sqlalchemy import event as sa_event

    seen = []

    def record(conn, cursor, statement, params, *_):
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, params))

    sa_event.listen(store.engine, "before_cursor_execute", record)
    store.call(operation, *args)
    sa_event.remove(store.engine, "before_cursor_execute", record)
    plans = []
    with store.engine.connect() as conn:
        for statement, params in seen:
            if store.dialect == "sqlite":
                rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)
                plans.append(" | ".join(row[-1] for row in rows))
            else:
                conn.exec_driver_sql("SET enable_seqscan = off")
                plans.append(" | ".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + statement, params)))
    return plans


@pytest.mark.parametrize("query", [
    {"stations": ["501"]},  # latest of one station
    {"after_ns": 10**18, "before_ns": 10**18 + 3600 * 10**9},  # a window across all stations
    {"after_ns": 10**18, "before_ns": 10**18 + 86400 * 10**9, "constraints": [("ph", "gt", 100)]},
    {"cursor": (10**18, "b"), "order": "desc"},
    {"cursor": (10**18, "b"), "order": "asc", "stations": ["501"]},
    {"types": ["CIC"], "after_ns": 10**18},
    {"stations": ["501", "502", "503"], "order": "asc"},  # one index range a station, merged
])
def test_documented_event_queries_use_an_index_in_order(store, query):
    """No full scan and no sort of the matches: each page is an index range read."""
    from stationd.store import query as store_query

    plans = _plans(store, store_query.find_events, store_query.Query(**query))
    main = plans[0]
    if store.dialect == "sqlite":
        assert "USING INDEX" in main or "USING COVERING INDEX" in main, main
        assert "TEMP B-TREE" not in main, main
    else:
        assert "Seq Scan on events" not in main and "Sort" not in main.split("->")[0], main


def test_file_queries_use_an_index_in_order(store):
    from stationd.store import query as store_query

    for query in ({"stations": ["501"]}, {"types": ["meteor_image"], "after_ns": 5}, {}):
        main = _plans(store, store_query.find_files, store_query.Query(quarantined=None, **query))[0]
        if store.dialect == "sqlite":
            assert "USING INDEX" in main and "TEMP B-TREE" not in main, (query, main)
        else:
            assert "Seq Scan on files" not in main, (query, main)


def test_event_ids_are_version_7_uuids_that_sort_by_the_time_they_were_made():
    now_ns = 1_790_000_000_123_456_789
    ids = event_ids(now_ns, 1000)
    assert len(set(ids)) == 1000
    for event_id in ids:
        value = uuid.UUID(event_id)
        assert str(value) == event_id and value.version == 7 and value.variant == uuid.RFC_4122
        assert value.int >> 80 == now_ns // 1_000_000  # the millisecond, first
    assert len({uuid.UUID(i).int & ((1 << 74) - 1) for i in ids}) == 1000  # random below it
    later = event_ids(now_ns + 1_000_000, 1000)
    assert max(ids) < min(later)  # a later millisecond sorts after, as text too


def _a_version_8_store(url):
    """A store as version 8 left it: no node id, records naming nodes by name."""
    from sqlalchemy import text

    from stationd.store.events import digest, store_batches

    store = Store(url)
    store.migrate()
    ids = {}
    for origin in ("station-7", "stationd", "camera-1"):
        event = {"id": str(uuid.uuid4()), "type": "CIC", "time_ns": len(ids), "data": {"from": origin},
                 "digest": digest({"from": origin}), "quarantine": None}
        store.call(store_batches, [{"station": "501", "received_ns": 1, "events": [event]}], origin)
        store.call(files.attach_file, event["id"], name="f", mime_type="x/y", sha256="0" * 64, size=0, now_ns=1,
                   origin=origin)
        ids[origin] = event["id"]
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM stationd_meta WHERE key = 'node_id'"))
        conn.execute(text("UPDATE stationd_meta SET value = '8' WHERE key = 'schema_version'"))
        conn.execute(text("DROP TABLE export_leases"))  # (version 11's)
        _drop_version_13(conn)
    return store, ids


def _drop_version_13(conn):
    from sqlalchemy import text

    for table in ("station_metadata", "meteorpi_ids", "meteorpi_uploads"):
        conn.execute(text(f"DROP TABLE {table}"))
    conn.execute(text("ALTER TABLE users DROP COLUMN password_hash"))


def _origins(store):
    rows = store.call(lambda c: c.execute(select(schema.events.c.data, schema.events.c.origin)).all())
    return {"events": {data["from"]: origin for data, origin in rows},
            "files": sorted(store.call(lambda c: c.execute(select(schema.files.c.origin)).scalars().all()))}


@pytest.mark.parametrize("body, own", [("[node]\nname = station-7\n", {"station-7"}),
                                       ("", {"stationd"})])
def test_version_8_gets_a_node_id_and_its_own_records_name_it(database_url, tmp_path, body, own):
    """Records whose origin was this node's name (or the old default name "stationd", when the
    config sets none) now carry its id; those from elsewhere keep theirs."""
    from stationd import config as configuration

    from conftest import write_config

    store, ids = _a_version_8_store(database_url)
    config = configuration.load(str(write_config(tmp_path, body)))
    assert store.migrate(config.own_origin_names()) == (8, migrations.LATEST)
    node_id = store.call(identity.get_node_id)
    assert uuid.UUID(node_id).version == 4
    origins = _origins(store)
    expected = {name: node_id if name in own else name for name in ("station-7", "stationd", "camera-1")}
    assert origins["events"] == expected
    assert origins["files"] == sorted(expected.values())
    assert store.migrate(config.own_origin_names()) == (migrations.LATEST, migrations.LATEST)
    assert store.call(identity.get_node_id) == node_id  # made once: it is the node's for good
    store.close()



def test_version_12_keeps_events_data_as_the_json_text_it_came_as(database_url):
    """Version 12: on PostgreSQL events' data goes from jsonb to json; every event stays, and
    answers queries on its fields as before."""
    from stationd.store.events import digest, store_batches
    import orjson

    from stationd.store.query import Query, find_events

    store = Store(database_url)
    store.migrate()
    postgres = store.engine.dialect.name == "postgresql"
    with store.engine.begin() as conn:  # back to version 11's shape
        if postgres:
            conn.execute(text("ALTER TABLE events ALTER COLUMN data TYPE jsonb USING data::jsonb"))
        conn.execute(text("UPDATE stationd_meta SET value = '11' WHERE key = 'schema_version'"))
        _drop_version_13(conn)
    for n in (3, 7):
        data = {"n": n, "name": f"event {n}"}
        event = {"id": event_ids(n, 1)[0], "type": "WTR", "time_ns": n, "data": data, "digest": digest(data),
                 "quarantine": None}
        store.call(store_batches, [{"station": "501", "received_ns": n, "events": [event]}], "here")
    assert store.migrate() == (11, migrations.LATEST)
    if postgres:
        [column] = [c for c in inspect(store.engine).get_columns("events") if c["name"] == "data"]
        assert type(column["type"]).__name__ == "JSON"
    found, _ = store.call(find_events, Query(constraints=[("n", "gt", 5)]))
    assert [orjson.loads(orjson.dumps(e["data"])) for e in found] == [{"n": 7, "name": "event 7"}]
    found, _ = store.call(find_events, Query(constraints=[("name", "eq", "event 3")]))
    assert [e["time_ns"] for e in found] == [3]
    store.close()

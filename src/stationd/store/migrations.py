"""Schema versions: create a new database at LATEST, upgrade an older one step by step.

To change the schema: edit ``schema.py``, bump LATEST, and add
``UPGRADES[LATEST] = function(conn, own_names)`` that takes a database at
LATEST - 1 to LATEST (plain ALTER TABLE / CREATE statements through
SQLAlchemy); ``own_names`` are the origins this node's own records carried
before node ids (config.Config.own_origin_names).
"""

from collections.abc import Iterable

from sqlalchemy import Index, Table, inspect, select, text
from sqlalchemy.engine import Connection

from stationd.store import identity, schema

LATEST = 13


def _index(table: Table, name: str) -> Index:
    return next(index for index in table.indexes if index.name == name)


def _v2_events(conn: Connection, own_names: tuple[str, ...]) -> None:
    """Version 2: events, idempotency keys, and users bound to a station."""
    conn.execute(text("ALTER TABLE users ADD COLUMN station VARCHAR(64)"))
    schema.events.create(conn)
    schema.idempotency_keys.create(conn)


def _v3_query(conn: Connection, own_names: tuple[str, ...]) -> None:
    """Version 3: query indexes on events; files, event files, station status."""
    conn.execute(text("DROP INDEX ix_events_time"))
    for name in ("ix_events_time_id", "ix_events_station_time_id", "ix_events_type_time_id"):
        _index(schema.events, name).create(conn)
    for table in (schema.files, schema.event_files, schema.station_status):
        table.create(conn)


def _v4_configs(conn: Connection, own_names: tuple[str, ...]) -> None:
    """Version 4: instrument configuration versions."""
    schema.config_versions.create(conn)


def _v5_exports(conn: Connection, own_names: tuple[str, ...]) -> None:
    """Version 5: events numbered in commit order (seq), and export cursors."""
    conn.execute(text("ALTER TABLE events ADD COLUMN seq BIGINT"))
    # The events so far, in the order they most likely arrived.
    if conn.dialect.name == "sqlite":
        conn.execute(text("UPDATE events SET seq = rowid"))
    else:
        conn.execute(text("UPDATE events SET seq = numbered.n FROM (SELECT id, row_number() OVER "
                          "(ORDER BY received_ns, time_ns, id) AS n FROM events) AS numbered "
                          "WHERE events.id = numbered.id"))
    _index(schema.events, "ix_events_seq").create(conn)
    schema.export_state.create(conn)


def _v6_export_targets(conn: Connection, own_names: tuple[str, ...]) -> None:
    """Version 6: export targets managed through the admin API."""
    schema.export_targets.create(conn)


def _v7_sensor_readings(conn: Connection, own_names: tuple[str, ...]) -> None:
    """Version 7: sensor readings."""
    schema.sensor_readings.create(conn)


def _v8_station_event_counts(conn: Connection, own_names: tuple[str, ...]) -> None:
    """Version 8: events stored per station, counted once here (one pass over an index)."""
    schema.station_event_counts.create(conn)
    conn.execute(text("INSERT INTO station_event_counts (station, events) "
                      "SELECT station, count(*) FROM events GROUP BY station"))


def _v9_node_id(conn: Connection, own_names: tuple[str, ...]) -> None:
    """Version 9: the node's id; its own events and files name it as their origin.

    Until now origins were node names, and two nodes left at the default name
    took each other's events for their own (an exporter then sent none).
    Records with another origin came from elsewhere and keep it.
    """
    node_id = identity.get_node_id(conn) or identity.new_node_id(conn)[1]
    if own_names:
        for table in (schema.events, schema.files):
            conn.execute(table.update().where(table.c.origin.in_(own_names)).values(origin=node_id))


def _v10_quarantined_counts(conn: Connection, own_names: tuple[str, ...]) -> None:
    """Version 10: quarantined events counted apart per station, so that they are not shown as its
    data (one pass over the events).  A store coming from before 8 has the column already (8 makes
    the table as it is now)."""
    if "quarantined" not in {c["name"] for c in inspect(conn).get_columns("station_event_counts")}:
        conn.execute(text("ALTER TABLE station_event_counts ADD COLUMN quarantined BIGINT NOT NULL DEFAULT 0"))
    conn.execute(text("UPDATE station_event_counts SET quarantined = (SELECT count(*) FROM events "
                      "WHERE events.station = station_event_counts.station AND events.quarantined)"))


def _v11_export_leases(conn: Connection, own_names: tuple[str, ...]) -> None:
    """Version 11: export leases, so that each target is exported by one process of those sharing the store."""
    schema.export_leases.create(conn)


def _v12_events_json(conn: Connection, own_names: tuple[str, ...]) -> None:
    """Version 12: events' data as json on PostgreSQL, the text as it came (rewrites the table once;
    SQLite keeps JSON as text anyway)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("ALTER TABLE events ALTER COLUMN data TYPE json USING data::text::json"))


def _v13_meteorpi(conn: Connection, own_names: tuple[str, ...]) -> None:
    """Version 13: user passwords (HTTP Basic auth), stations' key/value metadata, MeteorPi's ids and uploads."""
    conn.execute(text("ALTER TABLE users ADD COLUMN password_hash VARCHAR(255)"))
    for table in (schema.station_metadata, schema.meteorpi_ids, schema.meteorpi_uploads):
        table.create(conn)


UPGRADES = {2: _v2_events, 3: _v3_query, 4: _v4_configs, 5: _v5_exports, 6: _v6_export_targets,
            7: _v7_sensor_readings, 8: _v8_station_event_counts, 9: _v9_node_id, 10: _v10_quarantined_counts,
            11: _v11_export_leases, 12: _v12_events_json, 13: _v13_meteorpi}


class SchemaError(Exception):
    pass


def current_version(conn: Connection) -> int | None:
    if not inspect(conn).has_table(schema.meta.name):
        return None
    value = conn.execute(
        select(schema.meta.c.value).where(schema.meta.c.key == "schema_version")
    ).scalar()
    return int(value) if value is not None else None


def _set_version(conn: Connection, version: int) -> None:
    table = schema.meta
    updated = conn.execute(
        table.update().where(table.c.key == "schema_version").values(value=str(version))
    )
    if updated.rowcount == 0:
        conn.execute(table.insert().values(key="schema_version", value=str(version)))


def migrate(conn: Connection, own_names: Iterable[str] = ()) -> tuple[int | None, int]:
    """Bring the database to LATEST; returns (version before, version after).
    A new database gets a new node id."""
    if conn.dialect.name == "postgresql":
        # Node start and `stationd-admin init` may race: one migrates at a time.
        conn.execute(text("SELECT pg_advisory_xact_lock(74657)"))
    version = current_version(conn)
    if version is None:
        schema.metadata.create_all(conn)
        _set_version(conn, LATEST)
        identity.new_node_id(conn)
        return None, LATEST
    if version > LATEST:
        raise SchemaError(
            f"the database schema is version {version}, newer than this stationd "
            f"understands ({LATEST}); upgrade stationd"
        )
    for step in range(version + 1, LATEST + 1):
        UPGRADES[step](conn, tuple(own_names))
        _set_version(conn, step)
    return version, LATEST

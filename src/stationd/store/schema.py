"""The current database schema (SQLAlchemy Core), the one queries are written against.

A new database is created from this metadata directly; an older one is brought
here by the steps in ``migrations.UPGRADES``.
"""

from typing import Any, TypeAlias, Unpack

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Row

# A result row of any of these tables or of a select of some of their columns (typing only).
AnyRow: TypeAlias = Row[Unpack[tuple[Any, ...]]]

metadata = MetaData()

meta = Table(
    "stationd_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("email", String(255)),
    Column("first_name", String(255)),
    Column("last_name", String(255)),
    # SHA-256 hex of the API key: keys are 256 random bits, so a fast hash is
    # enough, and an indexed lookup by it needs no per-user salt.
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("key_rotated_at", DateTime(timezone=True), nullable=False),
    # For role "station": the one station whose events this user may ingest.
    Column("station", String(64)),
    # scrypt (as stations' upload passwords), for HTTP Basic auth where the MeteorPi routes ask
    # for it; None: no password, the user has only its key (schema 13).
    Column("password_hash", String(255)),
)

stations = Table(
    "stations",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("cluster", String(64)),
    Column("name", String(255)),
    Column("password_hash", String(255)),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Times are integer nanoseconds since the epoch (UTC): exact, indexable and the
# same on SQLite and PostgreSQL.
events = Table(
    "events",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("station", String(64), nullable=False),
    Column("type", String(64), nullable=False),
    Column("time_ns", BigInteger, nullable=False),
    Column("received_ns", BigInteger, nullable=False),
    # The canonical JSON text as ingested (json, not jsonb, on PostgreSQL: stored
    # and answered as it came, and a quarter less PostgreSQL CPU an event
    # stored; bench/pg_insert.py, docs/performance.rst).
    Column("data", JSON, nullable=False),
    # SHA-256 of the canonical JSON of data: with station, type and time the
    # natural key that makes a replayed batch land once.
    Column("digest", String(64), nullable=False),
    Column("origin", String(255), nullable=False),
    Column("quarantined", Boolean, nullable=False, default=False),
    Column("quarantine_reason", String(255)),
    # Numbered in commit order (store.events.insert_events): exporters read by it.
    Column("seq", BigInteger),
    # (station, time_ns) first: the same index answers "this station's events
    # at these times" (ingest's dedupe check, time-window queries per station).
    UniqueConstraint("station", "time_ns", "type", "digest", name="uq_events_natural"),
    # Queries page by (time_ns, id), newest first by default: these keep
    # "latest of a station", time windows and cursors on index range scans.
    Index("ix_events_time_id", "time_ns", "id"),
    Index("ix_events_station_time_id", "station", "time_ns", "id"),
    Index("ix_events_type_time_id", "type", "time_ns", "id"),
    Index("ix_events_seq", "seq"),
)

# Events stored per station, added to by every insert (store.events.insert_events):
# counting a station's index entries on each request took seconds once it held
# years of events.  Events are never deleted, so the counts only grow.
station_event_counts = Table(
    "station_event_counts",
    metadata,
    Column("station", String(64), primary_key=True),
    Column("events", BigInteger, nullable=False),  # all of them, quarantined included
    Column("quarantined", BigInteger, nullable=False, server_default="0"),  # (schema 10)
)

# Idempotency-Key of native ingest batches, with the answer given, so a
# retried batch gets the same answer and is not stored twice.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("station", String(64), nullable=False),
    Column("key", String(255), nullable=False),
    Column("response", Text, nullable=False),
    Column("created_ns", BigInteger, nullable=False),
    PrimaryKeyConstraint("station", "key"),
)

# File records; the contents live once per sha256 in the content store
# (stationd.filestore) under data_dir.
files = Table(
    "files",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("station", String(64), nullable=False),
    Column("time_ns", BigInteger, nullable=False),
    Column("name", String(255), nullable=False),
    Column("mime_type", String(127), nullable=False),
    Column("semantic_type", String(127)),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("meta", JSON().with_variant(JSONB(), "postgresql"), nullable=False),
    Column("created_ns", BigInteger, nullable=False),
    Column("origin", String(255), nullable=False),
    Index("ix_files_time_id", "time_ns", "id"),
    Index("ix_files_station_time_id", "station", "time_ns", "id"),
    Index("ix_files_semantic_time_id", "semantic_type", "time_ns", "id"),
    Index("ix_files_sha256", "sha256"),
)

event_files = Table(
    "event_files",
    metadata,
    Column("event_id", String(36), nullable=False),
    Column("file_id", String(36), nullable=False),
    PrimaryKeyConstraint("event_id", "file_id"),
    Index("ix_event_files_file", "file_id"),
)

# A station's status history: each row holds from valid_from until the next
# row's valid_from (so adding a status closes the previous one and nothing is
# ever deleted or edited).
station_status = Table(
    "station_status",
    metadata,
    Column("station", String(64), nullable=False),
    Column("valid_from_ns", BigInteger, nullable=False),
    Column("instrument", String(255)),
    Column("latitude", Float),
    Column("longitude", Float),
    Column("altitude", Float),
    Column("orientation", JSON().with_variant(JSONB(), "postgresql")),
    Column("created_ns", BigInteger, nullable=False),
    PrimaryKeyConstraint("station", "valid_from_ns"),
)

# Versions of named instrument configurations ("fplane", ...): each holds
# from valid_from until the next version's valid_from; never edited.
config_versions = Table(
    "config_versions",
    metadata,
    Column("name", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("valid_from_ns", BigInteger, nullable=False),
    Column("content", JSON().with_variant(JSONB(), "postgresql"), nullable=False),
    Column("author", String(64), nullable=False),
    Column("created_ns", BigInteger, nullable=False),
    PrimaryKeyConstraint("name", "version"),
    Index("ix_config_versions_valid_from", "name", "valid_from_ns"),
)

# Where each export target has got to: the seq of the last event it has
# handed upstream (acknowledged), and its state for /api/v1/status.
export_state = Table(
    "export_state",
    metadata,
    Column("target", String(64), primary_key=True),
    Column("cursor", BigInteger, nullable=False),
    Column("updated_ns", BigInteger, nullable=False),
)

# Who exports a target now, when several processes share the store (workers,
# hosts on one PostgreSQL): one holder a target, until ``expires_ns`` unless
# renewed (stationd.store.exports.claim_lease).
export_leases = Table(
    "export_leases",
    metadata,
    Column("target", String(64), primary_key=True),
    Column("holder", String(255), nullable=False),
    Column("expires_ns", BigInteger, nullable=False),
)

# Export targets added through the admin API (config-file targets are not
# here): their settings in config-file syntax, so one parser checks both.
export_targets = Table(
    "export_targets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("settings", JSON().with_variant(JSONB(), "postgresql"), nullable=False),
    Column("paused", Boolean, nullable=False),
    Column("updated_ns", BigInteger, nullable=False),
)

# Sensor readings: raw (step 0) for a sensor's horizon, then one row a field
# and bucket of ``step`` seconds (the mean, with min and max), until its
# retention (stationd.sensors.history).
sensor_readings = Table(
    "sensor_readings",
    metadata,
    Column("sensor", String(64), nullable=False),
    Column("field", String(64), nullable=False),
    Column("time_ns", BigInteger, nullable=False),
    Column("step", Integer, nullable=False),
    Column("value", Float, nullable=False),
    Column("min", Float),
    Column("max", Float),
    Index("ix_sensor_readings", "sensor", "time_ns"),
)

# Key/value metadata of a station over time (MeteorPi's observatory metadata): each value holds
# from ``time_ns`` until the next value of the same key.  Ids are MeteorPi's metadata_id for
# imported items (so a re-sent item lands once), random for the rest (schema 13).
station_metadata = Table(
    "station_metadata",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("station", String(64), nullable=False),
    Column("key", String(255), nullable=False),
    Column("time_ns", BigInteger, nullable=False),
    Column("value", JSON().with_variant(JSONB(), "postgresql"), nullable=False),  # a number or a string
    Column("created_ns", BigInteger, nullable=False),
    Column("user_created", String(64)),
    Column("origin", String(255), nullable=False),
    Index("ix_station_metadata_key_time", "station", "key", "time_ns"),
    Index("ix_station_metadata_time", "station", "time_ns"),
)

# MeteorPi's public ids of imported observations and files (events and files keep UUIDs, which
# their own import checks), with the MD5 MeteorPi announced for a file (schema 13).
meteorpi_ids = Table(
    "meteorpi_ids",
    metadata,
    Column("local_id", String(36), primary_key=True),
    Column("kind", String(16), nullable=False),  # "observation" or "file"
    Column("public_id", String(64), nullable=False),
    Column("md5", String(32)),
    UniqueConstraint("kind", "public_id", name="uq_meteorpi_ids_public"),
)

# File contents a MeteorPi exporter has uploaded (POST /importv2/data/{id}/{md5}), checked against
# their MD5, before it sends the file's record again (schema 13).
meteorpi_uploads = Table(
    "meteorpi_uploads",
    metadata,
    Column("public_id", String(64), nullable=False),
    Column("md5", String(32), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("received_ns", BigInteger, nullable=False),
    Column("uploaded_by", String(64), nullable=False),
    PrimaryKeyConstraint("public_id", "md5"),
)

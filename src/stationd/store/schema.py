"""The current database schema (SQLAlchemy Core), the one queries are written against.

A new database is created from this metadata directly; an older one is brought
here by the steps in ``migrations.UPGRADES``.
"""

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Text

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

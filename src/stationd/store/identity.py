"""The node's identity: a random UUID made with its store, by which other nodes know it.

It lives in the database (``stationd_meta``), so it travels with a backup of
the store and nowhere else.  A store copied to another machine (an imaged SD
card) carries the same id: ``stationd-admin new-node-id`` gives the copy its
own, and an exporter whose upstream answers with this node's id refuses to
send (stationd.exporter).
"""

import uuid

from sqlalchemy import select
from sqlalchemy.engine import Connection

from stationd.store.schema import meta

KEY = "node_id"


def get_node_id(conn: Connection) -> str | None:
    return conn.execute(select(meta.c.value).where(meta.c.key == KEY)).scalar()


def new_node_id(conn: Connection) -> tuple[str | None, str]:
    """Give the store a fresh random id; (the id before, if any, the new one)."""
    before, after = get_node_id(conn), str(uuid.uuid4())
    if before is None:
        conn.execute(meta.insert().values(key=KEY, value=after))
    else:
        conn.execute(meta.update().where(meta.c.key == KEY).values(value=after))
    return before, after

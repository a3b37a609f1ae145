"""Shared fixtures: a store on each backend, a config on a temp data_dir.

PostgreSQL tests run where STATIOND_TEST_DATABASE_URL is set (CI sets it);
each test gets its own schema there, dropped afterwards.
"""

import configparser
import contextlib
import os
import uuid

import pytest
from sqlalchemy import create_engine, text

from stationd import config as configuration
from stationd.store import Store

PG_URL = os.environ.get("STATIOND_TEST_DATABASE_URL")


def write_config(tmp_path, body="", name="stationd.ini", http="", https=""):
    """A config file on a private data_dir, with no listeners unless asked for."""
    parser = configparser.ConfigParser(interpolation=None, default_section="\0")
    parser.read_dict({"node": {"data_dir": str(tmp_path / "var")}, "web": {"http": http, "https": https}})
    try:
        parser.read_string(body)
    except configparser.Error:
        (tmp_path / name).write_text(body)  # a deliberately malformed file
        return tmp_path / name
    with open(tmp_path / name, "w") as f:
        parser.write(f)
    return tmp_path / name


@pytest.fixture
def make_config(tmp_path):
    def make(body=""):
        return configuration.load(str(write_config(tmp_path, body)))

    return make


@contextlib.contextmanager
def pg_schema():
    """(URL, schema name, engine) of a PostgreSQL schema of its own, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL, pool_pre_ping=True)  # (pinged: a test may restart the server)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}", schema, admin
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/test.sqlite"
        return
    if not PG_URL:
        pytest.skip("PostgreSQL tests need STATIOND_TEST_DATABASE_URL (set by .ci/run)")
    with pg_schema() as (url, _, _):
        yield url


@pytest.fixture
def store(database_url):
    store = Store(database_url)
    store.migrate()
    yield store
    store.close()


async def settle(stub, d):
    """Pump StubTreq until ``d`` has a result (handlers wait on the store's thread)."""
    from twisted.internet import reactor, task

    results = []
    d.addBoth(lambda result: results.append(result) or result)
    while not results:
        stub.flush()
        await task.deferLater(reactor, 0.002, lambda: None)
    return await d


async def drained(node):
    """Once the writer has moved every acknowledged batch from the spool into the store."""
    from twisted.internet import reactor, task

    for _ in range(2000):
        if node.writer.idle():
            return
        await task.deferLater(reactor, 0.005, lambda: None)
    raise AssertionError("writer did not drain")


async def call(stub, method, url, **kwargs):
    response = await settle(stub, stub.request(method, url, **kwargs))
    return response, await settle(stub, response.content())




def make_node(tmp_path, database_url, body=""):
    """A node as twistd builds it (no listeners), on ``database_url``; not started."""
    from twisted.internet import reactor

    from stationd.service import wire

    path = write_config(tmp_path, f"[database]\nurl = {database_url}\n{body}")
    return wire(configuration.load(str(path)), reactor)


def serve(node):
    """Start ``node`` and put all its routes on ``node.stub`` (a StubTreq)."""
    from treq.testing import StubTreq

    from stationd.web import make_resource

    node.service.startService()
    node.stub = StubTreq(make_resource(node.routes, "/", node.config["web"]["cors_origins"]))
    return node


def add_events(node, station, specs, origin="test-node"):
    """Store events directly, as the writer does.  specs: [(type, time_ns, data)], with a 4th
    item for a quarantine reason; the new events' ids."""
    import uuid

    from stationd.store.events import digest, store_batches

    events = [{"id": str(uuid.uuid4()), "type": spec[0], "time_ns": spec[1], "data": spec[2],
               "digest": digest(spec[2]), "quarantine": spec[3] if len(spec) > 3 else None}
              for spec in specs]
    node.store.call(store_batches, [{"station": station, "received_ns": 1714565800 * 10**9,
                                     "events": events}], origin)
    return [e["id"] for e in events]

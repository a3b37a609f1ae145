"""Users and stations cached in memory, kept true by the stamp the store replaces after a change
(SQLite), or by the notices every change sends (PostgreSQL)."""

import time

import pytest
import pytest_twisted

from stationd.store import Store, stations, users
from stationd.store.cache import Cache


@pytest_twisted.ensureDeferred
async def test_a_cached_key_is_refused_once_another_process_removes_or_rotates_it(store, database_url):
    store.startService()
    try:
        _, key = store.call(users.add_user, "ada", "station", station="501")
        store.call(stations.add_station, "501", None)
        cache = Cache(store)
        if store.dialect == "postgresql":
            assert store.stamp.listening.wait(10), "not listening for PostgreSQL's notices"
            time.sleep(0.2)  # (the notices of the two changes above, if they came after LISTEN)
        reads = []
        real = store.read
        store.read = lambda *a, **k: reads.append(a[0].__name__) or real(*a, **k)
        assert (await cache.user(key))["name"] == "ada" and (await cache.station("501"))["id"] == "501"
        assert (await cache.user(key))["name"] == "ada" and (await cache.station("501"))["id"] == "501"
        assert reads == ["authenticate", "get_station"]  # then from memory

        admin = Store(database_url)  # stationd-admin: another engine, as another process has
        new_key = admin.call(users.rotate_key, "ada")
        await until(lambda: cache.user(key), None)  # (the stamp is looked at once a millisecond)
        assert (await cache.user(new_key))["name"] == "ada"
        admin.call(users.remove_user, "ada")
        await until(lambda: cache.user(new_key), None)
        assert await cache.user("no-such-key") is None and await cache.station("999") is None
        admin.close()
    finally:
        store.stopService()


async def until(lookup, expected, seconds=5.0):
    """Wait for ``lookup()`` to answer ``expected``: at once on SQLite, once the notice has come on PostgreSQL."""
    deadline = time.monotonic() + seconds
    while (found := await lookup()) != expected:
        assert time.monotonic() < deadline, f"still {found!r}"
        time.sleep(0.002)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest_twisted.ensureDeferred
async def test_while_postgresql_notices_cannot_be_heard_every_lookup_reads(store):
    store.startService()
    try:
        assert store.stamp.listening.wait(10)
        _, key = store.call(users.add_user, "ada", "station", station="501")
        cache = Cache(store)
        reads = []
        real = store.read
        store.read = lambda *a, **k: reads.append(a[0].__name__) or real(*a, **k)
        store.stamp.listening.clear()  # (as while its connection is down)
        for _ in range(3):
            assert (await cache.user(key))["name"] == "ada"
            time.sleep(0.002)
        assert reads == ["authenticate"] * 3
    finally:
        store.stopService()


@pytest_twisted.ensureDeferred
async def test_without_a_stamp_the_last_answer_stands_in_while_the_database_is_away(store, monkeypatch):
    """As on PostgreSQL (no stamp): a restarting database does not stop stations that were just seen."""
    from sqlalchemy.exc import OperationalError
    from twisted.internet import defer

    store.startService()
    try:
        _, key = store.call(users.add_user, "ada", "station", station="501")
        store.call(stations.add_station, "501", None)
        cache = Cache(store)
        cache.stamp = None
        assert (await cache.user(key))["name"] == "ada" and (await cache.station("501"))["id"] == "501"
        real = store.read
        away = OperationalError("SELECT", {}, Exception("the database system is shutting down"))
        monkeypatch.setattr(store, "read", lambda *a, **k: defer.fail(away))
        assert (await cache.user(key))["name"] == "ada" and (await cache.station("501"))["id"] == "501"
        with pytest.raises(OperationalError):  # never seen: nothing to stand in
            await cache.station("502")
        monkeypatch.setattr(store, "read", real)
        store.call(users.remove_user, "ada")
        assert await cache.user(key) is None  # read again once the database is back
        monkeypatch.setattr(store, "read", lambda *a, **k: defer.fail(away))
        with pytest.raises(OperationalError):  # and a removed key is not remembered
            await cache.user(key)
    finally:
        store.stopService()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_notices_connection_comes_back_after_the_server_drops_it(store, monkeypatch):
    from stationd.store.changes import Notices

    monkeypatch.setattr(Notices, "RETRY_SECONDS", 0.1)
    store.startService()
    try:
        assert store.stamp.listening.wait(10)
        before = store.stamp.version()
        store.call(lambda conn: conn.exec_driver_sql(  # (as a server restart does to it)
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = 'LISTEN stationd_changed'"))
        deadline = time.monotonic() + 10
        while store.stamp.version() in (before,) or not store.stamp.listening.is_set():
            assert time.monotonic() < deadline, "not listening again"
            time.sleep(0.05)
        assert store.stamp.version() == store.stamp.version()  # listening: one version until a change
    finally:
        store.stopService()

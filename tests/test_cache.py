"""Users and stations cached in memory, kept true by the stamp the store replaces after a change."""

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
        reads = []
        real = store.read
        store.read = lambda *a, **k: reads.append(a[0].__name__) or real(*a, **k)
        assert (await cache.user(key))["name"] == "ada" and (await cache.station("501"))["id"] == "501"
        assert (await cache.user(key))["name"] == "ada" and (await cache.station("501"))["id"] == "501"
        cached = store.stamp is not None  # SQLite: a file beside the database; PostgreSQL: none, always read
        assert reads == (["authenticate", "get_station"] if cached else ["authenticate", "get_station"] * 2)

        admin = Store(database_url)  # stationd-admin: another engine, as another process has
        new_key = admin.call(users.rotate_key, "ada")
        time.sleep(0.002)  # the stamp is looked at once a millisecond
        assert await cache.user(key) is None and (await cache.user(new_key))["name"] == "ada"
        admin.call(users.remove_user, "ada")
        time.sleep(0.002)
        assert await cache.user(new_key) is None
        assert await cache.user("no-such-key") is None and await cache.station("999") is None
        admin.close()
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

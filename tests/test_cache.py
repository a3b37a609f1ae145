"""Users and stations cached in memory, kept true by the stamp the store replaces after a change."""

import time

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

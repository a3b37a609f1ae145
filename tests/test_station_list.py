"""[ingest] station_list: loaded at start, re-read when the file changes."""

import os

import pytest_twisted
from twisted.internet import task

from stationd.ingest import StationList
from stationd.store import stations


@pytest_twisted.ensureDeferred
async def test_reloads_only_when_the_file_changes(store, tmp_path):
    store.startService()
    path = tmp_path / "stations.csv"
    path.write_text("501,ams,one\n")
    clock = task.Clock()
    service = StationList(str(path), store, interval=5, clock=clock)
    loads = []
    real_load = service.load

    async def counting_load():
        loads.append(1)
        return await real_load()

    service.load = counting_load
    try:
        await service.check()
        assert stations.verify_password(store.call(stations.get_station, "501")["password_hash"], "one")
        await service.check()
        assert len(loads) == 1  # unchanged file: not re-read
        path.write_text("501,ams,two\n502,utr,x\n")
        os.utime(path, ns=(1, 1))
        await service.check()
        assert len(loads) == 2
        assert stations.verify_password(store.call(stations.get_station, "501")["password_hash"], "two")
        path.write_text("broken line\n")
        os.utime(path, ns=(2, 2))
        await service.check()  # logged, nothing changed, the loop lives on
        assert store.call(stations.get_station, "502") is not None
    finally:
        store.stopService()

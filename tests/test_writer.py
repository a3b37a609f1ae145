"""The spool and the writer: durability before acknowledgement, group commit,
bounded size, recovery, and exactly-once storage across replays."""

import json
import os

import pytest
import pytest_twisted
from twisted.logger import formatEvent
from sqlalchemy import func, select
from sqlalchemy.exc import DataError, OperationalError
from twisted.internet import defer, reactor, task

from stationd.metrics import Metrics
from stationd.store.events import digest
from stationd.store.schema import events
from stationd.writer import Spool, SpoolError, SpoolFull, Writer, decode_segment, encode_segment


def record(station="501", n=2, start=1_700_000_000 * 10**9):
    return {
        "protocol": "native", "station": station, "received_ns": start, "idempotency_key": None,
        "events": [
            {"id": f"{station}-{start + i}", "type": "CIC", "time_ns": start + i,
             "data": {"i": i}, "digest": digest({"i": i}), "quarantine": None}
            for i in range(n)
        ],
    }


def segments(directory):
    return sorted(p for p in os.listdir(directory) if p.endswith(".seg"))


@pytest.fixture
def spool(tmp_path):
    spool = Spool(str(tmp_path / "spool"), 10_000_000, reactor, Metrics())
    spool.start()
    yield spool
    spool.stop()


def test_segment_frames_round_trip_and_detect_damage():
    records = [record(n=1), record(n=3)]
    data = encode_segment(records)
    assert decode_segment(data) == records
    with pytest.raises(ValueError):
        decode_segment(data[:-1])
    flipped = bytearray(data)
    flipped[20] ^= 0xFF
    with pytest.raises(ValueError):
        decode_segment(bytes(flipped))


@pytest_twisted.ensureDeferred
async def test_acknowledged_only_when_fsynced(tmp_path):
    synced = []
    spool = Spool(str(tmp_path / "spool"), 10_000_000, reactor, Metrics(),
                  fsync=lambda fd: synced.append(fd))
    spool.start()
    try:
        path, size, batches = await spool.append(record())
        assert (size, batches) == (len(encode_segment([record()])), 1)
        assert len(synced) == 2  # the segment file, then its directory
        assert os.path.exists(path) and decode_segment(open(path, "rb").read()) == [record()]
    finally:
        spool.stop()


@pytest_twisted.ensureDeferred
async def test_a_failing_fsync_refuses_and_leaves_nothing(tmp_path):
    def broken(fd):
        raise OSError(5, "Input/output error")

    spool = Spool(str(tmp_path / "spool"), 10_000_000, reactor, Metrics(), fsync=broken)
    spool.start()
    try:
        with pytest.raises(SpoolError, match="Input/output error"):
            await spool.append(record())
        assert os.listdir(tmp_path / "spool") == []
        assert (spool.bytes, spool.batches) == (0, 0)
        spool.fsync = os.fsync  # the disk recovers: the spool keeps serving
        assert await spool.append(record())
    finally:
        spool.stop()


@pytest_twisted.ensureDeferred
async def test_a_failing_spool_logs_once_as_it_fails_and_once_as_it_recovers(tmp_path):
    from twisted.logger import globalLogPublisher

    def full(fd):
        raise OSError(28, "No space left on device")

    logged = []
    globalLogPublisher.addObserver(logged.append)
    spool = Spool(str(tmp_path / "spool"), 10_000_000, reactor, Metrics(), fsync=full)
    spool.start()
    try:
        for _ in range(5):  # (stations retrying while the disk is full)
            with pytest.raises(SpoolError):
                await spool.append(record())
        spool.fsync = os.fsync
        assert await spool.append(record())
    finally:
        spool.stop()
        globalLogPublisher.removeObserver(logged.append)
    lines = [formatEvent(e) for e in logged if e.get("log_namespace") == "stationd.writer"]
    assert lines == ["Spool write failed; uploads are refused until it works again",
                     "Spool writes work again; 5 upload(s) were refused meanwhile"]
    assert sum("log_failure" in e for e in logged if e.get("log_namespace") == "stationd.writer") == 1


@pytest_twisted.ensureDeferred
async def test_concurrent_batches_share_one_fsync(tmp_path):
    synced = []
    spool = Spool(str(tmp_path / "spool"), 10_000_000, reactor, Metrics(),
                  fsync=lambda fd: (synced.append(fd), os.fsync(fd)))
    spool.start()
    try:
        segments = await defer.gatherResults([spool.append(record(n=1, start=i)) for i in range(50)])
        # the first batch is written alone; the 49 that arrived meanwhile share one segment
        assert len(set(segments)) == 2 and sorted(count for _, _, count in set(segments)) == [1, 49]
        assert len(synced) == 4
        assert spool.batches == 50
    finally:
        spool.stop()


@pytest_twisted.ensureDeferred
async def test_a_full_spool_refuses_whole_batches(tmp_path):
    spool = Spool(str(tmp_path / "spool"), 600, reactor, Metrics())
    spool.start()
    try:
        await spool.append(record(n=1))
        with pytest.raises(SpoolFull, match=r"^a batch of \d+ bytes does not fit: the spool holds \d+ of "
                                            r"max_spool_bytes 600$"):
            await spool.append(record(n=5))
        assert spool.batches == 1
    finally:
        spool.stop()


@pytest_twisted.async_yield_fixture()
async def writer(store, spool):
    """A started writer whose retry delays run on a task.Clock (writer.clock)."""
    store.startService()
    writer = Writer(spool, store, "node-a", spool.metrics, reactor, clock=task.Clock())
    yield writer
    await writer.stopService()
    store.stopService()


async def until(condition, timeout=10):
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await task.deferLater(reactor, 0.01, lambda: None)
    raise AssertionError("condition not reached")


def stored(store):
    return store.call(lambda conn: conn.execute(select(func.count()).select_from(events)).scalar())


@pytest_twisted.ensureDeferred
async def test_writer_moves_segments_into_the_store_and_removes_them(store, spool):
    store.startService()
    writer = Writer(spool, store, "node-a", spool.metrics, reactor)
    writer.startService()
    try:
        await writer.spool_record(record(n=3))
        await until(writer.idle)
        await until(lambda: not segments(spool.directory))
        assert stored(store) == 3
        assert (spool.bytes, spool.batches) == (0, 0)
    finally:
        await writer.stopService()
        store.stopService()


@pytest_twisted.ensureDeferred
async def test_restart_drains_leftovers_exactly_once(store, tmp_path):
    """A crash after the store commit but before the segment is removed: the
    segment is stored again on restart, and lands once."""
    directory = tmp_path / "spool"
    directory.mkdir()
    (directory / "00000000000000000001-1-00000001.seg").write_bytes(encode_segment([record(n=4)]))
    (directory / ".tmp-00000000000000000002-1-00000002.seg").write_bytes(b"never acknowledged")
    store.startService()
    try:
        for _ in range(2):  # the second run replays the same segment
            spool = Spool(str(directory), 10_000_000, reactor, Metrics())
            writer = Writer(spool, store, "node-a", spool.metrics, reactor)
            if _ == 1:
                (directory / "00000000000000000003-1-00000001.seg").write_bytes(
                    encode_segment([record(n=4)]))
            writer.startService()
            await until(writer.idle)
            await writer.stopService()
            assert os.listdir(directory) == []
        assert stored(store) == 4
    finally:
        store.stopService()


@pytest_twisted.ensureDeferred
async def test_a_damaged_segment_is_set_aside_not_lost(store, tmp_path):
    directory = tmp_path / "spool"
    directory.mkdir()
    (directory / "00000000000000000001-1-00000001.seg").write_bytes(encode_segment([record()])[:-3])
    (directory / "00000000000000000002-1-00000001.seg").write_bytes(encode_segment([record(n=1, start=5)]))
    store.startService()
    spool = Spool(str(directory), 10_000_000, reactor, Metrics())
    writer = Writer(spool, store, "node-a", spool.metrics, reactor)
    writer.startService()
    try:
        await until(writer.idle)
        assert os.listdir(directory / "damaged") == ["00000000000000000001-1-00000001.seg"]
        assert stored(store) == 1
    finally:
        await writer.stopService()
        store.stopService()


@pytest_twisted.ensureDeferred
async def test_store_outage_keeps_the_segment_and_retries(store, spool, writer, monkeypatch):
    failures = []
    real_run = store.run

    def flaky_run(operation, *args):
        if len(failures) < 2:
            failures.append(1)
            return defer.fail(OperationalError("INSERT", {}, Exception("connection refused")))
        return real_run(operation, *args)

    monkeypatch.setattr(store, "run", flaky_run)
    writer.startService()
    await writer.spool_record(record(n=2))
    await until(lambda: len(failures) == 1)
    assert segments(spool.directory)  # kept while the store is down
    writer.clock.advance(1)
    await until(lambda: len(failures) == 2)
    writer.clock.advance(2)
    await until(writer.idle)
    assert stored(store) == 2 and not segments(spool.directory)


@pytest_twisted.ensureDeferred
async def test_a_segment_the_store_refuses_is_set_aside(store, spool, writer, monkeypatch):
    """A poison segment (the database rejects its data, not an outage) must not
    hold up the segments behind it."""
    real_run = store.run
    attempts = []

    def run(operation, records, origin):
        if records[0]["station"] == "poison":
            attempts.append(1)
            return defer.fail(DataError("INSERT", {}, Exception("invalid input syntax for type json")))
        return real_run(operation, records, origin)

    monkeypatch.setattr(store, "run", run)
    writer.startService()
    await writer.spool_record(record(station="poison"))
    for n in (1, 2):
        await until(lambda n=n: len(attempts) == n)
        writer.clock.advance(60)
    await until(lambda: len(attempts) >= 3)
    await writer.spool_record(record(station="good"))
    await until(writer.idle)
    assert len(os.listdir(os.path.join(spool.directory, "rejected"))) == 1
    assert stored(store) == 2


def test_store_batches_counts_inserted_and_duplicates(store):
    from stationd.store.events import store_batches

    assert store.call(store_batches, [record(n=5)], "node-a") == (5, 0)
    assert store.call(store_batches, [record(n=5), record(n=7)], "node-a") == (2, 10)
    row = store.call(lambda conn: conn.execute(
        select(events).where(events.c.time_ns == 1_700_000_000 * 10**9 + 6)).one())
    assert row.data == {"i": 6} and row.origin == "node-a" and row.quarantined is False


def test_ingest_spools_data_as_json_text_and_the_store_takes_both_forms(store):
    """What ingest spools (data_json) and what spools of earlier versions hold (data)."""
    from stationd.ingest import Ingest
    from stationd.jsoncodec import canonical
    from stationd.store.events import store_batches

    ingest = Ingest(None, None, task.Clock(), min_event_ns=0, max_future_skew=3600)
    data = {"b": [1, 2.5, "x"], "a": {"nested": None}, "big": 2**70}
    data_json, data_digest = canonical(data)
    new = ingest.record("native", "501", [{"type": "CIC", "time_ns": 5, "data_json": data_json,
                                           "digest": data_digest}])
    [event] = new["events"]
    assert "data" not in event and json.loads(event["data_json"]) == data
    assert event["digest"] == digest(data)
    assert event["data_json"] == '{"a":{"nested":null},"b":[1,2.5,"x"],"big":%d}' % 2**70
    old = record(n=1, start=7)
    old["events"][0]["data"] = data
    assert store.call(store_batches, [new, old], "node-a") == (2, 0)
    rows = store.call(lambda conn: conn.execute(select(events.c.time_ns, events.c.data)).all())
    assert sorted(rows) == [(5, data), (7, data)]


@pytest_twisted.ensureDeferred
async def test_stopping_while_waiting_to_retry_does_not_hang(store, spool, writer, monkeypatch):
    calls = []
    monkeypatch.setattr(store, "run", lambda *a: calls.append(1) or defer.fail(
        OperationalError("INSERT", {}, Exception("database is down"))))
    writer.startService()
    await writer.spool_record(record())
    await until(lambda: calls)
    stopped = writer.stopService()  # the drain is waiting out its retry delay
    await until(lambda: stopped.called, timeout=2)
    assert segments(spool.directory)  # kept for the next start


@pytest_twisted.ensureDeferred
async def test_only_the_refused_batch_of_a_segment_is_set_aside(store, spool, writer, monkeypatch):
    """Batches of other stations group-committed beside a poison batch are stored."""
    real_run = store.run

    def run(operation, records, origin):
        if any(r["station"] == "poison" for r in records):
            return defer.fail(DataError("INSERT", {}, Exception("value out of range")))
        return real_run(operation, records, origin)

    monkeypatch.setattr(store, "run", run)
    writer.startService()
    # three batches in one segment: written while the first one was in flight
    first = defer.ensureDeferred(writer.spool_record(record(station="501", n=1)))
    rest = [defer.ensureDeferred(writer.spool_record(record(station=station, n=n)))
            for station, n in (("poison", 2), ("502", 3))]
    await defer.gatherResults([first] + rest)
    for _ in range(6):
        writer.clock.advance(60)
        await task.deferLater(reactor, 0.05, lambda: None)
    await until(writer.idle)
    assert stored(store) == 4
    [aside] = os.listdir(os.path.join(spool.directory, "rejected"))
    kept = decode_segment(open(os.path.join(spool.directory, "rejected", aside), "rb").read())
    assert [r["station"] for r in kept] == ["poison"]
    assert (spool.bytes, spool.batches) == (0, 0)


@pytest_twisted.ensureDeferred
async def test_the_limit_counts_the_group_being_written(tmp_path):
    size = len(encode_segment([record(n=1)]))
    spool = Spool(str(tmp_path / "spool"), 2 * size, reactor, Metrics())
    spool.start()
    try:
        first = spool.append(record(n=1))  # in flight
        second = spool.append(record(n=1, start=7))  # pending
        with pytest.raises(SpoolFull):
            await spool.append(record(n=1, start=9))
        await defer.gatherResults([first, second])
        assert spool.batches == 2
    finally:
        spool.stop()

"""Exporters on a task.Clock: schedule, backoff, windows, cursors, file negotiation."""

import dataclasses
import datetime
import hashlib
import io
import json
import uuid

import pytest
import pytest_twisted
from sqlalchemy import select
from twisted.internet import reactor, task

from stationd import config as configuration
from stationd.client import Client, ClientError
from stationd.exporter import LEASE_SECONDS, Exporter, LocalNode, seconds_until_open
from stationd.retry import backoff_delay
from stationd.store import exports, files, stations, users
from stationd.store.events import digest, store_batches
from stationd.store.schema import events, export_leases

from conftest import call, make_node, serve

T0 = 1714564800 * 10**9
CENTRAL = "c0ffee00-0000-4000-8000-000000000001"  # the fake upstream's node id


def target(**overrides):
    values = dict(configuration.EXPORT_DEFAULTS, target_url="https://central:8443", **overrides)
    parsed = {key: configuration.EXPORT[key](value) for key, value in values.items()}
    return dict(parsed, name="central")


def test_backoff_doubles_with_full_jitter_up_to_the_cap():
    top = [backoff_delay(n, 60, rng=lambda: 0.999999) for n in range(1, 10)]
    assert [round(d) for d in top] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert [backoff_delay(n, 60, rng=lambda: 0.0) for n in range(1, 5)] == [0.0] * 4
    assert backoff_delay(500, 3600, rng=lambda: 0.5) == 1800


@pytest.mark.parametrize("hhmm, wait", [("21:00", 3600), ("22:00", 0), ("23:59", 0), ("00:00", 0), ("05:59", 0),
                                        ("06:00", 16 * 3600), ("12:30", 9.5 * 3600)])
def test_window_wraps_past_midnight(hhmm, wait):
    hour, minute = map(int, hhmm.split(":"))
    when = datetime.datetime(2024, 5, 1, hour, minute)
    assert seconds_until_open((22 * 60, 6 * 60), when) == wait
    assert seconds_until_open(None, when) == 0


class FakeUpstream:
    """Records batches; answers like an importer, or fails as told."""

    def __init__(self, clock):
        self.clock = clock
        self.batches, self.uploads, self.fail, self.need, self.during = [], [], None, [], None

    async def import_events(self, origin, events):
        if self.during:
            self.during()
        if self.fail:
            raise self.fail
        self.batches.append(list(events))
        return {"accepted": len(events), "duplicates": 0, "need": self.need, "node": "central",
                "node_id": self.node_id}

    node_id = CENTRAL

    async def status(self):
        if self.fail:
            raise self.fail
        return {"node": "central", "node_id": self.node_id}

    async def put_file(self, file_id, path):
        with open(path, "rb") as f:
            self.uploads.append((file_id, f.read()))

    async def close(self):
        pass


@pytest_twisted.async_yield_fixture()
async def node(tmp_path, database_url):
    node = make_node(tmp_path, database_url, "[node]\nname = station-7\n")
    node.store.call(stations.add_station, "501", None)
    yield serve(node)
    await node.service.stopService()


def add_events(node, n, origin=None, start=0, received_ns=T0):
    events = [{"id": str(uuid.uuid4()), "type": "CIC", "time_ns": T0 + start + i, "data": {"n": start + i},
               "digest": digest({"n": start + i}), "quarantine": None} for i in range(n)]
    node.store.call(store_batches, [{"station": "501", "received_ns": received_ns, "events": events}],
                    origin or node.node_id)
    return [e["id"] for e in events]


def local(node):
    # One holder for every exporter a test makes: they are of one process, as a restart's are.
    return LocalNode(node.store, node.files, node.metrics, node.node_id, node.config["node"]["timezone"],
                     holder="test-process")


def exporter(node, clock, upstream=None, **settings):
    upstream = upstream or FakeUpstream(clock)
    return Exporter(target(**settings), local(node), clock, client=upstream, rng=lambda: 0.5), upstream


def sent_ids(upstream):
    return [e["id"] for batch in upstream.batches for e in batch]


@pytest_twisted.ensureDeferred
async def test_rounds_catch_up_then_wait_and_a_restart_resumes(node):
    clock = task.Clock()
    clock.advance(T0 / 1e9 + 3600)
    ids = add_events(node, 5)
    job, upstream = exporter(node, clock, batch_size="2", interval="30s")
    assert [await job.run_round() for _ in range(3)] == [0, 0, 30.0]  # full batches follow at once
    assert sent_ids(upstream) == ids
    assert await job.run_round() == 30.0 and len(upstream.batches) == 3  # nothing new: nothing sent
    assert node.store.call(exports.get_cursor, "central") == job.cursor
    assert job.status()["state"] == "ok" and job.status()["lag_seconds"] == 0.0

    later = add_events(node, 2, start=100)
    again, upstream = exporter(node, clock)  # a restart: the cursor is in the store
    await again.run_round()
    assert sent_ids(upstream) == later


@pytest_twisted.ensureDeferred
async def test_one_process_at_a_time_exports_a_target_and_another_takes_over(node):
    """Processes sharing a store (workers, hosts on one PostgreSQL) take turns by the target's lease."""
    clock = task.Clock()
    clock.advance(T0 / 1e9 + 3600)
    upstream = FakeUpstream(clock)

    def process(holder):
        return Exporter(target(), dataclasses.replace(local(node), holder=holder), clock, client=upstream,
                        rng=lambda: 0.5)

    one, two = process("host-a:100"), process("host-b:200")
    sent = add_events(node, 3)

    def expires():
        return node.store.call(lambda conn: conn.execute(select(export_leases.c.expires_ns)).scalar())

    await one.run_round()
    assert await two.run_round() == 10.0 and two.status()["state"] == "standby"
    assert sent_ids(upstream) == sent  # once
    claimed = expires()
    clock.advance(LEASE_SECONDS / 3 - 1)
    await one.run_round()
    assert expires() == claimed  # a lease held is not renewed every round ...
    clock.advance(2)
    await one.run_round()
    assert expires() == claimed + int((LEASE_SECONDS / 3 + 1) * 1e9)  # ... but once a third of it has gone
    await one.stopService()  # a clean stop gives the lease up
    sent += add_events(node, 2, start=100)
    await two.run_round()
    assert sent_ids(upstream) == sent and two.status()["state"] == "ok"  # from where one left off
    sent += add_events(node, 1, start=200)
    assert await one.run_round() == 10.0 and one.status()["state"] == "standby"
    clock.advance(LEASE_SECONDS - 1)  # two died without a word: its lease holds until it expires
    assert await one.run_round() == 10.0 and sent_ids(upstream) == sent[:5]
    clock.advance(2)
    await one.run_round()
    assert sent_ids(upstream) == sent and one.status()["state"] == "ok"


@pytest_twisted.ensureDeferred
async def test_the_next_batch_is_read_while_one_is_sent_and_dropped_if_the_cursor_moved(node, monkeypatch):
    clock = task.Clock()
    clock.advance(T0 / 1e9 + 3600)
    ids = add_events(node, 5)
    cursors, read = [], node.store.read

    def logged(operation, *args, **kwargs):
        if operation is exports.next_batch:
            cursors.append(args[1])
        return read(operation, *args, **kwargs)

    monkeypatch.setattr(node.store, "read", logged)
    job, upstream = exporter(node, clock, batch_size="2", interval="30s")
    during = []
    upstream.during = lambda: during.append(list(cursors))
    assert [await job.run_round() for _ in range(3)] == [0, 0, 30.0]
    assert during == [[0, 2], [0, 2, 4], [0, 2, 4]]  # each full batch's successor was being read as it went
    assert sent_ids(upstream) == ids and cursors == [0, 2, 4]  # and each read once

    again, upstream = exporter(node, clock, batch_size="2")
    node.store.call(exports.set_cursor, "central", 0, T0)
    again.cursor = None
    await again.run_round()  # read ahead from 2 ...
    node.store.call(exports.set_cursor, "central", 0, T0)  # ... but the acknowledgement was lost
    again.cursor = None
    await again.run_round()
    assert sent_ids(upstream) == ids[:2] + ids[:2]  # from the stored cursor, not the read ahead


@pytest_twisted.ensureDeferred
async def test_failures_back_off_keep_the_cursor_and_honour_retry_after(node):
    clock = task.Clock()
    ids = add_events(node, 3)
    job, upstream = exporter(node, clock, max_backoff="10m")
    upstream.fail = ClientError("cannot reach https://central:8443: connection refused")
    delays = [await job.run_round() for _ in range(4)]
    assert delays == [0.5, 1.0, 2.0, 4.0]  # rng 0.5 of 1, 2, 4, 8 s
    assert node.store.call(exports.get_cursor, "central") == 0
    status = job.status()
    assert (status["state"], status["failures"]) == ("backing_off", 4) and "refused" in status["last_error"]
    upstream.fail = ClientError("HTTP 503: maintenance", 503, retry_after=120)
    assert await job.run_round() == 120
    upstream.fail = ClientError("HTTP 503: maintenance", 503, retry_after=3600)
    assert await job.run_round() == 3600  # what the upstream asked, beyond max_backoff
    upstream.fail = ClientError("HTTP 503: maintenance", 503, retry_after=10**6)
    assert await job.run_round() == 6 * 3600  # never past max_retry_after
    capped, slow = exporter(node, clock, max_backoff="10m", max_retry_after="30m")
    slow.fail = ClientError("HTTP 429: slow down", 429, retry_after=3600)
    assert await capped.run_round() == 1800
    upstream.fail = None
    await job.run_round()
    assert sent_ids(upstream) == ids and job.status()["state"] == "ok" and job.failures == 0
    assert job.metrics.export_failures.labels("central")._value.get() == 0


@pytest_twisted.ensureDeferred
async def test_the_window_starts_batches_only_in_its_hours(node):
    clock = task.Clock()
    clock.advance(datetime.datetime(2024, 5, 1, 21, 0, tzinfo=datetime.timezone.utc).timestamp())
    add_events(node, 4)
    job, upstream = exporter(node, clock, window="22-06", batch_size="2", interval="2h")
    assert await job.run_round() == 3600 and upstream.batches == []
    status = job.status()
    assert (status["state"], status["opens_at"]) == ("waiting_window", "2024-05-01T22:00:00.000000000Z")
    assert status["lag_seconds"] == 9 * 3600  # received at 12:00, waiting since
    clock.advance(3600)
    # The window closes while the batch is on its way: it completes, the next one waits.
    upstream.during = lambda: clock.advance(8 * 3600)
    assert await job.run_round() == 0
    upstream.during = None
    assert len(upstream.batches) == 1 and node.store.call(exports.get_cursor, "central") == job.cursor
    assert await job.run_round() == 2 * 3600  # 06:00: closed until 22:00; back at the interval meanwhile
    assert len(upstream.batches) == 1
    status = job.status()
    assert (status["state"], status["opens_at"]) == ("waiting_window", "2024-05-02T22:00:00.000000000Z")
    assert status["lag_seconds"] == 18 * 3600  # the second batch still waits
    short, _ = exporter(node, clock, window="22-06")
    assert await short.run_round() == 10.0  # a closed window is looked at again every interval


@pytest_twisted.ensureDeferred
async def test_files_the_upstream_asks_for_are_uploaded(node):
    clock = task.Clock()
    (event_id,) = add_events(node, 1)
    content = b"frame" * 1000
    sha256, size = node.files.put(io.BytesIO(content))
    record = node.store.call(files.attach_file, event_id, name="f.png", mime_type="image/png", sha256=sha256,
                             size=size, now_ns=T0, origin="station-7")
    job, upstream = exporter(node, clock)
    upstream.need = [record["id"]]
    await job.run_round()
    (batch,) = upstream.batches
    assert [f["sha256"] for f in batch[0]["files"]] == [hashlib.sha256(content).hexdigest()]
    assert upstream.uploads == [(record["id"], content)]


@pytest_twisted.ensureDeferred
async def test_filters_and_no_echo_to_the_origin_counted_by_reason(node):
    clock = task.Clock()
    node.store.call(stations.add_station, "502", None)
    mine = add_events(node, 2)
    add_events(node, 2, origin=CENTRAL, start=10)  # came from upstream: never sent back
    # A record from before node ids, named after a node that happens to share the upstream's name:
    # names identify nothing, so it goes (the upstream dedupes by id if it is its own).
    legacy = add_events(node, 1, origin="central", start=20)
    job, upstream = exporter(node, clock, batch_size="1")
    for _ in range(6):
        await job.run_round()
    assert sent_ids(upstream) == mine + legacy  # from the first batch on: the upstream's id is asked first
    counts = {"sent": 3, "duplicate": 0, "skipped_filter": 0, "skipped_origin": 2}
    assert job.status()["events"] == counts and job.status()["upstream_node_id"] == CENTRAL
    exported = node.metrics.count(node.metrics.export_events)
    assert {result: exported.get(("central", result), 0) for result in counts} == counts

    node.store.call(exports.set_cursor, "central", 0, T0)  # the same events, for a target of station 502
    only, upstream = exporter(node, clock, stations="502")
    assert await only.run_round() == 10.0 and upstream.batches == []
    assert only.cursor == node.store.call(exports.get_cursor, "central")  # passed over, not rescanned
    assert only.status()["events"] == {"sent": 0, "duplicate": 0, "skipped_filter": 5, "skipped_origin": 0}
    assert only.status()["state"] == "ok" and only.status()["lag_seconds"] == 0.0


def test_a_batch_carries_the_files_of_its_own_events_dense_or_sparse(node):
    """Batches of most events (by seq range) and of few (a filter passes one in four: by id) alike."""
    node.store.call(stations.add_station, "502", None)
    sha256, size = node.files.put(io.BytesIO(b"frame"))
    stored, attached = [], {}
    for i in range(80):
        event = {"id": str(uuid.uuid4()), "type": "CIC", "time_ns": T0 + i, "data": {"n": i},
                 "digest": digest({"n": i}), "quarantine": None}
        station = "502" if i % 4 == 3 else "501"
        node.store.call(store_batches, [{"station": station, "received_ns": T0, "events": [event]}], "station-7")
        stored.append((event["id"], station))
        for kind in ("image", "spectrum") if i % 5 in (0, 3) else ():
            record = node.store.call(files.attach_file, event["id"], name=f"{kind}.bin", mime_type="x/y",
                                     semantic_type=kind, sha256=sha256, size=size, now_ns=T0 + i,
                                     origin="station-7", meta={"kind": kind})
            attached.setdefault(event["id"], []).append(record)
    keys = ("id", "name", "mime_type", "semantic_type", "size", "sha256", "meta", "time_ns", "created_ns", "origin")
    for settings in ({}, {"stations": "502"}, {"semantic_types": "spectrum"},
                     {"stations": "502", "semantic_types": "spectrum"}):
        for limit in (1, 3, 7, 100):
            cursor, sent, batch = 0, [], True
            while batch:
                batch, cursor, _, _ = node.store.call_read(exports.next_batch,
                                                           target(batch_size=str(limit), **settings),
                                                        cursor)
                sent += batch
            assert sorted(e["id"] for e in sent) == sorted(
                i for i, station in stored if settings.get("stations", station) == station)
            for event in sent:
                assert event["files"] == sorted(
                    ({k: r[k] for k in keys} for r in attached.get(event["id"], [])
                     if settings.get("semantic_types", r["semantic_type"]) == r["semantic_type"]),
                    key=lambda r: r["id"]), (settings, limit)
            assert sum(len(e["files"]) for e in sent) == {0: 64, 1: 16 if "stations" in settings else 32, 2: 8}[
                len(settings)]


@pytest_twisted.ensureDeferred
async def test_batches_stop_at_batch_bytes_of_data_and_one_larger_event_still_goes(node):
    clock = task.Clock()
    clock.advance(T0 / 1e9 + 3600)
    ids = add_events(node, 6)  # data {"n": i}: 7 bytes of JSON each
    big = str(uuid.uuid4())
    node.store.call(store_batches, [{"station": "501", "received_ns": T0, "events": [
        {"id": big, "type": "CIC", "time_ns": T0 + 50, "data": {"big": "x" * 2000},
         "digest": digest({"big": "x" * 2000}), "quarantine": None}]}], "station-7")
    batch, scanned_to, cut, _ = node.store.call_read(exports.next_batch, target(batch_bytes="4KiB"), 0)
    assert len(batch) == 7 and not cut  # the limits were not reached: the rest was looked at
    job, upstream = exporter(node, clock, batch_bytes="1KiB", interval="30s")
    job.target["batch_bytes"] = 20  # below the parser's floor, to cut small data
    assert [await job.run_round() for _ in range(5)] == [0, 0, 0, 0, 30.0]  # a cut batch is followed at once
    assert [len(b) for b in upstream.batches] == [2, 2, 2, 1]
    assert sent_ids(upstream) == ids + [big]


class FileBodies:
    """StubTreq takes only bytes bodies; the real client streams files (the end-to-end test checks that)."""

    def __init__(self, stub):
        self.stub = stub

    def request(self, method, url, data=None, **kwargs):
        return self.stub.request(method, url, data=data.read() if hasattr(data, "read") else data, **kwargs)


@pytest_twisted.async_yield_fixture()
async def pair(tmp_path):
    """A central node's real import routes (over StubTreq), on SQLite in a directory of its own."""
    (tmp_path / "up").mkdir()
    up = make_node(tmp_path / "up", f"sqlite:///{tmp_path}/up/central.sqlite", "[node]\nname = central\n")
    key = up.store.call(users.add_user, "station-7", "importer")[1]
    serve(up)
    pump = task.LoopingCall(up.stub.flush)
    pump.start(0.001)
    yield up, key
    pump.stop()
    await up.service.stopService()


@pytest_twisted.ensureDeferred
async def test_against_a_real_importer_replays_land_once(pair, node):
    up, key = pair
    clock = task.Clock()
    (first, *_) = ids = add_events(node, 3)
    content = b"trace" * 500
    sha256, size = node.files.put(io.BytesIO(content))
    node.store.call(files.attach_file, first, name="t.bin", mime_type="application/octet-stream",
                    sha256=sha256, size=size, now_ns=T0, origin="station-7")
    client = Client("http://central", api_key=key, http_client=FileBodies(up.stub), reactor=reactor)
    job = Exporter(target(), local(node), clock, client=client)
    assert await job.run_round() == 10.0, job.status()["last_error"]
    _, body = await call(up.stub, "GET", "http://central/api/v1/events?order=asc")
    stored = json.loads(body)["events"]
    assert [(e["id"], e["origin"]) for e in stored] == [(i, node.node_id) for i in ids]
    assert open(up.files.path(sha256), "rb").read() == content
    node.store.call(exports.set_cursor, "central", 0, T0)  # as if the acknowledgement was lost
    job.cursor = None
    await job.run_round()
    assert up.metrics.count(up.metrics.import_events)[("duplicate",)] == 3
    _, body = await call(up.stub, "GET", "http://central/api/v1/events")
    assert len(json.loads(body)["events"]) == 3


@pytest_twisted.ensureDeferred
async def test_stationd_client_exports_lists_target_states(capsys):
    import argparse

    from stationd import cli

    class Fake:
        async def exports(self):
            return {"central": {"state": "backing_off", "target_url": "https://c:8443", "lag_seconds": 12.5,
                                "failing_since": "2024-05-01T00:00:00.000000000Z", "last_error": "refused"}}

    await cli.exports(Fake(), argparse.Namespace(json=False, action=None, name=None))
    assert capsys.readouterr().out == ("central: backing_off -> https://c:8443, lag 12.5 s, "
                                       "failing since 2024-05-01T00:00:00.000000000Z: refused\n")


@pytest_twisted.ensureDeferred
async def test_a_store_error_is_retried_with_backoff_not_given_up(node, monkeypatch):
    from sqlalchemy.exc import OperationalError

    clock = task.Clock()
    add_events(node, 2)
    job, upstream = exporter(node, clock)

    def locked(*args):
        raise OperationalError("SELECT", {}, Exception("database is locked"))

    monkeypatch.setattr(exports, "next_batch", locked)
    assert await job.run_round() == 0.5 and job.status()["state"] == "backing_off"
    assert "database is locked" in job.status()["last_error"]
    monkeypatch.undo()
    assert await job.run_round() == 10.0 and len(sent_ids(upstream)) == 2


@pytest_twisted.ensureDeferred
async def test_a_file_attached_after_its_event_was_sent_follows_it_up_the_chain(pair, node):
    """Attaching renumbers the event (a new seq), here and, on import, upstream too."""
    up, key = pair
    clock = task.Clock()
    first, second = add_events(node, 2)
    client = Client("http://central", api_key=key, http_client=FileBodies(up.stub), reactor=reactor)
    job = Exporter(target(), local(node), clock, client=client)
    await job.run_round()
    up_seq = {row.id: row.seq for row in up.store.call(lambda c: c.execute(select(events.c.id, events.c.seq)))}
    content = b"late frame" * 100
    sha256, size = node.files.put(io.BytesIO(content))
    node.store.call(files.attach_file, first, name="late.png", mime_type="image/png", sha256=sha256, size=size,
                    now_ns=T0, origin="station-7")
    assert await job.run_round() == 10.0, job.status()["last_error"]
    _, body = await call(up.stub, "GET", f"http://central/api/v1/events/{first}")
    assert [f["sha256"] for f in json.loads(body)["files"]] == [sha256]
    assert open(up.files.path(sha256), "rb").read() == content
    renumbered = {row.id: row.seq for row in up.store.call(lambda c: c.execute(select(events.c.id, events.c.seq)))}
    assert renumbered[second] == up_seq[second] and renumbered[first] > max(up_seq.values())
    assert up.metrics.count(up.metrics.import_events)[("duplicate",)] == 1
    await client.close()


@pytest_twisted.ensureDeferred
async def test_lag_grows_through_an_outage_and_last_error_clears_on_recovery(node):
    """A target that never got through: its lag is the age of the first event waiting, at every
    attempt and between them; the backlog confirmed, it is 0, and the error is history."""
    clock = task.Clock()
    clock.advance(T0 / 1e9)
    add_events(node, 3, received_ns=T0 + 10 * 10**9)  # received at T0 + 10 s
    job, upstream = exporter(node, clock, max_backoff="1m", batch_size="2")
    upstream.fail = ClientError("cannot reach https://central:8443: connection refused")
    clock.advance(70)
    await job.run_round()
    status = job.status()
    assert (status["state"], status["lag_seconds"]) == ("backing_off", 60.0)
    assert status["oldest_pending"] == "2024-05-01T12:00:10.000000000Z"
    gauge = node.metrics.registry.get_sample_value
    assert gauge("stationd_export_lag_seconds", {"target": "central"}) == 60.0
    clock.advance(240)  # between attempts too: read off the clock, not the last round
    assert job.status()["lag_seconds"] == 300.0
    assert gauge("stationd_export_lag_seconds", {"target": "central"}) == 300.0
    await job.run_round()
    assert job.status()["lag_seconds"] == 300.0 and job.status()["failures"] == 2
    assert gauge("stationd_export_state", {"target": "central", "state": "backing_off"}) == 1

    upstream.fail = None
    clock.advance(5)
    assert await job.run_round() == 0  # a full batch: the third event still waits
    status = job.status()
    assert (status["state"], status["last_error"], status["failures"]) == ("ok", None, 0)
    assert status["last_error_at"] == "2024-05-01T12:05:10.000000000Z"  # kept, as history
    assert status["lag_seconds"] == 305.0 and status["failing_since"] is None
    await job.run_round()
    assert job.status()["lag_seconds"] == 0.0 and job.status()["oldest_pending"] is None
    assert gauge("stationd_export_lag_seconds", {"target": "central"}) == 0.0
    assert gauge("stationd_export_state", {"target": "central", "state": "ok"}) == 1
    assert gauge("stationd_export_state", {"target": "central", "state": "backing_off"}) == 0
    assert len(sent_ids(upstream)) == 3


@pytest_twisted.ensureDeferred
async def test_an_upstream_with_this_nodes_own_id_is_refused_loudly_and_nothing_moves(node):
    """Exporting to itself (or to a copy of its store): state error, a log line that says what to
    do, no batch sent, nothing passed over, the cursor where it was; sending starts once the
    upstream is another node."""
    from twisted.logger import globalLogPublisher

    clock = task.Clock()
    clock.advance(T0 / 1e9)
    ids = add_events(node, 3)
    job, upstream = exporter(node, clock, max_backoff="5m")
    upstream.node_id = node.node_id
    clock.advance(30)
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        assert await job.run_round() == 300.0  # asked again at the cap
        assert await job.run_round() == 300.0
    finally:
        globalLogPublisher.removeObserver(logged.append)
    status = job.status()
    assert status["state"] == "error" and node.node_id in status["last_error"]
    assert "new-node-id" in status["last_error"] and status["failures"] == 2
    assert upstream.batches == [] and node.store.call(exports.get_cursor, "central") == 0
    assert status["events"] == {"sent": 0, "duplicate": 0, "skipped_filter": 0, "skipped_origin": 0}
    assert status["lag_seconds"] == 30.0  # the events wait, and it shows
    refusals = [e for e in logged if e.get("log_format", "").startswith("Export {target}: refusing")]
    assert len(refusals) == 1 and refusals[0]["log_level"].name == "error"  # once, not once a round
    assert node.metrics.registry.get_sample_value(
        "stationd_export_state", {"target": "central", "state": "error"}) == 1

    upstream.node_id = CENTRAL  # the upstream was given an id of its own
    assert await job.run_round() == 10.0
    assert sent_ids(upstream) == ids and job.status()["state"] == "ok"


@pytest_twisted.ensureDeferred
async def test_an_import_refused_for_the_same_node_id_is_an_error_not_an_outage(node):
    """The upstream's own check (a 409 same_node_id) stops the target like the exporter's does."""
    clock = task.Clock()
    add_events(node, 1)
    job, upstream = exporter(node, clock, max_backoff="5m")
    upstream.node_id = None  # an upstream that does not say who it is in its status
    upstream.fail = None

    async def refuse(origin, events):
        raise ClientError("HTTP 409: the sender has this node's own node id", 409, code="same_node_id")

    upstream.import_events = refuse
    assert await job.run_round() == 300.0
    assert job.status()["state"] == "error" and node.store.call(exports.get_cursor, "central") == 0


def test_an_event_committed_while_a_batch_is_read_is_never_passed_over(node):
    """On PostgreSQL (READ COMMITTED) each statement of the read sees the commits before it: an
    event committed between reading the batch and the newest seq would be counted as looked
    at without being sent.  The newest seq is read first, and only events up to it are taken."""
    from sqlalchemy import event as sa_event

    add_events(node, 3)
    late = []

    def commit_one(conn, cursor, statement, *args):
        if not late and "FROM events" in statement:  # the batch read's first statement
            late.append(None)
            late[0] = add_events(node, 1, start=100)[0]  # another connection, committed now

    sa_event.listen(node.store.engine, "after_cursor_execute", commit_one)
    try:
        batch, scanned_to, _, _ = node.store.call_read(exports.next_batch, target(), 0)
    finally:
        sa_event.remove(node.store.engine, "after_cursor_execute", commit_one)
    late_seq = node.store.call(lambda c: c.execute(select(events.c.seq).where(events.c.id == late[0])).scalar())
    assert late[0] in [e["id"] for e in batch] or scanned_to < late_seq

"""stationd.client's uploads (both ingest protocols) and directory sync, and the stationd-client
upload and sync commands, against the real routes of a node (minus listeners) through StubTreq."""

import datetime
import hashlib
import json
import os
import pickle
import urllib.parse

import pytest
import pytest_twisted
import treq
from conftest import drained, make_node, serve
from twisted.internet import defer, reactor, task
from twisted.internet.error import ConnectionLost, ConnectionRefusedError

from stationd import cli
from stationd.client import Client, ClientError
from stationd.sync import SYNC_STATE, is_rejection, load_sync_state, read_events, sync_directory
from stationd.store import stations, users

T0 = 1714564800 * 10**9  # 2024-05-01T12:00:00Z


def native(i, kind="WTR", **data):
    """A native event at T0 + i seconds + a nanosecond fraction."""
    return {"type": kind, "time": f"2024-05-01T12:{i // 60:02d}:{i % 60:02d}.123456789Z",
            "data": {"n": i, **data}}


class Wire:
    """The StubTreq, keeping each request; ``trouble(n)`` may refuse the n-th request ("refuse")
    or let the node answer it and lose the answer ("lose")."""

    def __init__(self, stub):
        self.stub = stub
        self.requests = []
        self.trouble = None

    def request(self, method, url, **kwargs):
        return defer.ensureDeferred(self._request(method, url, **kwargs))

    async def _request(self, method, url, **kwargs):
        self.requests.append((method, urllib.parse.urlsplit(url).path, dict(kwargs.get("headers") or {})))
        trouble = self.trouble(len(self.requests)) if self.trouble else None
        if trouble == "refuse":
            raise ConnectionRefusedError("the node went away")
        response = await self.stub.request(method, url, **kwargs)
        if trouble == "lose":
            await treq.content(response)  # the node has answered: the batch is stored
            raise ConnectionLost("the answer was lost")
        return response

    def keys(self):
        return [headers.get("Idempotency-Key") for _, _, headers in self.requests]


@pytest_twisted.async_yield_fixture()
async def node(tmp_path, database_url):
    node = make_node(tmp_path, database_url)
    node.store.call(stations.add_station, "501", stations.hash_password("s3cret"))
    node.store.call(stations.add_station, "502", None)
    node.admin_key = node.store.call(users.add_user, "root", "admin")[1]
    node.station_key = node.store.call(users.add_user, "box501", "station", station="501")[1]
    serve(node)
    pump = task.LoopingCall(node.stub.flush)  # handlers wait on the store's thread
    pump.start(0.001)
    node.wire = Wire(node.stub)
    node.client = Client("http://n", api_key=node.station_key, http_client=node.wire, reactor=reactor)
    node.admin = Client("http://n", api_key=node.admin_key, http_client=node.stub, reactor=reactor)
    yield node
    pump.stop()
    await node.client.close()
    await node.admin.close()
    await node.service.stopService()


async def stored(node, station="501"):
    """The station's events, oldest first, once the writer has stored every batch."""
    await drained(node)
    return await node.admin.query_events(station=station, order="asc", quarantined="any", limit=None)


def write(directory, name, value):
    path = directory / name
    path.write_text(json.dumps(value))
    return path


# Client.upload: the native JSON ingest


@pytest_twisted.ensureDeferred
async def test_native_upload_stores_events_and_a_resend_is_answered_as_before(node):
    events = [native(0, note="Zürich ☃"), {"type": "CIC", "time_ns": T0 + 7, "data": {"ph": [1, 2]}}]
    answer = await node.client.upload("501", events, idempotency_key="batch-1")
    assert answer == {"accepted": 2, "duplicates": 0, "quarantined": 0, "replayed": False}
    method, path, headers = node.wire.requests[-1]
    assert (method, path, headers["Idempotency-Key"]) == ("POST", "/api/v1/stations/501/events", "batch-1")
    assert headers["Authorization"] == f"Bearer {node.station_key}"

    await drained(node)  # the node knows the key once the batch is in the store
    again = await node.client.upload_events("501", events, idempotency_key="batch-1")
    assert again == {"accepted": 2, "duplicates": 0, "quarantined": 0, "replayed": True}
    # A resend racing the writer (the key not in the store yet) may be answered afresh, but the
    # event is stored once all the same (below).
    first, second = [await node.client.upload("501", [native(9)], idempotency_key="batch-2") for _ in range(2)]
    assert first["accepted"] == 1 and second["accepted"] + second["duplicates"] == 1
    # Without the key the node still recognises the events, by their content.
    assert await node.client.upload("501", events) == {"accepted": 0, "duplicates": 2, "quarantined": 0,
                                                       "replayed": False}
    rows = await stored(node)
    assert [(e["type"], e["time_ns"], e["data"]) for e in rows] == [
        ("CIC", T0 + 7, {"ph": [1, 2]}), ("WTR", T0 + 123456789, {"n": 0, "note": "Zürich ☃"}),
        ("WTR", T0 + 9 * 10**9 + 123456789, {"n": 9})]


@pytest_twisted.ensureDeferred
async def test_native_upload_errors(node):
    with pytest.raises(ClientError) as caught:
        await node.client.upload("501", [native(0), {"type": "WTR", "data": {}}, native(2)])
    error = caught.value
    assert (error.status, error.code, is_rejection(error)) == (422, "invalid_events", True)
    assert error.details == [{"index": 1, "message": "time (or time_ns) is required"}]
    with pytest.raises(ClientError) as caught:
        await node.client.upload("502", [native(0)])  # the key is bound to station 501
    assert caught.value.status == 403 and not is_rejection(caught.value)
    with pytest.raises(ClientError) as caught:
        await node.admin.upload("777", [native(0)])
    assert caught.value.status == 404 and not is_rejection(caught.value)
    with pytest.raises(ValueError, match="protocol"):
        await node.client.upload("501", [native(0)], protocol="ftp")
    assert await stored(node) == []


# Client.upload: the HiSPARC form upload


@pytest_twisted.ensureDeferred
async def test_hisparc_upload_in_both_encodings_stores_every_event(node):
    text = "Zürich ☃ \xff"  # beyond ASCII and latin-1: the payload must survive the form encoding
    assert await node.client.upload("501", [native(0, text=text)], protocol="hisparc", password="s3cret") == "100"
    assert await node.client.upload_hisparc(501, "s3cret", [native(1, text=text)], format="pickle") == "100"
    # HiSPARC events as stations make them, with datetime objects, pickled or as JSON.
    station_event = {"header": {"eventtype_uploadcode": "CIC", "datetime": datetime.datetime(2024, 5, 1, 12, 0, 2),
                                "nanoseconds": 5},
                     "datalist": [{"data_uploadcode": "PH1", "data": 3}, {"data_uploadcode": "PH1", "data": 4}]}
    assert await node.client.upload_hisparc("501", "s3cret", [station_event], "pickle") == "100"
    assert await node.client.upload_hisparc("501", "s3cret", [{**station_event, "header": {
        **station_event["header"], "nanoseconds": 6}}], "json") == "100"
    # A payload already encoded, as a station's buffer holds it (protocol 0: Python 2 stations).
    payload = pickle.dumps([{**station_event, "header": {**station_event["header"], "nanoseconds": 7}}], 0)
    assert await node.client.upload_hisparc("501", "s3cret", payload, "pickle") == "100"

    _, path, headers = node.wire.requests[0]
    assert path == "/upload" and headers["Content-Type"] == "application/x-www-form-urlencoded"
    rows = await stored(node)
    assert [(e["type"], e["time_ns"], e["data"]) for e in rows] == [
        ("WTR", T0 + 123456789, {"n": 0, "text": text}),
        ("WTR", T0 + 10**9 + 123456789, {"n": 1, "text": text}),
        ("CIC", T0 + 2 * 10**9 + 5, {"PH1": [3, 4]}),
        ("CIC", T0 + 2 * 10**9 + 6, {"PH1": [3, 4]}),
        ("CIC", T0 + 2 * 10**9 + 7, {"PH1": [3, 4]})]


@pytest.mark.parametrize("station, password, payload, code", [
    ("501", "wrong", None, "203"),
    ("502", "s3cret", None, "203"),  # no upload password
    ("777", "s3cret", None, "206"),
    ("501", "s3cret", b"cos\nsystem\n(S'true'\ntR.", "208"),
])
@pytest_twisted.ensureDeferred
async def test_hisparc_refusals_are_client_errors_with_the_code(node, station, password, payload, code):
    with pytest.raises(ClientError) as caught:
        await node.client.upload_hisparc(station, password, payload or [native(0)], "pickle")
    assert (caught.value.status, caught.value.code) == (200, code)
    assert str(caught.value).startswith(f"HiSPARC {code}: ")
    assert is_rejection(caught.value) == (code == "208")  # only the payload is at fault
    assert await stored(node) == []


def test_read_events_takes_one_event_a_list_or_a_body():
    assert read_events(b'{"type": "A", "time": 1}') == [{"type": "A", "time": 1}]
    assert read_events(b'[{"type": "A"}, {"type": "B"}]') == [{"type": "A"}, {"type": "B"}]
    assert read_events(b'{"events": [{"type": "A"}]}') == [{"type": "A"}]
    for data, message in [(b"[]", "no events"), (b'{"events": []}', "no events"), (b"3", "not an event"),
                          (b"{", "not JSON"), (b'{"type": "A", "data": {"x": NaN}}', "not JSON"),
                          (b"\xff\xfe\x00", "not JSON")]:
        with pytest.raises(ValueError, match=message):
            read_events(data)


# sync_directory


@pytest_twisted.ensureDeferred
async def test_sync_sends_once_then_only_new_and_changed_files(node, tmp_path):
    box = tmp_path / "box"
    box.mkdir()
    write(box, "a.json", native(0))  # one event
    write(box, "b.json", [native(1), native(2), native(3)])  # a list
    write(box, "c.json", {"events": [native(4)]})  # an ingest body
    (box / "notes.txt").write_text("not an event file")
    seen = []
    summary = await sync_directory(node.client, box, "501", report=seen.append)
    assert summary == {"sent": 3, "skipped": 0, "failed": 0, "events": 5, "accepted": 5, "duplicates": 0,
                       "quarantined": 0, "stopped": None}
    assert [(o["file"], o["result"], o["events"]) for o in seen] == [("a.json", "sent", 1), ("b.json", "sent", 3),
                                                                     ("c.json", "sent", 1)]
    # Each file's Idempotency-Key: its SHA-256 and the slice of its events.
    digest = hashlib.sha256((box / "b.json").read_bytes()).hexdigest()
    assert node.wire.keys()[1] == f"stationd-{digest}-0-3"
    state = json.loads((box / SYNC_STATE).read_text())
    files = state["targets"]["http://n"]["501"]
    assert sorted(files) == ["a.json", "b.json", "c.json"]
    assert files["b.json"]["sha256"] == digest and files["b.json"]["size"] == (box / "b.json").stat().st_size
    assert files["b.json"]["events"] == 3

    node.wire.requests.clear()
    summary = await sync_directory(node.client, box, "501")
    assert (summary["sent"], summary["skipped"], summary["failed"]) == (0, 3, 0)
    assert node.wire.requests == []  # nothing sent: the node was not even asked

    await drained(node)  # so that the node counts the events it holds as duplicates
    os.utime(box / "a.json", ns=(1, 1))  # touched, not changed: hashed, still skipped
    write(box, "b.json", [native(1), native(2), native(3), native(5)])  # changed
    write(box, "d.json", [native(6)])  # new
    seen.clear()
    summary = await sync_directory(node.client, box, "501", report=seen.append)
    assert [(o["file"], o["result"]) for o in seen] == [("a.json", "skipped"), ("b.json", "sent"),
                                                        ("c.json", "skipped"), ("d.json", "sent")]
    assert (summary["sent"], summary["skipped"], summary["accepted"], summary["duplicates"]) == (2, 2, 2, 3)
    assert load_sync_state(box / SYNC_STATE)["targets"]["http://n"]["501"]["a.json"]["mtime_ns"] == 1
    assert [e["data"]["n"] for e in await stored(node)] == [0, 1, 2, 3, 4, 5, 6]

    # Another station (or node) has a state of its own: everything goes to it.
    summary = await sync_directory(node.admin, box, "502")
    assert (summary["sent"], summary["events"]) == (4, 7)
    # A file gone from the directory is forgotten; one of that name is new again.
    (box / "c.json").unlink()
    await sync_directory(node.client, box, "501")
    assert "c.json" not in load_sync_state(box / SYNC_STATE)["targets"]["http://n"]["501"]


@pytest_twisted.ensureDeferred
async def test_sync_reports_a_refused_file_does_not_record_it_and_goes_on(node, tmp_path):
    box = tmp_path / "box"
    box.mkdir()
    write(box, "1-good.json", [native(0)])
    write(box, "2-bad.json", [native(1), native(2), native(3), {"type": "WTR", "data": {}}, native(4)])
    (box / "3-broken.json").write_text("[{")
    write(box, "4-good.json", [native(5)])
    seen = []
    summary = await sync_directory(node.client, box, "501", batch_size=2, report=seen.append)
    assert (summary["sent"], summary["failed"], summary["stopped"]) == (2, 2, None)
    failed = {o["file"]: o for o in seen if o["result"] == "failed"}
    assert failed["2-bad.json"]["status"] == 422
    # Named by its place in the file; the batch before it went through.
    assert failed["2-bad.json"]["error"].startswith("HTTP 422: ")
    assert "event 3: time (or time_ns) is required" in failed["2-bad.json"]["error"]
    assert failed["2-bad.json"]["error"].endswith("(events 0 to 1 were stored)")
    assert failed["3-broken.json"]["error"].startswith("not JSON")
    assert sorted(load_sync_state(box / SYNC_STATE)["targets"]["http://n"]["501"]) == ["1-good.json", "4-good.json"]
    digest = hashlib.sha256((box / "2-bad.json").read_bytes()).hexdigest()
    assert node.wire.keys()[1:3] == [f"stationd-{digest}-0-2", f"stationd-{digest}-2-4"]

    # Mended, it goes; the events stored before are not stored twice.
    await drained(node)
    write(box, "2-bad.json", [native(1), native(2), native(3), native(4)])
    (box / "3-broken.json").unlink()
    seen.clear()
    summary = await sync_directory(node.client, box, "501", batch_size=2, report=seen.append)
    assert (summary["sent"], summary["skipped"], summary["failed"]) == (1, 2, 0)
    assert (summary["accepted"], summary["duplicates"]) == (2, 2)
    assert [e["data"]["n"] for e in await stored(node)] == [0, 1, 2, 3, 4, 5]


@pytest_twisted.ensureDeferred
async def test_an_interrupted_sync_resumes_where_it_stopped(node, tmp_path):
    box = tmp_path / "box"
    box.mkdir()
    for i in range(5):
        write(box, f"{i}.json", [native(i)])
    on_disk = []

    def trouble(n):
        if n == 3:  # the third file: what the state file holds now, then the node is gone
            on_disk.append(sorted(load_sync_state(box / SYNC_STATE)["targets"]["http://n"]["501"]))
            return "refuse"
        return None

    node.wire.trouble = trouble
    summary = await sync_directory(node.client, box, "501", save_every=0)
    assert on_disk == [["0.json", "1.json"]]  # saved after each acknowledged file
    assert summary["sent"] == 2 and summary["stopped"].startswith("2.json: cannot reach http://n: ")
    assert not [name for name in os.listdir(box) if name.endswith(".tmp")]

    node.wire.trouble = None
    node.wire.requests.clear()
    seen = []
    summary = await sync_directory(node.client, box, "501", report=seen.append)
    assert [(o["file"], o["result"]) for o in seen] == [("0.json", "skipped"), ("1.json", "skipped"),
                                                        ("2.json", "sent"), ("3.json", "sent"), ("4.json", "sent")]
    assert len(node.wire.requests) == 3 and summary["stopped"] is None
    assert [e["data"]["n"] for e in await stored(node)] == [0, 1, 2, 3, 4]


@pytest_twisted.ensureDeferred
async def test_a_resend_after_a_lost_answer_stores_nothing_twice(node, tmp_path):
    box = tmp_path / "box"
    box.mkdir()
    write(box, "a.json", [native(0), native(1)])
    write(box, "b.json", [native(2)])
    node.wire.trouble = lambda n: "lose" if n == 1 else None
    summary = await sync_directory(node.client, box, "501")
    assert summary["sent"] == 0 and summary["stopped"].startswith("a.json: cannot reach")
    assert not (box / SYNC_STATE).exists()  # nothing was acknowledged

    node.wire.trouble = None
    await drained(node)  # (a resend racing the writer is answered afresh, and still stored once)
    seen = []
    summary = await sync_directory(node.client, box, "501", report=seen.append)
    assert node.wire.keys()[0] == node.wire.keys()[1]  # the same batch, the same key
    assert (seen[0]["file"], seen[0]["replayed"], seen[0]["accepted"]) == ("a.json", 1, 2)  # the first answer
    assert summary["sent"] == 2
    assert [e["data"]["n"] for e in await stored(node)] == [0, 1, 2]


@pytest_twisted.ensureDeferred
async def test_a_corrupt_state_file_stops_the_sync_before_sending(node, tmp_path):
    box = tmp_path / "box"
    box.mkdir()
    write(box, "a.json", [native(0)])
    (tmp_path / "state.json").write_text("{half")
    with pytest.raises(ValueError, match="not a sync state"):
        await sync_directory(node.client, box, "501", state_path=tmp_path / "state.json")
    assert node.wire.requests == []


# The command line


@pytest.fixture
def run_cli(node, monkeypatch):
    """stationd-client with its Client talking to the node through the wire; the exit code."""
    monkeypatch.setattr(cli, "Client", lambda url, api_key, *args, **kwargs: Client(
        url, api_key, http_client=node.wire, reactor=reactor))

    async def run(*argv, key=node.station_key):
        try:
            await cli.execute(cli.parser().parse_args(["--url", "http://n", f"--api-key={key}", *argv]), reactor)
        except SystemExit as e:
            return e.code
        return 0

    return run


@pytest_twisted.ensureDeferred
async def test_cli_upload_native_and_hisparc(node, run_cli, capsys, tmp_path):
    good = write(tmp_path, "good.json", [native(0), native(1)])
    bad = write(tmp_path, "bad.json", {"type": "WTR", "time": "yesterday"})
    assert await run_cli("upload", "--station", "501", str(good), str(bad), str(tmp_path / "missing.json")) == 1
    out, err = capsys.readouterr()
    assert out == f"{good}: 2 events (2 accepted, 0 duplicates, 0 quarantined)\n"
    assert f"stationd-client: {bad}: HTTP 422: " in err and "event 0: time 'yesterday'" in err
    assert f"stationd-client: {tmp_path / 'missing.json'}: cannot read it: " in err

    await drained(node)
    assert await run_cli("upload", "--station", "501", "--json", str(good)) == 0
    assert json.loads(capsys.readouterr().out) == {"file": str(good), "result": "sent", "events": 2, "accepted": 2,
                                                   "duplicates": 0, "quarantined": 0, "replayed": 1}

    hisparc = write(tmp_path, "station.json", [native(2), native(3)])
    raw = tmp_path / "buffer.pickle"
    raw.write_bytes(pickle.dumps([{"header": {"eventtype_uploadcode": "CIC", "nanoseconds": 9,
                                              "datetime": datetime.datetime(2024, 5, 1, 12, 1)},
                                   "datalist": [{"data_uploadcode": "n", "data": 4}]}], 2))
    assert await run_cli("upload", "--station", "501", "--hisparc", "--password", "s3cret", str(hisparc),
                         str(raw)) == 0
    assert capsys.readouterr().out == f"{hisparc}: 100 (stored, 2 events)\n{raw}: 100 (stored)\n"
    assert await run_cli("upload", "--station", "501", "--hisparc", "--pickle", "--password", "s3cret", "--json",
                         str(write(tmp_path, "more.json", native(5)))) == 0
    assert json.loads(capsys.readouterr().out)["code"] == "100"
    assert await run_cli("upload", "--station", "501", "--hisparc", "--password", "nope", str(hisparc)) == 1
    assert capsys.readouterr().err == (f"stationd-client: {hisparc}: HiSPARC 203: wrong password "
                                       "(or the station has no upload password)\n")
    assert [(e["type"], e["data"]["n"]) for e in await stored(node)] == [
        ("WTR", 0), ("WTR", 1), ("WTR", 2), ("WTR", 3), ("WTR", 5), ("CIC", 4)]


@pytest_twisted.ensureDeferred
async def test_cli_sync(node, run_cli, capsys, tmp_path):
    box = tmp_path / "box"
    box.mkdir()
    write(box, "a.json", [native(0), native(1)])
    write(box, "b.json", {"type": "WTR"})  # no time: refused
    state = tmp_path / "elsewhere.json"
    assert await run_cli("sync", str(box), "--station", "501", "--state", str(state)) == 1
    out, err = capsys.readouterr()
    assert out == ("a.json: 2 events (2 accepted, 0 duplicates, 0 quarantined)\n"
                   "sent 1 file(s) (2 events: 2 accepted, 0 duplicates, 0 quarantined); "
                   "skipped 0 already sent; failed 1\n")
    assert err.startswith("stationd-client: b.json: HTTP 422: ") and "time (or time_ns) is required" in err
    assert state.exists() and not (box / SYNC_STATE).exists()

    write(box, "b.json", native(2))
    assert await run_cli("sync", str(box), "--station", "501", "--state", str(state), "--json") == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(line.get("file"), line.get("result")) for line in lines[:2]] == [("a.json", "skipped"),
                                                                              ("b.json", "sent")]
    assert lines[2] == {"summary": {"sent": 1, "skipped": 1, "failed": 0, "events": 1, "accepted": 1,
                                    "duplicates": 0, "quarantined": 0, "stopped": None}}

    # A wrong key refuses every file: the run stops at the first, and says so.
    write(box, "c.json", native(3))
    assert await run_cli("sync", str(box), "--station", "501", "--state", str(state), key="wrong") == 1
    out, err = capsys.readouterr()
    assert "sent 0 file(s)" in out
    assert err.startswith("stationd-client: stopped at c.json: HTTP 401: ") and err.endswith("to resume\n")
    assert await run_cli("sync", str(tmp_path / "nowhere"), "--station", "501") == 1
    assert capsys.readouterr().err.startswith(f"stationd-client: {tmp_path / 'nowhere'}: ")

"""stationd.client's query methods and stationd-client's query commands, against
the real routes of a node (minus listeners) through StubTreq."""

import datetime
import hashlib
import json
import os
import urllib.parse
import uuid

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from stationd import cli
from stationd.client import Client, ClientError
from stationd.store import stations, users

from conftest import add_events, call, make_node, serve

T0 = 1714564800 * 10**9  # 2024-05-01T12:00:00Z
CONTENT = bytes(range(256)) * 40  # 10240 bytes


class Recorder:
    """The StubTreq, keeping each request's method, path, query parameters and options."""

    def __init__(self, stub):
        self.stub = stub
        self.requests = []

    def request(self, method, url, **kwargs):
        params = list(kwargs.get("params") or [])
        self.requests.append((method, urllib.parse.urlsplit(url).path, params, kwargs))
        return self.stub.request(method, url, **kwargs)

    def sent(self, name):
        """The values of parameter ``name`` in each request, in order."""
        return [[v for k, v in params if k == name] for _, _, params, _ in self.requests]


@pytest_twisted.async_yield_fixture()
async def node(tmp_path, database_url):
    node = make_node(tmp_path, database_url)
    for station in ("501", "502"):
        node.store.call(stations.add_station, station, None)
    node.admin_key = node.store.call(users.add_user, "root", "admin")[1]
    serve(node)
    # The handlers wait on the store's thread: keep the stub delivering while a test awaits.
    pump = task.LoopingCall(node.stub.flush)
    pump.start(0.001)
    node.http = Recorder(node.stub)
    node.client = Client("http://n", http_client=node.http, reactor=reactor)
    yield node
    pump.stop()
    await node.client.close()
    await node.service.stopService()


async def attach(node, event_id, content, **params):
    query = urllib.parse.urlencode({"name": "f.bin", **params})
    response, body = await call(node.stub, "POST", f"http://n/api/v1/admin/events/{event_id}/files?{query}",
                                headers={"Authorization": f"Bearer {node.admin_key}"}, data=content)
    assert response.code == 201, body
    return json.loads(body)["file"]


# The client


@pytest_twisted.ensureDeferred
async def test_paging_follows_cursors_and_stops_at_the_limit(node):
    ids = add_events(node, "501", [("CIC", T0 + (i // 2) * 10**9, {"n": i}) for i in range(25)])
    add_events(node, "502", [("CIC", T0, {"other": 1})])

    ids = sorted(ids, key=lambda i: (ids.index(i) // 2, i))  # by time, then id
    events = await node.client.query_events(station="501", order="asc", page_size=7, limit=17)
    assert [e["id"] for e in events] == ids[:17]
    assert node.http.sent("limit") == [["7"], ["7"], ["3"]]  # the last page asks only for what is wanted
    assert node.http.sent("cursor")[0] == [] and all(len(c) == 1 for c in node.http.sent("cursor")[1:])
    assert node.http.sent("station") == [["501"]] * 3  # a single string is one station, not "5", "0", "1"

    node.http.requests.clear()
    events = await node.client.query_events(station=["501"], page_size=7)  # no limit: to the end
    assert [e["id"] for e in events] == ids[::-1]
    assert len(node.http.requests) == 4

    node.http.requests.clear()
    events = await node.client.query_events(limit=12000)  # no page size: the node's largest page
    assert len(events) == 26 and node.http.sent("limit") == [["10000"]]
    assert await node.client.query_events(limit=0) == []


@pytest_twisted.ensureDeferred
async def test_iter_events_yields_as_pages_arrive(node):
    add_events(node, "501", [("CIC", T0 + i, {"n": i}) for i in range(5)])
    seen = []
    async for event in node.client.iter_events(page_size=2):
        seen.append((event["data"]["n"], len(node.http.requests)))
    assert seen == [(4, 1), (3, 1), (2, 2), (1, 2), (0, 3)]


@pytest_twisted.ensureDeferred
async def test_filters_reach_the_node(node):
    add_events(node, "501", [("CIC", T0 + 1, {"ph": 5, "name": "b"}), ("WTR", T0 + 2, {"ph": 50}),
                             ("CIC", T0 + 3, {"ph": "60"}), ("CIC", T0 + 4, {"ph": 7}, "before min_event_time")])
    add_events(node, "502", [("CIC", T0 + 5, {"ph": 500, "name": "a"})])

    async def times(**filters):
        return [e["time_ns"] - T0 for e in await node.client.query_events(**filters)]

    assert await times(station=["501", "502"], type=["CIC", "WTR"], order="asc") == [1, 2, 3, 5]
    assert await times(type="WTR") == [2]
    assert await times(fields=["ph.gt=10"]) == [5, 2]
    assert await times(fields=["ph.ge=50", "ph.lt=500"]) == [2]
    assert await times(fields=['ph.eq="60"']) == [3]  # quoted: compared as text
    assert await times(fields=["name.eq=a"], station="502") == [5]
    assert await times(quarantined=True) == [4]
    assert await times(quarantined="any", station="501") == [4, 3, 2, 1]
    assert await times(quarantined=False, station="501") == [3, 2, 1]
    # Times as epoch seconds, ISO 8601 text (the "+" of the zone must survive) and aware datetimes.
    assert await times(after=f"{T0 // 10**9}.000000002") == [5, 3, 2]
    assert await times(after="2024-05-01T14:00:00.000000002+02:00", before="2024-05-01T12:00:00.000000005Z") == [3, 2]
    plus2 = datetime.timezone(datetime.timedelta(hours=2))
    just_after = datetime.datetime(2024, 5, 1, 14, 0, 0, 1, tzinfo=plus2)  # T0 + 1 µs
    assert await times(before=just_after, after=T0 // 10**9) == [5, 3, 2, 1]
    assert await times(after=just_after) == []
    assert await times(after=T0 / 10**9 + 0.5) == []
    last = node.http.requests[-1][2]
    assert ("after", "1714564800.5") in last
    with pytest.raises(ValueError):
        await times(after=datetime.datetime(2024, 5, 1))  # naive: which zone?
    with pytest.raises(ValueError, match="NAME.OP=VALUE"):
        await times(fields=["ph=3"])


@pytest_twisted.ensureDeferred
async def test_a_bad_parameter_is_a_client_error_naming_it(node):
    with pytest.raises(ClientError) as caught:
        await node.client.query_events(after="yesterday")
    assert caught.value.status == 400 and caught.value.code == "bad_parameter"
    assert str(caught.value).startswith("HTTP 400: after: ")
    with pytest.raises(ClientError) as caught:
        await node.client.query_files(order="sideways")
    assert str(caught.value).startswith("HTTP 400: order: ")
    with pytest.raises(ClientError) as caught:
        await node.client.event(str(uuid.uuid4()))
    assert (caught.value.status, caught.value.code) == (404, "not_found")


@pytest_twisted.ensureDeferred
async def test_event_files_and_their_filters(node):
    (meteor,) = add_events(node, "501", [("meteor", T0, {"brightness": 3.5})])
    (other,) = add_events(node, "502", [("meteor", T0 + 10**9, {"brightness": 1})])
    image = await attach(node, meteor, b"png", name="sky.png", mime_type="image/png",
                         semantic_type="meteor_image", meta=json.dumps({"cam": 1}))
    video = await attach(node, other, b"mp4", name="sky.mp4", mime_type="video/mp4",
                         semantic_type="meteor_video", meta=json.dumps({"cam": 2}))

    event = await node.client.event(meteor)
    assert event["data"] == {"brightness": 3.5}
    assert [(f["id"], f["name"], f["meta"]) for f in event["files"]] == [(image["id"], "sky.png", {"cam": 1})]

    async def ids(**filters):
        return [f["id"] for f in await node.client.files(**filters)]

    assert await ids() == [video["id"], image["id"]]
    assert await ids(order="asc", page_size=1) == [image["id"], video["id"]]
    assert await ids(semantic_type="meteor_image") == [image["id"]]
    assert await ids(mime_type=["video/mp4", "text/plain"]) == [video["id"]]
    assert await ids(meta=["cam.gt=1"]) == [video["id"]]
    assert await ids(station="501") == [image["id"]]
    assert await ids(after=T0 // 10**9 + 1) == [video["id"]]
    assert await ids(limit=1) == [video["id"]]
    record = await node.client.file(image["id"])
    assert record["events"] == [meteor] and record["sha256"] == hashlib.sha256(b"png").hexdigest()


@pytest_twisted.ensureDeferred
async def test_download_streams_the_exact_bytes_into_place(node, tmp_path):
    (event_id,) = add_events(node, "501", [("meteor", T0, {})])
    record = await attach(node, event_id, CONTENT)
    target = tmp_path / "out" / "trace.bin"
    target.parent.mkdir()
    target.write_bytes(b"an older download")
    assert await node.client.download(record["id"], target) == len(CONTENT)
    assert target.read_bytes() == CONTENT
    assert os.listdir(target.parent) == ["trace.bin"]  # no temporary file left
    method, path, _, options = node.http.requests[-1]
    assert (method, path) == ("GET", f"/api/v1/files/{record['id']}/content")
    assert options.get("unbuffered") is True  # else treq keeps a second copy in memory

    empty = await attach(node, event_id, b"")
    assert await node.client.download(empty["id"], tmp_path / "empty") == 0
    assert (tmp_path / "empty").read_bytes() == b""


@pytest_twisted.ensureDeferred
async def test_a_failed_download_leaves_the_target_alone(node, tmp_path):
    (event_id,) = add_events(node, "501", [("meteor", T0, {})])
    record = await attach(node, event_id, CONTENT)
    target = tmp_path / "trace.bin"
    target.write_bytes(b"keep me")

    with pytest.raises(ClientError) as caught:
        await node.client.download(str(uuid.uuid4()), target)
    assert caught.value.status == 404

    # The stored content changed under the node: it no longer matches the SHA-256 (the ETag).
    with open(node.files.path(record["sha256"]), "r+b") as stored:
        stored.write(b"X")
    with pytest.raises(ClientError, match="does not match its SHA-256"):
        await node.client.download(record["id"], target)
    assert target.read_bytes() == b"keep me"
    assert os.listdir(tmp_path) != [] and [n for n in os.listdir(tmp_path) if n.endswith(".part")] == []


@pytest_twisted.ensureDeferred
async def test_stations(node):
    add_events(node, "501", [("CIC", T0 + 5, {})])
    response, body = await call(node.stub, "POST", "http://n/api/v1/admin/stations/501/status",
                                headers={"Authorization": f"Bearer {node.admin_key}"},
                                json={"valid_from": "2024-01-01T00:00:00Z", "instrument": "v1",
                                      "location": {"lat": 52.35, "lon": 4.95, "alt": 56.0}})
    assert response.code == 201, body
    listed = await node.client.stations()
    assert [(s["id"], s["status"] and s["status"]["instrument"]) for s in listed] == [("501", "v1"), ("502", None)]
    station = await node.client.station("501")
    assert station["counts"]["events"] == 1 and station["history"][0]["instrument"] == "v1"
    with pytest.raises(ClientError) as caught:
        await node.client.station("999")
    assert caught.value.status == 404
    with pytest.raises(ClientError) as caught:
        await node.client.station("501/x")  # one path segment, whatever it holds
    assert caught.value.status == 404
    assert node.http.requests[-1][1] == "/api/v1/stations/501%2Fx"


# The command line


@pytest.fixture
def run_cli(node, monkeypatch):
    """Run stationd-client with its Client talking to the node through the stub."""
    monkeypatch.setattr(cli, "Client", lambda url, api_key, *args, **kwargs: Client(
        url, api_key, http_client=node.http, reactor=reactor))

    async def run(*argv):
        await cli.execute(cli.parser().parse_args(["--url", "http://n", *argv]), reactor)

    return run


@pytest_twisted.ensureDeferred
async def test_cli_query_json_lines(node, run_cli, capsys):
    ids = add_events(node, "501", [("CIC", T0 + i, {"ph": i}) for i in range(10)])
    add_events(node, "502", [("CIC", T0 + 100, {"ph": 100})])
    await run_cli("query", "--json", "--station", "501", "--field", "ph.ge=2", "--limit", "5", "--page-size", "2",
                  "--order", "asc")
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 5
    events = [json.loads(line) for line in lines]
    assert [e["id"] for e in events] == ids[2:7]
    assert events[0]["data"] == {"ph": 2} and events[0]["station"] == "501"
    assert node.http.sent("limit") == [["2"], ["2"], ["1"]]
    assert node.http.sent("field.ph.ge") == [["2"]] * 3 and node.http.sent("order") == [["asc"]] * 3
    assert err == ""

    await run_cli("query", "--json", "--limit", "0", "--page-size", "3")  # 0: all
    assert len(capsys.readouterr().out.splitlines()) == 11


@pytest_twisted.ensureDeferred
async def test_cli_query_table(node, run_cli, capsys):
    (good,) = add_events(node, "501", [("CIC", T0 + 123456789, {"ph": 7, "note": "x" * 200})])
    (bad,) = add_events(node, "502", [("WTR", T0, {"t": 1}, "before min_event_time")])
    await run_cli("query", "--quarantined", "any")
    header, first, second = capsys.readouterr().out.splitlines()
    assert header.split() == ["TIME", "STATION", "TYPE", "ID", "DATA"]
    assert first.split()[:4] == ["2024-05-01T12:00:00.123456789Z", "501", "CIC", good]
    assert '{"ph":7,"note":"xxx' in first and first.endswith("...") and len(first) < 200
    assert second.split()[:5] == ["2024-05-01T12:00:00.000000000Z", "502", "WTR", bad, '{"t":1}']
    assert second.endswith("[quarantined: before min_event_time]")
    await run_cli("query", "--limit", "1", "--quarantined", "any")
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 2 and err == "(stopped at --limit 1)\n"


@pytest_twisted.ensureDeferred
async def test_cli_errors(node, run_cli, capsys):
    with pytest.raises(SystemExit) as caught:
        await run_cli("query", "--after", "yesterday")
    assert caught.value.code == 1
    assert capsys.readouterr().err.startswith("stationd-client: HTTP 400: after: ")
    with pytest.raises(SystemExit) as caught:
        await run_cli("event", str(uuid.uuid4()))
    assert caught.value.code == 1 and "stationd-client: HTTP 404: no event" in capsys.readouterr().err
    for argv in (["query", "--field", "ph=3"], ["query", "--limit", "-1"], ["query", "--page-size", "10001"],
                 ["files", "--meta", "cam.ne=1"], ["query", "--quarantined", "maybe"]):
        with pytest.raises(SystemExit) as caught:
            cli.parser().parse_args(argv)
        assert caught.value.code == 2, argv  # argparse's usage error


@pytest_twisted.ensureDeferred
async def test_cli_files_event_download_stations(node, run_cli, capsys, tmp_path, monkeypatch):
    (event_id,) = add_events(node, "501", [("meteor", T0, {"brightness": 3.5})])
    record = await attach(node, event_id, CONTENT, name="../nights/sky.png", mime_type="image/png",
                          semantic_type="meteor_image", meta=json.dumps({"cam": 1}))
    await run_cli("files", "--json", "--semantic-type", "meteor_image", "--meta", "cam.eq=1")
    assert [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()] == [record["id"]]
    await run_cli("files", "--mime-type", "video/mp4")
    assert capsys.readouterr().out.splitlines() == ["TIME  STATION  SEMANTIC TYPE  MIME TYPE  SIZE  ID  NAME"]

    await run_cli("event", event_id)
    out = capsys.readouterr().out
    assert f"id:          {event_id}" in out and '"brightness": 3.5' in out and record["id"] in out
    await run_cli("event", "--json", event_id)
    assert json.loads(capsys.readouterr().out)["files"][0]["id"] == record["id"]

    monkeypatch.chdir(tmp_path)
    await run_cli("download", record["id"])  # the record's name, without its directories
    assert (tmp_path / "sky.png").read_bytes() == CONTENT
    assert capsys.readouterr().out == f"sky.png: {len(CONTENT)} bytes\n"
    await run_cli("download", record["id"], "-o", "copy.png")
    assert (tmp_path / "copy.png").read_bytes() == CONTENT
    (tmp_path / "into").mkdir()
    await run_cli("download", record["id"], "-o", "into")
    assert (tmp_path / "into" / "sky.png").read_bytes() == CONTENT
    with pytest.raises(SystemExit):
        await run_cli("download", record["id"], "-o", "missing/dir/x.png")
    assert capsys.readouterr().err.startswith("stationd-client: cannot write missing/dir/x.png: ")

    await run_cli("stations", "--json")
    assert [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()] == ["501", "502"]
    await run_cli("stations")
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["ID", "501", "502"]
    await run_cli("station", "501")
    out = capsys.readouterr().out
    assert "events:" in out and "1" in out.split("events:")[1].split("\n")[0]
    assert "quarantined:" in out and "first event:" in out


@pytest_twisted.ensureDeferred
async def test_cli_maps_options_to_client_arguments(capsys):
    calls = []

    class Fake:
        async def iter_files(self, **kwargs):
            calls.append(kwargs)
            yield {"time": "t", "station": "501", "semantic_type": None, "mime_type": "a/b", "size": 3,
                   "id": "f1", "name": "n"}

    args = cli.parser().parse_args(["files", "--station", "1", "--station", "2", "--mime-type", "a/b",
                                    "--after", "2024-01-01T00:00:00Z", "--before", "5", "--meta", "x.lt=3",
                                    "--limit", "7", "--page-size", "3", "--order", "asc"])
    await args.function(Fake(), args)
    assert calls == [{"station": ["1", "2"], "semantic_type": [], "mime_type": ["a/b"],
                      "after": "2024-01-01T00:00:00Z", "before": "5", "meta": ["x.lt=3"], "order": "asc",
                      "page_size": 3, "limit": 7}]
    assert capsys.readouterr().out.splitlines()[1].split() == ["t", "501", "-", "a/b", "3", "f1", "n"]


@pytest.mark.parametrize("argv, expected", [(["--json", "stations"], True), (["stations", "--json"], True),
                                             (["stations"], False), (["--json", "query"], True)])
def test_json_is_taken_before_or_after_the_command(argv, expected):
    from stationd.cli import parser

    assert parser().parse_args(argv).json is expected


@pytest.mark.parametrize("program", ["stationd-client", "stationd-admin"])
def test_both_commands_say_their_version(program):
    import subprocess
    import sys
    from pathlib import Path

    out = subprocess.run([str(Path(sys.executable).parent / program), "--version"], capture_output=True, text=True,
                         timeout=60)
    assert (out.returncode, out.stdout.strip()) == (0, f"{program} 0.1.0")


# The progress line (issue 19): on stderr when it is a terminal, and not with --quiet


class Terminal:
    """stderr as a terminal: what is written, kept; isatty() true."""

    def __init__(self):
        self.written = []

    def write(self, text):
        self.written.append(text)

    def flush(self):
        pass

    def isatty(self):
        return True

    def text(self):
        return "".join(self.written)

    def progress(self):
        """The progress lines drawn, without \\r and clear-to-end-of-line; the others left out."""
        return [part.replace("\x1b[K", "").rstrip("\n") for part in self.text().split("\r")
                if part.replace("\x1b[K", "").strip()]


def on_terminal(monkeypatch):
    """sys.stderr as a Terminal, set in the test itself (capsys sets its own after the fixtures)."""
    stream = Terminal()
    monkeypatch.setattr("sys.stderr", stream)
    return stream


@pytest_twisted.ensureDeferred
async def test_cli_download_shows_its_progress_on_a_terminal(node, run_cli, capsys, tmp_path, monkeypatch):
    terminal = on_terminal(monkeypatch)
    (event_id,) = add_events(node, "501", [("meteor", T0, {})])
    record = await attach(node, event_id, CONTENT, name="sky.png")
    monkeypatch.chdir(tmp_path)
    await run_cli("download", record["id"])
    assert capsys.readouterr().out == f"sky.png: {len(CONTENT)} bytes\n"  # the result as ever
    assert terminal.progress()[-1].startswith("sky.png  10.2 kB / 10.2 kB  100%  ")
    assert terminal.text().endswith("\n")

    terminal.written.clear()
    await run_cli("download", record["id"], "-o", "copy.png")  # the total from the record
    assert capsys.readouterr().out == f"copy.png: {len(CONTENT)} bytes\n"
    assert terminal.progress()[-1].startswith("copy.png  10.2 kB / 10.2 kB  100%  ")
    assert (tmp_path / "copy.png").read_bytes() == CONTENT

    for argv in (["--quiet", "download", record["id"]], ["download", record["id"], "--quiet"],
                 ["-q", "download", record["id"], "-o", "copy.png"]):
        terminal.written.clear()
        requests = len(node.http.requests)
        await run_cli(*argv)
        assert terminal.text() == "", argv
        assert capsys.readouterr().out.endswith(f".png: {len(CONTENT)} bytes\n")
        assert len(node.http.requests) - requests == (1 if "-o" in argv else 2)  # no request for the total


@pytest_twisted.ensureDeferred
async def test_cli_download_off_a_terminal_writes_only_the_result(node, run_cli, capsys, tmp_path, monkeypatch):
    (event_id,) = add_events(node, "501", [("meteor", T0, {})])
    record = await attach(node, event_id, CONTENT, name="sky.png")
    monkeypatch.chdir(tmp_path)
    await run_cli("download", record["id"])
    assert capsys.readouterr() == (f"sky.png: {len(CONTENT)} bytes\n", "")


@pytest_twisted.ensureDeferred
async def test_cli_query_output_counts_the_events_on_a_terminal(node, run_cli, capsys, tmp_path, monkeypatch):
    terminal = on_terminal(monkeypatch)
    ids = add_events(node, "501", [("CIC", T0 + i, {"ph": i}) for i in range(7)])
    target = tmp_path / "events.jsonl"
    await run_cli("query", "--json", "--limit", "0", "--page-size", "3", "--order", "asc", "-o", str(target))
    assert [json.loads(line)["id"] for line in target.read_text().splitlines()] == ids
    assert capsys.readouterr().out == json.dumps({"file": str(target), "events": 7}, separators=(",", ":")) + "\n"
    assert terminal.progress()[-1].startswith("7 events  ") and "events/s" in terminal.progress()[-1]
    assert [name for name in os.listdir(tmp_path) if name.endswith(".part")] == []

    terminal.written.clear()
    await run_cli("query", "--order", "asc", "--output", str(target), "--quiet")  # a table, quietly
    assert capsys.readouterr().out == f"{target}: 7 events\n"
    assert target.read_text().splitlines()[0].split() == ["TIME", "STATION", "TYPE", "ID", "DATA"]
    assert terminal.text() == ""


@pytest_twisted.ensureDeferred
async def test_cli_query_counts_only_when_its_output_is_not_the_terminal(node, run_cli, capsys, monkeypatch):
    terminal = on_terminal(monkeypatch)
    add_events(node, "501", [("CIC", T0 + i, {"ph": i}) for i in range(3)])
    await run_cli("query", "--json")  # stdout captured: as redirected to a file
    assert len(capsys.readouterr().out.splitlines()) == 3
    assert terminal.progress()[-1].startswith("3 events  ")

    terminal.written.clear()
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)  # both on the terminal: the lines are the progress
    await run_cli("query", "--json")
    assert len(capsys.readouterr().out.splitlines()) == 3 and terminal.text() == ""


@pytest_twisted.ensureDeferred
async def test_cli_query_output_that_cannot_be_written(node, run_cli, capsys, tmp_path):
    with pytest.raises(SystemExit):
        await run_cli("query", "-o", str(tmp_path / "missing" / "events.txt"))
    assert capsys.readouterr().err.startswith(f"stationd-client: cannot write {tmp_path / 'missing' / 'events.txt'}")


@pytest_twisted.ensureDeferred
async def test_cli_upload_and_sync_count_files_on_a_terminal(node, run_cli, capsys, tmp_path, monkeypatch):
    terminal = on_terminal(monkeypatch)
    box = tmp_path / "box"
    box.mkdir()
    for i in range(3):
        (box / f"{i}.json").write_text(json.dumps({"type": "WTR", "time_ns": T0 + i, "data": {"t": i}}))
    files = sorted(str(path) for path in box.iterdir())
    await run_cli("--api-key", node.admin_key, "upload", "--station", "501", *files)
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{path}: 1 events (1 accepted, 0 duplicates, 0 quarantined)" for path in files]
    assert terminal.progress()[-1].startswith("upload  3/3 files  100%  ")
    # Each result line starts at the left: the progress line was erased before it.
    assert terminal.text().count("\r\x1b[K") == 3

    terminal.written.clear()
    await run_cli("--api-key", node.admin_key, "sync", str(box), "--station", "501")
    assert capsys.readouterr().out.splitlines()[-1].startswith("sent 3 file(s)")
    assert terminal.progress()[-1].startswith("sync  3/3 files  100%  ")

    terminal.written.clear()
    await run_cli("--api-key", node.admin_key, "sync", str(box), "--station", "501", "--quiet")
    assert capsys.readouterr().out.splitlines()[-1].startswith("sent 0 file(s)") and terminal.text() == ""
    await run_cli("--api-key", node.admin_key, "--quiet", "upload", "--station", "501", files[0])
    assert capsys.readouterr().out.startswith(files[0]) and terminal.text() == ""


@pytest.mark.parametrize("argv, expected", [(["--quiet", "download", "x"], True), (["download", "x", "-q"], True),
                                             (["download", "x"], False), (["-q", "sync", "d", "--station", "1"], True),
                                             (["upload", "--station", "1", "f", "--quiet"], True),
                                             (["query", "--quiet"], True), (["stations"], False)])
def test_quiet_is_taken_before_or_after_the_command(argv, expected):
    assert cli.parser().parse_args(argv).quiet is expected

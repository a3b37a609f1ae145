"""Node-to-node import: idempotent batches, file-content negotiation, checked contents."""

import hashlib
import json
import uuid

import pytest_twisted
from sqlalchemy import select

from stationd.store import query, stations, users
from stationd.store.events import digest
from stationd.store.schema import events

from conftest import call, make_node, serve

CONTENT = b"a camera frame" * 1000
SHA = hashlib.sha256(CONTENT).hexdigest()


@pytest_twisted.async_yield_fixture()
async def node(tmp_path, database_url):
    node = make_node(tmp_path, database_url, "[node]\nname = central\n")
    node.store.call(stations.add_station, "501", None)
    node.importer_key = node.store.call(users.add_user, "regional", "importer")[1]
    node.reader_key = node.store.call(users.add_user, "obs", "reader")[1]
    yield serve(node)
    await node.service.stopService()


def exported(n=3, station="501", with_file=False, origin="camera-1"):
    events = []
    for i in range(n):
        event = {"id": str(uuid.uuid4()), "station": station, "type": "meteor", "time_ns": 1714564800 * 10**9 + i,
                 "received_ns": 1714564801 * 10**9, "data": {"brightness": i}, "origin": origin,
                 "quarantined": False, "quarantine_reason": None, "files": []}
        if with_file:
            event["files"] = [{"id": str(uuid.uuid4()), "name": f"frame{i}.png", "mime_type": "image/png",
                               "semantic_type": "meteor_image", "size": len(CONTENT), "sha256": SHA,
                               "meta": {"cam": i}, "time_ns": event["time_ns"], "created_ns": 5, "origin": origin}]
        events.append(event)
    return events


async def post(node, events, key=None, origin="regional"):
    response, body = await call(node.stub, "POST", "http://n/api/v1/import", json={"origin": origin, "events": events},
                                headers={"Authorization": f"Bearer {key or node.importer_key}"})
    return response, json.loads(body)


async def put(node, file_id, content, key=None):
    response, body = await call(node.stub, "PUT", f"http://n/api/v1/import/files/{file_id}", data=content,
                                headers={"Authorization": f"Bearer {key or node.importer_key}"})
    return response, json.loads(body)


@pytest_twisted.ensureDeferred
async def test_a_replayed_batch_lands_once_with_its_origin(node):
    batch = exported(3)
    response, answer = await post(node, batch)
    assert response.code == 200
    assert answer == {"accepted": 3, "duplicates": 0, "stations_added": 0, "need": [], "node": "central",
                      "node_id": node.node_id}
    response, answer = await post(node, batch)
    assert answer == {"accepted": 0, "duplicates": 3, "stations_added": 0, "need": [], "node": "central",
                      "node_id": node.node_id}
    _, body = await call(node.stub, "GET", "http://n/api/v1/events?order=asc")
    stored = json.loads(body)["events"]
    assert [(e["id"], e["origin"], e["data"], e["time_ns"]) for e in stored] == [
        (b["id"], "camera-1", b["data"], b["time_ns"]) for b in batch]


@pytest_twisted.ensureDeferred
async def test_a_sender_with_this_nodes_own_id_is_refused_and_nothing_stored(node):
    """A node exporting to itself, or the copy of its store on another machine, is told why."""
    response, answer = await post(node, exported(2), origin=node.node_id)
    assert response.code == 409 and answer["error"]["code"] == "same_node_id"
    assert "new-node-id" in answer["error"]["message"]
    _, body = await call(node.stub, "GET", "http://n/api/v1/events")
    assert json.loads(body)["events"] == []


@pytest_twisted.ensureDeferred
async def test_an_unknown_station_is_created_without_a_password(node):
    _, answer = await post(node, exported(2, station="meteor-cam-7"))
    assert answer["stations_added"] == 1
    station = node.store.call(stations.get_station, "meteor-cam-7")
    assert station is not None and station["password_hash"] is None


@pytest_twisted.ensureDeferred
async def test_file_contents_are_asked_for_once_and_checked(node):
    batch = exported(2, with_file=True)
    file_ids = [e["files"][0]["id"] for e in batch]
    _, answer = await post(node, batch)
    assert answer["need"] == sorted(file_ids)
    response, error = await put(node, file_ids[0], CONTENT[:-1] + b"X")
    assert response.code == 422 and error["error"]["code"] == "content_mismatch"
    assert not node.files.has(SHA)
    response, error = await put(node, file_ids[0], CONTENT + b"more")
    assert response.code == 422
    response, answer = await put(node, file_ids[0], CONTENT)
    assert response.code == 200 and answer["sha256"] == SHA
    assert open(node.files.path(SHA), "rb").read() == CONTENT
    _, answer = await post(node, batch)  # both records share one content: nothing more to send
    assert answer["need"] == [] and answer["duplicates"] == 2
    event = node.store.call(query.get_event, batch[1]["id"])
    assert [(f["id"], f["meta"], f["origin"]) for f in event["files"]] == [(file_ids[1], {"cam": 1}, "camera-1")]
    response, _ = await put(node, str(uuid.uuid4()), CONTENT)
    assert response.code == 404


@pytest_twisted.ensureDeferred
async def test_bad_batches_store_nothing_and_need_the_importer_role(node):
    batch = exported(5, with_file=True)
    batch[1]["data"] = [1]
    del batch[2]["station"]
    batch[3]["data"] = {"note": ["a\x00b"]}
    batch[4]["files"][0]["meta"] = {"a\x00": 1}
    response, error = await post(node, batch)
    assert response.code == 422
    details = error["error"]["details"]
    assert [d["index"] for d in details] == [1, 2, 3, 4]
    assert "NUL character (U+0000)" in details[2]["message"]
    assert details[3]["message"].startswith("file meta holds a NUL character")
    assert node.store.call(query.find_events, query.Query())[0] == []
    response, _ = await post(node, [])
    assert response.code == 422
    response, _ = await post(node, exported(1), key=node.reader_key)
    assert response.code == 403
    response, _ = await put(node, str(uuid.uuid4()), b"x", key=node.reader_key)
    assert response.code == 403


@pytest_twisted.ensureDeferred
async def test_the_origin_defaults_to_the_sending_node(node):
    batch = exported(1)
    del batch[0]["origin"]
    await post(node, batch, origin="station-node-3")
    stored, _ = node.store.call(query.find_events, query.Query())
    assert stored[0]["origin"] == "station-node-3"


@pytest_twisted.ensureDeferred
async def test_integers_beyond_64_bits_are_stored_exactly(node):
    """The import body is decoded with orjson, which reads such integers as floats: not these."""
    batch = exported(2)
    batch[0]["data"] = {"big": 123456789012345678901234567890, "low": -9223372036854775809,
                        "edge": 18446744073709551615, "f": 1.5}
    batch[1]["data"] = {"n": 18446744073709551616}
    response, answer = await post(node, batch)
    assert response.code == 200 and answer["accepted"] == 2
    for event in batch:
        _, body = await call(node.stub, "GET", f"http://n/api/v1/events/{event['id']}")
        assert json.loads(body)["data"] == event["data"]
        stored = node.store.call(lambda conn, i=event["id"]: conn.execute(
            select(events.c.digest).where(events.c.id == i)).scalar())
        assert stored == digest(event["data"])  # of the exact value: a float would give another


@pytest_twisted.ensureDeferred
async def test_a_gzip_batch_is_imported_and_one_the_store_cannot_take_is_503(node, monkeypatch):
    import gzip

    from sqlalchemy.exc import OperationalError
    from twisted.internet import defer

    batch = exported(4)
    headers = {"Authorization": f"Bearer {node.importer_key}", "Content-Type": "application/json",
               "Content-Encoding": "gzip"}
    body = gzip.compress(json.dumps({"origin": "regional", "events": batch}).encode())
    response, answer = await call(node.stub, "POST", "http://n/api/v1/import", data=body, headers=headers)
    assert response.code == 200 and json.loads(answer)["accepted"] == 4
    # An import is not spooled: the sender keeps its batch and is told to come back.
    monkeypatch.setattr(node.store, "run", lambda *a, **k: defer.fail(
        OperationalError("INSERT", {}, Exception("database is locked"))))
    response, answer = await call(node.stub, "POST", "http://n/api/v1/import", data=gzip.compress(
        json.dumps({"origin": "regional", "events": exported(2)}).encode()), headers=headers)
    assert response.code == 503 and response.headers.getRawHeaders("retry-after") == ["10"]
    assert node.spool.batches == 0

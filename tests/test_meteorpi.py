"""The meteorpi component: MeteorPi v2's query API and importv2, driven as its client and exporter drive them
(tests/meteorpi_client.py, from ../shared/METEORPI.md), on both stores."""

import hashlib
import json
from urllib.parse import unquote

import pytest
import pytest_twisted
from sqlalchemy import func, select

from stationd import meteorpi
from stationd.store import files as store_files
from stationd.store import stations, users
from stationd.store.schema import events, meteorpi_uploads

from conftest import add_events, call, make_node, serve, settle
from meteorpi_client import Client, Exporter, basic, encode_search, file_record, metadata, multipart, observation

BASE = "http://node/api"
CAMERA = "obs0"
T0 = 1483228800.25  # 2017-01-01T00:00:00.25Z
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40 + b"\r\n--not-a-boundary\r\n"


@pytest_twisted.async_yield_fixture()
async def node(tmp_path, database_url):
    node = make_node(tmp_path, database_url, "[web]\ncomponents = all meteorpi\nauth_failures = 5\n"
                                             "[ingest]\nmin_event_time = 2010-01-01T00:00:00Z\n")
    node.store.call(users.add_user, "camera", "importer")
    node.store.call(users.set_password, "camera", "camera-secret")
    node.store.call(users.add_user, "viewer", "reader")
    node.store.call(users.set_password, "viewer", "viewer-secret")
    serve(node)
    node.client = Client(node.stub, BASE, lambda d: settle(node.stub, d))
    node.exporter = Exporter(node.stub, BASE + "/importv2", "camera", "camera-secret", lambda d: settle(node.stub, d))
    yield node
    await node.service.stopService()


async def get(node, path, headers=None):
    response, body = await call(node.stub, "GET", BASE + path, headers=headers or {})
    return response, body


def header(response, name):
    values = response.headers.getRawHeaders(name.encode("ascii"))
    return values[0] if values else None


# -- the model ----------------------------------------------------------------


@pytest.mark.parametrize("search", [
    {"obstory_ids": ["obs0"], "time_min": 1.5, "time_max": 2e9, "limit": 10, "skip": 0, "meta": []},
    {"observation_type": "a b+c/d%e", "meta": [{"key": "meteorpi:x", "type": "string_equals", "value": "é ü +"}]},
    {"mime_type": "image/png", "semantic_type": "meteorpi:timelapse/frame/bgrdSub/lensCorr"},
])
def test_a_search_the_clients_encode_decodes_to_itself(search):
    """quote_plus twice (the Python client) and encodeURIComponent twice (the JS client): the server's path
    decoding undoes the first, decode_search the second; spaces, pluses, slashes and % survive both."""
    from urllib.parse import quote

    python_client = unquote(encode_search(search))  # (what the node's router hands the route)
    js_client = unquote(quote(quote(json.dumps(search), safe=""), safe=""))
    assert meteorpi.decode_search(python_client) == search
    assert meteorpi.decode_search(js_client) == search


def test_meta_lists_and_data_objects_map_both_ways():
    items = [{"type": "number", "key": "meteorpi:duration", "value": 1.5},
             {"type": "string", "key": "meteorpi:path", "value": "a b"},
             {"type": "number", "key": "n", "value": 1}, {"type": "number", "key": "n", "value": 2}]
    data = meteorpi.meta_dict(items)
    assert data == {"meteorpi:duration": 1.5, "meteorpi:path": "a b", "n": [1, 2]}
    assert meteorpi.meta_list(data) == items
    assert meteorpi.meta_list({"flag": True, "deep": {"a": [1]}}) == [
        {"type": "string", "key": "flag", "value": "true"}, {"type": "string", "key": "deep", "value": '{"a":[1]}'}]
    for bad in ([{"type": "date", "key": "k", "value": 1}], [{"type": "number", "key": "k", "value": "1"}], {}):
        with pytest.raises(meteorpi.ModelError):
            meteorpi.meta_dict(bad)


def test_bins_end_at_the_first_that_reaches_utc_max_and_number_at_most_250():
    assert meteorpi.bins(0, 25, 10) == (0, 10 * 10**9, 3)  # [0, 10) [10, 20) [20, 30)
    assert meteorpi.bins(0, 20, 10) == (0, 10 * 10**9, 2)
    assert meteorpi.bins(5, 5, 10) == (5 * 10**9, 10 * 10**9, 1)  # (one bin, even when it is empty)
    assert meteorpi.bins(0, 10**6, 1).n == 250
    with pytest.raises(meteorpi.ModelError):
        meteorpi.bins(0, 10, 0)


# -- the component ------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_the_component_is_off_by_default(tmp_path, database_url):
    node = serve(make_node(tmp_path, database_url))
    try:
        from stationd.web import make_site

        site = make_site(node.routes, node.config["web"], node.service.reactor)
        from treq.testing import StubTreq

        stub = StubTreq(site.resource)
        response, body = await call(stub, "GET", "http://node/api/obstories")
        assert response.code == 404
        assert "meteorpi" not in node.config["web"]["components"]
    finally:
        await node.service.stopService()


async def export_camera(node, n_obs=3, files_of=(0,), start=T0):
    """A camera's export as MeteorPi's queue orders it: metadata, then observations, then files."""
    exporter = node.exporter
    assert await exporter.export("metadata", metadata(CAMERA, "m1", "lens", "Fujinon", start - 1000)) == "complete"
    assert await exporter.export("metadata", metadata(CAMERA, "m2", "lens", "Sigma", start + 50)) == "complete"
    assert await exporter.export("metadata", metadata(CAMERA, "m3", "sensor", "WAT-902H", start - 999)) == "complete"
    obs = [observation(CAMERA, f"20170101_0000{i:02d}_obs{i}", start + i * 10,
                       meta=[{"type": "number", "key": "meteorpi:duration", "value": i + 0.5},
                             {"type": "string", "key": "meteorpi:path", "value": f"p {i}"}])
           for i in range(n_obs)]
    for o in obs:
        assert await exporter.export("observation", o) == "complete"
    contents = {}
    for i in files_of:
        content = PNG + bytes([i])
        record = file_record(CAMERA, f"20170101_0000{i:02d}_file{i}", obs[i]["obs_id"], obs[i]["obs_time"] + 1,
                             content, meta=[{"type": "number", "key": "meteorpi:skyClarity", "value": 40 + i}])
        assert await exporter.export("file", record, content) == "complete"
        contents[record["repository_fname"]] = (record, content)
    return obs, contents


@pytest_twisted.ensureDeferred
async def test_an_exporter_session_lands_once_even_when_a_reply_is_lost(node):
    obs, contents = await export_camera(node)
    # The file went: need_file_data, the upload, then complete.
    states = [state for url, state in node.exporter.posts if url.endswith("/importv2")]
    assert states[-2:] == ["need_file_data", "complete"]
    assert any("/importv2/data/20170101_000000_file0/" in url and code == 200 for url, code in node.exporter.posts)
    # The answers were lost: the camera sends everything again, and nothing is stored twice.
    (fname, (record, content)), = contents.items()
    assert await node.exporter.export("observation", obs[0]) == "complete"
    assert await node.exporter.export("file", record, content) == "complete"
    assert await node.exporter.export("metadata", metadata(CAMERA, "m1", "lens", "Fujinon", T0 - 1000)) == "complete"
    assert node.store.call(lambda c: c.execute(select(func.count()).select_from(events)).scalar()) == 3
    # Read back through stationd's own API: observation -> event, meta -> data, files -> the event's files.
    response, body = await call(node.stub, "GET", "http://node/api/v1/events?station=obs0&order=asc")
    found = json.loads(body)["events"]
    assert [(e["type"], e["time_ns"], e["data"]) for e in found] == [
        ("movingObject", meteorpi.to_ns(T0 + i * 10), {"meteorpi:duration": i + 0.5, "meteorpi:path": f"p {i}"})
        for i in range(3)]
    assert all(e["origin"] == "meteorpi:obs0" for e in found)
    assert found[0]["id"] == meteorpi.local_id("observation", obs[0]["obs_id"])
    assert len(found[0]["files"]) == 1 and found[1]["files"] == []
    response, body = await call(node.stub, "GET", f"http://node/api/v1/files/{found[0]['files'][0]}")
    stored = json.loads(body)
    assert (stored["semantic_type"], stored["mime_type"], stored["size"], stored["meta"]) == (
        "meteorpi:triggers/event", "image/png", len(content), {"meteorpi:skyClarity": 40})
    assert stored["sha256"] == hashlib.sha256(content).hexdigest()
    # ... and through MeteorPi's, under the camera's own ids.
    result = await node.client.search_observations({"obstory_ids": [CAMERA], "limit": 10})
    assert result["count"] == 3
    first = result["events"][-1]
    assert first == {"obstory_id": CAMERA, "id": obs[0]["obs_id"], "obstory_name": "Camera",
                     "obs_id": obs[0]["obs_id"], "obs_time": T0, "obs_type": "movingObject",
                     "files": [{"id": fname, "obstory_id": CAMERA, "obstory_name": "Camera",
                                "observation_id": obs[0]["obs_id"], "repository_fname": fname,
                                "file_time": T0 + 1, "file_size": len(content), "file_name": record["file_name"],
                                "mime_type": "image/png", "semantic_type": "meteorpi:triggers/event",
                                "file_md5": record["file_md5"],
                                "meta": [{"type": "number", "key": "meteorpi:skyClarity", "value": 40}]}],
                     "meta": obs[0]["meta"]}
    response, body = await node.client.get_content(fname, "frame.png")
    assert (response.code, body) == (200, content)
    assert header(response, "Content-Type") == b"image/png"
    assert header(response, "Content-Security-Policy") == b"default-src 'none'; sandbox"


@pytest_twisted.ensureDeferred
async def test_observatories_metadata_and_status_dicts(node):
    await export_camera(node)
    observatories = await node.client.list_observatories()
    assert observatories == {CAMERA: {"uid": 1, "publicId": CAMERA, "name": "Camera", "latitude": 52.2,
                                      "longitude": 0.12, "firstSeen": T0 - 1000, "lastSeen": T0 + 50}}
    assert await node.client.get_observatory_status(CAMERA, T0) == {
        "latitude": 52.2, "longitude": 0.12, "lens": "Fujinon", "sensor": "WAT-902H"}
    assert (await node.client.get_observatory_status(CAMERA))["lens"] == "Sigma"
    assert await node.client.get_observatory_status(CAMERA, T0 - 1000) == {"latitude": 52.2, "longitude": 0.12}
    response, body = await get(node, f"/obstory/{CAMERA}/metadata")
    assert json.loads(body) == {"status": [[0.0, "latitude", 52.2], [0.0, "longitude", 0.12],
                                           [T0 - 1000, "lens", "Fujinon"], [T0 - 999, "sensor", "WAT-902H"],
                                           [T0 + 50, "lens", "Sigma"]]}
    node.store.call(users.add_user, "root", "admin")
    node.store.call(users.set_password, "root", "root-secret")
    item = json.dumps({"key": "lens", "value": "Zeiss", "time": T0 + 60}).encode()
    response, body = await call(node.stub, "POST", f"{BASE}/obstory/{CAMERA}/status", data=item,
                                headers=basic("camera", "camera-secret"))
    assert response.code == 403  # (MeteorPi's obstory_admin: stationd's admin)
    response, body = await call(node.stub, "POST", f"{BASE}/obstory/{CAMERA}/status", data=item,
                                headers=basic("root", "root-secret"))
    assert json.loads(body)["status"]["lens"] == "Zeiss"
    assert (await node.client.get_observatory_status(CAMERA, T0 + 55))["lens"] == "Sigma"
    assert (await node.client.get_observatory_status(CAMERA))["lens"] == "Zeiss"
    response, body = await get(node, "/obstory/nowhere/statusdict")
    assert response.code == 404 and json.loads(body) == {"error": 'No such observatory "nowhere".'}
    assert await node.client.get_observatory_status("nowhere") is None


@pytest_twisted.ensureDeferred
async def test_searches_filter_page_and_count_as_the_originals(node):
    await export_camera(node, n_obs=5, files_of=(0, 3))
    search = node.client.search_observations
    assert [o["obs_time"] for o in (await search({"time_min": T0 + 10, "time_max": T0 + 40}))["events"]] == [
        T0 + 30, T0 + 20]  # strict, newest first
    assert (await search({"observation_type": "nothing"}))["count"] == 0
    page = await search({"limit": 2})
    assert (page["count"], [o["obs_time"] for o in page["events"]]) == (5, [T0 + 40, T0 + 30])  # full: exact
    page = await search({"limit": 2, "skip": 4})
    assert (page["count"], len(page["events"])) == (5, 1)  # short: skip + returned
    page = await search({"limit": 2, "skip": 9})
    assert (page["count"], page["events"]) == (5, [])  # empty past the start: exact
    assert (await search({"meta": [{"key": "meteorpi:duration", "type": "greater", "value": 3.5}]}))["count"] == 2
    assert (await search({"meta": [{"key": "meteorpi:path", "type": "string_equals", "value": "p 1"}]}))["count"] == 1
    assert (await search({"lat_min": 52, "lat_max": 53}))["count"] == 5
    assert (await search({"lat_min": 10, "lat_max": 20}))["count"] == 0
    assert (await search({"long_min": 0, "long_max": 1}))["count"] == 5
    assert (await search({"lat_max": 60, "long_min": 1}))["count"] == 0
    assert (await search({"observation_id": "20170101_000002_obs2"}))["events"][0]["obs_time"] == T0 + 20
    assert (await search({"exclude_imported": True}))["count"] == 0  # all came from the camera
    files = await node.client.search_files({"semantic_type": "meteorpi:triggers/event", "limit": 1})
    assert files["count"] == 2 and files["files"][0]["repository_fname"] == "20170101_000003_file3"
    files = await node.client.search_files({"observation_id": "20170101_000000_obs0"})
    assert [f["repository_fname"] for f in files["files"]] == ["20170101_000000_file0"]
    files = await node.client.search_files({"meta": [{"key": "meteorpi:skyClarity", "type": "less", "value": 41}]})
    assert files["count"] == 1
    response, body = await get(node, "/obs/" + encode_search({"limit": -1}))
    assert response.code == 400 and "limit" in json.loads(body)["error"]
    response, body = await get(node, "/obs/not-json")
    assert response.code == 400 and "error" in json.loads(body)
    # Fields a search has not are ignored (the originals' from_dict did); bounds beyond what the store
    # compares are the same as at its ends; numbers beyond a double are refused, not a 500.
    assert (await search({"time_max": 1e300, "camera_ids": ["x"], "limit": 2}))["count"] == 5
    response, body = await get(node, "/obs/" + encode_search({"lat_min": 10**400}))
    assert response.code == 400 and "lat_min" in json.loads(body)["error"]


@pytest_twisted.ensureDeferred
async def test_what_came_in_through_stationd_is_seen_by_meteorpi_clients(node):
    node.store.call(stations.add_station, "cam7", None, name="Roof camera")
    event_id, = add_events(node, "cam7", [("meteor", meteorpi.to_ns(T0), {"brightness": 3, "tags": ["a", "b"]})])
    node.files.put(__import__("io").BytesIO(PNG))
    node.store.call(store_files.attach_file, event_id, name="m.png", mime_type="image/png", size=len(PNG),
                    sha256=hashlib.sha256(PNG).hexdigest(), now_ns=1, origin="test-node", semantic_type="meteor_image")
    result = await node.client.search_observations({"obstory_ids": "cam7"})
    obs, = result["events"]
    assert (obs["obs_id"], obs["obstory_name"], obs["obs_type"], obs["obs_time"]) == (event_id, "Roof camera",
                                                                                      "meteor", T0)
    assert obs["meta"] == [{"type": "number", "key": "brightness", "value": 3},
                           {"type": "string", "key": "tags", "value": "a"},
                           {"type": "string", "key": "tags", "value": "b"}]
    record, = obs["files"]
    assert "file_md5" not in record and record["observation_id"] == event_id
    response, body = await node.client.get_content(record["repository_fname"], "m.png", (8, 11))
    assert (response.code, body) == (206, PNG[8:12])
    assert header(response, "Content-Range") == f"bytes 8-11/{len(PNG)}".encode()
    response, body = await node.client.get_content("nothing", "x.png")
    assert (response.code, json.loads(body)) == (404, {"message": "Entity not found", "entity_id": "nothing"})
    assert CAMERA not in await node.client.list_observatories()
    assert (await node.client.list_observatories())["cam7"]["latitude"] is None


@pytest_twisted.ensureDeferred
async def test_activity_and_sky_clarity(node):
    await export_camera(node, n_obs=4, files_of=())
    for i, (clarity, when) in enumerate(((10, T0 + 5), (30, T0 + 15), (80, T0 + 25), (1000, T0 + 10))):
        content = PNG + bytes([100 + i])  # (the last on a bin's edge: strictly inside neither)
        record = file_record(CAMERA, f"frame{i}", None, when, content,
                             semantic_type=meteorpi.SKY_CLARITY_TYPE,
                             meta=[{"type": "number", "key": meteorpi.SKY_CLARITY_KEY, "value": clarity}])
        assert await node.exporter.export("file", record, content) == "complete"
    response, body = await get(node, f"/activity/{CAMERA}/movingObject/{T0}/{T0 + 25}/10")
    assert json.loads(body) == {"activity": [1, 1, 1]}
    response, body = await get(node, f"/skyclarity/{CAMERA}/{T0}/{T0 + 20}/10")
    assert json.loads(body) == [10, 30]
    response, body = await get(node, f"/skyclarity/{CAMERA}/{T0 + 30}/{T0 + 40}/5")
    assert json.loads(body) == [0, 0]
    response, body = await get(node, f"/activity/{CAMERA}/movingObject/{T0}/{T0 + 25}/0")
    assert response.code == 400


# -- import: credentials, bad input, contents ----------------------------------


@pytest_twisted.ensureDeferred
async def test_the_importer_needs_a_user_of_role_importer_with_its_password(node):
    body = json.dumps({"type": "metadata", "metadata": metadata(CAMERA, "m1", "k", 1, T0)}).encode()

    async def post(headers):
        response, answer = await call(node.stub, "POST", BASE + "/importv2", data=body, headers=headers)
        return response, json.loads(answer)

    response, answer = await post({})
    assert response.code == 401 and answer == {"message": "No authorization header supplied"}
    assert header(response, "WWW-Authenticate").startswith(b"Basic ")
    response, answer = await post(basic("camera", "wrong"))
    assert response.code == 401 and "password" in answer["message"]
    response, answer = await post(basic("viewer", "viewer-secret"))
    assert response.code == 403 and "importer" in answer["message"]
    response, answer = await post(basic("camera", "camera-secret"))
    assert (response.code, answer) == (200, {"state": "complete"})
    response, answer = await call(node.stub, "GET", BASE + "/login", headers=basic("camera", "camera-secret"))
    assert json.loads(answer) == {"user": {"user_id": "camera", "roles": ["user", "import"]}}
    for _ in range(4):  # (5 failures a minute, the first above)
        await post(basic("camera", "guess"))
    response, answer = await post(basic("camera", "camera-secret"))
    assert response.code == 429 and header(response, "Retry-After")


@pytest_twisted.ensureDeferred
async def test_a_bad_record_is_refused_and_those_behind_it_are_taken(node):
    bad = observation(CAMERA, "20170101_000000_bad", T0, meta=[{"type": "date", "key": "k", "value": 5}])
    assert await node.exporter.export("observation", bad) == "failed"
    assert node.exporter.posts[-1][1] == 422
    response, body = await call(node.stub, "POST", BASE + "/importv2", data=b'{"type": "status", "status": {}}',
                                headers=basic("camera", "camera-secret"))
    assert response.code == 400 and json.loads(body)["state"] == "failed"
    good = observation(CAMERA, "20170101_000001_good", T0 + 1, meta=[{"type": "number", "key": "n", "value": 1}])
    good["obstory_name"] = ""  # (an empty optional text counts as not given)
    too_big = dict(good, meta=[{"type": "number", "key": "n", "value": 10**400}])
    assert await node.exporter.export("observation", too_big) == "failed"
    assert await node.exporter.export("observation", dict(good, obs_time=1e10)) == "failed"
    assert await node.exporter.export("observation", good) == "complete"
    # An observation whose observatory was never announced registers it (the originals answered 500).
    assert (await node.client.list_observatories())[CAMERA]["name"] == CAMERA
    # An implausible time is stored quarantined, not refused (as stationd's own ingest).
    assert await node.exporter.export("observation", observation(CAMERA, "19990101_000000_old", 9e8)) == "complete"
    response, body = await call(node.stub, "GET", "http://node/api/v1/events?quarantined=true")
    assert [e["quarantine_reason"] for e in json.loads(body)["events"]] == ["before min_event_time"]


@pytest_twisted.ensureDeferred
async def test_an_upload_with_the_wrong_md5_is_not_kept_and_the_record_waits_for_the_right_one(node):
    content = PNG
    record = file_record(CAMERA, "f1", None, T0, content)
    data, content_type = multipart(b"corrupted", "image/png")
    response, body = await call(node.stub, "POST", f"{BASE}/importv2/data/f1/{record['file_md5']}", data=data,
                                headers={**basic("camera", "camera-secret"), "Content-Type": content_type})
    assert response.code == 422 and json.loads(body)["state"] == "failed"
    assert node.store.call(lambda c: c.execute(select(func.count()).select_from(meteorpi_uploads)).scalar()) == 0
    assert not node.files.has(hashlib.sha256(b"corrupted").hexdigest())
    # The exporter reads no upload's answer: its record is refused once (a failure it backs off on),
    # not answered need_file_data at once, which would have it upload the same bytes without end.
    for status, state in ((422, "failed"), (200, "need_file_data")):
        response, body = await call(node.stub, "POST", BASE + "/importv2",
                                    data=json.dumps({"type": "file", "file": record}),
                                    headers=basic("camera", "camera-secret"))
        assert (response.code, json.loads(body)["state"]) == (status, state)
    assert json.loads(body) == {"state": "need_file_data", "file_id": "f1"}
    response, body = await call(node.stub, "POST", f"{BASE}/importv2/data/f1/{record['file_md5']}", data=b"x",
                                headers={**basic("camera", "camera-secret"), "Content-Type": "text/plain"})
    assert response.code == 415
    assert await node.exporter.export("file", record, content) == "complete"  # (a file of no observation)


@pytest_twisted.ensureDeferred
async def test_a_file_that_comes_before_its_observation_is_linked_once_it_arrives(node):
    record = file_record(CAMERA, "early", "20170101_000000_late", T0 + 1, PNG)
    assert await node.exporter.export("file", record, PNG) == "complete"
    assert await node.exporter.export("observation", observation(CAMERA, "20170101_000000_late", T0)) == "complete"
    obs, = (await node.client.search_observations({}))["events"]
    assert [f["repository_fname"] for f in obs["files"]] == ["early"]


# -- what every answer carries --------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_cors_jsonp_and_accept_ranges_as_the_originals(node):
    response, body = await get(node, "/obstories")
    assert header(response, "Access-Control-Allow-Origin") == b"*"
    assert header(response, "Accept-Ranges") == b"bytes"
    assert header(response, "Content-Type") == b"application/json"
    response, body = await get(node, "/obstories", {"Origin": "https://meteors.example"})
    assert header(response, "Access-Control-Allow-Origin") == b"https://meteors.example"
    response, body = await call(node.stub, "OPTIONS", BASE + "/obs/x", headers={
        "Origin": "https://meteors.example", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization, x-other"})
    assert response.code == 200
    assert header(response, "Access-Control-Allow-Headers") == b"authorization"
    assert b"GET" in header(response, "Access-Control-Allow-Methods")
    response, body = await get(node, "/obstories?callback=jQuery123_456")
    assert body == b"jQuery123_456({});" and header(response, "Content-Type") == b"application/javascript"
    response, body = await get(node, "/obstories?callback=alert(1)//")
    assert response.code == 400 and header(response, "Content-Type") == b"application/json"
    # Never JSONP with credentials: another site's <script> would be sent those the browser holds.
    response, body = await get(node, "/login?callback=steal", basic("viewer", "viewer-secret"))
    assert response.code == 400 and b"steal(" not in body


@pytest_twisted.ensureDeferred
async def test_reads_need_a_user_when_public_read_is_off(tmp_path, database_url):
    node = make_node(tmp_path, database_url, "[web]\ncomponents = all meteorpi\npublic_read = false\n")
    node.store.call(users.add_user, "viewer", "reader")
    node.store.call(users.set_password, "viewer", "viewer-secret")
    serve(node)
    try:
        response, _ = await get(node, "/obstories")
        assert response.code == 401
        response, body = await get(node, "/obstories", basic("viewer", "viewer-secret"))
        assert (response.code, json.loads(body)) == (200, {})
    finally:
        await node.service.stopService()


def test_set_password_reads_standard_input_and_stores_a_hash(tmp_path, monkeypatch, capsys):
    import io

    from stationd import admin_cli
    from conftest import write_config

    path = str(write_config(tmp_path))
    assert admin_cli.main(["add-user", "cam", "--role", "importer", "--config", path]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("a long password\n"))
    assert admin_cli.main(["set-password", "cam", "--config", path]) == 0
    assert "password set" in capsys.readouterr().out
    assert admin_cli.main(["list-users", "--config", path]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[4] == "yes"  # (NAME ROLE EMAIL KEY-SINCE PASSWORD)
    from stationd import config as configuration
    from stationd.store import Store

    store = Store(configuration.load(path)["database"]["url"])
    stored = store.call(users.login, "cam")["password_hash"]
    assert stored.startswith("scrypt$") and "a long password" not in stored
    assert stations.verify_password(stored, "a long password")
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert admin_cli.main(["set-password", "cam", "--config", path]) == 1
    assert admin_cli.main(["set-password", "cam", "--remove", "--config", path]) == 0
    assert store.call(users.login, "cam")["password_hash"] is None
    store.close()

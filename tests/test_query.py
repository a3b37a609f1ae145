"""The query API through the real routes of a node (minus listeners), on SQLite and PostgreSQL."""

import hashlib
import json
import uuid

import pytest
import pytest_twisted

from stationd.store import stations, users

from conftest import add_events, call, make_node, serve

T0 = 1714564800 * 10**9  # 2024-05-01T12:00:00Z


@pytest_twisted.async_yield_fixture()
async def node(tmp_path, database_url):
    node = make_node(tmp_path, database_url, "[web]\ncors_origins = https://dash.example.org\n")
    for station in ("501", "502"):
        node.store.call(stations.add_station, station, None)
    node.admin_key = node.store.call(users.add_user, "root", "admin")[1]
    yield serve(node)
    await node.service.stopService()


async def get(node, path, headers=None):
    response, body = await call(node.stub, "GET", "http://n" + path, headers=headers or {})
    return response, (json.loads(body) if body and response.headers.getRawHeaders("content-type", [""])[0]
                      .startswith("application/json") else body)


async def admin(node, method, path, **kwargs):
    headers = {"Authorization": f"Bearer {node.admin_key}", **kwargs.pop("headers", {})}
    response, body = await call(node.stub, method, "http://n" + path, headers=headers, **kwargs)
    return response, json.loads(body)


@pytest_twisted.ensureDeferred
async def test_events_newest_first_with_all_fields(node):
    ids = add_events(node, "501", [("CIC", T0 + i * 10**9 + 123456789, {"ph": i}) for i in range(3)])
    response, answer = await get(node, "/api/v1/events")
    assert response.code == 200
    assert [e["id"] for e in answer["events"]] == ids[::-1]
    assert answer["next"] is None
    first = answer["events"][0]
    assert first["time"] == "2024-05-01T12:00:02.123456789Z"
    assert first["time_ns"] == T0 + 2 * 10**9 + 123456789
    assert first["data"] == {"ph": 2}
    assert (first["station"], first["type"], first["origin"], first["quarantined"]) == (
        "501", "CIC", "test-node", False)
    assert first["files"] == []


@pytest_twisted.ensureDeferred
async def test_filters(node):
    add_events(node, "501", [("CIC", T0 + 1, {"ph": 5, "name": "b"}), ("WTR", T0 + 2, {"ph": 50}),
                             ("CIC", T0 + 3, {"ph": "60"}), ("CIC", T0 + 4, {"ph": 7}, "before min_event_time")])
    add_events(node, "502", [("CIC", T0 + 5, {"ph": 500, "name": "a"})])

    async def times(query):
        response, answer = await get(node, "/api/v1/events?" + query)
        assert response.code == 200, answer
        return [e["time_ns"] - T0 for e in answer["events"]]

    assert await times("station=501") == [3, 2, 1]
    assert await times("station=501&station=502") == [5, 3, 2, 1]
    _, page = await get(node, "/api/v1/events?station=502&station=501&station=502&limit=2&order=asc")
    assert [e["time_ns"] - T0 for e in page["events"]] == [1, 2]
    _, rest = await get(node, f"/api/v1/events?station=502&station=501&limit=2&order=asc&cursor={page['next']}")
    assert [e["time_ns"] - T0 for e in rest["events"]] == [3, 5] and rest["next"] is None
    assert await times("type=WTR") == [2]
    assert await times("type=WTR&type=CIC&order=asc") == [1, 2, 3, 5]
    assert await times(f"after={T0 // 10**9}.000000002") == [5, 3, 2]  # inclusive
    assert await times("before=2024-05-01T12:00:00.000000003Z") == [2, 1]  # exclusive
    assert await times("after=2024-05-01T14:00:00.000000002%2B02:00") == [5, 3, 2]  # a zone, the same instant
    response, _ = await get(node, "/api/v1/events?after=2024-05-01T14:00:00.000000002%2B02:00&before=3")
    assert response.code == 400  # after later than before
    assert await times("field.ph.gt=10") == [5, 2]  # "60" is text, not a number
    assert await times("field.ph.ge=50&field.ph.lt=500") == [2]
    assert await times("field.ph.eq=5") == [1]
    assert await times("field.ph.le=5.5") == [1]
    assert await times("field.ph.eq=%2260%22") == [3]  # quoted: compared as text
    assert await times("field.ph.eq=5e0") == [1]  # JSON number syntax
    assert await times("field.ph.eq=%2B5") == []  # "+5" is not a JSON number: text
    assert await times('field.name.lt="b"') == [5]
    assert await times('field.name.ge="a"&station=501') == [1]
    assert await times("quarantined=true") == [4]
    assert await times("quarantined=any&station=501") == [4, 3, 2, 1]
    assert await times("limit=2") == [5, 3]
    # true reads as 1 and an array or object as its text in SQLite: neither is a number nor a string
    add_events(node, "503", [("CIC", T0 + 6, {"ph": True}), ("CIC", T0 + 7, {"ph": [70]}),
                             ("CIC", T0 + 8, {"ph": {"a": 1}}), ("CIC", T0 + 9, {"ph": None})])
    for constraint in ("ph.eq=1", "ph.lt=10", "ph.ge=0", "ph.gt=10", "ph.lt=%22z%22", "ph.gt=%22%22", "ph.eq=true"):
        assert await times(f"field.{constraint}&station=503") == [], constraint


@pytest.mark.parametrize("query, parameter", [
    ("after=yesterday", "after"), ("before=2024-05-01T12:00:00", "before"), ("limit=0", "limit"),
    ("limit=10001", "limit"), ("limit=x", "limit"), ("order=up", "order"), ("quarantined=maybe", "quarantined"),
    ("cursor=nonsense", "cursor"), ("colour=red", "colour"), ("field.ph.ne=3", "field.ph.ne"),
    ("field.p%20h.eq=3", "field.p h.eq"), ("order=asc&order=desc", "order"), ("meta.x.eq=1", "meta.x.eq"),
    ("field.speed.gt=abc", "field.speed.gt"), ("after=1e300", "after"),
    ("after=2024-05-02T00:00:00Z&before=2024-05-01T00:00:00Z", "after"),
])
@pytest_twisted.ensureDeferred
async def test_bad_parameters_are_named(node, query, parameter):
    response, answer = await get(node, "/api/v1/events?" + query)
    assert response.code == 400
    assert answer["error"]["code"] == "bad_parameter"
    assert answer["error"]["message"].startswith(parameter + ":"), answer


@pytest.mark.parametrize("query, message", [
    ("field.speed.gt=abc", "field.speed.gt: gt compares numbers: give one, or text in double quotes"),
    ("after=1e300", "after: time '1e300' is out of range: times are from years 1678 to 2262"),
    ("after=yesterday", "or give epoch seconds such as 1714564800.5"),
    ("after=2024-05-02T00:00:00Z&before=2024-05-01T00:00:00Z", "after: later than before: nothing can match"),
])
@pytest_twisted.ensureDeferred
async def test_parameters_that_cannot_match_say_why(node, query, message):
    response, answer = await get(node, "/api/v1/events?" + query)
    assert response.code == 400 and message in answer["error"]["message"], answer


@pytest_twisted.ensureDeferred
async def test_cursor_of_one_order_is_refused_for_the_other(node):
    add_events(node, "501", [("CIC", T0 + i, {}) for i in range(3)])
    _, answer = await get(node, "/api/v1/events?limit=1")
    response, error = await get(node, f"/api/v1/events?limit=1&order=asc&cursor={answer['next']}")
    assert response.code == 400 and "order=desc" in error["error"]["message"]


@pytest.mark.parametrize("order", ["desc", "asc"])
@pytest_twisted.ensureDeferred
async def test_paging_while_events_arrive_has_no_gaps_or_duplicates(node, order):
    # Several events share a time, so the id breaks ties across page ends.
    first = add_events(node, "501", [("CIC", T0 + (i // 3) * 10**9, {"n": i}) for i in range(50)])
    seen, cursor, extra = [], None, 0
    while True:
        query = f"/api/v1/events?limit=7&order={order}" + (f"&cursor={cursor}" if cursor else "")
        _, answer = await get(node, query)
        seen += [e["id"] for e in answer["events"]]
        # New events between pages: before, inside and after the range being paged.
        extra += 1
        add_events(node, "501", [("CIC", T0 - extra * 10**9, {"x": extra}),
                                 ("CIC", T0 + 5 * 10**9, {"x": extra}),
                                 ("CIC", T0 + 10**12 + extra, {"x": extra})])
        cursor = answer["next"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen))
    assert set(first) <= set(seen)


@pytest_twisted.ensureDeferred
async def test_one_event_with_its_files_and_404(node):
    (event_id,) = add_events(node, "501", [("meteor", T0, {"brightness": 3.5})])
    response, attached = await admin(node, "POST", f"/api/v1/admin/events/{event_id}/files"
                                     "?name=sky.png&mime_type=image/png&semantic_type=meteor_image"
                                     "&meta=%7B%22exposure%22%3A%202%7D", data=b"\x89PNG...")
    assert response.code == 201, attached
    record = attached["file"]
    assert record["sha256"] == hashlib.sha256(b"\x89PNG...").hexdigest()
    assert (record["size"], record["station"], record["time_ns"], record["events"]) == (7, "501", T0, [event_id])
    _, event = await get(node, f"/api/v1/events/{event_id}")
    assert [f["id"] for f in event["files"]] == [record["id"]]
    assert event["files"][0]["meta"] == {"exposure": 2}
    _, listed = await get(node, "/api/v1/events")
    assert listed["events"][0]["files"] == [record["id"]]
    response, error = await get(node, f"/api/v1/events/{uuid.uuid4()}")
    assert response.code == 404 and error["error"]["code"] == "not_found"
    response, error = await admin(node, "POST", f"/api/v1/admin/events/{uuid.uuid4()}/files?name=x", data=b"x")
    assert response.code == 404
    response, error = await admin(node, "POST", f"/api/v1/admin/events/{event_id}/files?name=x"
                                  "&meta=%7B%22a%22%3A%20%22%5Cu0000%22%7D", data=b"x")
    assert response.code == 400 and "NUL character" in error["error"]["message"]
    response, error = await admin(node, "POST", f"/api/v1/admin/events/{event_id}/files?name=a%00b", data=b"x")
    assert response.code == 400 and error["error"]["message"].startswith("name: ")
    _, event = await get(node, f"/api/v1/events/{event_id}")
    assert len(event["files"]) == 1


async def attach(node, content, name="f.bin", **params):
    (event_id,) = add_events(node, "501", [("meteor", T0 + len(content), {"n": len(content)})])
    query = "&".join(f"{k}={v}" for k, v in {"name": name, **params}.items())
    response, attached = await admin(node, "POST", f"/api/v1/admin/events/{event_id}/files?{query}",
                                     data=content)
    assert response.code == 201, attached
    return attached["file"]


@pytest_twisted.ensureDeferred
async def test_file_list_filters(node):
    a = await attach(node, b"a" * 10, mime_type="image/png", semantic_type="meteor_image", meta="%7B%22cam%22%3A1%7D")
    b = await attach(node, b"b" * 20, mime_type="video/mp4", semantic_type="meteor_video", meta="%7B%22cam%22%3A2%7D")

    async def ids(query):
        response, answer = await get(node, "/api/v1/files?" + query)
        assert response.code == 200, answer
        return [f["id"] for f in answer["files"]]

    assert await ids("") == [b["id"], a["id"]]
    assert await ids("semantic_type=meteor_image") == [a["id"]]
    assert await ids("mime_type=video/mp4") == [b["id"]]
    assert await ids("meta.cam.gt=1") == [b["id"]]
    assert await ids("station=502") == []
    assert await ids(f"after={T0 // 10**9}.000000015") == [b["id"]]
    assert await ids("limit=1&order=asc") == [a["id"]]
    response, _ = await get(node, "/api/v1/files?field.cam.eq=1")
    assert response.code == 400
    response, record = await get(node, f"/api/v1/files/{a['id']}")
    assert record["meta"] == {"cam": 1} and record["events"] == a["events"]


CONTENT = bytes(range(256)) * 40  # 10240 bytes


@pytest.mark.parametrize("header, status, expected, content_range", [
    ("bytes=0-0", 206, CONTENT[:1], "bytes 0-0/10240"),
    ("bytes=10239-10239", 206, CONTENT[-1:], "bytes 10239-10239/10240"),
    ("bytes=10239-", 206, CONTENT[-1:], "bytes 10239-10239/10240"),
    ("bytes=-100", 206, CONTENT[-100:], "bytes 10140-10239/10240"),
    ("bytes=-20000", 206, CONTENT, "bytes 0-10239/10240"),
    ("bytes=100-199", 206, CONTENT[100:200], "bytes 100-199/10240"),
    ("bytes=10000-20000", 206, CONTENT[10000:], "bytes 10000-10239/10240"),
    ("bytes=10240-", 416, None, "bytes */10240"),
    ("bytes=20000-30000", 416, None, "bytes */10240"),
    ("bytes=-0", 416, None, "bytes */10240"),
    ("bytes=5-3", 200, CONTENT, None),  # invalid: ignored
    ("bytes=0-1,5-6", 200, CONTENT, None),  # several ranges: the whole file
    ("items=0-1", 200, CONTENT, None),
])
@pytest_twisted.ensureDeferred
async def test_content_ranges(node, header, status, expected, content_range):
    record = await attach(node, CONTENT, mime_type="application/x-trace")
    response, body = await call(node.stub, "GET", f"http://n/api/v1/files/{record['id']}/content",
                                headers={"Range": header})
    assert response.code == status
    assert response.headers.getRawHeaders("content-range") == ([content_range] if content_range else None)
    if expected is not None:
        assert body == expected  # (treq's client drops Content-Length; the e2e test checks it)
        assert response.headers.getRawHeaders("content-type") == ["application/x-trace"]
    assert response.headers.getRawHeaders("accept-ranges") == ["bytes"]


@pytest_twisted.ensureDeferred
async def test_content_conditional_requests(node):
    record = await attach(node, CONTENT)
    url = f"http://n/api/v1/files/{record['id']}/content"
    response, body = await call(node.stub, "GET", url)
    assert response.code == 200 and body == CONTENT
    etag = response.headers.getRawHeaders("etag")[0]
    assert etag == f'"{record["sha256"]}"'
    modified = response.headers.getRawHeaders("last-modified")[0]
    for headers in ({"If-None-Match": etag}, {"If-None-Match": f'"other", W/{etag}'}, {"If-None-Match": "*"},
                    {"If-Modified-Since": modified}):
        response, body = await call(node.stub, "GET", url, headers=headers)
        assert (response.code, body) == (304, b""), headers
        assert response.headers.getRawHeaders("etag") == [etag]
    for headers in ({"If-None-Match": '"other"'}, {"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"},
                    {"If-None-Match": '"other"', "If-Modified-Since": modified}):
        response, body = await call(node.stub, "GET", url, headers=headers)
        assert (response.code, body) == (200, CONTENT), headers
    # If-Range: the range only while the content is the one the client has.
    response, body = await call(node.stub, "GET", url, headers={"Range": "bytes=0-9", "If-Range": etag})
    assert (response.code, body) == (206, CONTENT[:10])
    response, body = await call(node.stub, "GET", url, headers={"Range": "bytes=0-9", "If-Range": '"old"'})
    assert (response.code, body) == (200, CONTENT)


@pytest_twisted.ensureDeferred
async def test_empty_file_and_missing_content(node):
    record = await attach(node, b"")
    response, body = await call(node.stub, "GET", f"http://n/api/v1/files/{record['id']}/content")
    assert (response.code, body) == (200, b"")
    response, _ = await call(node.stub, "GET", f"http://n/api/v1/files/{record['id']}/content",
                             headers={"Range": "bytes=0-0"})
    assert response.code == 416
    response, error = await get(node, f"/api/v1/files/{uuid.uuid4()}/content")
    assert response.code == 404


@pytest_twisted.ensureDeferred
async def test_stations_with_status_history_and_counts(node):
    add_events(node, "501", [("CIC", T0 + 5, {}), ("CIC", T0 + 9, {}),
                             ("CIC", T0 + 3 * 86400 * 10**9, {}, "more than max_future_skew ahead")])
    for valid_from, instrument in (("2024-01-01T00:00:00Z", "v1"), ("2024-03-01T00:00:00Z", "v2"),
                                   ("2024-02-01T00:00:00Z", "v1.5")):  # a late correction
        response, answer = await admin(node, "POST", "/api/v1/admin/stations/501/status", json={
            "valid_from": valid_from, "instrument": instrument, "location": {"lat": 52.35, "lon": 4.95, "alt": 56.0},
            "orientation": {"azimuth": 10}})
        assert response.code == 201, answer
    history = answer["history"]
    assert [(h["instrument"], h["valid_from"][:10], h["valid_to"] and h["valid_to"][:10]) for h in history] == [
        ("v1", "2024-01-01", "2024-02-01"), ("v1.5", "2024-02-01", "2024-03-01"), ("v2", "2024-03-01", None)]
    response, station = await get(node, "/api/v1/stations/501")
    assert station["status"]["instrument"] == "v2"
    assert station["status"]["location"] == {"lat": 52.35, "lon": 4.95, "alt": 56.0}
    assert station["history"] == history
    assert station["counts"] == {"events": 2, "quarantined": 1, "first_event_time": "2024-05-01T12:00:00.000000005Z",
                                 "last_event_time": "2024-05-01T12:00:00.000000009Z"}
    assert "password_hash" not in station and "has_password" not in station
    _, listed = await get(node, "/api/v1/stations")
    assert [(s["id"], s["status"] and s["status"]["instrument"]) for s in listed["stations"]] == [
        ("501", "v2"), ("502", None)]
    response, _ = await get(node, "/api/v1/stations/999")
    assert response.code == 404
    for body, status in (({"valid_from": "2024-03-01T00:00:00Z"}, 409), ({"location": {"lat": 100}}, 400),
                         ({"valid_from": "soon"}, 400), ({"orientation": 5}, 400)):
        response, answer = await admin(node, "POST", "/api/v1/admin/stations/501/status", json=body)
        assert response.code == status, (body, answer)
    response, _ = await admin(node, "POST", "/api/v1/admin/stations/999/status", json={})
    assert response.code == 404


@pytest_twisted.ensureDeferred
async def test_cors(node):
    response, _ = await get(node, "/api/v1/events", headers={"Origin": "https://dash.example.org"})
    assert response.headers.getRawHeaders("access-control-allow-origin") == ["https://dash.example.org"]
    assert "ETag" in response.headers.getRawHeaders("access-control-expose-headers")[0]
    response, _ = await get(node, "/api/v1/events", headers={"Origin": "https://evil.example.org"})
    assert response.headers.getRawHeaders("access-control-allow-origin") is None
    response, body = await call(node.stub, "OPTIONS", "http://n/api/v1/files/x/content", headers={
        "Origin": "https://dash.example.org", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization, range"})
    assert response.code == 204
    assert "Range" in response.headers.getRawHeaders("access-control-allow-headers")[0]
    assert "GET" in response.headers.getRawHeaders("access-control-allow-methods")[0]

"""Instrument configuration routes (FPlaneServer-compatible and generic), through a real node's routes."""

import json
import os

import pytest
import pytest_twisted
from twisted.internet import reactor

from stationd import fplane
from stationd.store import users

from conftest import call, make_node, serve


def unit(slot, ifuid, **extra):
    return {"ifuslot": slot, "x": -350.0, "y": 250.0, "specid": 20, "specslot": 65, "ifuid": ifuid,
            "ifurot": 0.0, "platesc": 1.0, **extra}


V1 = {"units": [unit("013", "031", actual={"x": -350.5, "y": 250.25}), unit("014", "000", specid=0),
                unit("015", "LRS2", type="LRS")]}
V2 = {"units": [unit("013", "032"), unit("014", "033")]}


@pytest_twisted.async_yield_fixture()
async def node(tmp_path, database_url):
    node = make_node(tmp_path, database_url, "[node]\ntimezone = America/Chicago\n")
    node.editor_key = node.store.call(users.add_user, "tcs", "editor")[1]
    node.reader_key = node.store.call(users.add_user, "obs", "reader")[1]
    yield serve(node)
    await node.service.stopService()


async def post(node, body, path="/fplane", key=None, fps=True):
    key = key or node.editor_key
    header = f"FPS_API APIKEY={key}" if fps else f"Bearer {key}"
    response, text = await call(node.stub, "POST", "http://n" + path, json=body, headers={"Authorization": header})
    return response, text.decode()


async def get(node, path):
    response, text = await call(node.stub, "GET", "http://n" + path)
    return response, text.decode()


def slots(text, commented=False):
    return [line.lstrip("#").split()[0] for line in text.splitlines()
            if line.strip() and (not line.startswith("#") or commented and line[1:2].isdigit())]


@pytest_twisted.ensureDeferred
async def test_post_get_and_version_boundaries(node):
    response, text = await post(node, {"config": V1, "commit": True, "valid_from": "2024-05-01T00:00:00Z"})
    assert response.code == 200 and response.headers.getRawHeaders("x-stationd-config-version") == ["1"]
    assert fplane.parse(text, fplane.default_slots()) == fplane.validate(V1, fplane.default_slots())
    response, text = await post(node, {"config": V2, "commit": "true", "valid_from": "2024-06-01T00:00:00Z"},
                                fps=False)
    assert response.code == 200 and "fplane version 2, valid from 2024-06-01" in text

    async def version_at(datestr):
        response, text = await get(node, f"/fplane/{datestr}")
        assert response.code == 200, text
        return text.splitlines()[0].split()[3].rstrip(",")

    assert await version_at("2024-05-01T00:00:00Z") == "1"  # exactly at valid_from
    assert await version_at("2024-05-31T23:59:59.999999999Z") == "1"
    assert await version_at("2024-06-01T00:00:00Z") == "2"
    assert await version_at("20240531T04:59:59") == "1"  # FITS DATE-OBS, UTC
    assert await version_at("20240531T05:00:00") == "1"
    # The night starting 2024-05-31 ends at local (CDT) midnight = 05:00 UTC on 06-01: version 2.
    assert await version_at("20240531") == "2"
    assert await version_at("20240530") == "1"
    assert await version_at("latest") == "2"
    assert await version_at("") == "2"
    response, error = await get(node, "/fplane/20240101")
    assert response.code == 404 and json.loads(error)["error"]["code"] == "not_found"
    response, error = await get(node, "/fplane/yesterday")
    assert response.code == 400 and "YYYYMMDD" in json.loads(error)["error"]["message"]


@pytest_twisted.ensureDeferred
async def test_variants_and_filename(node):
    await post(node, {"config": V1, "commit": 1, "valid_from": "2024-05-01T00:00:00Z"})
    response, text = await get(node, "/fplane/20240510")
    assert response.headers.getRawHeaders("content-disposition") == ['attachment; filename="fplane20240510.txt"']
    assert response.headers.getRawHeaders("content-type") == ["text/plain; charset=utf-8"]
    assert slots(text) == ["013", "015"] and slots(text, commented=True) == ["013", "014", "015"]
    _, short = await get(node, "/fplane/20240510?full_fplane=0")
    assert slots(short) == ["013"]  # active VIRUS units only
    _, measured = await get(node, "/fplane/20240510?full_fplane=0&actual_pos=1")
    assert measured.splitlines()[-1].split()[1:3] == ["-350.5", "250.25"]
    _, nominal = await get(node, "/fplane/20240510?actual_pos=0&full_fplane=1")
    assert nominal == text
    response, _ = await get(node, "/fplane/20240510?actual_pos=2")
    assert response.code == 400
    response, text = await get(node, "/fplane/")
    assert response.code == 200 and response.headers.getRawHeaders("content-disposition")[0].startswith(
        'attachment; filename="fplane2')


@pytest.mark.parametrize("commit", [False, "false", 0, "0"])
@pytest_twisted.ensureDeferred
async def test_a_dry_run_renders_and_stores_nothing(node, commit):
    response, text = await post(node, {"config": V1, "commit": commit})
    assert response.code == 200 and "preview, not stored" in text and slots(text) == ["013", "015"]
    response, _ = await get(node, "/fplane/")
    assert response.code == 404
    response, _ = await post(node, {"config": V1})  # commit defaults to false
    response, text = await post(node, {"config": V1, "commit": commit, "valid_from": "2024-05-10T00:00:00Z"})
    assert text.splitlines()[0].endswith("preview, not stored, valid from 2024-05-10T00:00:00.000000000Z")
    assert (await get(node, "/api/v1/configs"))[1] == '{"configs":[]}'


@pytest_twisted.ensureDeferred
async def test_validation_errors_and_access(node):
    bad = {"units": [unit("013", "031"), unit("999", "032"), unit("014", "031"), {"ifuslot": "015"}]}
    response, text = await post(node, {"config": bad, "commit": True})
    assert response.code == 422
    error = json.loads(text)["error"]
    assert error["code"] == "invalid_config"
    assert [p["index"] for p in error["details"]["problems"]] == [1, 2, 3]
    assert "unknown slot" in error["details"]["problems"][0]["problem"]
    for body in ({"config": V1, "commit": "yes"}, {"config": V1, "commit": True, "valid_from": "May"}):
        response, _ = await post(node, body)
        assert response.code == 400
    response, _ = await post(node, {"config": V1, "commit": True}, key=node.reader_key)
    assert response.code == 403
    response, _ = await call(node.stub, "POST", "http://n/fplane", json={"config": V1, "commit": True})
    assert response.code == 401
    await post(node, {"config": V1, "commit": True, "valid_from": "2024-05-01T00:00:00Z"})
    response, _ = await post(node, {"config": V2, "commit": True, "valid_from": "2024-05-01T00:00:00Z"})
    assert response.code == 409


@pytest_twisted.ensureDeferred
async def test_generic_routes_and_diff(node):
    await post(node, {"config": V1, "commit": True, "valid_from": "2024-05-01T00:00:00Z"})
    await post(node, {"config": V2, "commit": True, "valid_from": "2024-06-01T00:00:00Z"})
    # A late correction: dated between the two, stored third.
    response, text = await post(node, {"config": V1, "commit": True, "valid_from": "2024-05-15T00:00:00Z"},
                                path="/api/v1/configs/fplane")
    assert response.code == 201 and json.loads(text)["version"] == 3
    _, text = await get(node, "/api/v1/configs/fplane/versions")
    listed = json.loads(text)["versions"]
    assert [(v["version"], v["valid_from"][:10], v["valid_to"] and v["valid_to"][:10]) for v in listed] == [
        (1, "2024-05-01", "2024-05-15"), (3, "2024-05-15", "2024-06-01"), (2, "2024-06-01", None)]
    _, text = await get(node, "/api/v1/configs/fplane/20240520")
    assert json.loads(text)["version"] == 3 and json.loads(text)["content"]["units"][0]["ifuid"] == "031"
    _, text = await get(node, "/api/v1/configs/fplane/diff?from=1&to=2")
    changes = json.loads(text)["changes"]
    assert [c["ifuslot"] for c in changes] == ["013", "014", "015"]
    assert changes[0]["changed"]["ifuid"] == ["031", "032"] and "removed" in changes[2]

    response, text = await post(node, {"config": {"gain": 2.5, "mode": "fast"}, "commit": True},
                                path="/api/v1/configs/camera-7", fps=False)
    assert response.code == 201
    await post(node, {"config": {"gain": 3.0, "mode": "fast"}, "commit": True,
                      "valid_from": "2099-01-01T00:00:00Z"}, path="/api/v1/configs/camera-7")
    _, text = await get(node, "/api/v1/configs/camera-7")
    assert json.loads(text)["content"] == {"gain": 2.5, "mode": "fast"}  # the future one is not current yet
    _, text = await get(node, "/api/v1/configs/camera-7/latest")
    assert json.loads(text)["content"]["gain"] == 3.0
    _, text = await get(node, "/api/v1/configs/camera-7/diff?from=1&to=2")
    assert json.loads(text)["changes"] == [{"key": "gain", "changed": [2.5, 3.0]}]
    _, text = await get(node, "/api/v1/configs")
    assert [c["name"] for c in json.loads(text)["configs"]] == ["camera-7", "fplane"]
    for path, status in (("/api/v1/configs/nothing", 404), ("/api/v1/configs/nothing/versions", 404),
                         ("/api/v1/configs/fplane/diff?from=1&to=9", 404), ("/api/v1/configs/fplane/diff?from=x", 400),
                         ("/api/v1/configs/fplane/soon", 400)):
        assert (await get(node, path))[0].code == status, path
    response, _ = await post(node, {"config": [1, 2], "commit": True}, path="/api/v1/configs/camera-7")
    assert response.code == 422


@pytest_twisted.ensureDeferred
async def test_a_diff_of_version_numbers_beyond_the_store_is_a_400(node):
    # Found by schemathesis (tests/test_e2e_schemathesis.py): from=3228964612249640501248 was an OverflowError
    # in the store (a 500); on PostgreSQL the column has 32 bits.
    await post(node, {"config": V1, "commit": True, "valid_from": "2024-05-01T00:00:00Z"})
    for numbers in ("from=3228964612249640501248&to=1", "from=1&to=2147483648", "from=1&to=9223372036854775808"):
        response, text = await get(node, f"/api/v1/configs/fplane/diff?{numbers}")
        assert (response.code, json.loads(text)["error"]["code"]) == (400, "bad_parameter"), (numbers, text)
    assert (await get(node, "/api/v1/configs/fplane/diff?from=1&to=999999999"))[0].code == 404


@pytest_twisted.ensureDeferred
async def test_a_valid_from_beyond_what_the_store_holds_is_a_400(node):
    # Found by schemathesis: valid_from -3.796685113497138e+16 (seconds) was an OverflowError in the store, a
    # 500; so was year 9999.  The same on a station's status entry.
    from stationd.store import stations, users

    admin = node.store.call(users.add_user, "root", "admin")[1]
    node.store.call(stations.add_station, "501")
    for valid_from in (-3.796685113497138e+16, "9999-01-01T00:00:00Z", 2**70):
        for path, body in (("/api/v1/configs/dome", {"config": {}, "commit": True, "valid_from": valid_from}),
                           ("/fplane", {"config": V1, "commit": True, "valid_from": valid_from}),
                           ("/api/v1/admin/stations/501/status", {"valid_from": valid_from})):
            response, text = await post(node, body, path=path, key=admin, fps=False)
            assert response.code == 400 and "out of range" in text, (path, valid_from, text)


@pytest_twisted.ensureDeferred
async def test_the_cache_is_only_an_optimisation(node):
    await post(node, {"config": V1, "commit": True, "valid_from": "2024-05-01T00:00:00Z"})
    _, first = await get(node, "/fplane/20240510")
    cache = os.path.join(node.spool.directory, "configs", "fplane")
    assert os.listdir(cache) == ["1-10.txt"]
    with open(os.path.join(cache, "1-10.txt")) as f:
        assert f.read() == first
    _, again = await get(node, "/fplane/20240510")
    assert again == first
    for name in os.listdir(cache):
        os.remove(os.path.join(cache, name))
    assert (await get(node, "/fplane/20240510"))[1] == first
    await post(node, {"config": V2, "commit": True, "valid_from": "2024-06-01T00:00:00Z"})
    assert os.listdir(cache) == ["2-10.txt"]  # a new version clears the files of older ones
    assert (await get(node, "/fplane/20240510"))[1] == first


@pytest_twisted.ensureDeferred
async def test_client_get_and_put_config(node):
    from twisted.internet import task

    from stationd.client import Client, ClientError

    pump = task.LoopingCall(node.stub.flush)
    pump.start(0.001)
    client = Client("http://n", api_key=node.editor_key, http_client=node.stub, reactor=reactor)
    try:
        preview = await client.put_config(V1)
        assert "preview, not stored" in preview
        stored = await client.put_config(V1, commit=True, valid_from="2024-05-01T00:00:00Z")
        assert "fplane version 1" in stored
        assert await client.get_config("20240510T00:00:00") == stored
        short = await client.get_config("20240510", short=True, actual=True)
        assert [line.split()[:2] for line in short.splitlines() if not line.startswith("#")] == [["013", "-350.5"]]
        other = await client.put_config({"gain": 2}, commit=True, name="camera", valid_from="2024-05-01T00:00:00Z")
        assert other["version"] == 1
        assert (await client.get_config("latest", name="camera"))["content"] == {"gain": 2}
        with pytest.raises(ClientError, match="HTTP 422"):
            await client.put_config({"units": [unit("999", "1")]}, commit=True)
        with pytest.raises(ClientError, match="HTTP 404"):
            await client.get_config("20200101")
    finally:
        pump.stop()
        await client.close()

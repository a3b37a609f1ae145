"""Hostile JSON values on every JSON route (issue 20, item 5): nesting too deep is a 400, a number
beyond a double (1e400) a 422, never a 500 and never data stored changed."""

import json

import pytest
import pytest_twisted

from conftest import call, drained, make_node, serve

from stationd import fplane, jsoncodec
from stationd.store import stations, users
from stationd.web.query import parse_query

from test_ingest import stored


@pytest_twisted.async_yield_fixture()
async def node(tmp_path, database_url):
    node = make_node(tmp_path, database_url, "[ingest]\nmax_future_skew = 1d\n")
    node.store.call(stations.add_station, "501", None)
    node.admin_key = node.store.call(users.add_user, "ad", "admin")[1]
    yield serve(node)
    await node.service.stopService()


def json_post_routes(node):
    """(METHOD, path with its parameters filled in) of every route the spec says takes a JSON body."""
    spec = node.routes["docs"].description()
    found = []
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            if "application/json" in operation.get("requestBody", {}).get("content", {}):
                filled = (path.replace("{station_id}", "501").replace("{name}", "x")
                          .replace("{event_id}", "00000000-0000-4000-8000-000000000001"))
                assert "{" not in filled, filled
                found.append((method.upper(), filled))
    return found


def post(node, method, path, body):
    return call(node.stub, method, f"http://n{path}", data=body,
                headers={"Authorization": f"Bearer {node.admin_key}", "Content-Type": "application/json"})


def nested(levels, inner=b"1"):
    return b"[" * levels + inner + b"]" * levels


@pytest_twisted.ensureDeferred
async def test_deep_nesting_is_400_on_every_json_route(node):
    routes = json_post_routes(node)
    assert len(routes) >= 10 and ("POST", "/api/v1/stations/501/events") in routes
    for method, path in routes:
        for body in (b"[" * 5000, b'{"events": %s}' % nested(5000), b'{"config": %s}' % nested(200)):
            response, answer = await post(node, method, path, body)
            assert response.code == 400, (method, path, answer)
            assert json.loads(answer)["error"]["code"] == "too_deep", (method, path, answer)


@pytest_twisted.ensureDeferred
async def test_a_number_beyond_a_double_is_422_on_every_json_route(node):
    for method, path in json_post_routes(node):
        response, answer = await post(node, method, path, b'{"events": [1e400], "config": {"x": -1e400}}')
        assert response.code == 422, (method, path, answer)
        assert json.loads(answer)["error"]["code"] == "number_out_of_range", (method, path, answer)


@pytest_twisted.ensureDeferred
async def test_native_events_with_1e400_are_refused_not_stored_as_null(node):
    body = b'{"events": [{"type": "WTR", "time": 1714564800, "data": {"t": 1e400, "ok": 1.5e308}}]}'
    response, answer = await post(node, "POST", "/api/v1/stations/501/events", body)
    assert response.code == 422
    assert "1e400 is out of range" in json.loads(answer)["error"]["message"]
    await drained(node)
    assert stored(node) == []
    # the largest doubles, tiny ones and big integers are kept exactly as sent
    body = (b'{"events": [{"type": "WTR", "time": 1714564800, "data": {"big": 1.7976931348623157e308, '
            b'"tiny": 1e-400, "n": 123456789012345678901234567890}}]}')
    response, answer = await post(node, "POST", "/api/v1/stations/501/events", body)
    assert response.code == 200, answer
    await drained(node)
    assert stored(node)[0]["data"] == {"big": 1.7976931348623157e308, "tiny": 0.0,
                                                   "n": 123456789012345678901234567890}


@pytest_twisted.ensureDeferred
async def test_data_as_deep_as_a_body_allows_is_stored_and_one_level_more_is_refused(node):
    def batch(levels):  # the body {"events": [{... "data": {"d": [[...]]}}]} nesting ``levels`` levels
        return b'{"events": [{"type": "WTR", "time": 1714564800, "data": {"d": %s}}]}' % nested(levels - 4)

    response, answer = await post(node, "POST", "/api/v1/stations/501/events", batch(jsoncodec.MAX_DEPTH))
    assert response.code == 200, answer
    response, answer = await post(node, "POST", "/api/v1/stations/501/events", batch(jsoncodec.MAX_DEPTH + 1))
    assert response.code == 400 and json.loads(answer)["error"]["message"].startswith(
        "the JSON body nests deeper than 128 levels")
    await drained(node)
    assert len(stored(node)) == 1


@pytest_twisted.ensureDeferred
async def test_an_fplane_with_an_infinite_position_is_refused(node):
    unit = {"ifuslot": "013", "x": 1.0, "y": 2.0, "specid": 1, "specslot": 2, "ifuid": "031", "ifurot": 0.0,
            "platesc": 1.0}
    body = json.dumps({"config": {"units": [unit]}, "commit": True}).replace('"x": 1.0', '"x": 1e400')
    response, answer = await post(node, "POST", "/fplane", body.encode())
    assert response.code == 422
    response, answer = await call(node.stub, "GET", "http://n/fplane/latest")
    assert response.code == 404  # nothing was stored
    with pytest.raises(fplane.ConfigInvalid, match="bad x"):
        fplane.validate({"units": [{**unit, "x": float("inf")}]}, fplane.default_slots())
    with pytest.raises(fplane.ConfigInvalid, match="bad y"):  # an int beyond a double: was an OverflowError
        fplane.validate({"units": [{**unit, "y": 10**400}]}, fplane.default_slots())
    text = fplane.render(fplane.validate({"units": [unit]}, fplane.default_slots()))
    for number in ("inf", "-inf", "nan", "1e400", "Infinity"):
        with pytest.raises(fplane.ConfigInvalid, match="bad x"):
            fplane.parse(text.replace("1.0 ", f"{number} ", 1), fplane.default_slots())


@pytest_twisted.ensureDeferred
async def test_file_meta_with_1e400_or_nested_too_deeply_is_400(node):
    # (the event need not exist: meta is checked first)
    for meta in ("%7B%22a%22%3A1e400%7D", "%7B%22a%22%3A" + "%5B" * 130 + "%5D" * 130 + "%7D"):
        response, answer = await call(
            node.stub, "POST", f"http://n/api/v1/admin/events/00000000-0000-4000-8000-000000000001/files"
            f"?name=a.txt&meta={meta}", data=b"x", headers={"Authorization": f"Bearer {node.admin_key}"})
        assert response.code == 400, answer
        error = json.loads(answer)["error"]
        assert error["code"] == "bad_parameter" and error["message"].startswith("meta: "), error


def test_query_constraints_beyond_a_double_or_64_bits():
    with pytest.raises(Exception, match="field.t.gt: the number 1e400 is out of range"):
        parse_query({"field.t.gt": ["1e400"]}, set(), "field")
    with pytest.raises(Exception, match="out of range"):
        parse_query({"field.t.eq": ["9" * 5000]}, set(), "field")  # was int(): ValueError, a 500
    # beyond 64 bits (which SQLite cannot bind: a 500 before) an integer compares as a float
    assert parse_query({"field.t.eq": ["123456789012345678901234567890"]}, set(), "field").constraints == [
        ("t", "eq", 1.2345678901234568e29)]
    assert parse_query({"field.t.eq": ["-9223372036854775808"]}, set(), "field").constraints == [
        ("t", "eq", -(2**63))]


def test_jsoncodec_depth_and_range():
    assert jsoncodec.depth(1) == 0 and jsoncodec.depth([]) == 1 and jsoncodec.depth({"a": [[], {}]}) == 3
    assert jsoncodec.loads(nested(127)) is not None
    for body in (nested(129), b"[" * 100000, b'{"a":' * 3000, nested(2000)):
        with pytest.raises(jsoncodec.TooDeep):
            jsoncodec.loads(body)
    with pytest.raises(jsoncodec.TooDeep):  # the stdlib's path (an integer beyond 64 bits) too
        jsoncodec.loads(nested(500, b"123456789012345678901234567890"))
    for body in (b"1e400", b"[-1e400]", b'{"a": 1E+309}', b'[123456789012345678901234567890, 1e400]'):
        with pytest.raises(jsoncodec.NumberOutOfRange):
            jsoncodec.loads(body)


def test_configuration_numbers_must_be_finite():
    """An interval of 1 followed by 400 zeros was infinite (a size: an OverflowError, not a config error);
    an alarm threshold of nan never fires."""
    from stationd import config

    for parse, text in ((config.duration, "1" + "0" * 400), (config.size, "1" + "0" * 400 + "MiB"),
                        (config.field_numbers, "temperature=nan"), (config.field_numbers, "inf"),
                        (config.field_numbers, "load1=4 t=1e400")):
        with pytest.raises(ValueError, match="out of range|finite numbers"):
            parse(text)
    assert config.duration("5m") == 300 and config.field_numbers("t=-1.5e3") == {"t": -1500.0}

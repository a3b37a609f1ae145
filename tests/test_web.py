"""Routes, JSON errors and auth through the real Klein app, over StubTreq."""

import json
import random
from urllib.parse import unquote_to_bytes

import pytest
import pytest_twisted
from treq.testing import StubTreq

from conftest import call, make_node

from stationd import jsoncodec
from stationd.store import users
from stationd.store.cache import Cache
from stationd.web import make_resource
from stationd.web.admin import AdminRoutes
from stationd.web.core import Core
from stationd.web.auth import Authenticator
from stationd.web.http import _no_constants, parse_form, route


NODE_ID = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def auth(store):
    store.startService()
    yield Authenticator(Cache(store), public_read=True)
    store.stopService()


@pytest.fixture
def routes(store, auth):
    """The route groups these tests mount, each given what it uses (as stationd.service.wire does)."""
    from twisted.internet import reactor

    return {"core": Core(auth, "test", NODE_ID, lambda: {"node": "test", "components": {}}),
            "admin": AdminRoutes(store, auth, None, None, NODE_ID, reactor)}


def client(routes, components=("core", "admin"), prefix="/"):
    return StubTreq(make_resource({name: routes[name] for name in components}, prefix))


def error_code(body):
    return json.loads(body)["error"]["code"]


def test_the_node_builds_a_route_group_for_every_component_name(tmp_path, database_url):
    from stationd import config

    node = make_node(tmp_path, database_url)
    try:
        assert list(node.routes) == list(config.COMPONENTS)
    finally:
        node.store.close()


@pytest_twisted.ensureDeferred
async def test_core_routes(routes, store, auth):
    stub = client(routes)
    response, body = await call(stub, "GET", "http://n/heartbeat")
    assert (response.code, body) == (200, b"OK")
    assert response.headers.getRawHeaders("content-type") == ["text/plain; charset=utf-8"]
    response, body = await call(stub, "GET", "http://n/version")
    assert json.loads(body)["name"] == "stationd"
    response, body = await call(stub, "GET", "http://n/api/v1/status")
    assert json.loads(body)["node"] == "test"


@pytest_twisted.ensureDeferred
async def test_unknown_path_and_wrong_method_are_json(routes, store, auth):
    stub = client(routes)
    response, body = await call(stub, "GET", "http://n/no/such/thing")
    assert response.code == 404 and error_code(body) == "not_found"
    assert response.headers.getRawHeaders("content-type") == ["application/json"]
    response, body = await call(stub, "DELETE", "http://n/heartbeat")
    assert response.code == 405 and error_code(body) == "method_not_allowed"
    assert "GET" in response.headers.getRawHeaders("allow")[0]


@pytest_twisted.ensureDeferred
async def test_request_path_prefixes_every_route(routes, store, auth):
    stub = client(routes, prefix="/stationd/")
    response, body = await call(stub, "GET", "http://n/stationd/heartbeat")
    assert body == b"OK"
    response, body = await call(stub, "GET", "http://n/heartbeat")
    assert response.code == 404 and error_code(body) == "not_found"


@pytest_twisted.ensureDeferred
async def test_components_not_configured_are_not_mounted(routes, store, auth):
    stub = client(routes, components=("core",))
    response, _ = await call(stub, "GET", "http://n/api/v1/admin/users")
    assert response.code == 404


@pytest_twisted.ensureDeferred
async def test_handler_exception_is_500_json_without_traceback(routes, store, auth, monkeypatch):
    class Broken:
        @route("GET", "/broken")
        def broken(self, request):
            raise RuntimeError("secret internals")

    routes["broken"] = Broken()
    stub = client(routes, components=("core", "broken"))
    response, body = await call(stub, "GET", "http://n/broken")
    assert response.code == 500 and error_code(body) == "internal_error"
    assert b"secret internals" not in body and b"Traceback" not in body


# -- authentication --

@pytest_twisted.ensureDeferred
async def test_no_header_is_401_with_challenge(routes, store, auth):
    response, body = await call(client(routes), "GET", "http://n/api/v1/admin/users")
    assert response.code == 401 and error_code(body) == "unauthorized"
    assert response.headers.getRawHeaders("www-authenticate") == ['Bearer realm="stationd"']


@pytest_twisted.ensureDeferred
async def test_unknown_key_is_401(routes, store, auth):
    response, body = await call(client(routes), "GET", "http://n/api/v1/admin/users",
                                headers={"Authorization": "Bearer not-a-key"})
    assert response.code == 401 and "unknown API key" in body.decode()


@pytest_twisted.ensureDeferred
async def test_wrong_role_is_403(routes, store, auth):
    _, key = store.call(users.add_user, "reader1", "reader")
    response, body = await call(client(routes), "GET", "http://n/api/v1/admin/users",
                                headers={"Authorization": f"Bearer {key}"})
    assert response.code == 403 and error_code(body) == "forbidden"


@pytest.mark.parametrize("header", [
    "Bearer {key}", "bearer {key}", "FPS_API APIKEY={key}", "FPS_API apikey={key}", "fps_api ApiKey = {key}",
])
@pytest_twisted.ensureDeferred
async def test_both_header_forms_authenticate(routes, store, header):
    _, key = store.call(users.add_user, "root", "admin")
    response, body = await call(client(routes), "GET", "http://n/api/v1/admin/users",
                                headers={"Authorization": header.format(key=key)})
    assert response.code == 200
    assert [u["name"] for u in json.loads(body)["users"]] == ["root"]


@pytest_twisted.ensureDeferred
async def test_reads_need_a_key_when_not_public(routes, store, auth):
    auth.public_read = False
    stub = client(routes)
    response, _ = await call(stub, "GET", "http://n/api/v1/status")
    assert response.code == 401
    _, key = store.call(users.add_user, "viewer", "reader")
    response, _ = await call(stub, "GET", "http://n/api/v1/status", headers={"Authorization": f"Bearer {key}"})
    assert response.code == 200
    response, _ = await call(stub, "GET", "http://n/heartbeat")
    assert response.code == 200  # liveness stays open


@pytest_twisted.ensureDeferred
async def test_admin_user_routes(routes, store, auth):
    _, root = store.call(users.add_user, "root", "admin")
    auth = {"Authorization": f"Bearer {root}"}
    stub = client(routes)
    response, body = await call(stub, "POST", "http://n/api/v1/admin/users", headers=auth,
                                json={"name": "ed", "role": "editor", "email": "ed@example.org"})
    assert response.code == 201
    created = json.loads(body)
    assert created["user"]["role"] == "editor"
    assert store.call(users.authenticate, created["api_key"])["name"] == "ed"

    response, body = await call(stub, "POST", "http://n/api/v1/admin/users", headers=auth,
                                json={"name": "ed", "role": "editor"})
    assert response.code == 409
    response, body = await call(stub, "POST", "http://n/api/v1/admin/users", headers=auth, data=b"{nope")
    assert response.code == 400 and error_code(body) == "bad_json"

    response, body = await call(stub, "POST", "http://n/api/v1/admin/users/ed/rotate-key", headers=auth)
    new_key = json.loads(body)["api_key"]
    assert store.call(users.authenticate, created["api_key"]) is None
    assert store.call(users.authenticate, new_key)["name"] == "ed"

    response, _ = await call(stub, "DELETE", "http://n/api/v1/admin/users/ed", headers=auth)
    assert response.code == 200
    response, body = await call(stub, "DELETE", "http://n/api/v1/admin/users/ed", headers=auth)
    assert response.code == 404 and error_code(body) == "not_found"


def test_parse_form_matches_the_stdlib_on_random_input():
    # parse_form's C fast path must give what urllib gives, byte for byte,
    # including for stray "%", "=", "+" and line breaks.
    rng = random.Random(7)
    alphabet = b"%%%%0123456789abcdefABCDEFgG+ \t\n\r=\x00\xff_?"
    for _ in range(20000):
        value = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        assert parse_form(b"a=" + value) == {b"a": [unquote_to_bytes(value.replace(b"+", b" "))]}, value


def _stdlib(body):
    # (with the one change jsoncodec makes: a number beyond a double is refused, not infinity)
    try:
        return repr(json.loads(body, parse_constant=_no_constants, parse_float=jsoncodec.finite_float))
    except ValueError as e:
        return f"{type(e).__name__}: {e}"


def _ours(body):
    try:
        return repr(jsoncodec.loads(body, parse_constant=_no_constants))
    except ValueError as e:
        return f"{type(e).__name__}: {e}"


def _number(rng):
    sign = rng.choice(["", "", "-"])
    digits = "".join(rng.choice("0123456789") for _ in range(rng.choice([1, 2, 18, 19, 19, 20, 20, 21, 40])))
    digits = digits.lstrip("0") or "0"
    return sign + digits + rng.choice(["", "", "", ".5", ".0", "e3", "E-2", "e400", ".123456789012345678901"])


def test_read_json_decodes_as_the_stdlib_does():
    """orjson where it gives the stdlib's value (repr: int or float, -0.0, key order), the stdlib
    where it would not: integers beyond 64 bits, NaN, 1e400, lone surrogates, UTF-16, a BOM."""
    for body in (b'{"n": 123456789012345678901234567890}', b'{"n": 18446744073709551615}',
                 b'{"n": 18446744073709551616}', b'{"n": -9223372036854775808}', b'{"n": -9223372036854775809}',
                 b'[1.5e308, -0.0, 0.1e-400]', b'[1e400]', b'[-1e400]', b'{"n": NaN}', b'[Infinity]', b'"\\ud800"',
                 b'"\xed\xa0\x80"', "[1, 2]".encode("utf-16"), b'\xef\xbb\xbf{"a": 1}', b'{"a": 1, "a": 2}',
                 b'"a\x01b"', b"[1,]", b"01", b"", b"\xff", b'{"id": "8827-3478-4038-9856-c6c0db149a6d"}'):
        assert _ours(body) == _stdlib(body), body
    rng = random.Random(11)
    for _ in range(3000):
        value = {"k": [_number(rng) for _ in range(rng.randint(1, 6))], "t": _number(rng).join('""')}
        body = f'{{"k": [{", ".join(value["k"])}], "t": {value["t"]}}}'.encode()
        assert _ours(body) == _stdlib(body), body
    big = b'{"events": [%s]}' % b", ".join(b'{"time_ns": 1714780716942781670, "n": %d}' % i for i in range(500))
    assert jsoncodec.loads(big) == json.loads(big)
    assert jsoncodec.loads(big.replace(b"1714780716942781670", b"17147807169427816701", 1)) == json.loads(
        big.replace(b"1714780716942781670", b"17147807169427816701", 1))  # exact, not a float

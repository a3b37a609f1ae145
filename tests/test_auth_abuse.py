"""Credential guessing (issue 20, item 4) against the real routes of a node (StubTreq) and the
real access log (NodeSite): a station's first upload does not wait behind guesses for another, a
known station never waits, failed passwords and keys from one client are rate-limited, and a
flood of failures does not write a log line each.  Units of stationd.web.guard: test_guard.py."""

import threading
import time

import pytest_twisted
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.web.resource import Resource

from stationd.store import stations, users
from stationd.web import auth as auth_module
from stationd.web import upload as upload_module
from stationd.web.site import NodeSite

from conftest import call, make_node, serve
from test_ingest import FORM, hisparc_events, pickled, upload_body


class Refuses(Resource):
    isLeaf = True

    def render(self, request):
        request.stationd_auth_failed = True
        request.setResponseCode(401)
        return b"no"


def test_the_access_log_does_not_grow_a_line_a_guess():
    clock, lines = Clock(), []

    def observe(event):
        if event.get("log_namespace") == "stationd.access":
            lines.append(event)

    site = NodeSite(Refuses(), 1000, clock)
    globalLogPublisher.addObserver(observe)
    try:
        channel = site.buildProtocol(None)
        channel.makeConnection(StringTransport())
        for _ in range(200):
            channel.dataReceived(b"GET /api/v1/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer guess\r\n\r\n")
        assert len(lines) <= 10  # the first few of the interval, then nothing
        clock.advance(60)
        assert len(lines) <= 11
        summary = lines[-1]
        assert summary["log_level"].name == "warn" and summary["count"] == 200
    finally:
        globalLogPublisher.removeObserver(observe)


# --- through the routes of a node ---------------------------------------------------------------

def _from_header(request):
    """The test's stand-in for the source address: the X-Client header."""
    return (request.getHeader(b"x-client") or b"test").decode()


@pytest_twisted.async_yield_fixture()
async def node(tmp_path, database_url, monkeypatch):
    # (raising=False: on code without per-client checks the patch is harmless)
    monkeypatch.setattr(upload_module, "client_of", _from_header, raising=False)
    monkeypatch.setattr(auth_module, "client_of", _from_header, raising=False)
    node = make_node(tmp_path, database_url, "[ingest]\nmax_future_skew = 1d\n")
    node.store.call(stations.add_station, "501", stations.hash_password("secret"), cluster="ams")
    node.store.call(stations.add_station, "503", stations.hash_password("other"), cluster="ams")
    node.key = node.store.call(users.add_user, "root", "admin")[1]
    yield serve(node)
    await node.service.stopService()


async def upload(node, body, client):
    response, answer = await call(node.stub, "POST", "http://n/upload", data=body,
                                  headers={**FORM, "X-Client": client})
    assert response.code == 200
    return answer.decode(), response.headers.getRawHeaders("retry-after")


def slow_guesses(monkeypatch):
    """verify_password made slow for guesses (a fake slow scrypt); the guesses it has finished."""
    real, done = stations.verify_password, []

    def verify(stored, password):
        if password.startswith("guess"):
            time.sleep(0.05)
            done.append(password)
            return False
        return real(stored, password)

    monkeypatch.setattr(stations, "verify_password", verify)
    return done


@pytest_twisted.ensureDeferred
async def test_a_station_s_first_upload_does_not_wait_behind_guesses_for_another(node, monkeypatch):
    done = slow_guesses(monkeypatch)
    await node.cache.station("501"), await node.cache.station("503")
    body = pickled(hisparc_events())
    guesses = [defer.ensureDeferred(upload(node, upload_body(body, password=f"guess-{i}"), f"10.0.0.{i}"))
               for i in range(40)]
    answered = []
    for d in guesses:
        d.addCallback(lambda answer: answered.append(answer) or answer)
    code, _ = await upload(node, upload_body(body, station="503", password="other"), "10.1.1.1")
    seen = len(done), len(answered)
    results = await defer.gatherResults(guesses)
    assert code == "100"
    # B was answered while guesses for 501 were still waiting for their derivations...
    assert seen[0] < len([r for r in results if r[0] == "203"]), seen
    assert seen[1] < len(guesses), seen
    # ... and those over 501's queue were refused at once with the code stations retry on.
    refused = [r for r in results if r[0] == "400"]
    assert refused and all(retry == ["10"] for _, retry in refused)


@pytest_twisted.ensureDeferred
async def test_a_station_whose_password_is_known_never_waits(node, monkeypatch):
    body = pickled(hisparc_events())
    assert (await upload(node, upload_body(body, station="503", password="other"), "10.1.1.1"))[0] == "100"
    release, started = threading.Event(), []
    real = stations.verify_password

    def verify(stored, password):  # guesses hang until the test lets them go
        started.append(password)
        release.wait(10)
        return real(stored, password)

    monkeypatch.setattr(stations, "verify_password", verify)
    try:
        guesses = [defer.ensureDeferred(upload(node, upload_body(body, station=station, password=f"guess-{i}"),
                                               f"10.0.{i}.1"))
                   for i in range(10) for station in ("501", "503")]  # for another station and for itself
        for second in (1, 2):
            code, _ = await upload(node, upload_body(pickled(hisparc_events(second=second * 10)), station="503",
                                                     password="other"), "10.1.1.1")
            assert code == "100"
        assert not release.is_set() and started  # answered while a guess was still being derived
    finally:
        release.set()
    assert {code for code, _ in await defer.gatherResults(guesses)} <= {"203", "400"}


@pytest_twisted.ensureDeferred
async def test_failed_passwords_and_keys_from_one_client_are_rate_limited(node):
    body = pickled(hisparc_events())
    codes = [(await upload(node, upload_body(body, password=f"wrong-{i}"), "10.6.6.6"))
             for i in range(20)]
    assert codes == [("203", None)] * 20
    code, retry = await upload(node, upload_body(body, password="wrong-20"), "10.6.6.6")
    assert code == "400" and 0 < int(retry[0]) <= 60
    # Limited, the client learns nothing, even with the right password:
    assert (await upload(node, upload_body(body, password="secret"), "10.6.6.6"))[0] == "400"
    # and its API keys are not looked at: 429 with Retry-After.
    for key in ("a-guessed-key", node.key):
        response, answer = await call(node.stub, "GET", "http://n/api/v1/admin/users",
                                      headers={"Authorization": f"Bearer {key}", "X-Client": "10.6.6.6"})
        assert response.code == 429, answer
        assert 0 < int(response.headers.getRawHeaders("retry-after")[0]) <= 60
    # Another client is not affected.
    assert (await upload(node, upload_body(body, password="secret"), "10.7.7.7"))[0] == "100"


@pytest_twisted.ensureDeferred
async def test_unknown_api_keys_count_as_failures(node):
    for i in range(20):
        response, _ = await call(node.stub, "GET", "http://n/api/v1/admin/users",
                                 headers={"Authorization": f"Bearer guess-{i}", "X-Client": "10.5.5.5"})
        assert response.code == 401
    response, _ = await call(node.stub, "GET", "http://n/api/v1/admin/users",
                             headers={"Authorization": f"Bearer {node.key}", "X-Client": "10.5.5.5"})
    assert response.code == 429 and response.headers.getRawHeaders("retry-after")
    response, _ = await call(node.stub, "GET", "http://n/api/v1/admin/users",
                             headers={"Authorization": f"Bearer {node.key}", "X-Client": "10.5.5.6"})
    assert response.code == 200

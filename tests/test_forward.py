"""Worker 0's routes from another worker (stationd.web.forward), over a real UNIX socket."""

import json

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint, UNIXServerEndpoint
from twisted.web import resource, server

from stationd.web import make_resource
from stationd.web.forward import Forward
from stationd.web.sensors import SensorRoutes


class Echo(resource.Resource):
    """Worker 0's side: what came in, as JSON, with a header of its own."""

    isLeaf = True

    def render(self, request):
        request.setResponseCode(418)
        request.setHeader(b"x-from", b"worker-0")
        return json.dumps({"method": request.method.decode(), "uri": request.uri.decode(),
                           "body": request.content.read().decode(),
                           "authorization": (request.getHeader(b"authorization") or b"").decode(),
                           "cookie": (request.getHeader(b"cookie") or b"").decode()}).encode()


@pytest.fixture
def front(tmp_path):
    """(base URL of a worker whose sensor routes forward to tmp_path/worker-0.sock, that socket's path)."""
    path = str(tmp_path / "worker-0.sock")
    site = server.Site(make_resource({"sensors": Forward(SensorRoutes, path, reactor)}, "/"))
    port = pytest_twisted.blockon(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site))
    yield f"http://127.0.0.1:{port.getHost().port}", path
    pytest_twisted.blockon(port.stopListening())


@pytest_twisted.ensureDeferred
async def test_a_request_reaches_worker_0_as_sent_and_its_answer_comes_back_as_given(front):
    base, path = front
    worker_0 = await UNIXServerEndpoint(reactor, path).listen(server.Site(Echo()))
    try:
        answer = await treq.post(f"{base}/api/lcd?x=1", b'{"message": "hi"}',
                                 headers={"Authorization": "Bearer k", "Cookie": "c=1"})
        assert answer.code == 418 and answer.headers.getRawHeaders("x-from") == ["worker-0"]
        assert json.loads(await answer.content()) == {
            "method": "POST", "uri": "/api/lcd?x=1", "body": '{"message": "hi"}', "authorization": "Bearer k",
            "cookie": ""}  # (only the headers the routes read are passed on)
        answer = await treq.get(f"{base}/api/v1/sensors/system/readings?step=1m")
        assert json.loads(await answer.content())["uri"] == "/api/v1/sensors/system/readings?step=1m"
        answer = await treq.get(f"{base}/api/v1/status")  # (not a sensor route: not forwarded)
        assert answer.code == 404
    finally:
        await worker_0.stopListening()


@pytest_twisted.ensureDeferred
async def test_worker_0_away_is_a_503_to_retry(front):
    base, _ = front  # (nothing listens on the socket)
    answer = await treq.get(f"{base}/api/v1/sensors")
    assert answer.code == 503 and answer.headers.getRawHeaders("retry-after") == ["5"]
    assert json.loads(await answer.content())["error"]["code"] == "worker_unavailable"


@pytest_twisted.ensureDeferred
async def test_the_status_of_another_worker_shows_worker_0s_sensor_states(tmp_path):
    from twisted.web.test.requesthelper import DummyRequest

    from stationd.web.sensors import states_from_worker_0

    class Listed(resource.Resource):
        isLeaf = True

        def render(self, request):
            assert request.uri == b"/base/api/v1/sensors" and request.getHeader(b"authorization") == b"Bearer k"
            return json.dumps({"sensors": [{"name": "box", "state": "failing", "last_error": "OSError: gone",
                                            "fields": {}}]}).encode()

    path = str(tmp_path / "worker-0.sock")
    states = states_from_worker_0(Forward(SensorRoutes, path, reactor), "/base/", ["box"])
    request = DummyRequest([b""])
    request.requestHeaders.setRawHeaders(b"authorization", [b"Bearer k"])
    assert await states(request) == {"box": {"state": "unknown", "last_error": "worker 0 did not answer"}}
    worker_0 = await UNIXServerEndpoint(reactor, path).listen(server.Site(Listed()))
    try:
        assert await states(request) == {"box": {"state": "failing", "last_error": "OSError: gone"}}
    finally:
        await worker_0.stopListening()

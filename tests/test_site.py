"""The request body limit, driven byte by byte through a real HTTPChannel."""

import json

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.resource import Resource

from stationd.web.site import NodeSite

LIMIT = 1000


class Echo(Resource):
    isLeaf = True

    def render_POST(self, request):
        return b"got %d" % len(request.content.read())


def connect(limit=LIMIT):
    site = NodeSite(Echo(), limit, Clock())
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport


def test_a_body_within_the_limit_reaches_the_resource():
    channel, transport = connect()
    channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"a" * 1000)
    assert transport.value().startswith(b"HTTP/1.1 200")
    assert transport.value().endswith(b"got 1000")


def test_declared_length_over_the_limit_is_refused_before_the_body():
    channel, transport = connect()
    channel.dataReceived(b"POST /up?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 20000000\r\n\r\n")
    response = transport.value()
    assert response.startswith(b"HTTP/1.1 413")
    assert json.loads(response.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "payload_too_large"
    request = channel._channel.requests[0]
    for _ in range(100):  # 100 KB more arrive: dropped, not kept
        channel.dataReceived(b"b" * 1000)
    assert request.content.tell() == 0
    assert not transport.disconnecting
    channel.dataReceived(b"b" * (20000000 - 100000))
    assert transport.disconnecting  # the body is over: the connection closes


def test_chunked_body_is_refused_when_it_passes_the_limit():
    channel, transport = connect()
    channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    channel.dataReceived(b"258\r\n" + b"c" * 600 + b"\r\n")
    assert transport.value() == b""
    channel.dataReceived(b"258\r\n" + b"c" * 600 + b"\r\n")
    assert transport.value().startswith(b"HTTP/1.1 413")
    for _ in range(50):
        channel.dataReceived(b"258\r\n" + b"c" * 600 + b"\r\n")
    assert channel._channel.requests[0].content.tell() == 0
    channel.dataReceived(b"0\r\n\r\n")
    assert transport.disconnecting


def test_expect_continue_gets_the_413_instead_of_100():
    channel, transport = connect()
    channel.dataReceived(
        b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n"
    )
    assert transport.value().startswith(b"HTTP/1.1 413")
    assert b"100 Continue" not in transport.value()


def test_a_refused_client_that_hangs_up_is_logged_once():
    from twisted.python.failure import Failure
    from twisted.internet.error import ConnectionDone

    channel, transport = connect()
    logged = []
    channel._channel.site.log = logged.append
    channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 20000000\r\n\r\n")
    channel.connectionLost(Failure(ConnectionDone()))
    assert len(logged) == 1 and logged[0].code == 413

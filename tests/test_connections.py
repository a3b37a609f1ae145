"""Connection abuse (issue 20, item 3) and security headers (item 6), driven through a real
NodeChannel over a StringTransport with a Clock: the request-head timeout, the per-client
cap, 431/414 for oversized heads, nosniff/CSP/HSTS."""

import json
import resource

import pytest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.resource import Resource
from zope.interface import implementer

from stationd import config as configuration
from stationd.fdlimit import raise_open_files_limit
from stationd.web.connections import client_key
from stationd.web.site import NodeSite


class Page(Resource):
    isLeaf = True

    def render_GET(self, request):
        if request.path == b"/html":
            request.setHeader(b"content-type", b"text/html; charset=utf-8")
            return b"<p>hi</p>"
        if request.path == b"/own-csp":
            request.setHeader(b"content-type", b"text/html")
            request.setHeader(b"content-security-policy", b"default-src 'self'")
            return b"<p>own</p>"
        request.setHeader(b"content-type", b"application/json")
        return b"{}"


@implementer(ISSLTransport)
class TLSTransport(StringTransport):
    """A StringTransport that says it is TLS, as TLSMemoryBIOProtocol does."""

    def setTcpNoDelay(self, enabled):
        pass


def make_site(**kwargs):
    clock = Clock()
    return NodeSite(Page(), 1000, clock, **kwargs), clock


def connect(site, host="192.0.2.1", port=40000, secure=False):
    channel = site.buildProtocol(IPv4Address("TCP", host, port))
    transport = (TLSTransport if secure else StringTransport)(peerAddress=IPv4Address("TCP", host, port))
    channel.makeConnection(transport)
    return channel, transport


def status(transport):
    return int(transport.value().split(b" ", 2)[1])


def body(transport):
    return json.loads(transport.value().split(b"\r\n\r\n", 1)[1])


# -- the request-head timeout ------------------------------------------------------------------

def test_a_head_trickled_a_byte_at_a_time_is_answered_408_at_the_header_timeout():
    site, clock = make_site(header_timeout=10)
    channel, transport = connect(site)
    for byte in b"GET /heartbeat HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 100:  # a byte every 0.5 s: never idle
        channel.dataReceived(bytes([byte]))
        clock.advance(0.5)
        if transport.value():
            break
    assert status(transport) == 408
    assert body(transport)["error"]["code"] == "request_timeout"
    assert b"connection: close" in transport.value().lower()
    assert transport.disconnecting
    channel.dataReceived(b"\r\n\r\n")  # (what comes after is dropped)
    assert transport.value().count(b"HTTP/1.1") == 1


def test_a_connection_that_sends_nothing_is_closed_at_the_header_timeout():
    site, clock = make_site(header_timeout=10)
    channel, transport = connect(site)
    clock.advance(9.9)
    assert not transport.disconnecting
    clock.advance(0.2)
    assert status(transport) == 408 and transport.disconnecting


def test_a_head_in_time_is_served_and_a_kept_alive_connection_waits_for_the_next_first_byte():
    site, clock = make_site(header_timeout=10)
    channel, transport = connect(site)
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status(transport) == 200
    clock.advance(30)  # idle between requests: the idle timeout's business (60 s), not this one's
    assert not transport.disconnecting
    transport.clear()
    channel.dataReceived(b"GET / HT")
    clock.advance(9)
    channel.dataReceived(b"TP/1.1\r\nHost: x\r\n\r\n")
    assert status(transport) == 200
    transport.clear()
    channel.dataReceived(b"GET / HTTP/1.1\r\n")
    clock.advance(10.1)
    assert status(transport) == 408


def test_no_header_timeout_when_it_is_0():
    site, clock = make_site(header_timeout=0)
    channel, transport = connect(site)
    channel.dataReceived(b"GET / HTTP/1.1\r\n")
    clock.advance(50)
    assert transport.value() == b"" and not transport.disconnecting


def test_the_body_is_not_under_the_header_timeout():
    site, clock = make_site(header_timeout=10)
    channel, transport = connect(site)
    channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
    clock.advance(20)
    assert transport.value() == b""


# -- oversized heads: 431 and 414 ---------------------------------------------------------------

def test_a_request_line_over_the_line_limit_gets_414():
    site, _ = make_site()
    channel, transport = connect(site)
    channel.dataReceived(b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status(transport) == 414
    assert body(transport)["error"]["code"] == "uri_too_long"
    assert transport.disconnecting


def test_a_header_line_over_the_line_limit_gets_431():
    site, _ = make_site()
    channel, transport = connect(site)
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n")
    assert status(transport) == 431
    assert body(transport)["error"]["code"] == "request_header_fields_too_large"
    assert transport.disconnecting


def test_headers_over_the_total_size_get_431():
    site, _ = make_site()
    channel, transport = connect(site)
    channel.dataReceived(b"GET / HTTP/1.1\r\n" + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 1000) for i in range(20))
                         + b"\r\n")
    assert status(transport) == 431
    assert transport.value().count(b"HTTP/1.1 ") == 1


def test_too_many_headers_get_431():
    site, _ = make_site()
    channel, transport = connect(site)
    channel.dataReceived(b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(600)) + b"\r\n")
    assert status(transport) == 431
    assert "headers" in body(transport)["error"]["message"]


def test_a_malformed_head_still_gets_400_with_a_body():
    site, _ = make_site()
    channel, transport = connect(site)
    channel.dataReceived(b"GET / HTTP/1.1\r\nno colon here\r\n\r\n")
    assert status(transport) == 400
    assert transport.disconnecting


# -- the per-client cap ------------------------------------------------------------------------

def test_connections_over_the_per_client_cap_are_closed_at_once_and_others_are_not():
    site, _ = make_site(max_connections_per_client=3)
    held = [connect(site, port=40000 + i) for i in range(3)]
    assert all(not t.disconnecting for _, t in held)
    channel, transport = connect(site, port=41000)
    assert transport.disconnected or transport.disconnecting  # (aborted: StringTransport.abortConnection)
    assert transport.value() == b""
    other, other_transport = connect(site, host="192.0.2.2")
    other.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status(other_transport) == 200
    held[0][0].connectionLost(None)  # one closes: the client may open one more
    assert site.connections["192.0.2.1"] == 2
    _, again = connect(site, port=42000)
    assert not again.disconnecting


def test_refusals_are_logged_once_then_summarised(caplog=None):
    from twisted.logger import globalLogPublisher
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        site, clock = make_site(max_connections_per_client=1)
        connect(site)
        for i in range(500):
            connect(site, port=41000 + i)
        clock.advance(60)
        clock.advance(60)
        clock.advance(60)
    finally:
        globalLogPublisher.removeObserver(events.append)
    lines = [e for e in events if e.get("log_namespace") == "stationd.access"]
    assert len(lines) == 2, lines
    assert lines[1]["summary"].startswith("499 connections refused") and "192.0.2.1 499" in lines[1]["summary"]


def test_unix_socket_connections_are_not_capped():
    site, _ = make_site(max_connections_per_client=1)
    for _ in range(3):
        channel = site.buildProtocol(UNIXAddress("/tmp/x"))
        transport = StringTransport()
        channel.makeConnection(transport)
        assert not transport.disconnecting


def test_client_key_groups_ipv6_by_64_and_unmaps_ipv4():
    assert client_key(IPv4Address("TCP", "10.0.0.1", 1)) == "10.0.0.1"
    assert client_key(IPv6Address("TCP", "2001:db8:1:2::5", 1)) == "2001:db8:1:2::/64"
    assert client_key(IPv6Address("TCP", "2001:db8:1:2:ffff::9", 1)) == "2001:db8:1:2::/64"
    assert client_key(IPv6Address("TCP", "::ffff:10.0.0.1", 1)) == "10.0.0.1"
    assert client_key(UNIXAddress(b"/x")) is None


# -- security headers --------------------------------------------------------------------------

def get(site, path, secure=False):
    channel, transport = connect(site, secure=secure)
    channel.dataReceived(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
    head = transport.value().split(b"\r\n\r\n", 1)[0].lower()
    return dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])


def test_nosniff_on_every_response_and_a_csp_on_html_pages_that_set_none():
    site, _ = make_site(hsts="max-age=31536000")
    json_headers = get(site, b"/")
    assert json_headers[b"x-content-type-options"] == b"nosniff"
    assert b"content-security-policy" not in json_headers
    html = get(site, b"/html")
    assert html[b"x-content-type-options"] == b"nosniff"
    assert html[b"content-security-policy"].startswith(b"default-src 'none'")
    assert get(site, b"/own-csp")[b"content-security-policy"] == b"default-src 'self'"  # (theirs is kept)


def test_hsts_on_https_only():
    site, _ = make_site(hsts="max-age=31536000")
    assert get(site, b"/", secure=True)[b"strict-transport-security"] == b"max-age=31536000"
    assert b"strict-transport-security" not in get(site, b"/", secure=False)
    assert b"strict-transport-security" not in get(make_site(hsts="")[0], b"/", secure=True)


def test_the_config_keys_parse_and_refuse_bad_values():
    config = configuration.load(None, environ={})
    web = config["web"]
    assert (web["header_timeout"], web["max_connections_per_client"], web["hsts"]) == (10.0, 64, "max-age=31536000")
    assert configuration.hsts("max-age=600; includeSubDomains; preload") == "max-age=600; includeSubDomains; preload"
    assert configuration.hsts("") == ""
    with pytest.raises(ValueError):
        configuration.hsts("max-age=forever")
    with pytest.raises(ValueError):
        configuration.non_negative("-1")


# -- the open-files limit ----------------------------------------------------------------------

def test_the_soft_open_files_limit_is_raised_to_the_hard_one():
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        hard = before[1]
        if hard == resource.RLIM_INFINITY or hard < 64:
            shown = "unlimited" if hard == resource.RLIM_INFINITY else hard
            pytest.skip(f"this process's hard RLIMIT_NOFILE is {shown}: the test needs a finite one of at least 64 "
                        "to lower the soft limit under it")
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        soft_before, soft_after = raise_open_files_limit()
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
        assert soft_after == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)

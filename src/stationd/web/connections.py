"""Connections bounded: a request head must arrive within [web] header_timeout, one client
holds at most [web] max_connections_per_client connections, and an oversized head gets
431/414 rather than a dropped connection (issue 20, item 3; docs/reliability.rst)."""

import collections
import ipaddress
from typing import Any

from twisted.internet import address, protocol
from twisted.logger import Logger
from twisted.web import http

from stationd.web.http import error_body

log = Logger(namespace="stationd.access")
SUMMARY_INTERVAL = 60.0  # seconds between two summary lines of refused or timed-out connections


def client_key(addr) -> str | None:
    """Whose connection ``addr`` is, for the per-client cap: its IPv4 address, its IPv6 /64
    (one host often has a whole /64), None for other transports (UNIX sockets)."""
    if not isinstance(addr, (address.IPv4Address, address.IPv6Address)):
        return None
    try:
        ip = ipaddress.ip_address(addr.host.split("%", 1)[0])
    except ValueError:
        return addr.host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class NodeChannel(http.HTTPChannel):
    """An HTTPChannel whose request heads are bounded in time and answered when too large.

    twisted.web only times out idle connections (every byte resets the timer), so a client
    trickling a header byte every few seconds held its connection for ever.  Here the whole
    head must arrive within ``site.header_timeout`` of the connection opening (or, on a
    kept-alive connection, of the next request's first byte): else 408 and the connection
    closes.  A request line over MAX_LENGTH gets 414, a header line over it, more than
    ``maxHeaders`` headers or a head over ``totalHeadersSize`` bytes get 431 (twisted.web
    drops the connection or answers a bare 400).  After such an answer the rest of the input
    is dropped.
    """

    site: Any  # the web.site.NodeSite that built it (imports run one way: site -> connections)
    client = None  # client_key() of the peer, counted by the site until the connection is lost
    _head_call = None
    _awaiting_head = True
    _answered = False

    def connectionMade(self):
        super().connectionMade()
        self._start_head_timer()

    def _start_head_timer(self):
        timeout = self.site.header_timeout
        if timeout and self._head_call is None:
            self._head_call = self.callLater(timeout, self._head_timed_out)

    def _stop_head_timer(self):
        if self._head_call is not None:
            if self._head_call.active():
                self._head_call.cancel()
            self._head_call = None

    def _head_timed_out(self):
        self._head_call = None
        self.site.connection_log.count("slow_head", self.client)
        self.answer(408, "request_timeout",
                    f"the request head did not arrive within {self.site.header_timeout:g} s")

    def answer(self, code: int, error: str, message: str) -> None:
        """Answer ``code`` with a JSON error body before any request was handed on, and close."""
        if self._answered:
            return
        self._answered = True
        self._stop_head_timer()
        if self.requests and self.requests[-1].startedWriting:
            self.loseConnection()  # (a response is already going out: no second one)
            return
        body = error_body(error, message)
        headers = [b"HTTP/1.1 %d %s" % (code, http.RESPONSES.get(code, b"Error")),
                   b"Content-Type: application/json", b"Content-Length: %d" % len(body), b"Connection: close"]
        headers += [name + b": " + value for name, value in self.site.security_headers(self.isSecure())]
        assert self.transport is not None
        self.transport.write(b"\r\n".join(headers) + b"\r\n\r\n" + body)
        self.setTimeout(None)
        if self.abortTimeout is not None:  # (a client that does not read is cut off, as on an idle timeout)
            self._abortingCall = self.callLater(self.abortTimeout, self.forceAbortClient)
        self.loseConnection()

    def dataReceived(self, data):
        if self._answered:
            return
        if self._awaiting_head:
            self._start_head_timer()
        super().dataReceived(data)

    def lineReceived(self, line):
        if self._answered:
            return
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self._head_too_large(f"the request head is larger than {self.totalHeadersSize} bytes")
            return
        super().lineReceived(line)

    def lineLengthExceeded(self, line):
        if self._answered:
            return
        if self._awaiting_head and not self.requests:
            self.answer(414, "uri_too_long", f"the request line is longer than {self.MAX_LENGTH} bytes")
        else:
            self._head_too_large(f"a header line is longer than {self.MAX_LENGTH} bytes")

    def headerReceived(self, line):
        if self._answered:
            return False
        if self._receivedHeaderCount >= self.maxHeaders:
            self._head_too_large(f"the request has more than {self.maxHeaders} headers")
            return False
        return super().headerReceived(line)

    def _head_too_large(self, message):
        self.answer(431, "request_header_fields_too_large", message)

    def _respondToBadRequestAndDisconnect(self):
        self.answer(400, "bad_request", "malformed request")

    def allHeadersReceived(self):
        self._awaiting_head = False
        self._stop_head_timer()
        super().allHeadersReceived()

    def requestDone(self, request):
        if self.persistent:  # (before the base class replays what was pipelined behind it)
            self._awaiting_head = True
        super().requestDone(request)

    def connectionLost(self, reason):
        self._stop_head_timer()
        super().connectionLost(reason)
        if self.client is not None:
            self.site.release(self.client)
            self.client = None


def channel_protocol(site):
    return http._GenericHTTPChannelProtocol(NodeChannel())


class Refused(protocol.Protocol):
    """A connection over the per-client cap: closed as soon as it is made."""

    def connectionMade(self):
        self.transport.abortConnection()


class ConnectionLog:
    """Refused and timed-out connections, logged without one line each: the first at once,
    then, while they go on, one summary line every ``interval`` seconds."""

    MESSAGES = {
        "over_cap": "connections refused over [web] max_connections_per_client",
        "slow_head": "connections closed (408) whose request head took over [web] header_timeout",
    }

    def __init__(self, clock, interval: float = SUMMARY_INTERVAL):
        self.clock, self.interval = clock, interval
        self.counts: dict[str, collections.Counter] = {kind: collections.Counter() for kind in self.MESSAGES}
        self._call = None

    def count(self, kind: str, client: str | None) -> None:
        if self._call is None:
            log.warn("{what}: {client} (further ones are summarised every {interval:g} s)",
                     what=self.MESSAGES[kind], client=client or "-", interval=self.interval)
            self._call = self.clock.callLater(self.interval, self._summarise)
        else:
            self.counts[kind][client or "-"] += 1

    def _summarise(self) -> None:
        parts = []
        for kind, counter in self.counts.items():
            if counter:
                top = ", ".join(f"{client} {n}" for client, n in counter.most_common(3))
                more = f", {len(counter) - 3} more clients" if len(counter) > 3 else ""
                parts.append(f"{sum(counter.values())} {self.MESSAGES[kind]} ({top}{more})")
                counter.clear()
        if parts:
            log.warn("In the last {interval:g} s: {summary}", interval=self.interval, summary="; ".join(parts))
            self._call = self.clock.callLater(self.interval, self._summarise)
        else:
            self._call = None

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

"""The HTTP server: a Site whose requests refuse oversized bodies and log one line each,
on connections bounded as stationd.web.connections says."""

import collections
import io
from typing import Any
from urllib.parse import unquote_to_bytes

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import resource, server

from stationd.metrics import Metrics
from stationd.statsd import Statsd, statsd_name
from stationd.web.connections import ConnectionLog, Refused, channel_protocol, client_key
from stationd.web.guard import FailureLog, client_of
from stationd.web.http import error_body, render_failure

log = Logger(namespace="stationd.access")

IN_MEMORY_BODY = 4 * 1024 * 1024
CORS_ALLOW = (b"Authorization, Content-Type, Idempotency-Key, Range, If-None-Match, "
              b"If-Modified-Since, If-Range")
CORS_EXPOSE = b"ETag, Content-Range, Content-Disposition, Retry-After, Last-Modified"
# HTML pages that set no policy of their own (twisted.web's error pages) get this one.
HTML_CSP = b"default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"


class StationRequest(server.Request):
    """A request that answers 413 as soon as its body passes the limit.

    twisted.web buffers a whole body before any resource sees it, so the limit
    is enforced here, as bytes arrive: a declared Content-Length is refused
    before any body byte is read, a chunked body as soon as it passes the
    limit.  The rest of the body is read and dropped (so clients that only
    read after sending still get the 413), then the connection is closed.
    """

    stationd_user = None
    _refused = False
    _body_bytes = 0

    def __init__(self, channel, *args, **kwargs):
        super().__init__(channel, *args, **kwargs)
        self.started = channel.site.reactor.seconds()

    def gotLength(self, length):
        if length is not None and length > self.channel.site.max_body_size:
            self._refuse()
        elif length is not None and length <= IN_MEMORY_BODY:
            # twisted.web spools bodies over 100 kB to a temp file; a HiSPARC
            # batch is 300 kB to 1 MB, so that was a disk write and read each.
            self.content = io.BytesIO()
        else:
            super().gotLength(length)

    def handleContentChunk(self, data):
        if self._refused:
            return
        self._body_bytes += len(data)
        if self._body_bytes > self.channel.site.max_body_size:
            self._refuse()
        else:
            super().handleContentChunk(data)

    def _refuse(self):
        self._refused = True
        self.content = io.BytesIO()
        channel = self.channel
        # The request line is known, but requestReceived() has not run yet.
        self.method, self.uri, self.clientproto = channel._command, channel._path, channel._version
        self.path = self.uri.split(b"?", 1)[0]
        # A final answer replaces "100 Continue": the client need not send the body.
        self.requestHeaders.removeHeader(b"expect")
        channel.persistent = False
        body = error_body(
            "payload_too_large",
            f"request body is larger than the limit of {channel.site.max_body_size} bytes",
        )
        self.setResponseCode(413)
        self.setHeader(b"content-type", b"application/json")
        self.setHeader(b"content-length", b"%d" % len(body))
        self.setHeader(b"connection", b"close")
        self.write(body)

    def connectionLost(self, reason):
        # A refused client may hang up without sending the body: log it anyway.
        site = self.channel.site  # (the base class forgets the channel)
        super().connectionLost(reason)
        if self._refused and not self.finished:
            site.log(self)

    def requestReceived(self, command, path, version):
        if self._refused:
            self.finish()  # the 413 is out; this closes the connection
        else:
            super().requestReceived(command, path, version)

    def write(self, data):
        if not self.startedWriting:  # (the headers go out with the first write)
            headers = self.responseHeaders
            for name, value in self.channel.site.security_headers(self.isSecure()):
                if not headers.hasHeader(name):
                    headers.setRawHeaders(name, [value])
            content_type = headers.getRawHeaders(b"content-type", [b""])[0]
            if content_type.startswith(b"text/html") and not headers.hasHeader(b"content-security-policy"):
                headers.setRawHeaders(b"content-security-policy", [HTML_CSP])
        super().write(data)


class HotRoutes(resource.Resource):
    """The ingest routes straight to their handlers, everything else to the Klein app.

    werkzeug's routing (Map.bind and MapAdapter.match) was ~9 % of a 1-event
    ingest request in the profile of issue 16; POSTs to
    ``{prefix}api/v1/stations/{id}/events`` and ``{prefix}upload`` skip it.
    Errors render as the Klein app renders them (web.http.render_failure);
    other methods on these paths (405) and every other route go to Klein.
    """

    isLeaf = True

    def __init__(self, app, prefix, native=None, upload=None):
        super().__init__()
        self.app, self.native, self.upload = app, native, upload
        base = prefix.rstrip("/").encode("utf-8")
        self._events, self._upload = base + b"/api/v1/stations/", base + b"/upload"

    def render(self, request):
        if request.method == b"POST":
            path = request.path
            if self.native is not None and path.startswith(self._events) and path.endswith(b"/events"):
                station = path[len(self._events):-len(b"/events")]
                if station and b"/" not in station:
                    request.stationd_route = "/api/v1/stations/{station_id}/events"
                    return self._run(request, self.native.events, unquote_to_bytes(station).decode("utf-8", "replace"))
            elif self.upload is not None and path == self._upload:
                request.stationd_route = "/upload"
                return self._run(request, self.upload.upload)
        return self.app.render(request)

    def _run(self, request, handler, *args):
        d = defer.ensureDeferred(handler(request, *args))
        d.addErrback(lambda failure: render_failure(request, failure))
        d.addCallback(_finish, request)
        return server.NOT_DONE_YET


def _finish(body, request):
    if not request._disconnected:  # (a client gone: the batch is stored all the same)
        request.write(body)
        request.finish()


class CORS(resource.Resource):
    """Lets browser pages from ``origins`` (b"*": any) call the routes of ``wrapped``.

    Preflight requests are answered here, for every route.
    """

    isLeaf = True

    def __init__(self, wrapped, origins):
        super().__init__()
        self.wrapped = wrapped
        self.origins = {origin.encode("ascii") for origin in origins}

    def render(self, request):
        origin = request.getHeader(b"origin")
        if origin is not None and (b"*" in self.origins or origin in self.origins):
            request.setHeader(b"access-control-allow-origin", b"*" if b"*" in self.origins else origin)
            request.setHeader(b"vary", b"Origin")
            request.setHeader(b"access-control-expose-headers", CORS_EXPOSE)
            if request.method == b"OPTIONS" and request.getHeader(b"access-control-request-method"):
                request.setResponseCode(204)
                request.setHeader(b"access-control-allow-methods", b"GET, HEAD, POST, PUT, DELETE")
                request.setHeader(b"access-control-allow-headers", CORS_ALLOW)
                request.setHeader(b"access-control-max-age", b"600")
                return b""
        return self.wrapped.render(request)


class NodeSite(server.Site):
    """The node's Site: StationRequests on NodeChannels, at most ``max_connections_per_client``
    connections from one client (0: no cap), request heads within ``header_timeout`` seconds
    (0: no limit), ``hsts`` (empty: none) on https responses."""

    requestFactory = StationRequest
    protocol = channel_protocol
    noisy = False
    failure_log: FailureLog | None = None  # (made by the first failed-credential request logged)

    def __init__(self, resource, max_body_size, reactor, metrics: Metrics | None = None,
                 statsd: Statsd | None = None, header_timeout: float = 10.0,
                 max_connections_per_client: int = 64, hsts: str = ""):
        # Routes that take forms parse them with web.http.parse_form, much
        # faster than twisted.web's parser on large bodies; no other route
        # pays for it.
        super().__init__(resource, reactor=reactor, parsePOSTFormSubmission=False)
        self.max_body_size = max_body_size
        self.header_timeout, self.max_connections_per_client = header_timeout, max_connections_per_client
        self._headers = [(b"x-content-type-options", b"nosniff")]
        self._secure_headers = self._headers + ([(b"strict-transport-security", hsts.encode("ascii"))]
                                                if hsts else [])
        self.connections: collections.Counter = collections.Counter()  # client_key -> open connections
        self.connection_log = ConnectionLog(reactor)
        self.metrics, self.statsd = metrics, statsd
        # (route, method, status) -> its Prometheus children and statsd name: labels() costs a lock
        # and a lookup, the name a regex.
        self._series: dict[tuple[str, str, int], tuple[Any, Any, str]] = {}

    def security_headers(self, secure: bool) -> list[tuple[bytes, bytes]]:
        """The headers every response carries (on https, Strict-Transport-Security too)."""
        return self._secure_headers if secure else self._headers

    def buildProtocol(self, addr):
        client = client_key(addr)
        cap = self.max_connections_per_client
        if client is not None and cap and self.connections[client] >= cap:
            self.connection_log.count("over_cap", client)
            return Refused()
        channel = super().buildProtocol(addr)
        if client is not None:
            self.connections[client] += 1
            channel._channel.client = client
        return channel

    def release(self, client: str) -> None:
        """One connection of ``client`` is gone."""
        self.connections[client] -= 1
        if self.connections[client] <= 0:
            del self.connections[client]

    def stopFactory(self):
        super().stopFactory()
        self.connection_log.stop()

    def _series_of(self, route: str, method: str, status: int) -> tuple[Any, Any, str]:
        name = f"request.{statsd_name(route)}.{method}"
        if self.metrics is None:
            return None, None, name
        return (self.metrics.http_requests.labels(route, method, str(status)),
                self.metrics.http_seconds.labels(route), name)

    def log(self, request):
        seconds = self.reactor.seconds() - request.started
        # The route's template (web.http.template), not the path: one series a route.
        key = (getattr(request, "stationd_route", "unmatched"), request.method.decode("latin-1"), request.code)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = self._series_of(*key)
        if series[0] is not None:
            series[0].inc()
            series[1].observe(seconds)
        if self.statsd is not None:
            self.statsd.timing(series[2], seconds * 1000)
        client = request.getClientAddress()
        if getattr(request, "stationd_auth_failed", False):
            # A flood of guesses: each client's first few failed-credential requests an
            # interval are logged, the rest summarised in one line (web.guard.FailureLog).
            if self.failure_log is None:
                self.failure_log = FailureLog(self.reactor)
            if self.failure_log.suppress(client_of(request)):
                return
        log.info(
            '{client} {user} "{method} {uri}" {status} {size} {duration_ms:.1f}ms',
            client=getattr(client, "host", "-"),
            user=getattr(request, "stationd_user", None) or "-",
            method=request.method.decode("latin-1"),
            uri=request.uri.decode("latin-1"),
            status=request.code,
            size=request.sentLength,
            duration_ms=seconds * 1000,
        )

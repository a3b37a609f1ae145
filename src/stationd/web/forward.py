"""The host's own hardware from any worker: a group's routes answered by worker 0.

With ``[node] workers`` > 1 the sensors and the display run in worker 0 alone
(stationd.service.wire), but the kernel hands a connection to any worker.
Worker 0 serves the sensor routes on a private socket as well
(stationd.config.workers_socket); in the other workers a Forward group declares the same
routes and passes each request there: method, path, query, body and the
headers that matter (the key is checked by worker 0, as for its own
requests), and gives worker 0's answer back unchanged.
"""

import json
from typing import Any

from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.error import ConnectError
from treq.client import HTTPClient
from twisted.web.client import Agent, ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IRequest
from twisted.web.server import Request
from zope.interface import implementer

from stationd.client import QuietPool
from stationd.web.http import HTTPError

# Request headers worth passing on; hop-by-hop and length headers are the transport's own.
_REQUEST_HEADERS = (b"authorization", b"content-type", b"accept", b"if-none-match", b"if-modified-since")
_HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"date", b"server"}
TIMEOUT = 30.0  # seconds for worker 0's answer


@implementer(IAgentEndpointFactory)
class _ToSocket:
    def __init__(self, reactor: Any, path: str) -> None:
        self.reactor, self.path = reactor, path

    def endpointForURI(self, uri: Any) -> UNIXClientEndpoint:
        return UNIXClientEndpoint(self.reactor, self.path, timeout=TIMEOUT)


class Forward:
    """Answers every route of ``group`` (a route group class) by asking worker 0."""

    def __init__(self, group: type, socket_path: str, reactor: Any) -> None:
        self.forwarded_group = group  # (web.http.routes_of)
        self.client = HTTPClient(Agent.usingEndpointFactory(reactor, _ToSocket(reactor, socket_path),
                                                            pool=QuietPool(reactor, persistent=False)))

    async def forward(self, request: IRequest, **_: str) -> bytes:
        assert isinstance(request, Request)
        headers = Headers({name: [value] for name in _REQUEST_HEADERS
                           if (value := request.getHeader(name)) is not None})
        body = request.content.read() if request.content is not None else b""
        try:
            answer = await self.client.request(request.method.decode("ascii"), b"http://worker-0" + request.uri,
                                               headers=headers, data=body or None)
            content = await answer.content()
        except (ConnectError, ResponseFailed, OSError) as e:
            raise HTTPError(503, f"worker 0, which runs this host's sensors and display, did not answer ({e})",
                            code="worker_unavailable", headers={"Retry-After": "5"}) from None
        request.setResponseCode(answer.code)
        for name, values in answer.headers.getAllRawHeaders():
            if name.lower() not in _HOP_BY_HOP:
                request.responseHeaders.setRawHeaders(name, values)
        return content

    async def get_json(self, path: bytes, request: IRequest) -> Any:
        """Worker 0's JSON answer to GET ``path``, asked with ``request``'s key (for a route of
        this worker's own that shows something of worker 0's); None if it cannot answer."""
        authorization = request.getHeader(b"authorization")
        try:
            answer = await self.client.get(b"http://worker-0" + path,
                                           headers=Headers({b"authorization": [authorization]} if authorization
                                                           else {}))
            content = await answer.content()
            return json.loads(content) if answer.code == 200 else None
        except (ConnectError, ResponseFailed, OSError, ValueError):
            return None


"""Core routes: liveness, version and the node's status."""

import platform
from collections.abc import Callable

import twisted

from stationd import __version__
from stationd.web.auth import Authenticator, require
from stationd.web.http import json_body, route


class Core:
    def __init__(self, auth: Authenticator, node_name: str, node_id: str, status: Callable[[], dict]):
        self.auth = auth
        self.node_name, self.node_id = node_name, node_id
        self.status_of_node = status

    @route("GET", "/heartbeat")
    def heartbeat(self, request):
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"OK"

    @route("GET", "/version")
    def version(self, request):
        return json_body(request, {
            "name": "stationd",
            "version": __version__,
            "node": self.node_name,
            "node_id": self.node_id,
            "python": platform.python_version(),
            "twisted": twisted.__version__,
        })

    @route("GET", "/api/v1/status")
    @require(read=True)
    def status(self, request):
        return json_body(request, self.status_of_node())

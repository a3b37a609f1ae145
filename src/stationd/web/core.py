"""Core routes: liveness, version and the node's status."""

import platform

import twisted

from stationd import __version__
from stationd.web.auth import require
from stationd.web.http import json_body, route


class Core:
    def __init__(self, node):
        self.node = node
        self.auth = node.auth

    @route("GET", "/heartbeat")
    def heartbeat(self, request):
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"OK"

    @route("GET", "/version")
    def version(self, request):
        return json_body(request, {
            "name": "stationd",
            "version": __version__,
            "node": self.node.name,
            "node_id": self.node.node_id,
            "python": platform.python_version(),
            "twisted": twisted.__version__,
        })

    @route("GET", "/api/v1/status")
    @require(read=True)
    def status(self, request):
        return json_body(request, self.node.status())

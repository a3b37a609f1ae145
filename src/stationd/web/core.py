"""Core routes: liveness, version and the node's status."""

import platform
from collections.abc import Awaitable, Callable
from typing import Any

import twisted

from stationd import __version__
from stationd.web.auth import Authenticator, require
from stationd.web.http import json_body, route


class Core:
    """``sensor_states``: in a worker other than 0, how to ask worker 0 for its sensors' states
    (it alone polls them) for the status; None where they are this process's own."""

    def __init__(self, auth: Authenticator, node_name: str, node_id: str, status: Callable[[], dict],
                 sensor_states: Callable[[Any], Awaitable[dict]] | None = None):
        self.auth = auth
        self.node_name, self.node_id = node_name, node_id
        self.status_of_node = status
        self.sensor_states = sensor_states

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
    async def status(self, request):
        status = self.status_of_node()
        if self.sensor_states is not None:
            status["sensors"] = await self.sensor_states(request)
        return json_body(request, status)

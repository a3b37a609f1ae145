"""GET /metrics: the node's Prometheus metrics (text format)."""

from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from stationd.metrics import Metrics
from stationd.web.http import route


class MetricsRoutes:
    def __init__(self, metrics: Metrics):
        self.registry = metrics.registry

    @route("GET", "/metrics")
    def exposition(self, request):
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self.registry)

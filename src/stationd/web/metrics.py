"""GET /metrics: the node's Prometheus metrics (text format); with several workers, the host's."""

from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet.threads import deferToThread

from stationd.metrics import HostMetrics, Metrics
from stationd.web.http import route


class MetricsRoutes:
    def __init__(self, metrics: Metrics, host: HostMetrics | None = None):
        self.registry, self.host = metrics.registry, host

    @route("GET", "/metrics")
    async def exposition(self, request):
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        if self.host is not None:
            return await deferToThread(self.host.exposition)
        return generate_latest(self.registry)

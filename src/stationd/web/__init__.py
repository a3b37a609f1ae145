"""The node's HTTP surface: the route groups ("components") on one Klein app.

stationd.service.wire() builds the groups (stationd.web.core.Core, ...), each
with what it uses; here they are mounted.
"""

from collections.abc import Mapping

from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import IResource

from stationd.metrics import Metrics
from stationd.statsd import Statsd
from stationd.web.http import make_app, mount
from stationd.web.site import CORS, HotRoutes, NodeSite


def make_resource(groups: Mapping[str, object], prefix: str, cors_origins: tuple[str, ...] | list[str] = ()
                  ) -> IResource:
    """The routes of ``groups`` (component name -> route group) under ``prefix``."""
    app = make_app()
    for group in groups.values():
        mount(app, group, prefix)
    routes = HotRoutes(app.resource(), prefix, groups.get("ingest"), groups.get("upload"))
    return CORS(routes, cors_origins) if cors_origins else routes


def make_site(groups: Mapping[str, object], web: Mapping, reactor: IReactorTime, metrics: Metrics | None = None,
              statsd: Statsd | None = None) -> NodeSite:
    """The site of the [web] section: the enabled components' routes (counted in ``metrics``,
    timed to ``statsd``)."""
    enabled = {name: groups[name] for name in web["components"]}
    return NodeSite(make_resource(enabled, web["request_path"], web["cors_origins"]), web["max_body_size"], reactor,
                    metrics, statsd, web["header_timeout"], web["max_connections_per_client"], web["hsts"])
